"""Runs the bridge on cheroot, a production multi-threaded WSGI server that streams request bodies
(Content-Length and chunked) to the application as they arrive, instead of buffering them first.

`create_server` binds (port 0 picks a free port) and reports the port; `serve` blocks until SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading

from cheroot import wsgi

from bridge.app import create_app
from bridge.config import BridgeConfig

log = logging.getLogger("bridge")


class SocketGateway(wsgi.Gateway_10):
    """cheroot's WSGI gateway, also exposing the client socket so that a hang-up during a long
    inference cancels the worker's call (bridge.disconnect)."""

    def get_environ(self):
        environ = super().get_environ()
        environ["bridge.client_socket"] = self.req.conn.socket
        return environ


class BridgeServer:
    def __init__(self, config: BridgeConfig, app=None) -> None:
        self.app = app or create_app(config)
        host, _, port = config.listen.rpartition(":")
        self.server = wsgi.Server(
            (host or "0.0.0.0", int(port)), self.app, numthreads=config.threads, server_name="arterys-bridge",
            timeout=int(config.socket_timeout_seconds), shutdown_timeout=int(config.grace_seconds),
        )
        self.server.gateway = SocketGateway
        self.server.prepare()  # binds now, so the port is known before serving
        self.port = self.server.bind_addr[1]
        self._thread: threading.Thread | None = None

    def start(self) -> BridgeServer:
        self._thread = threading.Thread(target=self.server.serve, name="http", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.stop()
        for pool in self.app.extensions["bridge_pools"].values():
            pool.close()


def create_server(config: BridgeConfig) -> BridgeServer:
    return BridgeServer(config)


def serve(config: BridgeConfig) -> int:
    server = create_server(config)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    server.start()
    log.info("bridge listening on %s (port %d), routes %s", config.listen, server.port,
             ", ".join(f"{r} -> {t}" for r, t in config.routes.items()))
    stopping.wait()
    log.info("bridge stopping: finishing in-flight requests (up to %.0f s)", config.grace_seconds)
    server.stop()
    log.info("bridge stopped")
    return 0
