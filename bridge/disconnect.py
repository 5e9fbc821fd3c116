"""Notices an HTTP client that hangs up while the worker is still inferring, and cancels the call.

WSGI gives an application no way to learn that its client left until it writes. A study can take
minutes, so while the bridge waits for the worker's result this watcher peeks at the client's socket
(exposed by the server's gateway as `bridge.client_socket`): once the body is fully read, the socket
turning readable with nothing to read means the client closed it.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
from collections.abc import Callable

log = logging.getLogger("bridge.disconnect")


def client_closed(sock: socket.socket) -> bool:
    """True when the peer has closed the connection (readable with EOF). Never consumes data."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable:
            return False
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except (OSError, ValueError):
        return True


class DisconnectWatcher:
    """Polls `sock` every `interval` seconds once `body_read()` is true; calls `on_disconnect` once."""

    def __init__(self, sock: socket.socket | None, body_read: Callable[[], bool], on_disconnect: Callable[[], None],
                 interval: float = 0.2) -> None:
        self._sock = sock
        self._body_read = body_read
        self._on_disconnect = on_disconnect
        self._interval = interval
        self._stop = threading.Event()
        self.disconnected = False
        self._thread = threading.Thread(target=self._run, name="disconnect-watch", daemon=True)

    def __enter__(self) -> DisconnectWatcher:
        if self._sock is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            if self._body_read() and client_closed(self._sock):
                self.disconnected = True
                log.info("the client closed the connection; cancelling the worker's call")
                self._on_disconnect()
                return
