"""The bridge's Flask application: `create_app(config)` builds it, errors are mapped once.

Routes: the inference routes of the route table (POST), `/healthcheck` (READY only when the route's
workers have a loaded model), `/ping`, `/healthz`, `/readyz`, `/metrics`.
"""

from __future__ import annotations

import json
import logging
import time
import uuid

from flask import Flask, Response, request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from werkzeug.exceptions import HTTPException

from bridge import errors
from bridge.config import BridgeConfig
from bridge.inference import InferenceRequest
from bridge.metrics import BridgeMetrics
from bridge.workers import WorkerPool
from contract.logs import request_tags, set_tags

log = logging.getLogger("bridge.http")

PING_TEXT = "inference-service is up and accepting connections"
SERVICE_ROUTES = ("/healthcheck", "/ping", "/healthz", "/readyz", "/metrics")


def json_error(error: errors.ApiError) -> Response:
    return Response(json.dumps(error.body()), error.status, error.headers(), mimetype="application/json")


def create_app(config: BridgeConfig, metrics: BridgeMetrics | None = None,
               pools: dict[str, WorkerPool] | None = None) -> Flask:
    metrics = metrics or BridgeMetrics()
    pools = pools or {route: WorkerPool(target, config.health_poll_seconds).start()
                      for route, target in config.routes.items()}
    app = Flask("bridge")
    app.config["BRIDGE"] = config
    app.extensions["bridge_pools"] = pools
    app.extensions["bridge_metrics"] = metrics

    def not_ready_reasons() -> list[str]:
        reasons = []
        for route, pool in pools.items():
            metrics.worker_ready.labels(route).set(1 if pool.ready else 0)
            if not pool.ready:
                reasons.append(f"route {route} ({pool.target}): {pool.last_problem}")
        return reasons

    @app.route("/healthcheck", methods=["GET", "POST"])
    def healthcheck():
        # Always 200: the Arterys app reads the body, and only "READY" means "send requests now".
        reasons = not_ready_reasons()
        return Response("READY" if not reasons else "NOT READY: " + "; ".join(reasons), 200, mimetype="text/plain")

    @app.route("/ping", methods=["GET", "POST"])
    def ping():
        return Response(PING_TEXT, 200, mimetype="text/plain")

    @app.route("/healthz", methods=["GET"])
    def healthz():
        return Response("ok", 200, mimetype="text/plain")

    @app.route("/readyz", methods=["GET"])
    def readyz():
        reasons = not_ready_reasons()
        if reasons:
            return json_error(errors.no_worker("; ".join(reasons)))
        return Response("READY", 200, mimetype="text/plain")

    @app.route("/metrics", methods=["GET"])
    def metrics_view():
        not_ready_reasons()  # refresh bridge_worker_ready
        return Response(generate_latest(metrics.registry), 200, {"Content-Type": CONTENT_TYPE_LATEST})

    def make_inference_view(route: str, pool: WorkerPool):
        def infer():
            metrics.inflight.inc()
            inference = InferenceRequest(request.environ, route, pool, config.limits, metrics.request_bytes.inc)
            try:
                answer = inference.run()
            except BaseException:
                metrics.inflight.dec()
                request.environ["bridge.input_hash"] = inference.input_hash
                raise
            request.environ["bridge.input_hash"] = answer.input_hash
            set_tags(input_hash=answer.input_hash)

            def body():
                try:
                    yield from answer.body
                finally:
                    metrics.inflight.dec()

            return Response(body(), answer.status, answer.headers, direct_passthrough=True)

        infer.__name__ = f"infer_{len(app.view_functions)}"
        return infer

    for route, pool in pools.items():
        app.add_url_rule(route, view_func=make_inference_view(route, pool), methods=["POST"])

    @app.errorhandler(errors.ApiError)
    def api_error(error: errors.ApiError):
        return json_error(error)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        code = (error.name or "error").lower().replace(" ", "_")
        return json_error(errors.ApiError(error.code or 500, code, error.description or error.name))

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unexpected error")
        return json_error(errors.ApiError(500, "bridge_error", f"the bridge failed: {type(error).__name__}: {error}"))

    app.wsgi_app = Instrumented(app.wsgi_app, metrics, set(pools) | set(SERVICE_ROUTES))
    return app


class Instrumented:
    """WSGI middleware: request tags, one log line and the HTTP metrics per request, to the last byte."""

    def __init__(self, app, metrics: BridgeMetrics, routes: set[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def __call__(self, environ, start_response):
        started = time.monotonic()
        path = environ.get("PATH_INFO", "")
        route = path if path in self.routes else "other"
        status_holder = {}

        def recording_start_response(status, headers, exc_info=None):
            status_holder["code"] = status.split(" ", 1)[0]
            return start_response(status, headers, exc_info)

        request_id = environ.get("HTTP_X_REQUEST_ID", "")[:64] or uuid.uuid4().hex[:12]
        environ["bridge.request_id"] = request_id
        with request_tags(request_id=request_id):
            body = self.app(environ, recording_start_response)
        return _CountingBody(body, self, environ, route, status_holder, started)

    def finish(self, environ, route: str, code: str, sent: int, started: float, complete: bool) -> None:
        elapsed = time.monotonic() - started
        self.metrics.requests.labels(route, code).inc()
        self.metrics.duration.labels(route).observe(elapsed)
        if route in ("/healthcheck", "/ping", "/healthz", "/readyz", "/metrics") and code == "200":
            return  # probes every few seconds would drown the log
        with request_tags(input_hash=environ.get("bridge.input_hash", ""), request_id=environ["bridge.request_id"]):
            log.info("%s %s -> %s in %.3f s, %d bytes out%s", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                     code, elapsed, sent, "" if complete else " (broken off)")


class _CountingBody:
    """Wraps the response iterable to count bytes and notice its end (or the client going away)."""

    def __init__(self, body, owner: Instrumented, environ, route, status_holder, started) -> None:
        self.body, self.owner, self.environ = body, owner, environ
        self.route, self.status_holder, self.started = route, status_holder, started
        self.sent = 0
        self.complete = False

    def __iter__(self):
        for chunk in self.body:
            self.sent += len(chunk)
            self.owner.metrics.response_bytes.inc(len(chunk))
            yield chunk
        self.complete = True

    def close(self):
        try:
            if hasattr(self.body, "close"):
                self.body.close()
        finally:
            self.owner.finish(self.environ, self.route, self.status_holder.get("code", "500"), self.sent,
                              self.started, self.complete)
