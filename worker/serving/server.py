"""Builds and runs the worker's gRPC server: `create_server` (tests bind port 0) apart from `serve` (blocks).

The server is gRPC's asyncio server, on an event loop of its own thread, so that the same object serves a
command line (`serve`) and a test or an embedding program (`create_server`, `start`, `load_model`, `stop`)
without either having to run an event loop. Health follows the model: NOT_SERVING from the start (the
health servicer would otherwise start out SERVING), SERVING once `load()` has returned, NOT_SERVING again
when shutdown begins. On SIGTERM the server stops taking calls and lets in-flight inferences finish within
the grace period.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from contract import inference_pb2 as pb
from contract import limits, wire
from service_runtime import tracing
from worker.sdk.model import Model
from worker.serving.admission import Admission
from worker.serving.batching import batcher_for, model_places
from worker.serving.config import WorkerConfig
from worker.serving.loading import TRACEBACK_HINT, failure_text
from worker.serving.metrics import WorkerMetrics
from worker.serving.model_logging import worker_logging_kept
from worker.serving.servicer import InferenceServicer
from worker.serving.spool import SpoolRoot, StoreBudget, spool_limit
from worker.serving.stow import StowSender

log = logging.getLogger("worker")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
IO_THREADS = 2


class PortInUse(OSError):
    """The listen address is taken (or not ours to bind)."""


def server_options(config: WorkerConfig) -> list[tuple[str, int]]:
    return [
        *limits.stream_options(config.max_message_bytes),
        # gRPC binds with SO_REUSEPORT by default, so a second worker on a busy port would "start" and share
        # its calls with the first one. Refuse instead.
        ("grpc.so_reuseport", 0),
        # Recycle connections so that a bridge resolving DNS finds replicas added since it connected; the
        # grace lets a long inference on an aged connection finish.
        ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", 3_600_000),
        # The bridge pings every few seconds to notice a hung worker: accept that, with or without calls.
        ("grpc.http2.min_ping_interval_without_data_ms", limits.PING_EVERY_MS - 1_000),
        ("grpc.http2.max_ping_strikes", 0),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


@dataclass
class WorkerServer:
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: InferenceServicer
    metrics: WorkerMetrics
    model: Model
    config: WorkerConfig
    spool: SpoolRoot
    executors: tuple[ThreadPoolExecutor, ...]

    def _run(self, coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def start(self) -> None:
        self._run(self.server.start())

    def load_model(self) -> None:
        """Runs the model's load() here and reports SERVING after it; raises what load() raised."""
        log.info("loading model %s", self.servicer.model_name)
        with worker_logging_kept("load()"):
            self.model.load()
        self.loop.call_soon_threadsafe(setattr, self.servicer, "loaded", True)
        self.metrics.model_loaded.set(1)
        self._run(self._set_health(SERVING))
        log.info("model %s loaded; serving on port %d", self.servicer.model_name, self.port)

    def stop(self, grace: float | None = None) -> None:
        """Graceful: health says NOT_SERVING, new calls are refused, in-flight calls may finish."""
        if not self.loop.is_running():
            return
        grace = self.config.grace_seconds if grace is None else grace
        try:
            self._run(self._stop(grace))
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(30)
            for executor in self.executors:
                executor.shutdown(wait=False, cancel_futures=True)
            if self.servicer.stow is not None:
                self.servicer.stow.close()
            self.spool.close()

    async def _stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        self.servicer.admission.close()  # calls waiting for a place are refused now, not admitted while draining
        await self.server.stop(grace)

    async def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)


def inference_handlers(servicer: InferenceServicer) -> grpc.GenericRpcHandler:
    """The Inference service as generated, except that study and answer chunks are read and written with
    contract.wire (no copies) instead of the generated classes."""
    return grpc.method_handlers_generic_handler(SERVICE_NAME, {
        "Infer": grpc.stream_stream_rpc_method_handler(
            servicer.Infer, request_deserializer=wire.parse_request, response_serializer=wire.serialize_response),
        "InferWhole": grpc.unary_stream_rpc_method_handler(
            servicer.InferWhole, request_deserializer=wire.parse_request, response_serializer=wire.serialize_response),
        "Describe": grpc.unary_unary_rpc_method_handler(
            servicer.Describe, request_deserializer=pb.DescribeRequest.FromString,
            response_serializer=pb.ModelDescription.SerializeToString),
    })


def _loop_thread() -> tuple[asyncio.AbstractEventLoop, threading.Thread]:
    # Plain asyncio, not uvloop: gRPC's asyncio server on a uvloop loop of a non-main thread lost wake-ups
    # under load here (calls stalled for good with every thread idle).
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=run, name="grpc-loop", daemon=True)
    thread.start()
    ready.wait()
    return loop, thread


