"""Tracing set-up shared by the bridge and the worker: OpenTelemetry, off unless the standard OTEL_* variables
turn it on.

**On** when OTEL_SDK_DISABLED is not "true" and either OTEL_TRACES_EXPORTER names an exporter (otlp,
console; "none" is off) or an OTLP endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; the exporter is then otlp). Everything else is read by the OpenTelemetry
SDK itself, the way `opentelemetry-instrument` reads it: OTEL_EXPORTER_OTLP_PROTOCOL (grpc, the SDK's
default, or http/protobuf), endpoints, headers, certificates, timeouts, OTEL_TRACES_SAMPLER(_ARG),
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (the service name defaults to arterys-bridge or
arterys-worker), OTEL_BSP_* (the batch processor), OTEL_PROPAGATORS.

**Off**, nothing is set up and nothing of the SDK is imported: no exporter, no thread, no span objects. A
request pays one header look-up: a W3C `traceparent` it carries is kept for its log lines (`trace_id=`) and
passed on to the worker as it came, so logs of both services still share the client's trace id.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

log = logging.getLogger("tracing")

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# W3C Trace Context, level 1: version-traceid-parentid-flags, lower-case hex; later versions may append fields.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
MAX_TRACESTATE = 512  # W3C: vendors may drop a longer one; it is only passed on, never read

_provider = None  # the SDK's TracerProvider while tracing is on
_tracers: dict = {}


class TracingConfigError(Exception):
    """The OTEL_* variables ask for something the SDK cannot do (an unknown exporter or protocol)."""


def enabled_by(env: Mapping[str, str]) -> bool:
    """The rule for "on" (see the module's doc); `env` is os.environ or a test's dict."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
                or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip())


def enabled() -> bool:
    return _provider is not None


def configure(default_service_name: str) -> bool:
    """Sets up the SDK from the environment when the rule says so; returns whether tracing is on.
    Raises TracingConfigError for settings the SDK refuses."""
    global _provider
    if _provider is not None or not enabled_by(os.environ):
        return _provider is not None
    # Imported only here: a service with tracing off never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.sdk import _configuration as sdk_configuration
    from opentelemetry.sdk.resources import OTELResourceDetector

    named = OTELResourceDetector().detect().attributes.get("service.name")  # OTEL_SERVICE_NAME or attributes
    exporters = []
    # Already set up (opentelemetry-instrument, the OpenTelemetry Operator's injection): used as it is.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # The SDK's own set-up from the environment (what opentelemetry-instrument runs): exporters, protocol,
        # sampler, id generator, resource, BatchSpanProcessor. Private, hence the exact pins of the SDK.
        try:
            if not os.environ.get("OTEL_TRACES_EXPORTER"):  # an endpoint alone means OTLP
                exporters = [sdk_configuration._get_exporter_entry_point("otlp", "traces")]
            sdk_configuration._initialize_components(
                trace_exporter_names=exporters,
                resource_attributes={} if named else {"service.name": default_service_name},
            )
        except Exception as error:  # an unknown exporter, protocol, compression...: the SDK says which
            raise TracingConfigError(f"tracing: the OTEL_* settings are not usable: {error}") from error
    _provider = trace.get_tracer_provider()
    resource, sampler = getattr(_provider, "resource", None), getattr(_provider, "sampler", None)
    log.info("tracing on: service %s, exporter %s, sampler %s",
             resource.attributes.get("service.name") if resource else "?",
             ", ".join(exporters or [os.environ.get("OTEL_TRACES_EXPORTER", "")]),
             sampler.get_description() if sampler else "?")
    return True


def tracer(name: str):
    """An OpenTelemetry tracer while tracing is on, else None (callers skip every span then)."""
    if _provider is None:
        return None
    found = _tracers.get(name)
    if found is None:
        found = _tracers[name] = _provider.get_tracer(name)
    return found


def shutdown() -> None:
    """Exports what is still buffered (bounded by the exporter's timeout) and stops; before the process exits."""
    global _provider
    if _provider is not None:
        provider, _provider = _provider, None
        _tracers.clear()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


# ---------------------------------------------------------------------------------- W3C trace context


def trace_id_of(traceparent: str) -> str:
    """The trace id of a valid W3C traceparent, else ''."""
    match = _TRACEPARENT.fullmatch(traceparent.strip()) if traceparent else None
    if match is None:
        return ""
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return ""
    return trace_id


def passed_on(traceparent: str, tracestate: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    """With tracing off: the trace id of a sender's traceparent and the metadata that passes it on unchanged
    (('', ()) when there is none or it is malformed)."""
    trace_id = trace_id_of(traceparent)
    if not trace_id:
        return "", ()
    metadata = ((TRACEPARENT, traceparent.strip()),)
    if tracestate and len(tracestate) <= MAX_TRACESTATE and tracestate.isascii() and tracestate.isprintable():
        metadata += ((TRACESTATE, tracestate),)
    return trace_id, metadata


class PairsGetter:
    """OpenTelemetry's Getter over a list of (lower-case name, value) pairs: HTTP headers, gRPC metadata."""

    def get(self, carrier, key: str):
        values = [value for name, value in carrier if name == key.lower() and isinstance(value, str)]
        return values or None

    def keys(self, carrier) -> list[str]:
        return [name for name, _ in carrier]


PAIRS = PairsGetter()


def extract(pairs) -> object:
    """The parent context carried by headers or metadata, through the configured propagators (W3C by default)."""
    from opentelemetry import propagate

    return propagate.extract(list(pairs or ()), getter=PAIRS)


def inject(context) -> tuple[tuple[str, str], ...]:
    """gRPC metadata carrying `context` (traceparent, tracestate, baggage as configured)."""
    from opentelemetry import propagate

    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return tuple((name.lower(), value) for name, value in carrier.items())


def hex_trace_id(span) -> str:
    context = span.get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else ""


def hex_span_id(span) -> str:
    context = span.get_span_context()
    return format(context.span_id, "016x") if context.is_valid else ""
