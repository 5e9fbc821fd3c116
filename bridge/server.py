"""Runs the bridge: its application on its HTTP server, on one event loop (uvloop when installed).

`create_server(config)` runs it on a loop of its own thread, bound (port 0 picks a free one) and
reporting its port: for tests and embedding. `serve(config)` runs it on the main thread until SIGTERM or
SIGINT, then lets requests in progress finish within the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

from bridge.app import BridgeApp, create_app
from bridge.config import BridgeConfig
from bridge.httpserver import HttpServer
from bridge.metrics import BridgeMetrics
from contract import tracing

log = logging.getLogger("bridge")


class PortInUse(OSError):
    pass


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is pinned; plain asyncio works, a little slower
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def start(config: BridgeConfig, metrics: BridgeMetrics | None = None) -> tuple[BridgeApp, HttpServer]:
    metrics = metrics or BridgeMetrics()
    server = HttpServer(None, asyncio.get_running_loop(), config.http, metrics.http_stats)
    host, _, port = config.listen.rpartition(":")
    # The port first: a bridge that cannot have it says so in one line, before its worker channels start
    # (and log). No request is handled before the app is set below: nothing is awaited in between.
    try:
        await server.listen(host.strip("[]") or "0.0.0.0", int(port), ssl=config.security.http_ssl_context())
    except OSError as error:
        raise PortInUse(f"cannot listen on {config.listen}: {error.strerror or error}") from None
    app = server.handler = create_app(config, metrics)
    return app, server


async def stop(app: BridgeApp, server: HttpServer, grace: float) -> None:
    await server.shutdown(grace)
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
        app, server = await start(config)
        # SIGHUP re-reads the token file (rotation); without tokens it is logged and ignored, never fatal.
        loop.add_signal_handler(signal.SIGHUP, app.auth.tokens.reload if app.auth else lambda: log.info(
            "SIGHUP: no bearer tokens configured, nothing to reload"))
        log.info("bridge listening on %s (port %d, %s), routes %s", config.listen, server.port,
                 "HTTPS" if config.security.tls_cert else "HTTP",
                 ", ".join(f"{r} -> {t}" for r, t in config.routes.items()))
        await stopping.wait()
        log.info("bridge stopping: finishing in-flight requests (up to %.0f s)", config.grace_seconds)
        await stop(app, server, config.grace_seconds)
        log.info("bridge stopped")

    try:
        loop.run_until_complete(main())
    finally:
        loop.close()
        tracing.shutdown()  # exports the spans still buffered before the process exits
    return 0
