"""The bridge's HTTP/1.1 server: asyncio, llhttp (httptools) for parsing, and every timeout a hostile or
unlucky client needs.

Why not a WSGI server: WSGI gives each connection a thread for as long as it lasts, so a handful of idle
or slow clients (16 with cheroot's defaults) stopped every request, `/ping` included. Here a connection
costs a few kilobytes until its request headers are complete, and a request costs a task, not a thread.
Why not uvicorn: it has no header timeout, no minimum upload rate and no limit on header size or count,
and those are the attacks this server must survive. The HTTP grammar itself (request line, headers,
Content-Length, chunked bodies, smuggling checks) is llhttp's, the parser of Node.js.

What a connection may do, and what happens when it does not:

- send its request line and headers within `header_timeout` of connecting (or of its first byte after an
  idle keep-alive pause); else it is closed, with 408 when it had started a request;
- stay idle between requests at most `keepalive_timeout`;
- keep the headers under `max_header_bytes` and `max_headers` (431), the target under `max_url_bytes` (414);
- send its body at `min_upload_rate` or faster, measured over windows of `body_timeout` seconds: a client
  that stalls is answered 408 after one window, one that trickles after a fast start at the end of the
  first window whose bytes fall short (a fast start can carry the window it happened in, so at most two);
  only time the application spends *waiting* for the client counts, so a slow worker never makes a client
  time out. (The worker's own `--idle-timeout-seconds`, 30 s, may end such a call first, also as 408.)
- read the response: a write that cannot progress for `send_timeout` closes the connection.

Bodies stream both ways with flow control: reading pauses while `read_high_water` bytes wait for the
application, and writing waits while the socket's buffer is full. A client that goes away cancels the
task handling its request. An application answers a request with `Response`; see `Request.read()` for
the body.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import logging
import socket
import ssl as ssl_module
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import httptools

from bridge.errors import ApiError

log = logging.getLogger("bridge.http")

SERVER_NAME = b"arterys-bridge"
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class HttpLimits:
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    body_timeout: float = 20.0
    min_upload_rate: int = 64 << 10  # bytes per second, over each body_timeout seconds of waiting
    send_timeout: float = 30.0
    max_header_bytes: int = 64 << 10
    max_headers: int = 100
    max_url_bytes: int = 8 << 10
    max_connections: int = 1000
    read_high_water: int = 4 << 20
    write_high_water: int = 2 << 20
    drain_limit: int = 4 << 30  # request body bytes read and dropped after an early answer


class ClientGone(Exception):
    """The client closed the connection (or it broke)."""


class BodyTimeout(Exception):
    """The client sent its body too slowly (408)."""


class SendTimeout(ClientGone):
    """The client did not read the response for `send_timeout` seconds."""


@dataclass
class Response:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | AsyncIterator[bytes] = b""
    content_length: int | None = None  # required for a streamed body, unless chunked encoding is wanted

    @classmethod
    def text(cls, status: int, text: str, content_type: str = "text/plain; charset=utf-8",
             headers: list[tuple[str, str]] | None = None) -> Response:
        return cls(status, [("Content-Type", content_type), *(headers or [])], text.encode())


Handler = Callable[["Request"], Awaitable[Response]]


class Request:
    """One request: method, path, headers (lower-case names), and a body read with `await read()`."""

    def __init__(self, conn: Connection, method: str, target: bytes, version: str, headers: list,
                 keep_alive: bool) -> None:
        url = httptools.parse_url(target)
        self.conn = conn
        self.method = method
        self.path = url.path.decode("latin-1")
        self.query = (url.query or b"").decode("latin-1")
        self.version = version
        self.headers = headers  # [(name, value)], names lower-cased, values latin-1 decoded
        self.keep_alive = keep_alive
        self.client = conn.peer
        self.started = time.monotonic()
        self.received = 0  # body bytes received so far
        self.complete = False  # the whole body has arrived
        self.consumed = False  # the application read to its end
        self.gone = False
        self.stopped_reading = False  # its answer was cut off because the client read nothing for send_timeout
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._waiter: asyncio.Future | None = None
        self._waited = 0.0  # seconds spent waiting for body bytes
        self._mark_waited = 0.0  # start of the current rate window, in waited seconds
        self._mark_received = 0
        self._expect_continue = self.header("expect").lower() == "100-continue"

    def header(self, name: str, default: str = "") -> str:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    @property
    def content_length(self) -> int | None:
        value = self.header("content-length")
        return int(value) if value.isdigit() else None

    async def read(self) -> bytes:
        """The next piece of the body; b"" at its end. Raises ClientGone, or BodyTimeout for a client that
        sends less than `min_upload_rate` bytes per second over any `body_timeout` seconds of waiting."""
        if self._expect_continue:
            self._expect_continue = False
            if not self.complete:
                self.conn.write_now(b"HTTP/1.1 100 Continue\r\n\r\n")
        limits = self.conn.limits
        loop = self.conn.loop
        while not self._chunks:
            if self.complete:
                self.consumed = True
                return b""
            if self.gone:
                raise ClientGone("the client closed the connection")
            # Only time spent waiting for the client counts: while the application is slow to read (a busy
            # worker), the client is held back by us, not slow by itself.
            window_left = limits.body_timeout - (self._waited - self._mark_waited)
            if window_left <= 0:
                if self.received - self._mark_received < limits.min_upload_rate * limits.body_timeout:
                    raise BodyTimeout(f"the request body arrived slower than {limits.min_upload_rate} bytes/s over "
                                      f"{limits.body_timeout:g} s")
                self._mark_waited, self._mark_received = self._waited, self.received
                continue
            self._waiter = loop.create_future()
            self.conn.want_data()
            started = loop.time()
            try:
                async with asyncio.timeout(window_left):
                    await self._waiter
            except TimeoutError:
                pass  # the loop above decides, with the time waited counted
            finally:
                self._waited += loop.time() - started
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._buffered < limits.read_high_water // 2:
            self.conn.want_data()
        return chunk

    # -- fed by the connection ----------------------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        self.received += len(data)
        if self._buffered > self.conn.limits.read_high_water:
            self.conn.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self.complete = True
        self._wake()

    def _lose(self) -> None:
        self.gone = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Connection(asyncio.Protocol):
    """One client connection: parses requests, runs the handler for each in turn, writes the answers."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.queue: collections.deque[Request] = collections.deque()  # headers complete, not yet handled
        self.incoming: Request | None = None  # the request whose body is being parsed
        self.task: asyncio.Task | None = None
        self.closed = False
        self.lingering = False  # answered and half-closed: what still arrives is dropped
        self._timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._in_head = False  # between a request's first byte and the end of its headers
        self._url = b""
        self._headers: list = []
        self._head_size = 0
        self._body_left = 0  # Content-Length bytes of the incoming request not received yet
        self.current: Request | None = None  # the request being handled
        self._reading = True
        self._write_ready: asyncio.Event | None = None
        self.idle_since: float | None = None  # when it last had no request in progress (None: it has one)
        self._input_ended = False  # malformed input arrived behind requests still to answer: read no more
        self._deferred_reject: ApiError | None = None  # its answer, once theirs are written

    # -- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=self.limits.write_high_water)
        self.server.connections.add(self)
        self.server.stats("open_connections", len(self.server.connections))
        self.idle_since = self.loop.time()
        if len(self.server.connections) > self.limits.max_connections:
            # Room is made by closing the longest idle connection (nothing asked on it), so that a flood of
            # idle sockets cannot shut out health probes and real clients; only when every connection is
            # busy is the new one refused.
            idle = self.server.longest_idle(besides=self)
            if idle is None:
                self.server.stats("rejected", "too_many_connections")
                self._reject(ApiError(503, "too_many_connections", "the bridge has too many open connections; "
                                      "retry shortly", retry_after=1))
                return
            self.server.stats("rejected", "evicted_idle")
            idle.close()
        self._arm(self.limits.header_timeout, self._on_header_timeout)

    def data_received(self, data: bytes) -> None:
        if self.closed or self.lingering or self._input_ended:
            return  # what follows malformed input is not read
        if self._body_left:
            data = self._pass_body(data)
            if not data:
                return
        if self.incoming is None and not self._in_head:
            self._in_head = True
            self.idle_since = None
            self._head_bytes = 0
            self._arm(self.limits.header_timeout, self._on_header_timeout)  # from the first byte of a request
        if self._in_head:
            # llhttp holds a header line until it is complete, so a 20 MB line would sit in memory whole:
            # feed at most the header budget while the headers are not complete.
            budget = self.limits.max_header_bytes + 4096 - self._head_bytes
            if len(data) > budget:
                self._feed(data[:budget])
                if self._in_head and not (self.closed or self.lingering):
                    return self._too_large_head()
                data = data[budget:]
            else:
                self._head_bytes += len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        if self.closed or self.lingering or not data:
            return  # a rejected connection's parser is in error and is not fed again
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as error:
            cause = error.__context__
            if isinstance(cause, ApiError):
                self.server.stats("rejected", cause.code)
                return self._reject(cause)
            # Our own failure inside a parser callback: answered, logged, and the connection ends; raising here
            # would break the transport without a word to the client.
            log.error("handling the request head failed", exc_info=cause)
            self.server.stats("rejected", "bridge_error")
            return self._reject(ApiError(500, "bridge_error", "the bridge failed; see its log"))
        except httptools.HttpParserUpgrade:
            # Upgrades (h2c, websocket) are not offered: the request is answered in HTTP/1.1, then the
            # connection ends, since what follows it is no longer HTTP/1.1.
            if self.incoming is not None:
                self.incoming._finish()
                self.incoming = None
            self.pause_reading()
        except httptools.HttpParserError as error:
            self.server.stats("rejected", "bad_request")
            reason = str(error) or type(error).__name__
            self._reject(ApiError(400, "bad_request", f"malformed HTTP request: {reason}"))

    def eof_received(self) -> bool:
        return False  # a client that stops sending has hung up: close (and cancel what it asked for)

    def connection_lost(self, exc) -> None:
        self.closed = True
        self._disarm()
        self.server.connections.discard(self)
        self.server.stats("open_connections", len(self.server.connections))
        for request in (*self.queue, self.incoming):
            if request is not None:
                request._lose()
        if self._write_ready is not None:
            self._write_ready.set()
        if self.current is not None:
            self.current._lose()
        if self.task is not None and not self.task.done():
            self.task.cancel()

    def pause_writing(self) -> None:
        if self._write_ready is None:
            self._write_ready = asyncio.Event()
        self._write_ready.clear()

    def resume_writing(self) -> None:
        if self._write_ready is not None:
            self._write_ready.set()

    # -- llhttp callbacks ---------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.limits.max_url_bytes:
            raise ApiError(414, "uri_too_long", f"the request target exceeds {self.limits.max_url_bytes} bytes")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        if len(self._headers) >= self.limits.max_headers:
            raise ApiError(431, "request_header_fields_too_large",
                           f"the request has more than {self.limits.max_headers} header fields")
        if self._head_size + len(self._url) > self.limits.max_header_bytes:
            raise ApiError(431, "request_header_fields_too_large",
                           f"the request headers exceed {self.limits.max_header_bytes} bytes")
        self._headers.append((name.decode("latin-1").lower(), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        version = self.parser.get_http_version()
        keep_alive = self.parser.should_keep_alive() and not self.server.stopping
        try:
            request = Request(self, self.parser.get_method().decode("ascii", "replace"), self._url, version,
                              self._headers, keep_alive)
        except httptools.HttpParserInvalidURLError:  # e.g. CONNECT's authority form: no proxying here
            raise ApiError(400, "bad_request", "malformed HTTP request: the request target is not a path") from None
        self.incoming = request
        length = request.content_length
        self._body_left = length if length is not None and not request.header("transfer-encoding") else 0
        self.queue.append(request)
        if self.task is None or self.task.done():
            self.task = self.loop.create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        if self.incoming is not None:
            if self._body_left:  # a Content-Length body (a chunked one never bypasses llhttp)
                self._body_left -= len(body)
            self.incoming._feed(body)

    def _pass_body(self, data: bytes) -> bytes:
        """The body of a Content-Length request, past the read that held its headers, goes to the request
        as it came, without llhttp (which would copy every byte once more); returns what follows it."""
        take = min(len(data), self._body_left)
        body = data if take == len(data) else data[:take]
        self._body_left -= take
        self.incoming._feed(body)
        if self._body_left == 0:
            # The parser was left mid-body: the next request starts with a fresh one.
            self.parser = httptools.HttpRequestParser(self)
            self.on_message_complete()
        return data[take:] if take < len(data) else b""

    def on_message_complete(self) -> None:
        self._body_left = 0
        if self.incoming is not None:
            self.incoming._finish()
            self.incoming = None

    # -- handling -----------------------------------------------------------------------------------

    async def _serve(self) -> None:
        while self.queue and not self.closed:
            request = self.queue[0]
            self.current = request
            keep_alive = await self._handle(request)
            self.current = None
            self.queue.popleft()
            if not keep_alive:
                break
        else:
            keep_alive = True
        if self._deferred_reject is not None and not self.closed:
            error, self._deferred_reject = self._deferred_reject, None
            self._input_ended = False  # lingering reads (and drops) the rest
            self._write_reject(error)  # lingers: what still arrives is read and dropped
            return
        if not keep_alive:
            self.close()
            return
        if not self.closed:
            self.idle_since = self.loop.time()
            self._arm(self.limits.keepalive_timeout, self.close)

    async def _handle(self, request: Request) -> bool:
        """Answers one request; returns whether the connection may carry another."""
        try:
            response = await self.server.handler(request)
        except ClientGone:
            return False
        except Exception:  # the handler maps its own errors; this is the net under it
            log.exception("the request handler failed")
            response = Response(500, [("Content-Type", "application/json")],
                                ApiError(500, "bridge_error", "the bridge failed; see its log").json_bytes())
        keep_alive = request.keep_alive
        try:
            await self._send(request, response)
        except ClientGone:
            return False
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():
                raise  # this task is being cancelled: the client went away
            log.error("the response broke off while streaming: its source was cancelled")
            self.abort()
            return False
        except Exception as error:
            # Status and Content-Length are out: breaking the connection short of Content-Length is the only
            # honest signal left to the client.
            log.error("the response broke off while streaming: %s", error)
            self.abort()
            return False
        if not request.complete:
            if request._expect_continue:
                return False  # we answered before asking for the body: the client will not send it
            keep_alive = keep_alive and await self._drain(request)
        return keep_alive

    async def _drain(self, request: Request) -> bool:
        """Reads and drops the rest of a body we answered early, so that a client still sending can read the
        answer. True when the body ended (the connection is usable again)."""
        dropped = 0
        try:
            while dropped <= self.limits.drain_limit:
                chunk = await request.read()
                if not chunk:
                    return True
                dropped += len(chunk)
        except (ClientGone, BodyTimeout):
            pass
        return False

    async def _send(self, request: Request, response: Response) -> None:
        body = response.body
        length = len(body) if isinstance(body, (bytes, bytearray)) else response.content_length
        lines = [f"HTTP/1.1 {response.status} {_reason(response.status)}\r\n".encode()]
        for name, value in response.headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"Server: " + SERVER_NAME + b"\r\nDate: " + _http_date() + b"\r\n")
        chunked = length is None
        lines.append(b"Transfer-Encoding: chunked\r\n" if chunked else f"Content-Length: {length}\r\n".encode())
        if not request.keep_alive:
            lines.append(b"Connection: close\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        if isinstance(body, (bytes, bytearray)):
            if request.method == "HEAD":
                body = b""
            await self.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                await self.write(body)
            return
        sent = 0
        try:
            # Inside the try: a client gone before the head is written still closes the body, which may hold
            # a worker call open and must record the request's end.
            await self.write(head)
            if request.method == "HEAD":
                return
            async for chunk in body:
                if chunk:
                    sent += len(chunk)
                    await self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
        finally:
            if hasattr(body, "aclose"):
                await body.aclose()  # at once, not when collected: it may hold a worker call open
        if chunked:
            await self.write(b"0\r\n\r\n")
        elif sent != length:
            raise RuntimeError(f"the response body has {sent} bytes, not the {length} its Content-Length says")

    def write_now(self, data: bytes) -> None:
        if not self.closed:
            self.transport.write(data)

    async def write(self, data) -> None:
        """Writes with flow control: waits while the client's socket buffer is full, up to send_timeout."""
        if self.closed or self.lingering:
            raise ClientGone("the client closed the connection")
        self.transport.write(data)
        if self._write_ready is not None and not self._write_ready.is_set():
            try:
                async with asyncio.timeout(self.limits.send_timeout):
                    await self._write_ready.wait()
            except TimeoutError:
                self.server.stats("rejected", "send_timeout")
                if self.current is not None:
                    self.current.stopped_reading = True
                self.abort()
                raise SendTimeout(f"the client read nothing for {self.limits.send_timeout:g} s") from None
            if self.closed:
                raise ClientGone("the client closed the connection")

    # -- flow control, timers, closing --------------------------------------------------------------

    def pause_reading(self) -> None:
        if self._reading and not self.closed:
            self._reading = False
            self.transport.pause_reading()

    def want_data(self) -> None:
        if not self._reading and not self.closed and not self._input_ended:
            self._reading = True
            self.transport.resume_reading()

    def _arm(self, seconds: float, callback) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _on_header_timeout(self) -> None:
        if self._in_head and self._head_bytes:
            self.server.stats("rejected", "header_timeout")
            self._reject(ApiError(408, "request_timeout", f"the request headers did not arrive within "
                                  f"{self.limits.header_timeout:g} s"))
        else:
            self.server.stats("rejected", "idle")
            self.close()

    def _too_large_head(self) -> None:
        self.server.stats("rejected", "request_header_fields_too_large")
        self._reject(ApiError(431, "request_header_fields_too_large",
                              f"the request headers exceed {self.limits.max_header_bytes} bytes"))

    def _reject(self, error: ApiError) -> None:
        """Answers a request that cannot be handled (parse errors, limits) and closes the connection. Complete
        requests pipelined before it are answered first, in order; the malformed one gets only this answer."""
        if self.closed or self.lingering or self._input_ended:
            return  # already answered, or about to be
        broken, self.incoming = self.incoming, None
        if broken is not None:
            broken._lose()  # its body will never be complete
            if broken is not self.current and broken in self.queue:
                self.queue.remove(broken)
        if self.queue:
            self._input_ended = True
            self.pause_reading()
            if all(request.keep_alive for request in self.queue if request is not broken):
                self._deferred_reject = error  # written by _serve once the queue is answered
            # else a request asked to close the connection: what follows it is owed no answer
            return
        self._write_reject(error)

    def _write_reject(self, error: ApiError) -> None:
        request_id = uuid.uuid4().hex[:12]  # the request's own id cannot be trusted before its head is whole
        body = error.json_bytes(request_id)
        log.info("%s -> %d %s (request id %s)", self.peer, error.status, error.code, request_id)
        head = (f"HTTP/1.1 {error.status} {_reason(error.status)}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nX-Request-Id: {request_id}\r\nConnection: close\r\n").encode()
        extra = "".join(f"{name}: {value}\r\n" for name, value in error.headers().items()).encode()
        self.transport.write(head + extra + b"\r\n" + body)
        self._linger()

    def _linger(self) -> None:
        """Ends the connection without losing the answer: closing at once with unread input makes the kernel
        reset the connection, and a client still sending (a 20 MB header, a body) would never read the
        answer. So: half-close, drop whatever still arrives, close after LINGER_SECONDS or at the client's end."""
        self.lingering = True
        self._disarm()
        self.want_data()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_SECONDS, self.close)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._disarm()
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._disarm()
        self.transport.abort()

    @property
    def busy(self) -> bool:
        return bool(self.queue) or self.incoming is not None


class HttpServer:
    """Listens on `host:port` (port 0 picks one; `port` says which) and serves `handler` on the loop."""

    def __init__(self, handler: Handler | None, loop: asyncio.AbstractEventLoop, limits: HttpLimits | None = None,
                 stats: Callable[[str, object], None] | None = None) -> None:
        self.handler = handler
        self.loop = loop
        self.limits = limits or HttpLimits()
        self.stats = stats or (lambda what, value: None)
        self.connections: set[Connection] = set()
        self.stopping = False
        self._server: asyncio.AbstractServer | None = None
        self.port = 0

    def longest_idle(self, besides: Connection) -> Connection | None:
        """The open connection idle the longest (no request in progress), other than `besides`."""
        idle = [c for c in self.connections if c is not besides and c.idle_since is not None and not c.closed
                and not c.busy]
        return min(idle, key=lambda c: c.idle_since) if idle else None

    async def listen(self, host: str, port: int, backlog: int = 1024, ssl: ssl_module.SSLContext | None = None) -> int:
        # With TLS, a connection reaches Connection (and its header timeout) only once its handshake is done:
        # the handshake gets the header timeout of its own, and a peer that ignores close_notify a short wait.
        tls = {"ssl": ssl, "ssl_handshake_timeout": self.limits.header_timeout, "ssl_shutdown_timeout": 5.0} if ssl \
            else {}
        self._server = await self.loop.create_server(lambda: Connection(self), host or None, port, backlog=backlog,
                                                     reuse_address=True, **tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def shutdown(self, grace: float) -> None:
        """Stops accepting, closes idle connections, lets requests in progress finish within `grace`."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        deadline = self.loop.time() + grace
        while True:
            for conn in list(self.connections):
                if not conn.busy:
                    conn.close()
            if not self.connections or self.loop.time() >= deadline:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.abort()


_REASONS: dict[int, str] = {}


def _reason(status: int) -> str:
    if not _REASONS:
        from http import HTTPStatus

        _REASONS.update({s.value: s.phrase for s in HTTPStatus})
        _REASONS[499] = "Client Closed Request"
    return _REASONS.get(status, "Unknown")


_date_cache: list = [0, b""]


def _http_date() -> bytes:
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache[:] = [now, email.utils.formatdate(now, usegmt=True).encode()]
    return _date_cache[1]
