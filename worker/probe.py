"""`python -m worker.probe [HOST:PORT]`: exit 0 when the worker's health says SERVING, 1 otherwise.

For container health checks (docker compose, Kubernetes exec probes) where no grpc_health_probe binary
is installed, and for TLS workers, which the kubelet's native gRPC probe cannot reach (it speaks
plaintext only). The address defaults to WORKER_LISTEN with a wildcard host replaced by localhost.

TLS follows the worker's own settings, so a probe in the worker's container needs nothing more when one
CA signed everything: with WORKER_TLS_CERT set it connects with TLS, checks the worker against
WORKER_PROBE_CA (default WORKER_TLS_CLIENT_CA) and, for mutual TLS, presents WORKER_PROBE_CERT and
WORKER_PROBE_KEY (default the worker's own certificate and key). The worker's certificate must then name
the probed host (127.0.0.1 or localhost), or WORKER_PROBE_SERVER_NAME names what it does carry.
"""

from __future__ import annotations

import argparse
import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service_runtime import tls


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(prog="python -m worker.probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("address", nargs="?", default=env("WORKER_LISTEN", "127.0.0.1:50051"),
                        help="HOST:PORT of the worker [WORKER_LISTEN]")
    tls_on = bool(env("WORKER_PROBE_CA") or env("WORKER_TLS_CERT"))
    parser.add_argument("--tls", action=argparse.BooleanOptionalAction, default=tls_on,
                        help="connect with TLS (default: when WORKER_TLS_CERT or WORKER_PROBE_CA is set)")
    parser.add_argument("--ca", default=env("WORKER_PROBE_CA") or env("WORKER_TLS_CLIENT_CA", ""),
                        help="CA the worker's certificate is checked against [WORKER_PROBE_CA, else "
                             "WORKER_TLS_CLIENT_CA]")
    parser.add_argument("--cert", default=env("WORKER_PROBE_CERT") or env("WORKER_TLS_CERT", ""),
                        help="client certificate for mutual TLS [WORKER_PROBE_CERT, else WORKER_TLS_CERT]")
    parser.add_argument("--key", default=env("WORKER_PROBE_KEY") or env("WORKER_TLS_KEY", ""),
                        help="its key [WORKER_PROBE_KEY, else WORKER_TLS_KEY]")
    parser.add_argument("--server-name", default=env("WORKER_PROBE_SERVER_NAME", ""),
                        help="name the worker's certificate carries, when not the probed host "
                             "[WORKER_PROBE_SERVER_NAME]")
    return parser


def open_channel(target: str, args: argparse.Namespace) -> grpc.Channel:
    if not args.tls:
        return grpc.insecure_channel(target)
    flags = ("--ca/WORKER_PROBE_CA", "--cert/WORKER_PROBE_CERT", "--key/WORKER_PROBE_KEY")
    credentials = tls.channel_credentials(args.ca, args.cert, args.key, flags)
    return grpc.secure_channel(target, credentials, options=tls.server_name_options(args.server_name))


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    host, _, port = args.address.rpartition(":")
    if host in ("", "0.0.0.0", "[::]"):
        host = "127.0.0.1"
    target = f"{host}:{port}"
    try:
        channel = open_channel(target, args)
    except tls.TlsConfigError as error:
        print(f"{target}: {error}", file=sys.stderr)
        return 1
    with channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as error:
            hint = "" if args.tls else " (a TLS worker needs the probe's --tls and its certificates)"
            print(f"{target}: {error.code().name}{hint}", file=sys.stderr)
            return 1
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    print(f"{target}: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
