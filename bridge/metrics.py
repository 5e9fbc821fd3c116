"""The bridge's Prometheus metrics, in one place (names and labels: README); each app owns its registry."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class BridgeMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # `route` is the matched rule (e.g. "/", "/healthcheck"), never the raw path: bounded cardinality.
        self.requests = Counter("bridge_http_requests", "HTTP requests by route and status.", ["route", "code"],
                                registry=r)
        self.duration = Histogram("bridge_http_request_duration_seconds", "Time to the last response byte.",
                                  ["route"], buckets=DURATION_BUCKETS, registry=r)
        self.request_bytes = Counter("bridge_request_bytes", "Request body bytes read.", registry=r)
        self.response_bytes = Counter("bridge_response_bytes", "Response body bytes written.", registry=r)
        self.inflight = Gauge("bridge_inflight_requests", "Inference requests in progress.", registry=r)
        # Read from the kernel's table at each scrape: the HTTP server (granian) does not report its connections.
        self.open_connections = Gauge("bridge_http_open_connections",
                                      "Client connections to the bridge's port open now (as the kernel counts).",
                                      registry=r)
        self.open_connections.set_function(lambda: self._count_connections())
        self._count_connections = lambda: 0
        # Requests the bridge's HTTP middleware ended itself, by reason: bad_request, not_implemented,
        # request_header_fields_too_large, uri_too_long, send_timeout, uploads_per_client, auth_failures. What the
        # HTTP server (hyper) ends itself (header timeouts, idle connections, unparsable requests) it does not
        # report; docs/decisions.md.
        self.rejected = Counter("bridge_http_rejected", "Requests ended by the bridge's HTTP limits and checks.",
                                ["reason"], registry=r)
        self.worker_ready = Gauge("bridge_worker_ready", "1 when the route's worker target has a SERVING worker.",
                                  ["route"], registry=r)
        self.ready_workers = Gauge("bridge_ready_workers", "Workers behind the route's target whose health says "
                                   "SERVING, as this bridge reaches them (counted every 2 s).", ["route"], registry=r)

    def start_routes(self, routes, codes) -> None:
        """Creates every route's request series at 0 for the status codes it can answer: a series that
        first appears at 1 shows no increase to rate(), so the first errors of a kind would go unseen."""
        for route in routes:
            for code in codes:
                self.requests.labels(route, code)

    def rejected_request(self, reason: str) -> None:
        self.rejected.labels(reason).inc()

    def watch_connections(self, port: int) -> None:
        """bridge_http_open_connections counts the established connections to `port` from now on."""
        self._count_connections = lambda: established_connections(port)


_TCP_TABLES = (Path("/proc/self/net/tcp"), Path("/proc/self/net/tcp6"))
_ESTABLISHED = "01"


def established_connections(port: int, tables=_TCP_TABLES) -> int:
    """Established TCP connections whose local port is `port`, from the kernel's tables (Linux); 0 elsewhere."""
    count = 0
    for table in tables:
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        count += count_established(lines, port)
    return count


def count_established(lines: list[str], port: int) -> int:
    """Rows of /proc/net/tcp (header removed) in state ESTABLISHED with local port `port`."""
    wanted = f"{port:04X}"
    count = 0
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == _ESTABLISHED and fields[1].rpartition(":")[2] == wanted:
            count += 1
    return count
