"""glibc's allocator, tuned for services that move large buffers and must give memory back after a burst.

Both services move studies and masks as buffers of hundreds of KiB to a few MiB. glibc serves any
allocation above its mmap threshold (128 KiB at start) with a fresh mmap and unmaps it on free, so every
such buffer costs a page fault per 4 KiB touched, every time: measured on a 134 MB up / 67 MB down gRPC
stream, half the CPU of the transfer (BENCHMARKS.md). Raising the threshold keeps those buffers in the
heap, where freed memory is reused; buffers above it (whole masks, whole series) still get their own
mapping and go back to the kernel when freed.

What the heap keeps, it keeps per arena, and glibc makes up to eight arenas per core, one for each thread
that allocates at the same moment (gRPC's, the HTTP server's, the model's): after a burst of aborted
uploads each arena held its own freed buffers (bridge: 55 -> 110 MB over 500 aborts, measured). Two arenas
keep that to 92 MB; `release_free_memory()`, called when a service is idle, hands the freed pages of every
arena back to the kernel (malloc_trim). Outside glibc all of this does nothing.
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
TRIM_THRESHOLD = 128 << 20
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


async def release_when_idle(activity: Callable[[], tuple[int, int]], every: float = 5.0) -> None:
    """Runs for ever: every `every` seconds, when `activity()` says (requests in progress, requests ever
    started) that none is in progress and some were served since the last look, releases free memory."""
    last_started = -1
    while True:
        await asyncio.sleep(every)
        in_progress, started = activity()
        if in_progress == 0 and started != last_started:
            last_started = started
            release_free_memory()
