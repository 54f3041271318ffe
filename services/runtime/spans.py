"""A record's trace through one stage: the trace parent and headers every record produced for it carries and,
when tracing is on, its OpenTelemetry span (one per stage per record, exported over OTLP/HTTP).

Tracing is on when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set.
Otherwise no SDK is loaded and no span is made: the stage only continues the `traceparent` header.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, Span, SpanContext, SpanKind, Status, StatusCode, TraceFlags, Tracer
from opentelemetry.util.types import AttributeValue

from services.runtime.tracing import Header, Headers, TraceParent, child_of, outgoing_headers, start

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("switchyard.runtime")

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
# span attributes of every stage span; the stage adds its own (the answerer's gen_ai.*) through Stage.span_attributes
REQUEST_ID = "switchyard.request_id"
STAGE = "switchyard.stage"
OUTCOME = "switchyard.outcome"


@dataclass(slots=True)
class Hop:
    """One stage's part in one record's trace."""

    trace: TraceParent  # this stage's span: the parent its outputs name
    headers: list[Header]  # the headers of every record the stage produces for this one (dead letters included)
    span: Span | None  # None unless tracing is on


class StageSpans:
    """Opens and ends the stage spans of one process on `tracer`; `provider` is shut down (spans flushed) last."""

    def __init__(self, tracer: Tracer, provider: TracerProvider | None = None) -> None:
        self.tracer = tracer
        self.provider = provider

    def start(self, stage: str, parent: TraceParent | None) -> tuple[Span, TraceParent]:
        """A span named after the stage, the child of `parent` (a new trace without one), and its trace parent."""
        context = None
        if parent is not None:
            remote = SpanContext(
                int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True, trace_flags=TraceFlags(parent.flags)
            )
            context = trace.set_span_in_context(NonRecordingSpan(remote))
        span = self.tracer.start_span(stage, context=context, kind=SpanKind.CONSUMER, attributes={STAGE: stage})
        own = span.get_span_context()
        return span, TraceParent(f"{own.trace_id:032x}", f"{own.span_id:016x}", int(own.trace_flags))

    def shutdown(self) -> None:
        if self.provider is not None:
            self.provider.shutdown()


def open_hop(spans: StageSpans | None, stage: str, incoming: Headers | None, parent: TraceParent | None) -> Hop:
    """The stage's hop for a record that came with `incoming` headers naming `parent` (None: absent or invalid,
    so a new trace starts here)."""
    if spans is None:
        child = child_of(parent) if parent is not None else start()
        return Hop(child, outgoing_headers(incoming, parent, child), None)
    span, child = spans.start(stage, parent)
    return Hop(child, outgoing_headers(incoming, parent, child), span)


def close_hop(
    hop: Hop,
    outcome: str,
    request_id: str | None,
    attributes: Mapping[str, AttributeValue] | None = None,
    error: BaseException | None = None,
) -> None:
    """End the hop's span (if any) with the record's request id, the outcome and the stage's own attributes."""
    span = hop.span
    if span is None:
        return
    span.set_attribute(OUTCOME, outcome)
    if request_id is not None:
        span.set_attribute(REQUEST_ID, request_id)
    if attributes:
        span.set_attributes(attributes)
    if error is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def tracing_enabled(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether spans are exported: an OTLP endpoint is set and the SDK is not disabled (OTEL_SDK_DISABLED)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(environ.get(name) for name in ENDPOINT_VARIABLES)


def from_environment(service_name: str, environ: Mapping[str, str] = os.environ) -> StageSpans | None:
    """Stage spans exported over OTLP/HTTP in batches to the endpoint the standard variables name (the exporter
    reads them, with OTEL_EXPORTER_OTLP_HEADERS and the rest), as `service_name` unless OTEL_SERVICE_NAME says
    otherwise; None, and no SDK loaded, when tracing is not enabled."""
    if not tracing_enabled(environ):
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({SERVICE_NAME: environ.get("OTEL_SERVICE_NAME") or service_name})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing enabled: stage spans exported over OTLP/HTTP", extra={"service": service_name})
    return StageSpans(provider.get_tracer("switchyard.runtime"), provider)
