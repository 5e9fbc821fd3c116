"""Command-line flags of `python -m bridge`, each also readable from a BRIDGE_* environment variable."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field, fields

from bridge import security
from bridge.httpserver import HttpLimits


@dataclass(frozen=True)
class BridgeLimits:
    """What one inference request may be, and how long it may take."""

    max_body_bytes: int = 4 << 30
    max_parts: int = 20_000
    max_part_bytes: int = 1 << 30
    max_json_bytes: int = 1 << 20
    deadline_seconds: float = 600.0
    queue_wait_seconds: float = 10.0


@dataclass
class BridgeConfig:
    routes: dict[str, str]  # HTTP route -> gRPC worker target
    listen: str = "127.0.0.1:8900"
    health_poll_seconds: float = 0.5
    grace_seconds: float = 30.0
    limits: BridgeLimits = field(default_factory=BridgeLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    security: security.BridgeSecurity = field(default_factory=security.BridgeSecurity)


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


# flag name -> (dataclass field, type, help). Each is --NAME and BRIDGE_NAME (upper case, '-' -> '_').
_LIMIT_FLAGS = [
    ("max-body-bytes", "max_body_bytes", int, "largest request body (413 beyond)"),
    ("max-parts", "max_parts", int, "most parts in one request (413 beyond)"),
    ("max-part-bytes", "max_part_bytes", int, "largest single part (413 beyond)"),
    ("deadline-seconds", "deadline_seconds", float,
     "deadline of every worker call, upload and model included (504 beyond)"),
    ("queue-wait-seconds", "queue_wait_seconds", float,
     "how long a request may wait for a worker with a free place before 503"),
]
_HTTP_FLAGS = [
    ("header-timeout", "header_timeout", float, "seconds a client has to send its request headers"),
    ("keepalive-timeout", "keepalive_timeout", float, "seconds an idle keep-alive connection stays open"),
    ("body-timeout", "body_timeout", float,
     "a client must send --min-upload-rate x this many body bytes in every this many seconds of waiting"),
    ("min-upload-rate", "min_upload_rate", int, "bytes per second a client must send its body at (408 below)"),
    ("send-timeout", "send_timeout", float, "seconds a client may leave the answer unread before it is cut off"),
    ("max-header-bytes", "max_header_bytes", int, "largest request line + headers (431 beyond)"),
    ("max-headers", "max_headers", int, "most header fields in a request (431 beyond)"),
    ("max-connections", "max_connections", int, "most open client connections (503 beyond)"),
]


def _env_name(flag: str) -> str:
    return "BRIDGE_" + flag.upper().replace("-", "_")



def _program_name() -> str:
    """As the user typed it: `arterys-bridge` (the installed console script) or `python -m bridge`."""
    invoked = os.path.basename(sys.argv[0] if sys.argv else "")
    return invoked if invoked == "arterys-bridge" else "python -m bridge"

def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    parser = argparse.ArgumentParser(
        prog=_program_name(),
        description="Speaks the Arterys inference protocol over HTTP and streams each request to gRPC model "
                    "workers. Every flag can also be set by the environment variable named in brackets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--worker", default=env("BRIDGE_WORKER"),
                        help="gRPC target serving the / route: host:port, ipv4:a:p1,b:p2 or dns:///worker:50051 "
                             "(round_robin over every address) [BRIDGE_WORKER]")
    parser.add_argument("--route", action="append", default=(env("BRIDGE_ROUTES") or "").split(),
                        help="extra route PATH=TARGET, repeatable [BRIDGE_ROUTES, space separated]")
    parser.add_argument("--listen", default=env("BRIDGE_LISTEN", "127.0.0.1:8900"),
                        help="HTTP HOST:PORT (port 0 picks a free one) [BRIDGE_LISTEN]")
    parser.add_argument("--grace-seconds", type=float, default=float(env("BRIDGE_GRACE_SECONDS", "30")),
                        help="on SIGTERM, how long in-flight requests may take to finish [BRIDGE_GRACE_SECONDS]")
    for defaults, flags in ((BridgeLimits(), _LIMIT_FLAGS), (HttpLimits(), _HTTP_FLAGS)):
        for flag, name, kind, text in flags:
            default = kind(env(_env_name(flag), getattr(defaults, name)))
            parser.add_argument(f"--{flag}", dest=name, type=kind, default=default,
                                help=f"{text} [{_env_name(flag)}]")
    security.add_flags(parser)
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
    values = vars(args)
    limits = BridgeLimits(**{f.name: values[f.name] for f in fields(BridgeLimits) if f.name in values})
    http = HttpLimits(**{f.name: values[f.name] for f in fields(HttpLimits) if f.name in values},
                      drain_limit=limits.max_body_bytes)
    return BridgeConfig(routes=routes, listen=args.listen, grace_seconds=args.grace_seconds, limits=limits, http=http,
                        security=security.from_args(parser, args))
