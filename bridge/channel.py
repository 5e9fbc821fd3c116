"""The gRPC channel to one worker target (a route's `--worker`/`--route` TARGET), and opening calls on it.

One asyncio channel per target. The service config asks for gRPC's own `round_robin` over every address
the target resolves to, and for client-side health checking, so calls go only to workers whose health says
SERVING: a replica still loading its model gets no request. Keepalive pings notice a hung worker (kill
-STOP, a frozen VM) within 10 s, and reconnect backoff stays short, so a worker that comes back is used
within a second or two, however long it was gone. Whether the target is ready is bridge/readiness.py's
question; getting a call admitted, bridge/admission.py's.

Small studies go in InferWhole calls until a worker of the target answers one UNIMPLEMENTED (it predates
them): then, for WHOLE_CALLS_PAUSE seconds, as Infer calls only, so that a fleet in the middle of an
upgrade costs a wasted call a minute, not one per request.
"""

from __future__ import annotations

import json
import time

import grpc
from grpc_health.v1 import health_pb2_grpc

from contract import inference_pb2 as pb
from contract import limits, wire
from service_runtime.grpc_aio import StreamCall

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
WHOLE_CALLS_PAUSE = 60.0


def channel_options(max_message_bytes: int = limits.MESSAGE_BYTES) -> list[tuple[str, object]]:
    service_config = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": SERVICE_NAME},
    }
    return [
        ("grpc.service_config", json.dumps(service_config)),
        *limits.stream_options(max_message_bytes),
        # A ping every 5 s, 4 s to answer: a hung worker is known within 10 s, even between calls. (This
        # gRPC's transport times pings out after grpc.http2.ping_timeout_ms, not keepalive_timeout_ms.)
        ("grpc.keepalive_time_ms", limits.PING_EVERY_MS),
        ("grpc.keepalive_timeout_ms", 4_000),
        ("grpc.http2.ping_timeout_ms", 4_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),
        # Reconnect within about a second whatever the outage (gRPC's default backoff grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 500),
        ("grpc.min_reconnect_backoff_ms", 500),
        ("grpc.max_reconnect_backoff_ms", 1_000),
        # Re-resolve DNS promptly when a connection drops, so new replicas are found.
        ("grpc.dns_min_time_between_resolutions_ms", 5_000),
    ]


class SentOnce:
    """A whole call's request as gRPC gets it: grpc.aio's unary-request call keeps its request object until the
    call ends, which for a study waiting in a worker's queue, then for its answer, may be minutes; this shell
    gives gRPC the bytes once, when it serialises them, and keeps nothing after (measured: 12 small studies
    waiting at a busy worker kept 15 MB in the bridge with the messages they were made of; tests/test_bundles.py)."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def take(self) -> bytes:
        data, self.data = self.data, None
        return data


class WorkerChannel:
    """The channel to `target` (TLS with `credentials`). Create and use it on the bridge's event loop."""

    def __init__(self, target: str, credentials: grpc.ChannelCredentials | None = None,
                 extra_options: list | tuple = ()) -> None:
        self.target = target
        self.credentials = credentials
        options = channel_options() + list(extra_options)
        self.channel = (grpc.aio.secure_channel(target, credentials, options=options) if credentials
                        else grpc.aio.insecure_channel(target, options=options))
        # Study and answer chunks are written and read with contract.wire (no copies); the rest as generated.
        self._infer = self.channel.stream_stream(wire.INFER_METHOD, request_serializer=wire.serialize_request,
                                                 response_deserializer=wire.parse_response)
        self._infer_whole = self.channel.unary_stream(wire.INFER_WHOLE_METHOD, request_serializer=SentOnce.take,
                                                      response_deserializer=wire.parse_response)
        self._whole_calls_from = 0.0  # time.monotonic() from which InferWhole calls are sent again
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def open_call(self, timeout: float, metadata: tuple) -> StreamCall:
        """A new Infer call, through the grpc.aio workarounds (service_runtime/grpc_aio.py)."""
        return StreamCall(self._infer(timeout=timeout, metadata=metadata))

    def open_whole_call(self, request: bytes, timeout: float, metadata: tuple) -> StreamCall:
        """A new InferWhole call with `request` (a serialised InferRequest bundle), through the same workarounds."""
        return StreamCall(self._infer_whole(SentOnce(request), timeout=timeout, metadata=metadata))

    def sends_whole_calls(self) -> bool:
        return time.monotonic() >= self._whole_calls_from

    def whole_calls_unimplemented(self) -> float:
        """A worker of the target does not have InferWhole: none is sent for WHOLE_CALLS_PAUSE seconds (returned)."""
        self._whole_calls_from = time.monotonic() + WHOLE_CALLS_PAUSE
        return WHOLE_CALLS_PAUSE

    async def close(self) -> None:
        await self.channel.close()