def create_server(model: Model, config: WorkerConfig, metrics: WorkerMetrics | None = None) -> WorkerServer:
    """Binds `config.listen` (port 0 picks a free one) with the model not loaded yet; raises PortInUse."""
    metrics = metrics or WorkerMetrics()
    places = model_places(model, config.concurrency)  # first: a wrong batch setting stops here, nothing to undo
    spool = SpoolRoot(config.spool_dir or None)
    model_threads = ThreadPoolExecutor(max_workers=config.concurrency, thread_name_prefix="model")
    io_threads = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="io")
    stow = StowSender(config.stow, metrics) if config.stow.url else None
    store = StoreBudget(config.max_study_memory_bytes, spool_limit(config.max_spool_bytes, spool.path))
    metrics.study_memory.set_function(lambda: store.memory)
    metrics.spool_bytes.set_function(lambda: store.spool)
    loop, thread = _loop_thread()

    async def build():
        admission = Admission(places, config.queue_size, metrics, config.max_receiving, store)
        batcher = batcher_for(model, config.concurrency, model_threads, metrics)  # None: no infer_batch
        servicer = InferenceServicer(model, admission, metrics, config, model_threads, io_threads, batcher, spool.path,
                                     stow)
        server = grpc.aio.server(options=server_options(config))
        health_servicer = health.aio.HealthServicer()
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, NOT_SERVING)
        server.add_generic_rpc_handlers((inference_handlers(servicer),))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        if config.security.reflection:
            reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        credentials = config.security.server_credentials()
        try:
            port = (server.add_secure_port(config.listen, credentials) if credentials
                    else server.add_insecure_port(config.listen))
        except RuntimeError as error:  # gRPC's way of saying the bind failed
            raise PortInUse(f"cannot listen on {config.listen}: the address is in use or not available") from error
        if port == 0:
            raise PortInUse(f"cannot listen on {config.listen}: the address is in use or not available")
        return server, port, health_servicer, servicer

    try:
        server, port, health_servicer, servicer = asyncio.run_coroutine_threadsafe(build(), loop).result()
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        spool.close()
        raise
    return WorkerServer(loop, thread, server, port, health_servicer, servicer, metrics, model, config, spool,
                        (model_threads, io_threads))


def start_metrics_server(address: str, metrics: WorkerMetrics, tls: dict | None = None):
    host, _, port = address.rpartition(":")
    try:
        server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry,
                                            **(tls or {}))
    except OSError as error:
        raise PortInUse(f"cannot serve metrics on {address}: {error.strerror}") from error
    return server


def serve(config: WorkerConfig, model: Model) -> int:
    """Runs until SIGTERM/SIGINT; returns the exit code (2: the model failed to load, or tracing cannot start)."""
    # Handlers first: a SIGTERM while the server starts (an orchestrator scaling down) is a clean stop.
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    try:
        tracing.configure("arterys-worker")  # on only when the OTEL_* variables say so
    except tracing.TracingConfigError as error:
        log.error("%s", error)
        return 2

    worker = create_server(model, config)
    try:
        metrics_server = (start_metrics_server(config.metrics_listen, worker.metrics,
                                               config.security.metrics_server_kwargs())
                          if config.metrics_listen else None)
    except PortInUse:
        worker.stop(0)
        raise
    worker.start()
    log.info("worker listening on %s (port %d, %s)%s", config.listen, worker.port,
             "mutual TLS" if config.security.tls_client_ca else "TLS" if config.security.tls_cert else "plaintext",
             f", metrics on {config.metrics_listen}" if metrics_server else "")
    store = worker.servicer.store
    log.info("studies arriving or waiting keep up to %.0f MiB in memory (--max-study-memory-mib) and %.0f MiB in "
             "%s (--max-spool-bytes)", store.memory_limit / (1 << 20), store.spool_limit / (1 << 20), worker.spool.path)
    if warning := config.security.plaintext_warning(config.listen):
        log.warning("%s", warning)

    failed = threading.Event()

    def load() -> None:
        try:
            worker.load_model()
        except Exception as error:
            # One line, like a model that cannot be imported; the traceback is there for who asks for it.
            log.debug("the model failed to load", exc_info=error)
            log.error("the model failed to load: %s; stopping (%s)", failure_text(error), TRACEBACK_HINT)
            failed.set()
            stopping.set()

    threading.Thread(target=load, name="model-load", daemon=True).start()
    stopping.wait()
    if not failed.is_set():  # without a model nothing was in flight
        log.info("shutting down: finishing in-flight inferences (up to %.0f s)", config.grace_seconds)
    worker.stop()
    if metrics_server is not None:
        metrics_server.shutdown()
    tracing.shutdown()  # exports the spans still buffered before the process exits
    log.info("worker stopped")
    return 2 if failed.is_set() else 0
