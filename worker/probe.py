"""`python -m worker.probe [HOST:PORT]`: exit 0 when the worker's health says SERVING, 1 otherwise.

For container health checks (docker compose, Kubernetes exec probes) where no grpc_health_probe binary
is installed. The address defaults to WORKER_LISTEN with a wildcard host replaced by localhost.
"""

from __future__ import annotations

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def main(argv: list[str]) -> int:
    address = argv[0] if argv else os.environ.get("WORKER_LISTEN", "127.0.0.1:50051")
    host, _, port = address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    with grpc.insecure_channel(f"{host}:{port}") as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as error:
            print(f"{host}:{port}: {error.code().name}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{host}:{port}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
