"""Keeps glibc from returning every large buffer to the kernel, which both services would pay for per byte.

Both services move studies and masks as buffers of hundreds of KiB to a few MiB. glibc serves any
allocation above its mmap threshold (128 KiB at start) with a fresh mmap and unmaps it on free, so every
such buffer costs a page fault per 4 KiB touched, every time: measured on a 134 MB up / 67 MB down gRPC
stream, half the CPU of the transfer (BENCHMARKS.md). Raising the threshold keeps those buffers in the
heap, where freed memory is reused; buffers above it (whole masks, whole series) still get their own
mapping and go back to the kernel when freed, so memory does not creep. Outside glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic threshold
TRIM_THRESHOLD = 128 << 20


def keep_large_buffers_in_the_heap() -> bool:
    """Applies the thresholds; True when glibc took them."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
