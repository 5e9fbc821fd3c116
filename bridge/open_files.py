"""Gets the HTTPS front accepting again after the process ran out of file descriptors, or ends the process.

Why (granian 2.8.9 and its tls-listener 0.11; docs/decisions.md): a TLS connection costs granian one file
descriptor from the moment it is accepted, and tls-listener accepts connections in batches of 64 and keeps
their handshakes pending without any limit, for up to 10 s each; `--max-connections` counts only connections
whose handshake is done. A crowd of connections that never finish their handshake therefore takes every
descriptor the process may open. accept() then fails (EMFILE); granian waits 500 ms and calls tls-listener's
accept again, which tries the listen queue *before* it looks at its pending handshakes and returns that error
at once. So as long as a connection waits in the listen queue (under any traffic: always), the pending
handshakes are never polled again: they neither time out nor see their clients leave, their descriptors are
never given back, and the bridge serves nobody, long after the attack is over.

What this does: a thread checks every `check_every` seconds whether the process can open one more file. When
it could not for `drain_after` seconds, it empties the listen queue itself, accepting and closing what waits
there (clients that would never be served), until granian, finding the queue empty, has gone back to its
pending handshakes and dropped those whose clients left or whose 10 s are over: descriptors are free again,
and the bridge accepts as before. A few descriptors are kept in reserve for that accept. If no descriptor has
been free for `give_up_after` seconds despite the draining (descriptors held by something else), it logs one ERROR
line and ends the process with status EXIT_OUT_OF_FILES, for a supervisor to start it again.

Only the HTTPS front needs it: over plain HTTP granian accepts no more than `--max-connections`, which stays
256 descriptors below the limit (bridge/front.py), and a failed accept is retried until one is free.
"""

from __future__ import annotations

import errno
import logging
import os
import resource
import select
import socket
import threading
import time
from dataclasses import dataclass

from service_runtime.native_log import RateLimit

log = logging.getLogger("bridge.open_files")

EXIT_OUT_OF_FILES = 3  # 2 is a usage error (bridge/__main__.py)
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE)
CHECK_EVERY = 0.5
DRAIN_AFTER = 2.0  # seconds without a free descriptor: granian's accept has failed four times by then
GIVE_UP_AFTER = 60.0
# granian tries to accept again 500 ms after it failed: a drain outlasts several of its attempts.
DRAIN_SECONDS = 2.0
# Descriptors kept for the drain's accept(). A drain gives up one, and one more each time granian took the one
# given up (it tried to accept at that moment), holding it in a pending handshake until it has recovered.
RESERVE = 16

DRAIN = "drain"
GIVE_UP = "give up"


@dataclass
class OutOfFiles:
    """How long the process has had no free file descriptor, and what to do about it."""

    drain_after: float = DRAIN_AFTER
    give_up_after: float = GIVE_UP_AFTER
    since: float | None = None  # when no descriptor was first seen free (None: one is free)

    def observe(self, full: bool, now: float) -> str | None:
        """DRAIN, GIVE_UP or None, given whether a descriptor could be opened at `now` (monotonic seconds)."""
        if not full:
            self.since = None
            return None
        if self.since is None:
            self.since = now
        if now - self.since >= self.give_up_after:
            return GIVE_UP
        return DRAIN if now - self.since >= self.drain_after else None


