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

A call whose header asks for it (`admission_wait_ms`: the bridge asks on its last try, having found every
worker full) is *parked* instead of refused: it waits, in arrival order, until a place frees (a call ends, a
study arrives, spool bytes are given back: each wakes the first parked call, nothing polls), then is admitted;
when its wait ends first, it is refused as it would have been at once. While calls are parked a new call is
never admitted ahead of them. A parked call has sent only its header and costs about what a call receiving
its study does (its stream, its header), so both share one bound: at most `max_receiving` calls receive
their study or are parked, and a call that would pass it is refused at once. A parked InferWhole call holds
its whole (small) study too, and counts as one call more per RECEIVING_CALL_BYTES of its message (part
headers included: contract/wire.py `held_bytes`): the bound stays one of memory.

A parked call that is admitted keeps the place it was woken for while its study arrives (else every parked
call would be admitted by the first place that frees, and all would then queue for the model beyond
`queue_size`), but for RESERVED_SECONDS at most: a study arriving slower than that holds no place, like any
other upload, so that slow senders cannot keep the model's queue by getting parked first.

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
# How long an admitted parked call keeps its place while its study arrives: a study of a few hundred MB on a
# local network, and far shorter than the --receive-window-seconds over which a trickle is judged.
RESERVED_SECONDS = 5.0


def parking_weight(holds: int) -> int:
    """What a parked call that keeps `holds` study bytes counts for against max_receiving: one call, and one
    more per RECEIVING_CALL_BYTES (or part of it) of study. Pure."""
    return 1 + -(-holds // RECEIVING_CALL_BYTES)


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
        self.reserved = 0  # places kept for admitted parked calls whose study is arriving (RESERVED_SECONDS)
        self._waiting: collections.deque[asyncio.Future] = collections.deque()
        self._parked: collections.deque[asyncio.Future] = collections.deque()  # calls waiting for a place
        self._parked_weight = 0  # what the parked calls count for against max_receiving (see parking_weight)
        self.closed = False  # shutting down: nothing more is admitted or parked
        self.store.when_room(self._wake)

    @property
    def arrived(self) -> int:
        """Admitted calls whose study has arrived: running, or queued for a slot."""
        return self.admitted - self.receiving

    @property
    def parked(self) -> int:
        """Calls waiting for a place (`wait_for_place`)."""
        return len(self._parked)

    def _room(self) -> bool:
        return not (self.closed or self.receiving >= self.max_receiving
                    or self.arrived + self.reserved >= self.concurrency + self.queue_size or self.store.spool_full)

    def admit(self) -> Ticket | None:
        """A place for a new call, receiving its study; None when either population is full, or the spool, or
        when calls are parked (they came first)."""
        if self._parked or not self._room():
            return None
        return self._ticket()

    async def wait_for_place(self, seconds: float, holds: int = 0) -> Ticket | None:
        """A place for a new call, waiting up to `seconds` for one behind the calls already parked; None at once
        when parking it too would pass `max_receiving` or the worker is shutting down, None when the wait ends
        first. `holds`: the study bytes the call keeps while parked (an InferWhole call's). A call cancelled
        while parked (its caller gone) is forgotten; a place handed to it just then is passed on."""
        if ticket := self.admit():
            return ticket
        weight = parking_weight(holds)
        if self.closed or self.receiving + self._parked_weight + weight > self.max_receiving or seconds <= 0:
            return None
        waiter = asyncio.get_running_loop().create_future()
        waiter.weight = weight
        self._parked.append(waiter)
        self._parked_weight += weight
        self._publish()
        try:
            # asyncio.wait, not a timeout: a place handed over as the wait ends is taken, never lost.
            await asyncio.wait((waiter,), timeout=seconds)
        except asyncio.CancelledError:
            if waiter.done() and waiter.result() is not None:
                waiter.result().leave()  # the place arrived as the caller left: the next parked call gets it
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
                self._parked.remove(waiter)
                self._parked_weight -= waiter.weight
                self._publish()
        return None if waiter.cancelled() else waiter.result()

    def close(self) -> None:
        """Shutting down: nothing more is admitted, and every parked call is refused now."""
        self.closed = True
        while self._parked:
            self._parked.popleft().set_result(None)
        self._parked_weight = 0
        self._publish()

    def _wake(self) -> None:
        """A place may have freed: hand it to the first parked call, which keeps it while its study arrives
        (in order, while there is room)."""
        while self._parked and self._room():
            ticket = self._ticket()
            self.reserved += 1
            ticket._reservation = asyncio.get_running_loop().call_later(RESERVED_SECONDS, ticket._unreserve, True)
            waiter = self._parked.popleft()
            self._parked_weight -= waiter.weight
            waiter.set_result(ticket)
        self._publish()

    def _ticket(self) -> Ticket:
        self.admitted += 1
        self.receiving += 1
        self._publish()
        return Ticket(self)

    def refusal(self, holds: int = 0) -> str:
        """Why admit() returned None, or wait_for_place() for a call keeping `holds` study bytes, with the numbers
        and the settings that bound them."""
        if self.store.spool_full:
            return self.store.spool_full_message()
        if self.receiving + self._parked_weight + parking_weight(holds) > self.max_receiving:
            parked = f" and {len(self._parked)} more wait for a place" if self._parked else ""
            kept = f" (this call's study would count as {parking_weight(holds) - 1} more)" if holds else ""
            return (f"{self.receiving} studies are arriving{parked}{kept} (what its --max-study-memory-mib allows "
                    "for, or its --max-receiving)")
        return (f"{self.running} inference(s) running and {self.arrived - self.running} waiting for the model "
                f"(its --concurrency and --queue-size)")

    def _arrived(self) -> None:
        self.receiving -= 1
        self._wake()

    def _unreserved(self, wake: bool) -> None:
        self.reserved -= 1
        if wake:
            self._wake()

    def _publish(self) -> None:
        self._metrics.queue_depth.set(self.arrived - self.running)
        self._metrics.receiving.set(self.receiving)
        self._metrics.inflight.set(self.running)
        self._metrics.parked.set(len(self._parked))

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
        self._wake()


class Ticket:
    """One admitted call: `await slot()` for the model, `release_slot()` after infer(), `leave()` at the end."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._receiving = True
        self._has_slot = False
        self._left = False
        self._reservation: asyncio.TimerHandle | None = None  # a parked call's place, kept while its study arrives

    def _unreserve(self, wake: bool) -> None:
        """The place kept for this call is no longer kept: its study arrived, it ended, or it took too long."""
        if self._reservation is not None:
            self._reservation.cancel()
            self._reservation = None
            self._admission._unreserved(wake)

    async def slot(self) -> None:
        """The study has arrived: queue for a model slot."""
        if self._receiving:
            self._receiving = False
            self._unreserve(wake=False)  # the place kept for it is the one it now takes
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
            self._unreserve(wake=False)  # _leave wakes the next parked call
            self._admission._leave(self._receiving)
            self._receiving = False
