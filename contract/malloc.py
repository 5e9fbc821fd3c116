"""Keeps glibc from returning every large buffer to the kernel, which both services would pay for per byte.

Both services move studies and masks as buffers of hundreds of KiB to a few MiB. glibc serves any
allocation above its mmap threshold (128 KiB at start) with a fresh mmap and unmaps it on free, so every
such buffer costs a page fault per 4 KiB touched, every time: measured on a 134 MB up / 67 MB down gRPC
stream, half the CPU of the transfer (BENCHMARKS.md). Raising the threshold keeps those buffers in the
heap, where freed memory is reused; buffers above it (whole masks, whole series) still get their own
mapping and go back to the kernel when freed, so memory does not creep. Outside glibc this does nothing.

What stays in the heap must still go back once the burst is over. glibc gives each thread that contends for
the heap an arena of its own (up to 8 per core), and gRPC's threads took several: after a crowd of 130 slow
uploads ended, their freed buffers stayed there in fragments, the worker 50% above its RSS before. With two
arenas it came back within 10%, for the same CPU per byte on a 134 MB study (BENCHMARKS.md). And when the
worker has nothing in flight it hands the heap's free pages back (`give_back_free_memory`, malloc_trim).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD = 128 << 20
ARENAS = 2


def _libc():
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        return ctypes.CDLL(name)
    except OSError:
        return None


def keep_large_buffers_in_the_heap() -> bool:
    """Applies the thresholds and the arena count (before the services start their threads); True when glibc
    took them."""
    mallopt = getattr(_libc(), "mallopt", None)
    if mallopt is None:
        return False
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                mallopt(M_ARENA_MAX, ARENAS)])


def give_back_free_memory() -> bool:
    """Returns the heap's free pages to the kernel (glibc's malloc_trim): what keep_large_buffers_in_the_heap
    keeps for the next study, given back once nothing is in flight. True when glibc did it."""
    trim = getattr(_libc(), "malloc_trim", None)
    return bool(trim(0)) if trim is not None else False
