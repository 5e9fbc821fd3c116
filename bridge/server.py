"""Runs the bridge: its ASGI application, wrapped in bridge/middleware.py, on granian (bridge/front.py), on
one event loop (uvloop) that also holds the gRPC channels to the workers.

`create_server(config)` runs it on a loop of its own thread, bound (port 0 picks a free one) and
reporting its port: for tests and embedding. `serve(config)` runs it on the main thread until SIGTERM or
SIGINT, then lets requests in progress finish within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import uvloop

from bridge.app import BridgeApp, create_app
from bridge.clients import ClientLimits, ForwardedFor
from bridge.config import BridgeConfig, HttpLimits, parse_networks
from bridge.front import HttpFront, PortInUse
from bridge.http import ASGIApp
from bridge.metrics import BridgeMetrics
from bridge.middleware import BodyEnd, Conformance, EarlyAnswer, LastResort, OnReject, SendDeadline, UploadRate
from service_runtime import tracing

log = logging.getLogger("bridge")

__all__ = ["BridgeServer", "PortInUse", "create_server", "serve"]


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop()


def protect(app: ASGIApp, limits: HttpLimits, on_reject: OnReject) -> ASGIApp:
    """The application inside the middleware of bridge/middleware.py and bridge/clients.py, outermost first:
    the last resort for exceptions, a body's end at its Content-Length, the real client (trusted proxies), the
    upload rate, early answers, RFC checks, per-client limits, the send timeout."""
    inner = SendDeadline(app, limits.send_timeout, on_reject)
    inner = ClientLimits(inner, limits.max_uploads_per_client, limits.auth_failures_per_minute, on_reject)
    inner = Conformance(inner, limits, on_reject)
    inner = UploadRate(EarlyAnswer(inner, limits.drain_limit), limits.min_upload_rate, limits.body_timeout)
    return LastResort(BodyEnd(ForwardedFor(inner, parse_networks(limits.trusted_proxies))))


async def start(config: BridgeConfig, metrics: BridgeMetrics | None = None) -> tuple[BridgeApp, HttpFront]:
    metrics = metrics or BridgeMetrics()
    host, _, port = config.listen.rpartition(":")
    security = config.security
    security.http_ssl_context()  # the certificate and key are checked here, with their flags named
    front = HttpFront(None, config.http, security.tls_cert, security.tls_key)
    # The port first: a bridge that cannot have it says so in one line, before its worker channels start
    # (and log).
    front.listen(host.strip("[]") or "0.0.0.0", int(port))
    metrics.watch_connections(front.port)
    app = create_app(config, metrics)
    front.app = protect(app, config.http, metrics.rejected_request)
    await front.start()
    return app, front


async def stop(app: BridgeApp, front: HttpFront, grace: float) -> None:
    await front.stop(grace)
    await app.close()


class BridgeServer:
    """The bridge on a loop of its own thread: `port`, `app`, and `stop()`."""

    def __init__(self, config: BridgeConfig, metrics: BridgeMetrics | None = None) -> None:
        self.config = config
        self.loop = new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), name="bridge-loop", daemon=True)
        self.thread.start()
        ready.wait()
        try:
            self.app, self.http = asyncio.run_coroutine_threadsafe(start(config, metrics), self.loop).result()
        except BaseException:
            self.loop.call_soon_threadsafe(self.loop.stop)
            raise
        self.port = self.http.port

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.call_soon(ready.set)
        self.loop.run_forever()

    def start(self) -> BridgeServer:
        return self  # already serving: kept so that callers read like the worker's create_server/start

    def stop(self, grace: float | None = None) -> None:
        grace = self.config.grace_seconds if grace is None else grace
        try:
            asyncio.run_coroutine_threadsafe(stop(self.app, self.http, grace), self.loop).result(grace + 10)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


def create_server(config: BridgeConfig, metrics: BridgeMetrics | None = None) -> BridgeServer:
    return BridgeServer(config, metrics)


def serve(config: BridgeConfig) -> int:
    try:
        tracing.configure("arterys-bridge")  # on only when the OTEL_* variables say so
    except tracing.TracingConfigError as error:
        log.error("%s", error)
        return 2
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    stopping = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)

    async def main() -> None:
        app, front = await start(config)
        # SIGHUP re-reads the token file (rotation); without tokens it is logged and ignored, never fatal.
        loop.add_signal_handler(signal.SIGHUP, app.auth.tokens.reload if app.auth else lambda: log.info(
            "SIGHUP: no bearer tokens configured, nothing to reload"))
        log.info("bridge listening on %s (port %d, %s), routes %s", config.listen, front.port,
                 "HTTPS" if config.security.tls_cert else "HTTP",
                 ", ".join(f"{r} -> {t}" for r, t in config.routes.items()))
        await stopping.wait()
        log.info("bridge stopping: finishing in-flight requests (up to %.0f s)", config.grace_seconds)
        await stop(app, front, config.grace_seconds)
        log.info("bridge stopped")

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        tracing.shutdown()  # exports the spans still buffered before the process exits
    return 0
