"""The minimum rate a request stream must keep while its study arrives, so that a direct gRPC caller cannot
hold a place by trickling (a byte every 20 s kept a call alive for as long as it liked).

The rule is the bridge's rule for HTTP bodies (`--min-upload-rate` bytes per second over windows of
`--body-timeout` seconds: 64 KiB/s over 20 s), with one allowance: the bridge forwards a body in chunks of
up to `contract.limits.CHUNK_BYTES`, so a client the bridge accepts reaches the worker up to one chunk
late. A window must therefore bring `rate x window - CHUNK_BYTES` bytes; a window that brings fewer
ends the call. Only time spent waiting for the sender counts, as at the bridge: a worker slow to read is
not the sender's fault. A fast start can carry the window it happened in, and only that one.

Pure bookkeeping: the caller reports waits and bytes, and asks how long it may wait before the current
window closes short.
"""

from __future__ import annotations

import math

from contract.limits import CHUNK_BYTES
from worker.serving.errors import Idle


class TooSlow(Idle):
    """The sender kept sending, but slower than the minimum rate."""


class MinimumRate:
    def __init__(self, bytes_per_second: int, window_seconds: float) -> None:
        self.rate = bytes_per_second
        self.window = window_seconds
        self.need = max(int(bytes_per_second * window_seconds) - CHUNK_BYTES, 1)
        self.waited = 0.0  # waiting seconds in the current window
        self.got = 0  # bytes in the current window

    @property
    def enabled(self) -> bool:
        return self.rate > 0 and self.window > 0

    def received(self, size: int) -> None:
        self.got += size

    def waited_for(self, seconds: float) -> None:
        """Adds `seconds` of waiting; raises TooSlow when a window closed with fewer bytes than it needs."""
        if not self.enabled:
            return
        self.waited += seconds
        while self.waited >= self.window:
            if self.got < self.need:
                raise TooSlow(f"the request stream sent {self.got:,} bytes in {self.window:g} s of waiting, fewer "
                              f"than the {self.need:,} the worker requires ({self.rate:,} bytes/s, its "
                              f"--min-receive-rate, less one sender chunk); it was ended")
            self.waited -= self.window
            self.got = 0

    def wait_left(self) -> float:
        """Waiting seconds before a window would close short if nothing more arrived."""
        if not self.enabled:
            return math.inf
        left = self.window - self.waited
        return left if self.got < self.need else left + self.window
