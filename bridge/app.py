"""The bridge's ASGI application: routes, auth, request ids, errors mapped once, one log line and the
metrics per request.

Routes: the inference routes of the route table (POST), `/healthcheck` (READY only when every route's
workers have a loaded model), `/ping`, `/healthz`, `/readyz`, `/metrics`; HEAD wherever GET is taken.
`create_app` builds it on the running event loop; `bridge.server` serves it on granian, wrapped in the
middleware of bridge/middleware.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bridge import errors
from bridge.auth import Authenticator
from bridge.channel import WorkerChannel
from bridge.config import BridgeConfig
from bridge.http import ClientGone, Message, Receive, Request, Response, Scope, Send, SendTimeout
from bridge.inference import InferenceRequest
from bridge.metrics import BridgeMetrics
from bridge.readiness import Readiness
from bridge.tracing import NO_TRACE, RequestTrace
from contract.limits import CHUNK_BYTES
from service_runtime.logs import clean_request_id, request_tags
from service_runtime.malloc import ReleaseWhenIdle

log = logging.getLogger("bridge.http")

PING_TEXT = "inference-service is up and accepting connections"
SERVICE_ROUTES = ("/healthcheck", "/ping", "/healthz", "/readyz", "/metrics")
# Methods per service route; the inference routes take POST only.
SERVICE_METHODS = {"/healthcheck": ("GET", "HEAD", "POST"), "/ping": ("GET", "HEAD", "POST")}
READ_ONLY_METHODS = ("GET", "HEAD")
ANSWER_PIECE_BYTES = CHUNK_BYTES  # the answer goes to the HTTP server in pieces of at least this much
NAMES_THE_CLIENT = ("401", "429")  # answers whose log line says who was refused (token guessing, floods)


def json_response(error: errors.ApiError, request_id: str) -> Response:
    headers = [("Content-Type", "application/json"), ("X-Request-Id", request_id), *error.headers().items()]
    return Response(error.status, headers, error.json_bytes(request_id))


@dataclass(frozen=True)
class WorkerRoute:
    """What the bridge holds for one inference route: the channel to its worker target, and its readiness."""

    channel: WorkerChannel
    readiness: Readiness

    async def close(self) -> None:
        await self.readiness.close()
        await self.channel.close()


class BridgeApp:
    def __init__(self, config: BridgeConfig, metrics: BridgeMetrics, routes: dict[str, WorkerRoute],
                 auth: Authenticator | None = None) -> None:
        self.config = config
        self.metrics = metrics
        self.routes = routes
        self.auth = auth  # None: no token configured, every route open
        self.in_progress = 0  # requests being handled now
        # What a burst (or an attack) made the bridge allocate goes back to the kernel once nothing is in progress.
        self.release = ReleaseWhenIdle(lambda: self.in_progress)

    async def close(self) -> None:
        self.release.cancel()
        for route in self.routes.values():
            await route.close()

    def not_ready_reasons(self) -> list[str]:
        reasons = []
        for path, route in self.routes.items():
            readiness = route.readiness
            self.metrics.worker_ready.labels(path).set(1 if readiness.ready else 0)
            self.metrics.ready_workers.labels(path).set(readiness.ready_workers)
            if not readiness.ready:
                reasons.append(f"route {path}: {readiness.last_problem}")
        return reasons

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI entry: one request in, its answer out."""
        if scope["type"] != "http":
            return  # no lifespan (the app is built before serving starts) and no websockets
        request = Request(scope, receive)
        self.in_progress += 1
        watcher = DisconnectWatcher(request, receive, asyncio.current_task())
        request.on_complete = watcher.start
        if request.complete:
            watcher.start()
        try:
            response = await self.handle(request)
            await send_response(request, response, send, watcher)
        except ClientGone:
            pass  # the request's end is logged by handle() or by the body's close
        except asyncio.CancelledError:
            if not request.gone:
                raise
            # The watcher cancelled us: the client left; handle() or the body's close logged it.
        finally:
            watcher.stop()
            self.in_progress -= 1
            self.release.ended()

    async def handle(self, request: Request) -> Response:
        route = request.path if request.path in self.routes or request.path in SERVICE_ROUTES else "other"
        request_id = clean_request_id(request.header("x-request-id"))
        # Inference requests only: probes every few seconds would drown the traces.
        trace = RequestTrace.start(request, route, request_id) if request.path in self.routes else NO_TRACE
        record = RequestRecord(request, route, request_id, trace)
        with request_tags(request_id=request_id, trace_id=trace.trace_id):
            input_hash = ""
            try:
                if self.auth is not None:
                    self.auth.check(request)  # before routing: no route, not even a 404, without a token
                if request.path in self.routes:
                    return await self._infer(record)
                if request.path in ("/healthcheck", "/readyz"):
                    # A bridge that has just started answers with its workers' first health check (at most
                    # its 1 s timeout away), never "not checked yet": a probe right after start got that.
                    await asyncio.gather(*(route.readiness.first_check() for route in self.routes.values()))
                response = self._service(request)
            except asyncio.CancelledError:
                self._finish(record, "499", 0, complete=False)
                raise
            except Exception as failure:
                response = json_response(errors.for_failure(failure), request_id)
                input_hash = failure.input_hash if isinstance(failure, errors.WorkerFailed) else ""
            self._finish(record, str(response.status), len(response.body), input_hash)
            return response

    async def _infer(self, record: RequestRecord) -> Response:
        """An inference request: its answer's body reports the request's end when it has streamed."""
        request = record.request
        if request.method != "POST":
            raise errors.MethodNotAllowed(request.path, ("POST",))

        def ended(sent: int, complete: bool, input_hash: str) -> None:
            self.metrics.inflight.dec()
            # Cut off: the client's doing (it stopped reading: 408; it left: 499), or the answer broke (502).
            code = "200" if complete else "408" if request.stopped_reading else "499" if request.gone else "502"
            self._finish(record, code, sent, input_hash, complete)

        self.metrics.inflight.inc()
        try:
            route = self.routes[request.path]
            return await InferenceRequest(request, request.path, route.channel, self.config.limits, record.request_id,
                                          self.metrics, ended, record.trace,
                                          ready_workers=lambda: route.readiness.ready_workers).run()
        except BaseException:
            self.metrics.inflight.dec()
            raise

    def _service(self, request: Request) -> Response:
        path = request.path
        methods = SERVICE_METHODS.get(path, READ_ONLY_METHODS)
        if path not in SERVICE_ROUTES:
            raise errors.error("not_found", f"no route {path[:200]}; inference routes: {', '.join(self.routes)}")
        if request.method not in methods:
            raise errors.MethodNotAllowed(path, methods)
        if path == "/healthcheck":
            # Always 200: the Arterys app reads the body, and only "READY" means "send requests now".
            reasons = self.not_ready_reasons()
            return Response.text(200, "READY" if not reasons else "NOT READY: " + "; ".join(reasons))
        if path == "/ping":
            return Response.text(200, PING_TEXT)
        if path == "/healthz":
            return Response.text(200, "ok")
        if path == "/readyz":
            reasons = self.not_ready_reasons()
            if reasons:
                raise errors.no_worker("; ".join(reasons))
            return Response.text(200, "READY")
        self.not_ready_reasons()  # refresh bridge_worker_ready
        return Response(200, [("Content-Type", CONTENT_TYPE_LATEST)], generate_latest(self.metrics.registry))

    def _finish(self, record: RequestRecord, code: str, sent: int, input_hash: str = "",
                complete: bool = True) -> None:
        """The request's metrics, span and log line, once it has ended."""
        request, route = record.request, record.route
        elapsed = time.monotonic() - request.started
        self.metrics.requests.labels(route, code).inc()
        self.metrics.duration.labels(route).observe(elapsed)
        if route in SERVICE_ROUTES and code == "200":
            return  # probes every few seconds would drown the log
        record.trace.finish(code, request.received, sent, input_hash, complete)
        # Tagged here: an answer that streamed ends after handle() has left its tags' block.
        with request_tags(input_hash=input_hash, request_id=record.request_id, trace_id=record.trace.trace_id):
            log.info("%s %s -> %s in %.3f s, %d bytes in, %d bytes out%s%s", request.method, request.path[:200], code,
                     elapsed, request.received, sent, "" if complete else
                     " (broken off: the client stopped reading)" if request.stopped_reading else " (broken off)",
                     f" from {request.client}" if code in NAMES_THE_CLIENT else "")


