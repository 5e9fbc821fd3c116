"""The worker's part of a trace: a SERVER span per Infer call and a child span per stage.

The call's span continues the context the bridge put in the call's metadata (its CLIENT span). Each stage
(receive, queue, infer, check, send, as worker/serving/servicer.py names them) is a child span and is the current
span while it runs, so the model's own spans (through the OpenTelemetry API) nest under `infer`: the servicer
copies the context to the model's thread.

With tracing off (service_runtime/tracing.py), the call only reads a W3C traceparent from its metadata for the
`trace_id` of its log lines; stages cost nothing.
"""

from __future__ import annotations

import contextlib
import contextvars
import traceback

import grpc

from contract import metadata as contract_metadata
from contract.inference_pb2 import DESCRIPTOR
from service_runtime import tracing
from service_runtime.logs import as_study_data
from worker.serving import errors

RPC_SERVICE = DESCRIPTOR.services_by_name["Inference"].full_name
# The gRPC codes that are the server's failure (OpenTelemetry's semantic conventions for RPC server spans).
SERVER_ERRORS = frozenset((grpc.StatusCode.UNKNOWN, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNIMPLEMENTED,
                           grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DATA_LOSS))
GONE = {"cancelled": grpc.StatusCode.CANCELLED, "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED}
_NOTHING = contextlib.nullcontext()


def _status(error: BaseException) -> grpc.StatusCode:
    return error.status if isinstance(error, errors.WorkerError) else grpc.StatusCode.INTERNAL


def _record(span, error: BaseException) -> None:
    """The exception on the span as the log shows it: a model's words may quote the study (its UIDs, its
    patient's name), and a tracing backend is read as widely as the logs."""
    stacktrace = "".join(traceback.format_exception(error))
    span.record_exception(error, attributes={"exception.message": as_study_data(str(error)),
                                             "exception.stacktrace": as_study_data(stacktrace)})


class CallTrace:
    """One call's trace id (for its log lines) and, while tracing is on, its SERVER span. `with trace:` makes
    the span current for the call's coroutine."""

    __slots__ = ("trace_id", "span", "status", "_token")

    def __init__(self, trace_id: str = "", span=None) -> None:
        self.trace_id = trace_id
        self.span = span
        self.status: grpc.StatusCode | None = None
        self._token = None

    @classmethod
    def start(cls, metadata, model_name: str) -> CallTrace:
        tracer = tracing.tracer("worker")
        if tracer is None:
            trace_id = tracing.trace_id_of(contract_metadata.value(metadata, tracing.TRACEPARENT))
            return cls(trace_id) if trace_id else NO_TRACE
        from opentelemetry.trace import SpanKind

        span = tracer.start_span(f"{RPC_SERVICE}/Infer", context=tracing.extract(metadata), kind=SpanKind.SERVER,
                                 attributes={"rpc.system": "grpc", "rpc.service": RPC_SERVICE, "rpc.method": "Infer",
                                             "arterys.model.name": model_name})
        return cls(tracing.hex_trace_id(span), span)

    def __enter__(self) -> CallTrace:
        if self.span is not None:
            from opentelemetry import context, trace

            self._token = context.attach(trace.set_span_in_context(self.span))
        return self

    def __exit__(self, *exc_info) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)
            self._token = None

    def stage(self, name: str):
        """A child span for the stage, current while it runs (nothing with tracing off)."""
        return _NOTHING if self.span is None else self._stage(name)

    @contextlib.contextmanager
    def _stage(self, name: str):
        from opentelemetry import trace
        from opentelemetry.trace import Status, StatusCode

        span = tracing.tracer("worker").start_span(name, context=trace.set_span_in_context(self.span))
        with trace.use_span(span, end_on_exit=True, record_exception=False, set_status_on_exception=False):
            try:
                yield span
            except Exception as error:
                _record(span, error)  # the model's exception, chained, in the stage that raised it
                if _status(error) in SERVER_ERRORS:
                    span.set_status(Status(StatusCode.ERROR, type(error).__name__))
                raise

    def received(self, instances: int, attachments: int) -> None:
        if self.span is not None:
            self.span.set_attribute("arterys.instance_count", instances)
            self.span.set_attribute("arterys.attachment_count", attachments)

    def failed(self, error: BaseException) -> None:
        """Notes how the call failed, before it is finished."""
        if self.span is None:
            return
        self.status = _status(error)
        if not isinstance(error, errors.WorkerError):
            _record(self.span, error)

    def end(self, outcome: str, command: str, input_hash: str) -> None:
        """Ends the call's span with its outcome (the metrics' label) and gRPC status."""
        span, self.span = self.span, None
        if span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        status = grpc.StatusCode.OK if outcome == "ok" else self.status or GONE.get(outcome, grpc.StatusCode.CANCELLED)
        span.set_attribute("arterys.outcome", outcome)
        span.set_attribute("arterys.command", command)
        span.set_attribute("rpc.grpc.status_code", status.value[0])
        if input_hash:
            span.set_attribute("arterys.input_hash", input_hash)
        if status in SERVER_ERRORS:
            span.set_status(Status(StatusCode.ERROR, f"{status.name}: {outcome}"))
        span.end()


NO_TRACE = CallTrace()


def batch_span(study_contexts: list[contextvars.Context]):
    """For a batch of studies (worker/serving/batching.py), run on a model thread: an `infer_batch` span, current
    while the batch runs so that the model's own spans nest under it, linked to each study's `infer` span
    (a batch belongs to several traces; links are how OpenTelemetry says so); each of those spans gets the
    batch's size. Nothing with tracing off."""
    tracer = tracing.tracer("worker")
    return _NOTHING if tracer is None else _batch_span(tracer, study_contexts)


@contextlib.contextmanager
def _batch_span(tracer, study_contexts: list[contextvars.Context]):
    from opentelemetry import trace

    size = len(study_contexts)
    links = []
    for study_context in study_contexts:
        span = study_context.run(trace.get_current_span)
        if span.get_span_context().is_valid:
            span.set_attribute("arterys.batch_size", size)
            links.append(trace.Link(span.get_span_context()))
    span = tracer.start_span("infer_batch", links=links, attributes={"arterys.batch_size": size})
    with trace.use_span(span, end_on_exit=True):
        yield span
