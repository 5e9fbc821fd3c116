"""Whether a route's workers are ready, and how many: /healthcheck, /readyz, bridge_worker_ready and
bridge_ready_workers{route}.

`Readiness` asks the target's health service every `poll_seconds` over the route's own channel: with
client-side health checking, only a SERVING worker answers SERVING. Its answer is what the open probes say,
in words that name no address or gRPC internals (those go to the log, when they change and again every
minute while they last: a bridge that never got a worker says so).

gRPC's round_robin does not say how many of its addresses pass client-side health checking, so
`ReadyWorkers` asks them itself: the addresses are those gRPC resolved for the route's channel and holds a
connection to (channelz, which gRPC keeps anyway), and each is asked for its health over a channel of its
own, with the route's credentials. A worker still loading its model, draining, or unreachable does not
count. Counted every few seconds, off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

import grpc
from grpc._cython import cygrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bridge.channel import SERVICE_NAME, WorkerChannel

log = logging.getLogger("bridge.workers")  # with admission.py: the lines about the workers, as operators know them

HEALTH_CHECK_SECONDS = 1.0
PUBLIC_HEALTH_PROBLEMS = {
    grpc.StatusCode.UNAVAILABLE: "no worker can be reached",
    grpc.StatusCode.DEADLINE_EXCEEDED: "the worker did not answer its health check within 1 s",
    grpc.StatusCode.NOT_FOUND: "the worker does not serve the inference service",
    grpc.StatusCode.UNAUTHENTICATED: "the worker refused the bridge's credentials",
}
COUNT_EVERY_POLLS = 4  # ready workers are counted every 4th poll (2 s): one health check per worker
PROBLEM_REPEAT_SECONDS = 60.0  # an unchanged reason a worker cannot be reached is logged again this often


class Readiness:
    """The health of one route's target, polled on the bridge's event loop from `start()` to `close()`."""

    def __init__(self, channel: WorkerChannel, poll_seconds: float = 0.5) -> None:
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.ready = False
        self.last_problem = "not checked yet"
        # Set once the first health check has an answer: until then "not ready" would be a guess (first_check).
        self.checked = asyncio.Event()
        self.ready_workers = 0  # SERVING workers behind the target
        self._counter = ReadyWorkers(channel.target, SERVICE_NAME, channel.credentials)
        self._said: tuple[str, float] = ("", 0.0)  # the readiness problem last logged, and when
        self._task: asyncio.Task | None = None

    def start(self) -> Readiness:
        self._task = asyncio.get_running_loop().create_task(self._watch())
        return self

    async def check_now(self) -> bool:
        """Asks a worker's health service; with client-side health checking only SERVING workers answer."""
        detail, unreachable = "", False
        try:
            response = await self.channel.health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME),
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
        PROBLEM_REPEAT_SECONDS while it lasts."""
        now = asyncio.get_running_loop().time()
        said, said_at = self._said
        problem = "" if serving else f"{self.last_problem}{detail}"
        if serving == self.ready and problem == said and (not problem or now - said_at < PROBLEM_REPEAT_SECONDS):
            return
        self._said = (problem, now)
        if serving:
            log.info("worker target %s is ready", self.channel.target)
        else:
            log.log(logging.WARNING if unreachable else logging.INFO, "worker target %s is not ready (%s)",
                    self.channel.target, problem)

    async def _watch(self) -> None:
        polls = 0
        while True:
            await self.check_now()
            if polls % COUNT_EVERY_POLLS == 0:
                self.ready_workers = await self._counter.count() if self.ready else 0
            polls += 1
            await asyncio.sleep(self.poll_seconds)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._counter.close()


def connected_addresses(target: str) -> list[str]:
    """The addresses (`ipv4:10.0.0.5:50051`) of the channels to `target` whose connection is READY."""
    addresses = []
    channels = json.loads(cygrpc.channelz_get_top_channels(0)).get("channel", [])
    for channel in channels:
        if channel.get("data", {}).get("target") != target:
            continue
        for reference in channel.get("subchannelRef", []):
            data = json.loads(cygrpc.channelz_get_subchannel(int(reference["subchannelId"])))["subchannel"]["data"]
            if data.get("state", {}).get("state") == "READY":
                addresses.append(data["target"])
    return sorted(set(addresses))


def host_of(target: str) -> str | None:
    """The host name a target dials (`dns:///worker:50051` -> `worker`), which a worker's certificate names;
    None for address lists (`ipv4:`, `ipv6:`, `unix:`), whose certificates name what gRPC checks anyway."""
    if target.startswith(("ipv4:", "ipv6:", "unix:", "unix-abstract:")):
        return None
    name = target.removeprefix("dns:").split("/")[-1]
    if name.startswith("["):
        return name[1:name.index("]")]
    return name.rsplit(":", 1)[0] if name.count(":") == 1 else name


class ReadyWorkers:
    def __init__(self, target: str, service: str, credentials: grpc.ChannelCredentials | None) -> None:
        self.target, self.service, self.credentials = target, service, credentials
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            if self.credentials is None:
                self._channels[address] = grpc.aio.insecure_channel(address)
            else:  # the certificate names the host the route dials, not the address
                host = host_of(self.target)
                options = [("grpc.ssl_target_name_override", host)] if host else []
                self._channels[address] = grpc.aio.secure_channel(address, self.credentials, options=options)
        return self._channels[address]

    async def _serving(self, address: str) -> bool:
        stub = health_pb2_grpc.HealthStub(self._channel(address))
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=self.service),
                                      timeout=HEALTH_CHECK_SECONDS)
        except grpc.aio.AioRpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    async def count(self) -> int:
        addresses = connected_addresses(self.target)
        for gone in set(self._channels) - set(addresses):
            await self._channels.pop(gone).close()
        return sum(await asyncio.gather(*(self._serving(address) for address in addresses)))

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
