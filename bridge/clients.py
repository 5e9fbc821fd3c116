"""Who a client is, and what one client may hold: ASGI middleware (the others are in bridge/middleware.py).

- `ForwardedFor`: behind a reverse proxy every connection comes from the proxy; when the peer is one of
  `--trusted-proxies`, the client is the right-most address of X-Forwarded-For that is not itself a
  trusted proxy (the left part of that header is whatever the client wrote, so it is never believed).
  The scope's `client` is replaced, so that logs, limits and traces name the real client.
- `ClientLimits`: one address may have at most `max_uploads` request bodies arriving at once (a crowd of
  slow uploads from one address is refused with 429, not given every place of the workers), and at most
  `auth_failures` refused tokens a minute (401s to requests that presented one); past that it gets 429
  with Retry-After until its oldest failure is a minute old: guessing tokens stays slow, and a client that
  holds a valid token is never affected by another's failures. Health probes are never refused for it.
  Both tables are bounded (`MAX_TRACKED` addresses, oldest forgotten).
"""

from __future__ import annotations

import collections
import ipaddress
import math
import time
from collections.abc import Callable, Iterable

from bridge import errors
from bridge.auth import OPEN_PATHS
from bridge.config import Network
from bridge.http import ASGIApp, Message, Receive, Scope, Send, declares_body, header_value, request_path
from bridge.middleware import OnReject, send_rejection

MAX_TRACKED = 10_000  # addresses remembered by each table
AUTH_WINDOW_SECONDS = 60.0


def _trusted(address: str, networks: Iterable[Network]) -> bool:
    ip = hop_address(address)
    return ip is not None and any(ip in network for network in networks)


def hop_address(hop: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of one X-Forwarded-For hop, which proxies write as `ip`, `ip:port`, `[ipv6]` or
    `[ipv6]:port`; None when it is none of these (`unknown`, a name, an obfuscated token)."""
    hop = hop.strip()
    if hop.startswith("["):
        hop = hop[1:hop.index("]")] if "]" in hop else ""
    elif hop.count(":") == 1:
        hop = hop.split(":")[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def forwarded_client(peer: str, forwarded_for: str, trusted: tuple[Network, ...]) -> str:
    """The client's address: `peer`, or, when `peer` is a trusted proxy, the right-most address of
    X-Forwarded-For that is not trusted (the first one a trusted proxy saw)."""
    if not trusted or not _trusted(peer, trusted):
        return peer
    for hop in reversed([part for part in forwarded_for.split(",") if part.strip()]):
        if not _trusted(hop, trusted):
            address = hop_address(hop)
            # a hop that is not an address: what lies left of it is not to be believed either
            return str(address) if address is not None else peer
    return peer


class ForwardedFor:
    def __init__(self, app: ASGIApp, trusted: tuple[Network, ...]) -> None:
        self.app = app
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.trusted and scope.get("client"):
            peer, port = scope["client"][0], scope["client"][1]
            # Several X-Forwarded-For lines are one list, in order (RFC 9110, 5.3): each proxy may add its own.
            forwarded_for = ", ".join(value.decode("latin-1") for key, value in scope["headers"]
                                      if key == b"x-forwarded-for")
            client = forwarded_client(peer, forwarded_for, self.trusted)
            if client != peer:
                scope = {**scope, "client": (client, port)}
        await self.app(scope, receive, send)


class _Bounded(collections.OrderedDict):
    """An OrderedDict that forgets its oldest keys beyond MAX_TRACKED."""

    def touch(self, key, default_factory):
        if key in self:
            self.move_to_end(key)
        else:
            self[key] = default_factory()
            while len(self) > MAX_TRACKED:
                self.popitem(last=False)
        return self[key]


class ClientLimits:
    def __init__(self, app: ASGIApp, max_uploads: int, auth_failures: int, on_reject: OnReject,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.max_uploads = max_uploads
        self.auth_failures = auth_failures
        self.on_reject = on_reject
        self.clock = clock
        self.uploading = _Bounded()  # address -> bodies arriving now
        self.failures = _Bounded()  # address -> deque of the times of its refused tokens, within the window

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope.get("client"):
            return await self.app(scope, receive, send)
        address = scope["client"][0]
        refusal = self._refusal(address, uploading=declares_body(scope), probe=request_path(scope) in OPEN_PATHS)
        if refusal is not None:
            self.on_reject(refusal[0])
            return await send_rejection(scope, send, refusal[1])
        if header_value(scope, b"authorization"):  # a request without a token is not a guess
            send = self._counting_failures(address, send)
        if not declares_body(scope):
            return await self.app(scope, receive, send)
        self.uploading[address] = self.uploading.get(address, 0) + 1
        state = {"arriving": True}

        def arrived() -> None:
            if state["arriving"]:
                state["arriving"] = False
                left = self.uploading.get(address, 1) - 1
                if left > 0:
                    self.uploading[address] = left
                else:
                    self.uploading.pop(address, None)

        async def tracked_receive() -> Message:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                arrived()
            return message

        try:
            await self.app(scope, tracked_receive, send)
        finally:
            arrived()

    def _refusal(self, address: str, uploading: bool, probe: bool) -> tuple[str, errors.ApiError] | None:
        failures = None if probe else self.failures.get(address)  # probes stay open: no pod restarted for it
        if failures:
            now = self.clock()
            while failures and now - failures[0] >= AUTH_WINDOW_SECONDS:
                failures.popleft()
            if len(failures) >= self.auth_failures:
                wait = max(1, math.ceil(AUTH_WINDOW_SECONDS - (now - failures[0])))
                error = errors.error("too_many_requests", f"{len(failures)} refused tokens from {address} in the "
                                     f"last minute; retry in {wait} s")
                error.retry_after = wait
                return "auth_failures", error
        if uploading and self.uploading.get(address, 0) >= self.max_uploads:
            return "uploads_per_client", errors.error(
                "too_many_requests", f"{address} is already sending {self.max_uploads} request bodies at once "
                                     "(--max-uploads-per-client); retry when one has arrived")
        return None

    def _counting_failures(self, address: str, send: Send) -> Send:
        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                failures = self.failures.touch(address, lambda: collections.deque(maxlen=self.auth_failures))
                failures.append(self.clock())
            await send(message)

        return counting_send
