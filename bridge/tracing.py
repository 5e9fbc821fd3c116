"""The bridge's part of a trace: a SERVER span per inference request, a CLIENT span for its gRPC call.

The request's span continues the client's trace (its `traceparent`, through the configured propagators) or
starts a new one, and ends with the answer: when its last byte has been written, or when the client went
away (bridge/app.py `_finish`). The call's span is its child; its context travels to the worker in the
call's metadata, and it ends when the gRPC call does (`StreamCall.on_end`, with the worker's own status),
whatever ended it.

With tracing off (service_runtime/tracing.py), a request costs one header look-up: a valid W3C traceparent
gives its log lines the client's trace id and is passed on to the worker unchanged.
"""

from __future__ import annotations

import grpc

from contract.inference_pb2 import DESCRIPTOR
from service_runtime import tracing
from service_runtime.grpc_aio import StreamCall

RPC_SERVICE = DESCRIPTOR.services_by_name["Inference"].full_name
RPC_NAME = f"{RPC_SERVICE}/Infer"
MAX_USER_AGENT = 256  # a header may be 64 KiB; a span attribute that size would only burden the backend


def _scheme(request) -> str:
    return request.scope.get("scheme", "http")


class CallTrace:
    """The CLIENT span of one worker call (None with tracing off) and the metadata that carries its context."""

    __slots__ = ("span", "metadata")

    def __init__(self, span=None, metadata: tuple = ()) -> None:
        self.span = span
        self.metadata = metadata

    def follow(self, call: StreamCall) -> None:
        """Ends the span when the admitted call ends, with the call's status."""
        if self.span is not None:
            call.on_end(self.end)

    def end(self, code: grpc.StatusCode | None) -> None:
        """Ends the span, once."""
        span, self.span = self.span, None
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        if code is not None:
            span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code != grpc.StatusCode.OK:  # a client's span: every other code is an error
                span.set_status(Status(StatusCode.ERROR, code.name))
        span.end()


NO_CALL = CallTrace()


class RequestTrace:
    """One request's trace id (for its log lines), its SERVER span while tracing is on, and what its worker
    call passes on."""

    __slots__ = ("trace_id", "span", "_forward")

    def __init__(self, trace_id: str = "", span=None, forward: tuple = ()) -> None:
        self.trace_id = trace_id
        self.span = span
        self._forward = forward  # with tracing off: the client's traceparent, unchanged

    @classmethod
    def start(cls, request, route: str, request_id: str) -> RequestTrace:
        tracer = tracing.tracer("bridge")
        if tracer is None:
            trace_id, forward = tracing.passed_on(request.header("traceparent"), request.header("tracestate"))
            return cls(trace_id, forward=forward) if trace_id else NO_TRACE
        from opentelemetry.trace import SpanKind

        span = tracer.start_span(f"{request.method} {route}", context=tracing.extract(request.headers),
                                 kind=SpanKind.SERVER, attributes={
                                     "http.request.method": request.method,
                                     "url.path": request.path,
                                     "url.scheme": _scheme(request),
                                     "http.route": route,
                                     "network.protocol.version": request.version,
                                     "client.address": request.client.rpartition(":")[0],
                                     "user_agent.original": request.header("user-agent")[:MAX_USER_AGENT],
                                     "arterys.request_id": request_id,
                                 })
        return cls(tracing.hex_trace_id(span), span)

    def call(self, target: str) -> CallTrace:
        """Starts the worker call's CLIENT span (covering admission, retries included, and the whole stream)."""
        if self.span is None:
            return CallTrace(None, self._forward) if self._forward else NO_CALL
        from opentelemetry.trace import SpanKind, set_span_in_context

        span = tracing.tracer("bridge").start_span(
            RPC_NAME, context=set_span_in_context(self.span), kind=SpanKind.CLIENT,
            attributes={"rpc.system": "grpc", "rpc.service": RPC_SERVICE, "rpc.method": "Infer",
                        "server.address": target})
        return CallTrace(span, tracing.inject(set_span_in_context(span)))

    def finish(self, code: str, received: int, sent: int, input_hash: str, complete: bool) -> None:
        """Ends the request's span: when the answer's last byte is written, or the request ended otherwise."""
        span, self.span = self.span, None
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        span.set_attribute("http.response.status_code", int(code))
        span.set_attribute("http.request.body.size", received)
        span.set_attribute("http.response.body.size", sent)
        if input_hash:
            span.set_attribute("arterys.input_hash", input_hash)
        if not complete:
            span.set_attribute("arterys.broken_off", True)
        if int(code) >= 500:  # a server's span: 4xx are the client's doing, not errors
            span.set_attribute("error.type", code)
            span.set_status(Status(StatusCode.ERROR))
        span.end()


NO_TRACE = RequestTrace()
