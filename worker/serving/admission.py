"""Who may send a study, and who may run the model: limits decided at two moments.

A call is *admitted* when its header arrives, before any study byte, and refused at once otherwise
(RESOURCE_EXHAUSTED) so that the bridge can take it to another worker while it has sent nothing. Two
populations are bounded apart:

- calls *receiving* their study: bounded by what they cost, not by a count. Their bytes are counted in the
  worker's StoreBudget (worker/serving/spool.py): memory up to `--max-study-memory-mib`, then the spool up to
  `--max-spool-bytes`; a new call is refused while the spool is full. Each also costs some memory of its own
  (gRPC's stream, the call's objects: about RECEIVING_CALL_BYTES), so the memory budget's last eighth is
  kept for them: at most `memory_limit / 8 / RECEIVING_CALL_BYTES` calls receive at once (1,024 with the
  default 512 MiB), and `--max-receiving` can set a lower count. A slow upload holds only what it sent (the
  bridge and the worker both end uploads slower than their minimum rate), so a crowd of slow clients
  neither shuts out the others nor takes places of the model's queue;
- calls whose study has arrived, running or queued for one of the `concurrency` model *slots* (default 1:
  models are rarely thread-safe), in the order studies completed: at most `concurrency + queue_size`. A
  new call is refused when these are full, since it would only wait behind them.

The slot is given back as soon as `infer()` returns, before the answer is sent, so that a caller that
reads slowly does not hold the model either.

Everything here runs on the worker's event loop, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import collections

from worker.serving.metrics import WorkerMetrics
from worker.serving.spool import StoreBudget

# What one call receiving its study costs in memory besides its study bytes, measured: 130 streams that had
# sent a header and one byte added about 33 KB each to the worker (benchmarks/attacks.py); rounded up.
RECEIVING_CALL_BYTES = 64 << 10
CALLS_SHARE = 8  # 1/8 of the memory budget is kept for the receiving calls' own cost


class Admission:
    def __init__(self, concurrency: int, queue_size: int, metrics: WorkerMetrics, max_receiving: int = 0,
                 store: StoreBudget | None = None) -> None:
        if concurrency < 1 or queue_size < 0 or max_receiving < 0:
            raise ValueError("concurrency must be >= 1, queue_size and max_receiving >= 0")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.store = store or StoreBudget(512 << 20, 1 << 62)
        by_memory = max(self.store.memory_limit // CALLS_SHARE // RECEIVING_CALL_BYTES, 1)
        self.max_receiving = min(max_receiving, by_memory) if max_receiving else by_memory
        self._metrics = metrics
        self.admitted = 0
        self.receiving = 0  # admitted calls whose study has not fully arrived
        self.running = 0
        self.overrunning = 0  # slots held by a model still running for a call that has ended
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    @property
    def arrived(self) -> int:
        """Admitted calls whose study has arrived: running, or queued for a slot."""
        return self.admitted - self.receiving

    def admit(self) -> Ticket | None:
        """A place for a new call, receiving its study; None when either population is full, or the spool."""
        if (self.receiving >= self.max_receiving or self.arrived >= self.concurrency + self.queue_size
                or self.store.spool_full):
            return None
        self.admitted += 1
        self.receiving += 1
        self._publish()
        return Ticket(self)

    def refusal(self) -> str:
        """Why admit() returned None, with the numbers and the settings that bound them."""
        if self.store.spool_full:
            return self.store.spool_full_message()
        if self.receiving >= self.max_receiving:
            return (f"{self.receiving} studies are arriving (what its --max-study-memory-mib allows for, or its "
                    "--max-receiving)")
        return (f"{self.running} inference(s) running and {self.arrived - self.running} waiting for the model "
                f"(its --concurrency and --queue-size)")

    def _arrived(self) -> None:
        self.receiving -= 1
        self._publish()

    def _publish(self) -> None:
        self._metrics.queue_depth.set(self.arrived - self.running)
        self._metrics.receiving.set(self.receiving)
        self._metrics.inflight.set(self.running)

    async def _acquire(self) -> None:
        if self.running < self.concurrency and not self._waiting:
            self.running += 1
            self._publish()
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter  # _release hands the slot over: running was already counted for us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release()  # the slot arrived as we were cancelled: pass it on
            else:
                self._waiting.remove(waiter)
            raise

    def _release(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return  # the slot passes straight to the next waiter
        self.running -= 1
        self._publish()

    def _leave(self, receiving: bool) -> None:
        self.admitted -= 1
        if receiving:
            self.receiving -= 1
        self._publish()


class Ticket:
    """One admitted call: `await slot()` for the model, `release_slot()` after infer(), `leave()` at the end."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._receiving = True
        self._has_slot = False
        self._left = False

    async def slot(self) -> None:
        """The study has arrived: queue for a model slot."""
        if self._receiving:
            self._receiving = False
            self._admission._arrived()
        await self._admission._acquire()
        self._has_slot = True

    def release_slot(self) -> None:
        if self._has_slot:
            self._has_slot = False
            self._admission._release()

    def leave(self) -> None:
        """Ends the call's place. A slot stays taken until `release_slot()`: the model may still be running
        on its thread after its call has ended. Safe to call twice."""
        if not self._left:
            self._left = True
            self._admission._leave(self._receiving)
            self._receiving = False
