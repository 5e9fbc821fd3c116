"""How many workers behind a target are ready to serve: for bridge_ready_workers{route}.

gRPC's round_robin does not say how many of its addresses pass client-side health checking, so this asks
them itself: the addresses are those gRPC resolved for the route's channel and holds a connection to
(channelz, which gRPC keeps anyway), and each is asked for its health over a channel of its own, with the
route's credentials. A worker still loading its model, draining, or unreachable does not count. Run every
few seconds, off the request path.
"""

from __future__ import annotations

import asyncio
import json

import grpc
from grpc._cython import cygrpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

CHECK_TIMEOUT = 1.0


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
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=self.service), timeout=CHECK_TIMEOUT)
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
