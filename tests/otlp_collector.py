"""An OTLP trace collector for tests: the real OTLP/gRPC TraceService (opentelemetry-proto's stubs) and the
OTLP/HTTP protobuf endpoint (POST /v1/traces), on free loopback ports, keeping every span it receives.

    with Collector() as collector:
        ...  # OTEL_EXPORTER_OTLP_ENDPOINT=collector.grpc_endpoint, or collector.http_endpoint
        spans = collector.wait_for(lambda spans: ..., timeout=10)
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass
class Span:
    service: str
    resource: dict
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str  # '' for a root span
    attributes: dict
    status: str
    events: list[str]
    start_ns: int
    end_ns: int
    protocol: str  # how it arrived: grpc or http
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace id, span id) of each span linked to
    event_attributes: list[dict] = field(default_factory=list)  # of each event, in the order of `events`


def _value(value: common_pb2.AnyValue):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


def _attributes(pairs) -> dict:
    return {pair.key: _value(pair.value) for pair in pairs}


class Collector:
    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        self.grpc_server = grpc.server(ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), self.grpc_server)
        self.grpc_port = self.grpc_server.add_insecure_port("127.0.0.1:0")
        self.http_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.http_port = self.http_server.server_address[1]

    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def __enter__(self) -> Collector:
        self.grpc_server.start()
        threading.Thread(target=self.http_server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.http_server.shutdown()
        self.http_server.server_close()
        self.grpc_server.stop(0)

    def receive(self, request: trace_service_pb2.ExportTraceServiceRequest, protocol: str) -> None:
        spans = []
        for resource_spans in request.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    spans.append(Span(
                        service=resource.get("service.name", ""), resource=resource, name=span.name,
                        kind=KINDS.get(span.kind, str(span.kind)), trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(), parent_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes), status=STATUS[span.status.code],
                        events=[event.name for event in span.events], start_ns=span.start_time_unix_nano,
                        end_ns=span.end_time_unix_nano, protocol=protocol,
                        links=[(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
                        event_attributes=[_attributes(event.attributes) for event in span.events],
                    ))
        with self.lock:
            self.spans.extend(spans)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def wait_for(self, predicate, timeout: float = 10.0) -> list[Span]:
        """The spans received once `predicate(spans)` holds; fails after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.snapshot()
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted(f"{s.service}:{s.name}" for s in spans)
                raise AssertionError(f"the collector did not get the spans wanted within {timeout} s; it has {names}")
            time.sleep(0.02)


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, collector: Collector) -> None:
        self.collector = collector

    def Export(self, request, context):
        self.collector.receive(request, "grpc")
        return trace_service_pb2.ExportTraceServiceResponse()


def _handler(collector: Collector):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces" or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_error(404 if self.path != "/v1/traces" else 415)
                return
            collector.receive(trace_service_pb2.ExportTraceServiceRequest.FromString(body), "http")
            answer = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args) -> None:  # quiet: pytest shows the test's own output
            pass

    return Handler
