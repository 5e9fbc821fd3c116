"""Command-line flags of `python -m bridge`, each also readable from a BRIDGE_* environment variable."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

from bridge.inference import Limits


@dataclass
class BridgeConfig:
    routes: dict[str, str]  # HTTP route -> gRPC worker target
    listen: str = "127.0.0.1:8900"
    threads: int = 16
    health_poll_seconds: float = 0.5
    socket_timeout_seconds: float = 60.0
    grace_seconds: float = 30.0
    limits: Limits = field(default_factory=Limits)


def parse_routes(values: list[str]) -> dict[str, str]:
    routes = {}
    for value in values:
        path, sep, target = value.partition("=")
        if not sep or not path.startswith("/") or not target:
            raise argparse.ArgumentTypeError(
                f"--route must be PATH=TARGET, e.g. /segment=dns:///seg:50051; got {value!r}"
            )
        routes[path] = target
    return routes


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="Speaks the Arterys inference protocol over HTTP and streams each request to gRPC model workers.",
    )
    parser.add_argument("--worker", default=env("BRIDGE_WORKER"),
                        help="gRPC target serving the / route: host:port, ipv4:a:p1,b:p2 or dns:///worker:50051 "
                             "(round_robin over every address) [BRIDGE_WORKER]")
    parser.add_argument("--route", action="append", default=(env("BRIDGE_ROUTES") or "").split(),
                        help="extra route PATH=TARGET, repeatable [BRIDGE_ROUTES, space separated]")
    parser.add_argument("--listen", default=env("BRIDGE_LISTEN", "127.0.0.1:8900"),
                        help="HTTP HOST:PORT (port 0 picks a free one) [BRIDGE_LISTEN]")
    parser.add_argument("--threads", type=int, default=int(env("BRIDGE_THREADS", "16")),
                        help="HTTP worker threads = concurrent requests [BRIDGE_THREADS]")
    parser.add_argument("--deadline-seconds", type=float, default=float(env("BRIDGE_DEADLINE_SECONDS", "600")),
                        help="deadline of every worker call [BRIDGE_DEADLINE_SECONDS]")
    parser.add_argument("--grace-seconds", type=float, default=float(env("BRIDGE_GRACE_SECONDS", "30")),
                        help="on SIGTERM, how long in-flight requests may take to finish [BRIDGE_GRACE_SECONDS]")
    parser.add_argument("--max-body-bytes", type=int, default=int(env("BRIDGE_MAX_BODY_BYTES", str(4 << 30))),
                        help="largest request body accepted (413 beyond) [BRIDGE_MAX_BODY_BYTES]")
    parser.add_argument("--max-parts", type=int, default=int(env("BRIDGE_MAX_PARTS", "20000")),
                        help="most parts in one request (413 beyond) [BRIDGE_MAX_PARTS]")
    parser.add_argument("--max-part-bytes", type=int, default=int(env("BRIDGE_MAX_PART_BYTES", str(1 << 30))),
                        help="largest single part (413 beyond) [BRIDGE_MAX_PART_BYTES]")
    return parser


def parse_config(argv: list[str] | None = None) -> BridgeConfig:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        routes = parse_routes(args.route)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if args.worker:
        routes.setdefault("/", args.worker)
    if not routes:
        parser.error("name the worker: --worker TARGET (or BRIDGE_WORKER)")
    limits = Limits(max_body_bytes=args.max_body_bytes, max_parts=args.max_parts,
                    max_part_bytes=args.max_part_bytes, deadline_seconds=args.deadline_seconds)
    return BridgeConfig(routes=routes, listen=args.listen, threads=args.threads, grace_seconds=args.grace_seconds,
                        limits=limits)