@dataclass(frozen=True)
class RequestRecord:
    """What a request's log line, metrics and span say besides its outcome, known once it has started."""

    request: Request
    route: str  # the matched route (metric label), "other" for none
    request_id: str
    trace: RequestTrace


def create_app(config: BridgeConfig, metrics: BridgeMetrics | None = None) -> BridgeApp:
    """Builds the app on the running event loop (its worker channels belong to that loop)."""
    metrics = metrics or BridgeMetrics()
    metrics.start_routes(config.routes, errors.response_codes())
    security = config.security
    routes = {}
    for path, target in config.routes.items():
        channel = WorkerChannel(target, security.worker_credentials(), security.worker_channel_options())
        routes[path] = WorkerRoute(channel, Readiness(channel, config.health_poll_seconds).start())
    return BridgeApp(config, metrics, routes, security.authenticator())


class DisconnectWatcher:
    """Once a request's body has arrived, waits on `receive` for the client to go away and then cancels the
    task handling it, so that a worker call whose answer nobody will read stops at once (ASGI tells the
    application of a disconnect only through `receive`)."""

    def __init__(self, request: Request, receive: Receive, handler: asyncio.Task | None) -> None:
        self.request = request
        self.receive = receive
        self.handler = handler
        self.answered = False  # the last piece of the answer is being sent: nothing left to cancel
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None and self.handler is not None:
            self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        message: Message = await self.receive()
        while message["type"] == "http.request":  # the empty body of a request that declared none
            message = await self.receive()
        if message["type"] == "http.disconnect" and not self.answered:
            self.request.gone = True
            self.handler.cancel()

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()


