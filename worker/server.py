"""Builds and runs the worker's gRPC server: `create_server` (tests bind port 0) apart from `serve` (blocks).

Health follows the model: NOT_SERVING from the start (the health servicer would otherwise start out
SERVING), SERVING once `load()` has returned, NOT_SERVING again when shutdown begins. On SIGTERM the
server stops taking calls and lets in-flight inferences finish within the grace period.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc
from worker.admission import Admission
from worker.api import Model
from worker.config import WorkerConfig
from worker.metrics import WorkerMetrics
from worker.servicer import InferenceServicer, ServicerConfig

log = logging.getLogger("worker")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def server_options(config: WorkerConfig) -> list[tuple[str, int]]:
    # Limits set on the server itself: a client's own limits do not lift the server's 4 MiB default.
    return [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        # Recycle connections so that a bridge resolving DNS finds replicas added since it connected;
        # the grace lets a long inference on an aged connection finish.
        ("grpc.max_connection_age_ms", int(config.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", 3_600_000),
        # Accept the bridge's keepalive pings during long inferences.
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


@dataclass
class WorkerServer:
    server: grpc.Server
    port: int
    health: health.HealthServicer
    servicer: InferenceServicer
    metrics: WorkerMetrics
    model: Model
    config: WorkerConfig

    def start(self) -> None:
        self.server.start()

    def load_model(self) -> None:
        """Runs the model's load() and reports SERVING after it; raises what load() raised."""
        log.info("loading model %s", self.servicer.model_name)
        self.model.load()
        self.servicer.loaded.set()
        self.metrics.model_loaded.set(1)
        self._set_health(SERVING)
        log.info("model %s loaded; serving on port %d", self.servicer.model_name, self.port)

    def stop(self, grace: float | None = None) -> None:
        """Graceful: health says NOT_SERVING, new calls are refused, in-flight calls may finish."""
        self.health.enter_graceful_shutdown()
        self.server.stop(self.config.grace_seconds if grace is None else grace).wait()

    def _set_health(self, status) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)


def create_server(
    model: Model, config: WorkerConfig, metrics: WorkerMetrics | None = None
) -> WorkerServer:
    metrics = metrics or WorkerMetrics()
    admission = Admission(config.concurrency, config.queue_size, metrics)
    servicer = InferenceServicer(
        model, admission, metrics,
        ServicerConfig(
            default_command=config.default_command,
            study_root=config.study_root or None,
            spool_dir=config.spool_dir or None,
        ),
    )
    # Threads: every admitted call holds one, plus health checks, Describe and calls being refused.
    threads = config.concurrency + config.queue_size + 8
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
                         options=server_options(config))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    for name in ("", SERVICE_NAME):
        health_servicer.set(name, NOT_SERVING)
    pb_grpc.add_InferenceServicer_to_server(servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(config.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.listen}")
    return WorkerServer(server, port, health_servicer, servicer, metrics, model, config)


def start_metrics_server(address: str, metrics: WorkerMetrics):
    host, _, port = address.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host or "0.0.0.0", registry=metrics.registry)
    return server


def serve(config: WorkerConfig, model: Model) -> int:
    """Runs until SIGTERM/SIGINT; returns the exit code (1 when the model failed to load)."""
    # Handlers first: a SIGTERM while the server starts (an orchestrator scaling down) is a clean stop.
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())

    worker = create_server(model, config)
    worker.start()
    metrics_server = start_metrics_server(config.metrics_listen, worker.metrics) if config.metrics_listen else None
    log.info("worker listening on %s (port %d)%s", config.listen, worker.port,
             f", metrics on {config.metrics_listen}" if metrics_server else "")

    failed = threading.Event()

    def load() -> None:
        try:
            worker.load_model()
        except Exception:
            log.exception("the model failed to load; stopping")
            failed.set()
            stopping.set()

    threading.Thread(target=load, name="model-load", daemon=True).start()
    stopping.wait()
    log.info("shutting down: finishing in-flight inferences (up to %.0f s)", config.grace_seconds)
    worker.stop()
    if metrics_server is not None:
        metrics_server.shutdown()
    log.info("worker stopped")
    return 1 if failed.is_set() else 0
