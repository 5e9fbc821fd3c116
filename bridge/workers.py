"""gRPC channels to the model workers: readiness, and getting a call admitted by some worker.

One asyncio channel per target. The service config asks for gRPC's own `round_robin` over every address
the target resolves to, and for client-side health checking, so calls go only to workers whose health says
SERVING: a replica still loading its model gets no request. Keepalive pings notice a hung worker (kill
-STOP, a frozen VM) within 10 s, and reconnect backoff stays short, so a worker that comes back is used
within a second or two, however long it was gone.

A call is *admitted* when the worker sends its initial metadata, before any study byte leaves the bridge
(worker/admission.py). A call refused before that (RESOURCE_EXHAUSTED: every place taken; UNAVAILABLE: no
ready worker or a broken connection) has cost nothing, so it is tried again: round_robin gives each new
call the next worker. A full worker is retried, with a short growing pause, for up to `queue_wait`
seconds; 503 comes only when every worker stayed full that long.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.readiness import ReadyWorkers
from contract import errors as contract_errors
from contract import inference_pb2 as pb
from contract import limits, metadata, wire
from service_runtime.grpc_aio import CALL_ENDED, StreamCall

log = logging.getLogger("bridge.workers")

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Inference"].full_name
HEALTH_CHECK_SECONDS = 1.0
PUBLIC_HEALTH_PROBLEMS = {
    grpc.StatusCode.UNAVAILABLE: "no worker can be reached",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the worker did not answer its health check within 1 s",
    grpc.StatusCode.NOT_FOUND: "the worker does not serve the inference service",
    grpc.StatusCode.UNAUTHENTICATED: "the worker refused the bridge's credentials",
}
FREE_ATTEMPTS = 4  # calls ended before admission, tried again at once
COUNT_EVERY_POLLS = 4  # ready workers are counted every 4th poll (2 s): one health check per worker
PROBLEM_REPEAT_SECONDS = 60.0  # an unchanged reason a worker cannot be reached is logged again this often
ADMISSION_TIMEOUT = 5.0  # a worker admits or refuses at once; one that does neither is as good as gone
# Ended before admission, nothing lost: unreachable, or the transport's own failure (gRPC reports a call ended
# by the server while the client was still writing its header as INTERNAL, with no error code).
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL)


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


class Refused(Exception):
    """No worker admitted the call: `status`, the worker's `details` and its `error_code` (may be empty)."""

    def __init__(self, status: grpc.StatusCode, details: str, error_code: str) -> None:
        super().__init__(details)
        self.status, self.details, self.error_code = status, details, error_code


