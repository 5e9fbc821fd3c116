"""A bounded number of inferences at once, behind a bounded FIFO queue that fails fast when full.

Models are rarely thread-safe and GPUs are finite, so the worker runs `concurrency` inferences at once
(default 1). Up to `queue_size` more calls may wait; a call beyond that is refused at once
(RESOURCE_EXHAUSTED) instead of piling up until every deadline has passed. A call holds its place from
the moment it is admitted, while its study is still arriving, so that the study is not received only
to be refused.
"""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable

from worker.metrics import WorkerMetrics


class Admission:
    def __init__(self, concurrency: int, queue_size: int, metrics: WorkerMetrics) -> None:
        if concurrency < 1 or queue_size < 0:
            raise ValueError("concurrency must be >= 1 and queue_size >= 0")
        self.concurrency = concurrency
        self.queue_size = queue_size
        self._metrics = metrics
        self._condition = threading.Condition()
        self._waiting: collections.deque[Ticket] = collections.deque()
        self._running = 0

    def admit(self) -> Ticket | None:
        """A place in the queue, or None when running + waiting calls already fill slots and queue."""
        with self._condition:
            if self._running + len(self._waiting) >= self.concurrency + self.queue_size:
                return None
            ticket = Ticket(self)
            self._waiting.append(ticket)
            self._metrics.queue_depth.set(len(self._waiting))
            return ticket

    def _acquire(self, ticket: Ticket, should_stop: Callable[[], bool], poll: float) -> bool:
        with self._condition:
            while not (self._waiting[0] is ticket and self._running < self.concurrency):
                if should_stop():
                    self._leave(ticket)
                    return False
                self._condition.wait(poll)
            self._waiting.popleft()
            self._running += 1
            self._metrics.queue_depth.set(len(self._waiting))
            self._metrics.inflight.set(self._running)
            return True

    def _leave(self, ticket: Ticket) -> None:
        self._waiting.remove(ticket)
        self._metrics.queue_depth.set(len(self._waiting))
        self._condition.notify_all()

    def _release(self, ticket: Ticket, running: bool) -> None:
        with self._condition:
            if running:
                self._running -= 1
                self._metrics.inflight.set(self._running)
            elif ticket in self._waiting:
                self._leave(ticket)
            self._condition.notify_all()


class Ticket:
    """One admitted call. Use `acquire()` to wait for a slot, `release()` when done (always)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission
        self._running = False
        self._released = False

    def acquire(self, should_stop: Callable[[], bool], poll: float = 0.05) -> bool:
        """Waits in FIFO order for a free slot; False if `should_stop()` turned true first."""
        self._running = self._admission._acquire(self, should_stop, poll)
        if not self._running:
            self._released = True
        return self._running

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._admission._release(self, self._running)
