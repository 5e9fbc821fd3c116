"""gRPC channels to the model workers, and whether they are ready.

One channel per target. The service config asks for gRPC's own `round_robin` over every address the
target resolves to, and for client-side health checking, so calls go only to workers whose health says
SERVING: a replica still loading its model gets no request. Readiness is watched in the background so
that `/healthcheck` answers at once, whether or not any worker is reachable.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from contract import inference_pb2 as pb
from contract import inference_pb2_grpc as pb_grpc

log = logging.getLogger("bridge.workers")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
MESSAGE_LIMIT = 64 << 20


def channel_options(max_message_bytes: int = MESSAGE_LIMIT) -> list[tuple[str, object]]:
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        # Long inferences send nothing for minutes: keepalive pings keep idle-killing proxies away.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 0),
        # Re-resolve DNS promptly when a connection drops, so new replicas are found.
        ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    ]


@dataclass
class WorkerPool:
    """The channel and readiness of one worker target."""

    target: str
    poll_seconds: float = 0.5
    channel: grpc.Channel = field(init=False)
    stub: pb_grpc.InferenceStub = field(init=False)
    _ready: threading.Event = field(default_factory=threading.Event, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    last_problem: str = field(default="not checked yet", init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.target, options=channel_options())
        self.stub = pb_grpc.InferenceStub(self.channel)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._thread = threading.Thread(target=self._watch, name=f"health {self.target}", daemon=True)

    def start(self) -> WorkerPool:
        self._thread.start()
        return self

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def check_now(self) -> bool:
        """Asks a worker's health service; with client-side health checking only SERVING workers answer."""
        try:
            response = self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME), timeout=1.0)
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            self.last_problem = "" if serving else "the worker's model is not loaded yet"
        except grpc.RpcError as error:
            serving = False
            self.last_problem = f"{error.code().name}: {error.details()}"
        if serving != self._ready.is_set():
            log.info("worker target %s is %s", self.target, "ready" if serving else f"not ready ({self.last_problem})")
        (self._ready.set if serving else self._ready.clear)()
        return serving

    def _watch(self) -> None:
        while not self._stop.is_set():
            self.check_now()
            self._stop.wait(self.poll_seconds)

    def close(self) -> None:
        self._stop.set()
        self.channel.close()