@dataclass
class WorkerPool:
    """The channel and readiness of one worker target. Create and use it on the bridge's event loop."""

    target: str
    poll_seconds: float = 0.5
    queue_wait: float = 10.0
    credentials: grpc.ChannelCredentials | None = None  # TLS to the workers (bridge/security.py)
    extra_options: list = field(default_factory=list)
    channel: grpc.aio.Channel = field(init=False)
    infer: grpc.aio.StreamStreamMultiCallable = field(init=False)
    ready: bool = field(default=False, init=False)
    last_problem: str = field(default="not checked yet", init=False)
    # Set once the first health check has an answer: until then "not ready" would be a guess (first_check).
    checked: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    ready_workers: int = field(default=0, init=False)  # SERVING workers behind the target (bridge/readiness.py)

    def __post_init__(self) -> None:
        options = channel_options() + self.extra_options
        self.channel = (grpc.aio.secure_channel(self.target, self.credentials, options=options) if self.credentials
                        else grpc.aio.insecure_channel(self.target, options=options))
        # Study and answer chunks are written and read with contract.wire (no copies); the rest as generated.
        self.infer = self.channel.stream_stream(wire.INFER_METHOD, request_serializer=wire.serialize_request,
                                                response_deserializer=wire.parse_response)
        self._health = health_pb2_grpc.HealthStub(self.channel)
        self._task: asyncio.Task | None = None
        self._counter = ReadyWorkers(self.target, SERVICE_NAME, self.credentials)
        self._said: tuple[str, float] = ("", 0.0)  # the readiness problem last logged, and when

    def start(self) -> WorkerPool:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def check_now(self) -> bool:
        """Asks a worker's health service; with client-side health checking only SERVING workers answer."""
        detail, unreachable = "", False
        try:
            response = await self._health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
                                                timeout=HEALTH_CHECK_SECONDS)
            serving = response.status == health_pb2.HealthCheckResponse.SERVING
            self.last_problem = "" if serving else "the worker's model is not loaded yet"
        except grpc.aio.AioRpcError as error:
            serving = False
            # Said to anyone who asks (/healthcheck, /readyz are open): no addresses or gRPC internals, which
            # go to the log.
            if error.code() == grpc.StatusCode.UNAVAILABLE and "backend unhealthy" in (error.details() or ""):
                # Client-side health checking: workers answer, but none says SERVING yet.
                self.last_problem = "workers answer, but none has its model loaded yet"
            else:
                self.last_problem = PUBLIC_HEALTH_PROBLEMS.get(error.code(), f"the worker's health check failed "
                                                                            f"({error.code().name})")
                unreachable = True
            detail = f"; {error.code().name}: {error.details()}"
        self._say(serving, detail, unreachable)
        self.ready = serving
        self.checked.set()
        return serving

    async def first_check(self) -> None:
        """Returns once the first health check has answered (at most HEALTH_CHECK_SECONDS after start)."""
        if not self.checked.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.checked.wait(), HEALTH_CHECK_SECONDS + 1)

    def _say(self, serving: bool, detail: str, unreachable: bool) -> None:
        """Logs a change of readiness, and why a worker cannot be reached (gRPC's own words: a certificate that
        fails verification, a name that does not match) when that reason changes, and again every
        PROBLEM_REPEAT_SECONDS while it lasts: a bridge that never got a worker says so."""
        now = asyncio.get_running_loop().time()
        said, said_at = self._said
        problem = "" if serving else f"{self.last_problem}{detail}"
        if serving == self.ready and problem == said and (not problem or now - said_at < PROBLEM_REPEAT_SECONDS):
            return
        self._said = (problem, now)
        if serving:
            log.info("worker target %s is ready", self.target)
        else:
            log.log(logging.WARNING if unreachable else logging.INFO, "worker target %s is not ready (%s)",
                    self.target, problem)

    async def _watch(self) -> None:
        polls = 0
        while True:
            await self.check_now()
            if polls % COUNT_EVERY_POLLS == 0:
                self.ready_workers = await self._counter.count() if self.ready else 0
            polls += 1
            await asyncio.sleep(self.poll_seconds)

    async def admit(self, header: pb.InferRequest, timeout: float, call_metadata: tuple) -> StreamCall:
        """Opens a call that a worker has admitted (its header sent, nothing else); raises Refused.

        A call that ends before its admission has cost nothing, so it is tried again at once, up to
        FREE_ATTEMPTS times (round_robin gives each new call the next worker); after that, a refusal by full
        workers is retried with a growing pause for up to `queue_wait` seconds.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempts = 0
        while True:
            attempts += 1
            call = StreamCall(self.infer(timeout=max(timeout - (loop.time() - started), 0.001),
                                              metadata=call_metadata))
            try:
                await call.write(header)
                async with asyncio.timeout(ADMISSION_TIMEOUT):
                    admitted = metadata.value(await call.initial_metadata(), metadata.ADMITTED) == metadata.YES
            except CALL_ENDED:
                admitted = False
            except TimeoutError:  # a worker that neither admits nor refuses is hung: try another
                call.cancel()
                log.warning("worker target %s: a worker did not answer a call within %g s", self.target,
                            ADMISSION_TIMEOUT)
                if attempts < FREE_ATTEMPTS:
                    continue
                raise Refused(grpc.StatusCode.UNAVAILABLE, "no worker answered", "") from None
            except BaseException:
                call.cancel()
                raise
            if admitted:
                return call
            status = await call.code()
            details = await call.details() or ""
            error_code = metadata.value(await call.trailing_metadata(), metadata.ERROR_CODE)
            # A worker that is full says so itself (its error code): worth waiting for. Without one,
            # RESOURCE_EXHAUSTED is the channel's own (an answer over a gRPC limit): an error, never retried.
            full = status == grpc.StatusCode.RESOURCE_EXHAUSTED and error_code in contract_errors.FULL
            if full or (status in RETRYABLE and not (status == grpc.StatusCode.INTERNAL and error_code)):
                if attempts < FREE_ATTEMPTS:
                    continue
                if full and loop.time() - started < self.queue_wait:
                    await asyncio.sleep(min(0.005 * 2 ** (attempts - FREE_ATTEMPTS), 0.2) * random.uniform(0.5, 1))
                    continue
            raise Refused(status, details, error_code)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._counter.close()
        await self.channel.close()
