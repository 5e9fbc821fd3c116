"""The bridge's HTTP/1.1 server: granian (hyper, in Rust), embedded in the bridge's own event loop.

Why granian, and why embedded: docs/decisions.md. In short, hyper parses HTTP/1.1 (request smuggling,
pipelining, header limits, chunked bodies, Expect: 100-continue) and TLS (rustls) outside Python, streams
bodies both ways with back-pressure, and keeps its memory flat under floods of connections; embedded, it
calls the bridge's ASGI application on the loop that also holds the gRPC channels to the workers, in one
process, as the bridge ran before.

What this module adds around it:

- the listening socket is made here, not by granian: a port that is taken is refused at once, in one line
  (granian binds with SO_REUSEPORT, which would silently share a port with another bridge), port 0 picks
  a free one and reports it, and TCP_USER_TIMEOUT = `send_timeout` is set on it, which every accepted
  connection inherits: the kernel aborts a connection whose client has read nothing for that long (a
  zero window included), which HTTP servers have no other way to do once the answer is in their buffers;
- jemalloc (granian's allocator) is told to give freed memory back to the system within a second, from a
  thread of its own: without it, what a flood of connections allocated stays with the process;
- the soft limit on open files is raised to the hard one, so that `max_connections` is not cut short by
  a default of 1,024 file descriptors;
- with HTTPS, a watchdog (bridge/open_files.py) gets granian accepting again when pending TLS handshakes,
  which `max_connections` does not count, have taken every file descriptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from pathlib import Path

# Read by jemalloc when granian's library is loaded (below): set before the import, unless the operator set it.
os.environ.setdefault("_RJEM_MALLOC_CONF", "background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0")

from granian._granian import SocketHolder  # noqa: E402 - after the allocator's settings
from granian.constants import HTTPModes, Interfaces  # noqa: E402
from granian.http import HTTP1Settings  # noqa: E402
from granian.server.common import SSLProtocols  # noqa: E402
from granian.server.embed import Server  # noqa: E402

from bridge.config import HttpLimits  # noqa: E402
from bridge.http import ASGIApp  # noqa: E402
from bridge.open_files import OpenFilesWatchdog  # noqa: E402

log = logging.getLogger("bridge")

BACKLOG = 1024
# File descriptors kept from the connections served (--max-connections), for the bridge's own files and its
# channels to the workers; with HTTPS also for the listen queue, which granian takes into pending TLS
# handshakes all at once when connections close (handshakes are not counted as connections served).
SPARE_FILES = 256
# hyper's read buffer: it bounds the request head (431 beyond about twice this; our own limit is exact, in
# bridge/middleware.py) and the size of the body pieces the application receives. Each piece costs a wake-up
# of the event loop from granian's thread: at 1 MiB rather than 256 KiB the bridge spent 125-132 instead of
# 159-170 ms of CPU per 64-slice study (33.6 MB; BENCHMARKS.md). The buffer grows to it only on connections
# that fill it.
MIN_READ_BUFFER = 1 << 20


class PortInUse(OSError):
    pass


def listening_socket(host: str, port: int, send_timeout: float) -> socket.socket:
    """A TCP socket bound to host:port and listening; PortInUse when it cannot be had."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if hasattr(socket, "TCP_USER_TIMEOUT"):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, max(1, int(send_timeout * 1000)))
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as error:
        sock.close()
        raise PortInUse(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    return sock


def raise_open_files_limit() -> int:
    """Raises the soft limit on open files to the hard one; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


class _EmbeddedServer(Server):
    """granian's embedded server, on a socket made by us (see listening_socket)."""

    def __init__(self, *args, sock: socket.socket, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._our_socket = sock

    def _init_shared_socket(self) -> None:
        self._ssp = None
        self._sfd = self._our_socket.detach()  # the Rust listener owns the descriptor from here on
        self._shd = SocketHolder(self._sfd, False, self.backlog)


GRANIAN_LOGGERS = ("_granian", "granian.access")
EXPERIMENTAL_WARNING = "Embedded server is experimental!"  # said at every start: docs/decisions.md says why we use it


class _DropExperimentalWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != EXPERIMENTAL_WARNING


class _OurLogging:
    """granian configures logging of its own when its server is made (its own handlers, on stdout); this puts
    its loggers back as logging.yaml set them, so that its lines go through our formatter like every other."""

    def __enter__(self) -> None:
        self.saved = [(logging.getLogger(name), logging.getLogger(name).level, logging.getLogger(name).propagate,
                       list(logging.getLogger(name).handlers)) for name in GRANIAN_LOGGERS]

    def __exit__(self, *exc) -> None:
        for logger, level, propagate, handlers in self.saved:
            logger.handlers[:] = handlers
            logger.setLevel(level)
            logger.propagate = propagate
        main = logging.getLogger(GRANIAN_LOGGERS[0])
        if not any(isinstance(f, _DropExperimentalWarning) for f in main.filters):
            main.addFilter(_DropExperimentalWarning())


class HttpFront:
    """Serves `app` on host:port (port 0 picks one; `port` says which) until `stop()`."""

    def __init__(self, app: ASGIApp, limits: HttpLimits, tls_cert: str = "", tls_key: str = "") -> None:
        self.app = app
        self.limits = limits
        self.tls = (Path(tls_cert), Path(tls_key)) if tls_cert else None
        self.port = 0
        self._host = ""
        self._socket: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task | None = None
        self._watchdog: OpenFilesWatchdog | None = None

    def listen(self, host: str, port: int) -> int:
        """Takes the port now (PortInUse if it cannot); serving starts with `start()`."""
        self._socket = listening_socket(host, port, self.limits.send_timeout)
        self._host, self.port = host, self._socket.getsockname()[1]
        return self.port

    async def start(self) -> None:
        open_files = raise_open_files_limit()
        spare = SPARE_FILES + (BACKLOG if self.tls else 0)
        connections = min(self.limits.max_connections, max(open_files - spare, 64))
        if connections < self.limits.max_connections:
            log.warning("--max-connections %d is above what the open-files limit (%d) allows: %d will be served",
                        self.limits.max_connections, open_files, connections)
        tls = {"ssl_cert": self.tls[0], "ssl_key": self.tls[1], "ssl_protocol_min": SSLProtocols.tls12} \
            if self.tls else {}
        with _OurLogging():
            self._server = _EmbeddedServer(
                self.app, sock=self._socket, address=self._host, port=self.port, interface=Interfaces.ASGINL,
                http=HTTPModes.http1, websockets=False, backlog=BACKLOG, backpressure=connections,
                http1_settings=HTTP1Settings(
                    header_read_timeout=max(1, int(self.limits.header_timeout * 1000)), keep_alive=True,
                    max_buffer_size=max(MIN_READ_BUFFER, self.limits.max_header_bytes + 4096)),
                **tls)
        if self.tls:  # a duplicate of the socket: granian's own is detached from ours when it starts serving
            self._watchdog = OpenFilesWatchdog(self._socket.dup()).start()
        self._task = asyncio.ensure_future(self._server.serve())
        await asyncio.sleep(0)  # granian's worker is spawned on its first step; the socket already listens

    async def stop(self, grace: float) -> None:
        """Stops accepting, lets requests in progress finish within `grace` seconds, then drops the rest."""
        if self._server is None or self._task is None:
            return
        if self._watchdog is not None:
            self._watchdog.stop()
        self._server.workers_kill_timeout = grace
        self._server.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace + 5)
        except TimeoutError:
            self._task.cancel()
            log.warning("the HTTP server did not stop within %.0f s", grace + 5)
