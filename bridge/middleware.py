"""The protections granian (bridge/front.py) does not give, as ASGI middleware: each small, one job, and
tested on its own (tests/test_middleware.py) and against the real server (tests/test_http_front.py).

bridge/server.py wraps the application in all of them, outermost first (with those of bridge/clients.py:
the real client behind trusted proxies first, the per-client limits after Conformance):

- `BodyEnd`: a body framed by Content-Length ends on its last piece, not on granian's empty message after it.
- `UploadRate`: a client must send its body at `min_upload_rate` bytes/s or faster, measured over windows
  of `body_timeout` seconds, counting only time spent *waiting* for the client (a slow worker never makes
  a client time out). A client that stalls is stopped after one window; one that trickles after a fast
  start at the end of the first window whose bytes fall short (at most two windows). `receive()` then
  raises BodyTimeout, which the application answers 408.
- `EarlyAnswer`: an answer that starts before the request body has arrived (413, 415, 401, 503, ...) says
  `Connection: close`, and the rest of the body is then read and dropped (up to `drain_limit` bytes, at the
  upload rate above) so that a client still sending can read it: closing with unread input makes the
  kernel reset the connection, and the answer is lost. A client that asked `Expect: 100-continue` and had
  sent nothing gets `EXPECT_GRACE_SECONDS` to start its body, since it need not send it at all.
- `Conformance`: what RFC 9112 requires of a server and hyper leaves to the application: exactly one Host
  (HTTP/1.1), a request target that is a path, no transfer coding but chunked (501), no Transfer-Encoding
  in HTTP/1.0; and our limits on header size and count (431) and target length (414). A request asking to
  upgrade (h2c, websocket) is answered as HTTP/1.1 with `Connection: close`: no upgrade is offered, and
  the connection ends rather than waiting for a protocol switch that will not come.
- `SendTimeout`: an answer the client leaves unread for `send_timeout` seconds: `send()` raises
  SendTimeout; the application stops producing it (the worker call is cancelled) and the connection
  itself is aborted by the kernel (TCP_USER_TIMEOUT, set on the listening socket by bridge/front.py).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from bridge import errors
from bridge.config import HttpLimits
from bridge.http import (
    ASGIApp,
    BodyTimeout,
    ClientGone,
    Message,
    Receive,
    Scope,
    Send,
    SendTimeout,
    client_address,
    declares_body,
    framed_length,
    header_value,
    request_path,
)

log = logging.getLogger("bridge.http")

OnReject = Callable[[str], None]  # called with the reason of every request the middleware ends itself
HTTP_1_0 = ("1.0", "1")  # granian says "1" for HTTP/1.0
EXPECT_GRACE_SECONDS = 2.0


class LastResort:
    """The outermost layer. An exception that escapes everything else is logged here, in our format and with
    the request's client, and answered 500 in JSON when no answer has started (granian would log it as its
    own and answer in plain text). And once the request is over, the layers inside lose their hold on
    granian's `receive` and `send`: granian keeps reading a request's body (and so its connection open,
    `Connection: close` or not) for as long as anything references them, and a reference cycle left by a
    request (an exception's traceback, say) would otherwise keep a connection open until the garbage
    collector happened to run."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = False
        channel: list = [receive, send]

        async def revocable_receive() -> Message:
            if channel[0] is None:
                return {"type": "http.disconnect"}
            return await channel[0]()

        async def watched_send(message: Message) -> None:
            nonlocal started
            if channel[1] is None:
                raise ClientGone("the request is over")
            started = started or message["type"] == "http.response.start"
            await channel[1](message)

        try:
            await self.app(scope, revocable_receive, watched_send)
        except Exception:
            log.exception("the bridge's HTTP layer failed on a request from %s", client_address(scope))
            if not started and scope["type"] == "http":
                await send_rejection(scope, send, errors.error("bridge_error", "the bridge failed; see its log"))
        finally:
            channel[:] = [None, None]


class BodyEnd:
    """Says a body framed by Content-Length has ended on its last piece. granian says `more_body: True` of
    every piece it reads and ends a body with an empty message of its own; hyper gives the application
    exactly Content-Length bytes as the body, so once that many have come the body is over: its last piece
    says `more_body: False`, and every layer inside knows it then (the request's reader, which sends the
    study's last messages with its end; the upload rate, the early answer, the per-client uploads), not one
    `receive()` (a round trip to granian's thread) later. That call is still made, by the disconnect watcher
    (bridge/app.py): granian reports a disconnect only after its empty message (docs/decisions.md)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        length = framed_length(scope) if scope["type"] == "http" else None
        if not length:
            return await self.app(scope, receive, send)
        received = 0

        async def receive_to_length() -> Message:
            nonlocal received
            message = await receive()
            if message.get("more_body", False):
                received += len(message.get("body", b""))
                if received >= length:
                    message["more_body"] = False
            return message

        await self.app(scope, receive_to_length, send)


class UploadRate:
    def __init__(self, app: ASGIApp, min_rate: int, window: float) -> None:
        self.app = app
        self.min_rate = min_rate
        self.window = window

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if not declares_body(scope):
            return await self.app(scope, receive, send)
        limited = RateLimitedReceive(receive, self.min_rate, self.window)
        try:
            await self.app(scope, limited, send)
        finally:
            limited.abandon()


class RateLimitedReceive:
    """`receive` that raises BodyTimeout when the client's bytes fall short of the rate in a window of
    waiting. A receive still pending when a window ends is kept, not cancelled: it may deliver the bytes
    that keep the client within the rate."""

    def __init__(self, receive: Receive, min_rate: int, window: float) -> None:
        self._receive = receive
        self.min_rate = min_rate
        self.window = window
        self.waited = 0.0  # seconds spent waiting for body bytes
        self.received = 0
        self._mark_waited = 0.0  # start of the current window, in waited seconds
        self._mark_received = 0
        self._pending: asyncio.Future | None = None
        self.complete = False  # the body has ended: what follows (a disconnect) is not timed

    async def __call__(self) -> Message:
        if self.complete:
            return await self._receive()
        loop = asyncio.get_running_loop()
        while True:
            window_left = self.window - (self.waited - self._mark_waited)
            if window_left <= 0:
                if self.received - self._mark_received < self.min_rate * self.window:
                    self.abandon()
                    raise BodyTimeout(f"the request body arrived slower than {self.min_rate} bytes/s over "
                                      f"{self.window:g} s")
                self._mark_waited, self._mark_received = self.waited, self.received
                continue
            if self._pending is None:
                # Only now, when it will be waited for: granian starts reading at the call, and a read that is
                # never awaited cannot be cancelled, holding the connection open for a body that never comes.
                pending = self._receive()
                self._pending = pending if asyncio.isfuture(pending) else asyncio.ensure_future(pending)
            if not self._pending.done():  # else the piece is already here: nothing to wait for, or to time
                started = loop.time()
                try:
                    # A caller cancelled here (its request given up) leaves the receive pending, not cancelled:
                    # the next call (the drain after an early answer) takes its message, so no piece is lost.
                    await asyncio.wait((self._pending,), timeout=window_left)
                finally:
                    self.waited += loop.time() - started
            if self._pending.done():
                message, self._pending = self._pending.result(), None
                self.received += len(message.get("body", b""))
                self.complete = message["type"] != "http.request" or not message.get("more_body", False)
                return message

    def abandon(self) -> None:
        """Cancels a read still pending (granian then stops reading the body, and the connection can end)."""
        if self._pending is not None:
            self._pending.cancel()
            self._pending = None


class EarlyAnswer:
    def __init__(self, app: ASGIApp, drain_limit: int) -> None:
        self.app = app
        self.drain_limit = drain_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not declares_body(scope):
            return await self.app(scope, receive, send)
        state = {"complete": False, "gone": False, "received": 0}

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request":
                state["gone"] = True
            else:
                state["received"] += len(message.get("body", b""))
                state["complete"] = not message.get("more_body", False)
            return message

        async def marked_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not state["complete"]:
                message = with_connection_close(message)
            await send(message)

        await self.app(scope, tracked_receive, marked_send)
        if not state["complete"] and not state["gone"]:
            # A client that asked `Expect: 100-continue` and was answered before sending anything need not
            # send its body at all (RFC 9110, 10.1.1): it gets a moment to start (curl sends anyway after
            # 1 s), not a whole upload-rate window of the connection held open for bytes that never come.
            waiting = state["received"] == 0 and "100-continue" in header_value(scope, b"expect").lower()
            await self._drain(tracked_receive, state, EXPECT_GRACE_SECONDS if waiting else None)

    async def _drain(self, receive: Receive, state: dict, first_piece_within: float | None) -> None:
        dropped = 0
        try:
            if first_piece_within is not None:
                dropped += len((await asyncio.wait_for(receive(), first_piece_within)).get("body", b""))
            while not state["complete"] and not state["gone"] and dropped <= self.drain_limit:
                dropped += len((await receive()).get("body", b""))
        except (BodyTimeout, TimeoutError):
            pass  # a client too slow to finish its body, or that never starts it, gets no more of our time


def with_connection_close(message: Message) -> Message:
    headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"connection"]
    return {**message, "headers": [*headers, (b"connection", b"close")]}


class Conformance:
    def __init__(self, app: ASGIApp, limits: HttpLimits, on_reject: OnReject) -> None:
        self.app = app
        self.limits = limits
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = head_problem(scope, self.limits)
        if problem is not None:
            reason, error = problem
            self.on_reject(reason)
            return await send_rejection(scope, send, error)
        if any(key == b"upgrade" for key, _ in scope["headers"]):
            send = _closing(send)
        await self.app(scope, receive, send)


def _closing(send: Send) -> Send:
    async def closing_send(message: Message) -> None:
        await send(with_connection_close(message) if message["type"] == "http.response.start" else message)

    return closing_send


def head_problem(scope: Scope, limits: HttpLimits) -> tuple[str, errors.ApiError] | None:
    """(metric reason, answer) for a request head the bridge refuses, or None. Pure: scope in, verdict out."""
    headers = scope["headers"]
    path = request_path(scope)
    target_bytes = len(path) + len(scope.get("query_string", b""))
    if len(headers) > limits.max_headers or \
            sum(len(k) + len(v) + 4 for k, v in headers) + target_bytes + 32 > limits.max_header_bytes:
        return "request_header_fields_too_large", errors.error(
            "request_header_fields_too_large",
            f"the request headers exceed {limits.max_header_bytes} bytes or {limits.max_headers} fields")
    if target_bytes > limits.max_url_bytes:
        return "uri_too_long", errors.error("uri_too_long",
                                            f"the request target exceeds {limits.max_url_bytes} bytes")
    if not path.startswith("/"):
        return "bad_request", errors.bad_request("malformed HTTP request: the request target is not a path")
    http_1_0 = scope.get("http_version") in HTTP_1_0
    hosts = [value for key, value in headers if key == b"host"]
    # granian adds `host: ""` to a request that has none, so a missing Host and an empty one look alike here;
    # both are refused (an empty Host is for target URIs without an authority, which an HTTP server has none of).
    if len(hosts) > 1 or (not http_1_0 and (not hosts or not hosts[0].strip())):
        return "bad_request", errors.bad_request(
            "malformed HTTP request: an HTTP/1.1 request carries exactly one Host header, not empty (RFC 9112, 3.2)")
    codings = [value.decode("latin-1") for key, value in headers if key == b"transfer-encoding"]
    if codings:
        if http_1_0:
            return "bad_request", errors.bad_request(
                "malformed HTTP request: Transfer-Encoding is not defined for HTTP/1.0 (RFC 9112, 6.1)")
        names = [c.strip().lower() for value in codings for c in value.split(",") if c.strip()]
        if names != ["chunked"]:
            return "not_implemented", errors.error(
                "not_implemented", f"Transfer-Encoding {', '.join(codings)[:80]} is not supported: send the body "
                                   "as it is, with Content-Length or Transfer-Encoding: chunked")
    return None


async def send_rejection(scope: Scope, send: Send, error: errors.ApiError) -> None:
    """The answer to a request refused before the application saw it; the connection then closes."""
    request_id = uuid.uuid4().hex[:12]  # the request's own id is not trusted from a head we refused
    log.info("%s -> %d %s (request id %s)", client_address(scope), error.status, error.code, request_id)
    body = error.json_bytes(request_id)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"x-request-id", request_id.encode()), (b"connection", b"close"),
               *((k.lower().encode(), v.encode("latin-1")) for k, v in error.headers().items())]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SendDeadline:
    def __init__(self, app: ASGIApp, seconds: float, on_reject: OnReject) -> None:
        self.app = app
        self.seconds = seconds
        self.on_reject = on_reject

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def timed_send(message: Message) -> None:
            # A timeout around the send itself, not a Task per send: an answer goes out in hundreds of pieces.
            try:
                async with asyncio.timeout(self.seconds):
                    await send(message)
            except TimeoutError:
                self.on_reject("send_timeout")
                raise SendTimeout(f"the client read nothing for {self.seconds:g} s") from None

        await self.app(scope, receive, timed_send)
