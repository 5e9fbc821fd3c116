"""What native code writes to stderr (gRPC's C core logs through absl), read back and logged like any record.

gRPC's core writes its own lines to file descriptor 2 (`I1207 02:18:49.569008 22444 ssl_transport_security.cc:2563]
Handshake failed ...`), past Python's logging: no request tags, no escaping, and as many as the events
that cause them (a handshake flood wrote 8,738). `route_native_stderr()` points descriptor 2 at a pipe and
keeps the real stderr for Python (`sys.stderr`, where the log handler writes); a thread reads the pipe,
parses each absl line (severity, source, message; a message may span lines), offers it to the watches
registered with `add_watch` (the worker names the peers of failed TLS handshakes that way), and logs the
rest under the logger `grpc.core` (`native` for lines not in absl's format), at most `LINES_PER_WINDOW`
lines per source location per `WINDOW_SECONDS`, then one line counting what was left out.

Only the services call it (`configure_logging(native_output=True)`); a crash message written just before
the process aborts may be lost, since the reader then has no time to log it.
"""

from __future__ import annotations

import atexit
import collections
import logging
import os
import re
import select
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

LINES_PER_WINDOW = 10
WINDOW_SECONDS = 60.0
CONTINUATION_WAIT = 0.05  # seconds after which a record's last line is taken as complete
# absl: severity, MMDD, time, thread id, file:line] message
ABSL_LINE = re.compile(r"([IWEF])\d{4} \d\d:\d\d:\d\d\.\d+\s+\d+ ([^\s:\]]+:\d+)\] ?(.*)")
LEVELS = {"I": logging.INFO, "W": logging.WARNING, "E": logging.ERROR, "F": logging.CRITICAL}

log = logging.getLogger("grpc.core")
other = logging.getLogger("native")


@dataclass
class NativeRecord:
    level: int
    source: str  # file:line of the native code ("" when the line was not in absl's format)
    message: str


Watch = Callable[[NativeRecord], bool]  # True: the record was handled, log nothing more


class RateLimit:
    """At most `limit` lines per key per `window` seconds; counts what it held back, for one line later."""

    def __init__(self, limit: int = LINES_PER_WINDOW, window: float = WINDOW_SECONDS) -> None:
        self.limit, self.window = limit, window
        self._started: dict[str, float] = {}
        self._count: collections.Counter = collections.Counter()
        self._held: collections.Counter = collections.Counter()

    def allow(self, key: str, now: float) -> bool:
        if now - self._started.get(key, -self.window) >= self.window:
            self._started[key] = now
            self._count[key] = 0
        self._count[key] += 1
        if self._count[key] <= self.limit:
            return True
        self._held[key] += 1
        return False

    def held_back(self, now: float) -> list[tuple[str, int]]:
        """(key, lines held back) for each window that has ended with lines held back; forgets them."""
        ended = [(key, held) for key, held in self._held.items() if now - self._started[key] >= self.window]
        for key, _ in ended:
            del self._held[key]
        return ended


class NativeLogReader:
    """Parses the pipe's bytes into records, offers them to the watches, logs the others (rate-limited)."""

    def __init__(self, descriptor: int) -> None:
        self.descriptor = descriptor
        self.watches: list[Watch] = []
        self.limit = RateLimit()
        self._pending: NativeRecord | None = None
        self._partial = b""

    def run(self) -> None:
        while True:
            ready, _, _ = select.select([self.descriptor], [], [], CONTINUATION_WAIT)
            if ready:
                data = os.read(self.descriptor, 65536)
                if not data:
                    break
                self.feed(data)
            else:
                self.flush()
            self.tick(time.monotonic())
        self.feed(b"\n")
        self.flush()

    def feed(self, data: bytes) -> None:
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for raw in lines:
            self._line(raw.decode("utf-8", "backslashreplace"))

    def _line(self, text: str) -> None:
        match = ABSL_LINE.match(text)
        if match:
            self.flush()
            self._pending = NativeRecord(LEVELS[match[1]], match[2], match[3])
        elif self._pending is not None and text:
            self._pending.message += "\n" + text  # a message that spans lines (escaped when logged)
        elif text:
            self.flush()
            self._pending = NativeRecord(logging.WARNING, "", text)

    def flush(self) -> None:
        record, self._pending = self._pending, None
        if record is None:
            return
        for watch in self.watches:
            if watch(record):
                return
        if self.limit.allow(record.source or record.message[:40], time.monotonic()):
            (log if record.source else other).log(record.level, "%s%s", f"{record.source}] " if record.source
                                                  else "", record.message)

    def tick(self, now: float) -> None:
        for key, held in self.limit.held_back(now):
            log.warning("%d more line(s) like %s in the last %g s were not logged", held, key, WINDOW_SECONDS)
        for watch in self.watches:
            tick = getattr(watch, "tick", None)
            if tick is not None:
                tick(now)


_reader: NativeLogReader | None = None


def add_watch(watch: Watch) -> bool:
    """Offers every native record to `watch` first; False when native output is not routed here."""
    if _reader is None:
        return False
    _reader.watches.append(watch)
    return True


def route_native_stderr() -> None:
    """Descriptor 2 becomes a pipe read by a thread; `sys.stderr` keeps writing where stderr went. Once."""
    global _reader
    if _reader is not None:
        return
    real = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)
    sys.stderr.flush()
    sys.stderr = os.fdopen(real, "w", buffering=1, encoding="utf-8", errors="backslashreplace")
    _reader = NativeLogReader(read_end)
    thread = threading.Thread(target=_reader.run, name="native-log", daemon=True)
    thread.start()

    def restore() -> None:  # at exit: native code writes to stderr itself again, the reader drains the pipe
        os.dup2(real, 2)
        thread.join(1.0)

    atexit.register(restore)
