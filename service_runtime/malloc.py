"""glibc's allocator, tuned for services that move large buffers and must give memory back after a burst.

Both services move studies and masks as buffers of hundreds of KiB to a few MiB. glibc serves any
allocation above its mmap threshold (128 KiB at start) with a fresh mmap and unmaps it on free, so every
such buffer costs a page fault per 4 KiB touched, every time: measured on a 134 MB up / 67 MB down gRPC
stream, half the CPU of the transfer (BENCHMARKS.md). Raising the threshold keeps those buffers in the
heap, where freed memory is reused; buffers above it (whole masks, whole series) still get their own
mapping and go back to the kernel when freed. Freed memory at the top of the heap is kept up to 1 GiB
(the trim threshold, 128 KiB by default): at 128 MiB, the 134 MB of a 3D-256 study held in memory went back
to the kernel at the end of each request and was faulted in again, page by zeroed page, by the next one
(clear_page: 94 -> 43 ms of the worker's CPU per request, the rest being the model's own mask;
BENCHMARKS.md). What a burst leaves is given back once the service is idle (below).

What stays in the heap must still go back once a burst is over. glibc gives each thread that contends for
the heap an arena of its own (up to eight per core: gRPC's threads, the HTTP server's, the model's), and
each kept its own freed buffers in fragments: bridge 55 -> 110 MB over 500 aborted uploads; worker 50%
above its RSS after a crowd of 130 slow uploads. Two arenas keep that to 92 MB and +6-9%, for the same CPU
per byte (BENCHMARKS.md); `ReleaseWhenIdle` hands the free pages of every arena back to the kernel
(malloc_trim) once a service has had nothing in progress for a moment: bridge 74 MB after 2,000 aborts,
worker within 10%. Outside glibc all of this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
from collections.abc import Callable

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD = 1 << 30  # ReleaseWhenIdle trims whatever a burst left
ARENA_MAX = 2


@functools.cache
def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - both must exist (glibc)
    except (OSError, AttributeError):
        return None
    return libc


def keep_large_buffers_in_the_heap() -> bool:
    """Applies the thresholds and the arena limit; True when glibc took them. Call it before threads start."""
    libc = _libc()
    if libc is None:
        return False
    return all(bool(libc.mallopt(option, value)) for option, value in (
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD), (M_ARENA_MAX, ARENA_MAX)))


def release_free_memory() -> bool:
    """Returns the free pages of every arena to the kernel (glibc's malloc_trim); True if any were."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


class ReleaseWhenIdle:
    """Calls release_free_memory() `delay` seconds after the last request in progress has ended, unless
    another has started by then. Call `ended()` on the event loop whenever a request ends."""

    def __init__(self, in_progress: Callable[[], int], delay: float = 1.0) -> None:
        self.in_progress = in_progress
        self.delay = delay
        self._timer: asyncio.TimerHandle | None = None

    def ended(self) -> None:
        if self.in_progress() == 0 and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.delay, self._release_if_idle)

    def _release_if_idle(self) -> None:
        self._timer = None
        if self.in_progress() == 0:
            # On the loop, which has nothing else to do now: 20-60 ms after a big burst, and no thread to start.
            release_free_memory()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
