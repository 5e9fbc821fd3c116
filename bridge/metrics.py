"""The bridge's Prometheus metrics, in one place (names and labels: README); each app owns its registry."""

from __future__ import annotations

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
        self.open_connections = Gauge("bridge_http_open_connections", "Client connections open now.", registry=r)
        # Connections the HTTP server ended itself, by reason: header_timeout, idle, send_timeout, bad_request,
        # request_header_fields_too_large, uri_too_long, too_many_connections, evicted_idle (an idle connection
        # closed to make room for a new one past max_connections).
        self.rejected = Counter("bridge_http_rejected", "Connections ended by the server's limits and timeouts.",
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

    def http_stats(self, what: str, value) -> None:
        """The HTTP server's reports (see bridge.httpserver.HttpServer.stats)."""
        if what == "open_connections":
            self.open_connections.set(value)
        elif what == "rejected":
            self.rejected.labels(value).inc()
