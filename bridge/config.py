"""The bridge's settings: one typed tree, from which `python -m bridge`'s flags, its BRIDGE_* variables and
its `--help` come (service_runtime/settings.py); each flag's help names its variable in brackets."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import sys
from dataclasses import dataclass, field

from bridge import security
from contract import limits
from service_runtime import settings
from service_runtime.settings import setting

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

    # To send a request head, and the longest idle time between two requests.
    header_timeout: float = setting(10.0, "seconds a client has to send its request headers; also the longest an "
                                          "idle keep-alive connection stays open")
    body_timeout: float = setting(limits.RATE_WINDOW_SECONDS, "a client must send --min-upload-rate x this many "
                                  "body bytes in every this many seconds of waiting")
    min_upload_rate: int = setting(limits.MIN_UPLOAD_RATE, "bytes per second a client must send its body at (408 "
                                   "below)")
    send_timeout: float = setting(30.0, "seconds a client may leave the answer unread before it is cut off")
    max_header_bytes: int = setting(64 << 10, "largest request line + headers (431 beyond)")
    max_headers: int = setting(SERVER_MAX_HEADERS, f"most header fields in a request (431 beyond; at most "
                                                   f"{SERVER_MAX_HEADERS})")
    max_connections: int = setting(16384, "most client connections served at once; more wait in the listen queue "
                                         "until one closes")
    max_uploads_per_client: int = setting(32, "most request bodies one client address may be sending at once (429 "
                                              "beyond)")
    auth_failures_per_minute: int = setting(20, "refused bearer tokens one client address may send a minute before "
                                                "it gets 429")
    # Addresses/networks whose X-Forwarded-For names the client (bridge/clients.py).
    trusted_proxies: str = setting("", "reverse proxies (addresses or networks, comma separated) whose "
                                       "X-Forwarded-For names the client; none by default")
    max_url_bytes: int = 8 << 10
    drain_limit: int = limits.MAX_STUDY_BYTES  # request body bytes read and dropped after an early answer


@dataclass(frozen=True)
class BridgeLimits:
    """What one inference request may be, and how long it may take."""

    max_body_bytes: int = setting(limits.MAX_STUDY_BYTES, "largest request body (413 beyond)")
    max_parts: int = setting(limits.MAX_PARTS, "most parts in one request (413 beyond)")
    max_part_bytes: int = setting(limits.MAX_PART_BYTES, "largest single part (413 beyond)")
    max_json_bytes: int = limits.MAX_JSON_BYTES
    deadline_seconds: float = setting(600.0, "deadline of every worker call, upload and model included (504 "
                                             "beyond)")
    queue_wait_seconds: float = setting(10.0, "how long a request may wait for a worker with a free place before "
                                              "503")


@dataclass(frozen=True)
class BridgeConfig:
    routes: dict[str, str] = field(default_factory=dict)  # HTTP route -> gRPC worker target: --worker and --route
    worker: str | None = setting(None, "gRPC target serving the / route: host:port, ipv4:a:p1,b:p2 or "
                                       "dns:///worker:50051 (round_robin over every address)")
    route: tuple[str, ...] = setting((), "extra route PATH=TARGET, repeatable", env="BRIDGE_ROUTES", append=True,
                                     env_note="[BRIDGE_ROUTES, space separated]")
    listen: str = setting("127.0.0.1:8900", "HTTP HOST:PORT (port 0 picks a free one)")
    grace_seconds: float = setting(30.0, "on SIGTERM, how long in-flight requests may take to finish")
    health_poll_seconds: float = 0.5
    limits: BridgeLimits = field(default_factory=BridgeLimits)
    http: HttpLimits = field(default_factory=HttpLimits)
    security: security.BridgeSecurity = field(default_factory=security.BridgeSecurity)


def parse_routes(values) -> dict[str, str]:
    routes = {}
    for value in values:
        path, sep, target = value.partition("=")
        if not sep or not path.startswith("/") or not target:
            raise argparse.ArgumentTypeError(
                f"--route must be PATH=TARGET, e.g. /segment=dns:///seg:50051; got {value!r}"
            )
        routes[path] = target
    return routes


ENV_PREFIX = "BRIDGE_"
# Flags of the bridge's former HTTP server that no longer mean anything: each fails with its replacement named.
REMOVED_FLAGS = {
    "keepalive-timeout": "idle keep-alive connections now close after --header-timeout (BRIDGE_HEADER_TIMEOUT)",
}


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.upper().replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    return settings.build_parser(
        BridgeConfig, ENV_PREFIX, prog=settings.program_name("arterys-bridge", "bridge"),
        description="Speaks the Arterys inference protocol over HTTP and streams each request to gRPC model "
                    "workers. Every flag can also be set by the environment variable named in brackets.")


def _refuse_removed_flags(parser: argparse.ArgumentParser, argv: list[str]) -> None:
    for flag, replacement in REMOVED_FLAGS.items():
        if any(arg == f"--{flag}" or arg.startswith(f"--{flag}=") for arg in argv):
            parser.error(f"--{flag} is no longer supported: {replacement}")
        if _env_name(flag) in os.environ:
            parser.error(f"{_env_name(flag)} is no longer supported: {replacement}")


def parse_config(argv: list[str] | None = None) -> BridgeConfig:
    parser = build_parser()
    _refuse_removed_flags(parser, sys.argv[1:] if argv is None else argv)
    config = settings.read(BridgeConfig, parser, argv)
    if not 1 <= config.http.max_headers <= SERVER_MAX_HEADERS:
        parser.error(f"--max-headers must be between 1 and {SERVER_MAX_HEADERS} (the HTTP server's own limit)")
    try:
        parse_networks(config.http.trusted_proxies)
    except ValueError as error:
        parser.error(f"--trusted-proxies: {error}")
    try:
        routes = parse_routes(config.route)
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    if config.worker:
        routes.setdefault("/", config.worker)
    if not routes:
        parser.error("name the worker: --worker TARGET (or BRIDGE_WORKER)")
    return dataclasses.replace(config, routes=routes, http=dataclasses.replace(
        config.http, drain_limit=config.limits.max_body_bytes), security=security.checked(parser, config.security))
