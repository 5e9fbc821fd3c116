"""What the bridge's application sees of HTTP: a request read through ASGI, and the answer it gives.

The HTTP/1.1 server itself is granian (bridge/front.py); the protections it does not have are ASGI
middleware (bridge/middleware.py). This module only adapts one ASGI request to what the routes need:
method, path, headers, and a body read piece by piece with `await read()`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

Scope = dict
Message = dict
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ClientGone(Exception):
    """The client closed the connection (or it broke)."""


class BodyTimeout(Exception):
    """The client sent its body too slowly (408)."""


class BodyCutShort(ClientGone):
    """The request body stopped before its end: the client closed its side of the connection early, or the
    chunked framing broke (granian reports both as a disconnect). The client may still be reading: it is
    answered 400, not left to guess."""


class SendTimeout(ClientGone):
    """The client did not read the answer for `send_timeout` seconds."""


def header_value(scope: Scope, name: bytes) -> str:
    """The first value of header `name` (lower-case bytes), latin-1 decoded; "" when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return ""


def client_address(scope: Scope) -> str:
    client = scope.get("client")
    return f"{client[0]}:{client[1]}" if client else ""


def request_path(scope: Scope) -> str:
    """The path as the client sent it (percent escapes kept): routes match it exactly and logs show it."""
    raw = scope.get("raw_path")
    return raw.decode("latin-1") if raw is not None else scope["path"]


def declares_body(scope: Scope) -> bool:
    """Whether the request announces a body (chunked, or a Content-Length above 0)."""
    length = framed_length(scope)
    return bool(header_value(scope, b"transfer-encoding")) or (length is not None and length > 0)


def framed_length(scope: Scope) -> int | None:
    """The body's length when its Content-Length frames it (no Transfer-Encoding): hyper then hands the
    application exactly that many bytes as the body (those after it are the next request's; fewer, and the
    client has gone). None for a chunked body, or a Content-Length that is not a plain number."""
    if header_value(scope, b"transfer-encoding"):
        return None
    length = header_value(scope, b"content-length")
    return int(length) if length.isdigit() else None


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


class Request:
    """One request: method, path, headers (lower-case names, latin-1 values), and its body read with
    `await read()`, which raises BodyCutShort when the body stops before its end (and BodyTimeout, from the
    upload-rate middleware, when it sends too slowly)."""

    def __init__(self, scope: Scope, receive: Receive) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        self.path = request_path(scope)
        self.query = scope.get("query_string", b"").decode("latin-1")
        self.version: str = scope.get("http_version", "1.1")
        self.headers = [(key.decode("latin-1"), value.decode("latin-1")) for key, value in scope["headers"]]
        self.client = client_address(scope)
        self.started = time.monotonic()
        self.received = 0  # body bytes received so far
        self.complete = not declares_body(scope)  # the whole body has arrived
        self.gone = False
        self.stopped_reading = False  # its answer was cut off: the client read nothing for the send timeout
        self.on_complete: Callable[[], None] | None = None  # called once the whole body has arrived

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
        """The next piece of the body; b"" at its end."""
        while not self.complete:
            if self.gone:
                raise ClientGone("the client closed the connection")
            message = await self._receive()
            if message["type"] != "http.request":
                self.gone = True
                raise BodyCutShort(f"the request body broke off after {self.received} bytes, before its end: the "
                                   "connection was closed early or its chunked framing is broken")
            chunk = message.get("body", b"")
            self.received += len(chunk)
            if not message.get("more_body", False):
                self.complete = True
                if self.on_complete is not None:
                    self.on_complete()
            if chunk:
                return chunk
        return b""
