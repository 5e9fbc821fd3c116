"""Who may send a study, and who may run the model: limits decided at two moments.

A call is *admitted* when its header arrives, before any study byte, and refused at once otherwise
(RESOURCE_EXHAUSTED) so that the bridge can take it to another worker while it has sent nothing. Two
populations are bounded apart:

- calls *receiving* their study: at most `max_receiving`. A slow or stalled upload holds one of these
  places only (the bridge ends uploads slower than its minimum rate), so a few dozen stalled clients do not
  shut out the others, as they did when they took places of the model's queue;
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

from worker.metrics import WorkerMetrics


class Admission:
    def __init__(self, concurrency: int, queue_size: int, metrics: WorkerMetrics, max_receiving: int = 128) -> None:
        if concurrency < 1 or queue_size < 0 or max_receiving < 1:
            raise ValueError("concurrency and max_receiving must be >= 1, queue_size >= 0")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self.max_receiving = max_receiving
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
        """A place for a new call, receiving its study; None when either population is full."""
        if self.receiving >= self.max_receiving or self.arrived >= self.concurrency + self.queue_size:
            return None
        self.admitted += 1
        self.receiving += 1
        self._publish()
        return Ticket(self)

    def refusal(self) -> str:
        """Why admit() returned None, with the numbers and the settings that bound them."""
        if self.receiving >= self.max_receiving:
            return f"{self.receiving} studies are arriving (its --max-receiving)"
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