def open_files_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class OpenFilesWatchdog:
    """Watches the process's file descriptors on a thread of its own; drains `listener` (a duplicate of the
    listening socket granian accepts from) when they have run out (module docstring)."""

    def __init__(self, listener: socket.socket, check_every: float = CHECK_EVERY, drain_after: float = DRAIN_AFTER,
                 give_up_after: float = GIVE_UP_AFTER, drain_seconds: float = DRAIN_SECONDS) -> None:
        self.listener = listener
        self.listener.setblocking(False)  # the same open file as granian's socket, which is non-blocking too
        self.check_every, self.drain_seconds = check_every, drain_seconds
        self.state = OutOfFiles(drain_after, give_up_after)
        self.drains = 0
        self.lines = RateLimit()
        self._reserve: list[int] = []
        self._refill()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="open-files-watchdog", daemon=True)

    def start(self) -> OpenFilesWatchdog:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.drain_seconds + 5)
        while self._reserve:
            os.close(self._reserve.pop())
        self.listener.close()

    def _run(self) -> None:
        while not self._stop.wait(self.check_every):
            self.check(time.monotonic())

    def check(self, now: float) -> None:
        for _, held in self.lines.held_back(now):
            log.warning("%d more drain(s) of the listen queue in the last %g s were not logged", held,
                        self.lines.window)
        self._refill()
        action = self.state.observe(not free_descriptors(1, like=self.listener.fileno()), now)
        if action == DRAIN:
            self._drain_and_log(now)
        elif action == GIVE_UP:
            self._give_up()

    def _drain_and_log(self, now: float) -> None:
        full_for = now - (self.state.since or now)
        closed, free_again = self.drain()
        self.drains += 1
        if free_again:
            self.state.observe(False, time.monotonic())
        if self.lines.allow("drain", now):
            log.warning("no file descriptor free for %.1f s (open-files limit %d): TLS handshakes pending in the "
                        "HTTPS front hold them, and it accepts nobody until its listen queue is empty; closed %d "
                        "connection(s) waiting there, descriptors are %s", full_for, open_files_limit(), closed,
                        "free again" if free_again else "still all in use")

    def drain(self) -> tuple[int, bool]:
        """Accepts and closes what waits in the listen queue, for at most `drain_seconds`, until descriptors are
        free again (granian found the queue empty and dropped its dead handshakes). Returns (connections
        closed, whether descriptors are free again)."""
        poller = select.poll()  # no descriptor of its own, unlike epoll
        poller.register(self.listener, select.POLLIN)
        closed, released, deadline = 0, self._release_one(), time.monotonic() + self.drain_seconds
        try:
            while time.monotonic() < deadline:
                try:
                    connection, _ = self.listener.accept()
                except BlockingIOError:  # the queue is empty: granian's next attempt finds it so
                    if free_descriptors(released + 2, like=self.listener.fileno()):  # granian freed some
                        return closed, True
                    poller.poll(10)
                    continue
                except OSError as error:
                    if error.errno not in OUT_OF_FILES and error.errno != errno.ECONNABORTED:
                        raise
                    # granian accepted first, into the descriptor given up (it gets it back when it recovers)
                    released += self._release_one()
                    poller.poll(10)
                    continue
                connection.close()
                closed += 1
            return closed, free_descriptors(released + 2, like=self.listener.fileno())
        finally:
            self._refill()

    def _refill(self) -> None:
        """Keeps RESERVE descriptors open while they can be had: each drain gives them up one at a time."""
        while len(self._reserve) < RESERVE:
            try:
                self._reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
            except OSError as error:
                if error.errno not in OUT_OF_FILES:
                    raise
                return

    def _release_one(self) -> int:
        if not self._reserve:
            return 0
        os.close(self._reserve.pop())
        return 1

    def _give_up(self) -> None:
        log.error("no file descriptor has been free for %.0f s (open-files limit %d), although the listen queue "
                  "was emptied %d time(s): the bridge exits with status %d for its supervisor to start it again "
                  "(docs/security.md, \"Connection floods on HTTPS\")", self.state.give_up_after,
                  open_files_limit(), self.drains, EXIT_OUT_OF_FILES)
        for handler in logging.getLogger().handlers:
            handler.flush()
        os._exit(EXIT_OUT_OF_FILES)  # granian's accept loop, stuck at the limit, would not let a normal stop end


def free_descriptors(count: int, like: int) -> bool:
    """Whether `count` more file descriptors can be opened now (duplicates of `like`, closed at once)."""
    opened = []
    try:
        for _ in range(count):
            opened.append(os.dup(like))
        return True
    except OSError as error:
        if error.errno not in OUT_OF_FILES:
            raise
        return False
    finally:
        for descriptor in opened:
            os.close(descriptor)
