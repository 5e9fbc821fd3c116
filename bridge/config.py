"""Command-line flags of `python -m bridge`, each also readable from a BRIDGE_* environment variable."""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from dataclasses import dataclass, field, fields

from bridge import security
from contract import limits

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """'10.0.0.0/8, 192.168.1.7' -> networks; ValueError naming the entry that is not an address."""
    networks = []
    for entry in text.replace(",", " ").split():
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


# hyper (granian's HTTP/1.1 parser) refuses a request with more header fields than this (431).
SERVER_MAX_HEADERS = 100


@dataclass(frozen=True)
class HttpLimits:
    """What a client connection may do (README, "Limits and timeouts"; bridge/front.py, bridge/middleware.py)."""

    header_timeout: float = 10.0  # to send a request head, and the longest idle time between two requests
    body_timeout: float = limits.RATE_WINDOW_SECONDS
    min_upload_rate: int = limits.MIN_UPLOAD_RATE  # bytes per second, over each body_timeout seconds of waiting
    send_timeout: float = 30.0
    max_header_bytes: int = 64 << 10
    max_headers: int = SERVER_MAX_HEADERS
    max_url_bytes: int = 8 << 10
    max_connections: int = 4096
    max_uploads_per_client: int = 32
    auth_failures_per_minute: int = 20
    trusted_proxies: str = ""  # addresses/networks whose X-Forwarded-For names the client (bridge/clients.py)
    drain_limit: int = limits.MAX_STUDY_BYTES  # request body bytes read and dropped after an early answer


@dataclass(frozen=True)
class BridgeLimits:
    """What one inference request may be, and how long it may take."""

    max_body_bytes: int = limits.MAX_STUDY_BYTES
    max_parts: int = limits.MAX_PARTS
    max_part_bytes: int = limits.MAX_PART_BYTES
    max_json_bytes: int = limits.MAX_JSON_BYTES
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
    ("header-timeout", "header_timeout", float,
     "seconds a client has to send its request headers; also the longest an idle keep-alive connection stays open"),
    ("body-timeout", "body_timeout", float,
     "a client must send --min-upload-rate x this many body bytes in every this many seconds of waiting"),
    ("min-upload-rate", "min_upload_rate", int, "bytes per second a client must send its body at (408 below)"),
    ("send-timeout", "send_timeout", float, "seconds a client may leave the answer unread before it is cut off"),
    ("max-header-bytes", "max_header_bytes", int, "largest request line + headers (431 beyond)"),
    ("max-headers", "max_headers", int, f"most header fields in a request (431 beyond; at most {SERVER_MAX_HEADERS})"),
    ("max-connections", "max_connections", int,
     "most client connections served at once; more wait in the listen queue until one closes"),
    ("max-uploads-per-client", "max_uploads_per_client", int,
     "most request bodies one client address may be sending at once (429 beyond)"),
    ("auth-failures-per-minute", "auth_failures_per_minute", int,
     "refused bearer tokens one client address may send a minute before it gets 429"),
    ("trusted-proxies", "trusted_proxies", str,
     "reverse proxies (addresses or networks, comma separated) whose X-Forwarded-For names the client; "
     "none by default"),
]


# Flags of the bridge's former HTTP server that no longer mean anything: each fails with its replacement named.
REMOVED_FLAGS = {
    "keepalive-timeout": "idle keep-alive connections now close after --header-timeout (BRIDGE_HEADER_TIMEOUT)",
}


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


def _refuse_removed_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    for flag, replacement in REMOVED_FLAGS.items():
        if any(arg == f"--{flag}" or arg.startswith(f"--{flag}=") for arg in argv):
            parser.error(f"--{flag} is no longer supported: {replacement}")
        if _env_name(flag) in os.environ:
            parser.error(f"{_env_name(flag)} is no longer supported: {replacement}")


def parse_config(argv: list[str] | None = None) -> BridgeConfig:
    parser = build_parser()
    _refuse_removed_flags(parser, sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if not 1 <= args.max_headers <= SERVER_MAX_HEADERS:
        parser.error(f"--max-headers must be between 1 and {SERVER_MAX_HEADERS} (the HTTP server's own limit)")
    try:
        parse_networks(args.trusted_proxies)
    except ValueError as error:
        parser.error(f"--trusted-proxies: {error}")
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