async def send_response(request: Request, response: Response, send: Send, watcher: DisconnectWatcher) -> None:
    """Sends `response` through ASGI. A streamed body is closed at the end whatever happens (it may hold a
    worker call open); one that breaks off mid-way raises, so that the server ends the connection short of
    its Content-Length, the only honest signal left to the client."""
    body = response.body
    length = len(body) if isinstance(body, (bytes, bytearray)) else response.content_length
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    try:
        # granian keeps the status line and headers until the first body bytes (its send() of them costs no
        # round trip to its thread), so they go out with the first piece below in any case.
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if isinstance(body, (bytes, bytearray)):
            watcher.answered = True
            await send({"type": "http.response.body", "body": bytes(body)})
            return
        await send_streamed(body, length, send, watcher)
    except SendTimeout:
        request.stopped_reading = True
        raise
    finally:
        if hasattr(body, "aclose"):
            await body.aclose()  # at once, not when collected: it may hold a worker call open


async def send_streamed(body: AsyncIterator[bytes], length: int | None, send: Send,
                        watcher: DisconnectWatcher) -> None:
    """The pieces of a streamed body, gathered into sends of at least ANSWER_PIECE_BYTES: every send() costs
    a call into the server, whatever its size, and small pieces (a part's head, a small mask) are many.

    The first piece (the answer's JSON) waits for the first such send, so that a small answer goes out in a
    single one. Should the body break off before that send, the first piece goes out alone before the
    break is raised: the server sends the status line only with the first body bytes, and an answer that
    breaks off must be a 200 cut short, never a whole answer of the server's own. The client then sees
    what it saw when the first piece went at once: the status line, the first piece, each full send."""
    sent, ended = 0, False
    pieces: list = []
    gathered = 0  # bytes in `pieces`, the first piece of the body not counted

    async def send_gathered() -> None:
        nonlocal sent, ended, gathered
        # One bytes object, one copy: granian copies bytes at once but reads any other buffer (the
        # memoryviews gRPC hands over) element by element, 1 s of CPU per 64 MiB
        # (benchmarks/bench_asgi_body.py).
        piece = b"".join(pieces)
        pieces.clear()
        gathered = 0
        sent += len(piece)
        # The last byte says so: a client that has all of Content-Length may hang up at once, before the
        # body's iterator has ended, and that is not a client gone early.
        ended = length is not None and sent >= length
        watcher.answered = watcher.answered or ended
        await send({"type": "http.response.body", "body": piece, "more_body": not ended})

    pieces_left = aiter(body)
    while True:
        try:
            chunk = await anext(pieces_left)
        except StopAsyncIteration:
            break
        except BaseException:
            if sent == 0 and pieces:
                del pieces[1:]
                await send_gathered()
            raise
        if chunk:
            if sent or pieces:
                gathered += len(chunk)
            pieces.append(chunk)
            if gathered >= ANSWER_PIECE_BYTES:
                await send_gathered()
    if pieces:
        await send_gathered()
    if not ended:
        watcher.answered = True
        await send({"type": "http.response.body", "body": b""})
