"""Who may send a study, and who may run the model: two limits, decided at two moments.

A call is *admitted* when its header arrives, before any study byte: at most `concurrency + queue_size`
calls are admitted at once, and a call beyond that is refused at once (RESOURCE_EXHAUSTED) so that the
bridge can take it to another worker while it has sent nothing. An admitted call then receives its study;
only when the whole study has arrived does it queue for one of the `concurrency` model *slots* (default 1:
models are rarely thread-safe), in the order studies completed. A slow upload therefore holds a place in
the queue, never the model, and the slot is given back as soon as `infer()` returns, before the answer is
sent, so that a caller that reads slowly does not hold the model either.

Everything here runs on the worker's event loop, so no lock is needed.
"""

from __future__ import annotations

import asyncio
import collections

from worker.metrics import WorkerMetrics


class Admission:
    def __init__(self, concurrency: int, queue_size: int, metrics: WorkerMetrics) -> None:
        if concurrency < 1 or queue_size < 0:
            raise ValueError("concurrency must be >= 1 and queue_size >= 0")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._metrics = metrics
        self.admitted = 0
        self.running = 0
        self.overrunning = 0  # slots held by a model still running for a call that has ended
        self._waiting: collections.deque[asyncio.Future] = collections.deque()

    def admit(self) -> Ticket | None:
        """A place for a new call, or None when `concurrency + queue_size` calls are already admitted."""
        if self.admitted >= self.concurrency + self.queue_size:
            return None
        self.admitted += 1
        self._publish()
        return Ticket(self)

    def _publish(self) -> None:
        self._metrics.queue_depth.set(self.admitted - self.running)
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

    def _leave(self) -> None:
        self.admitted -= 1
        self._publish()


class Ticket:
    """One admitted call: `await slot()` for the model, `release_slot()` after infer(), `leave()` at the end."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._has_slot = False
        self._left = False

    async def slot(self) -> None:
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
            self._admission._leave()
