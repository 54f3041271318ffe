"""W3C trace context on Kafka headers (services.runtime.tracing) and the stage spans built on it
(services.runtime.spans), with OpenTelemetry's in-memory exporter: no broker, no collector."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from services.answerer.providers import Completion, parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.answerer.stage import Answerer, model_answer, workflow_answer
from services.runtime.spans import StageSpans, close_hop, from_environment, open_hop, tracing_enabled
from services.runtime.tracing import (
    TRACEPARENT,
    TraceParent,
    child_of,
    format_traceparent,
    outgoing_headers,
    parent_of,
    parse_traceparent,
    start,
    trace_id_of,
)
from services.wire.models import Governed
from tests.unit.chain_records import answered

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
EXAMPLE = f"00-{TRACE_ID}-{SPAN_ID}-01"  # the spec's own example
REPLY_TO = ("switchyard-reply-to", b"gateway-2")


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    """A finished span's trace id and span id, as the header writes them."""
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


def is_hex(value: str, length: int) -> bool:
    return len(value) == length and all(c in "0123456789abcdef" for c in value) and set(value) != {"0"}


# -- parsing and formatting -----------------------------------------------------------------------------


def test_the_specs_example_parses_and_formats_back_byte_for_byte() -> None:
    parent = parse_traceparent(EXAMPLE.encode())
    assert parent == TraceParent(TRACE_ID, SPAN_ID, 0x01) and parent.sampled
    assert format_traceparent(parent) == EXAMPLE.encode()
    assert parse_traceparent(EXAMPLE) == parent, "a str value reads as the bytes would"


def test_an_unsampled_parent_keeps_its_flags() -> None:
    parent = parse_traceparent(f"00-{TRACE_ID}-{SPAN_ID}-00")
    assert parent is not None and not parent.sampled and format_traceparent(parent).endswith(b"-00")


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"",
        b"garbage",
        EXAMPLE.upper(),  # hex must be lowercase
        f"00-{'0' * 32}-{SPAN_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero span id
        f"ff-{TRACE_ID}-{SPAN_ID}-01",  # version ff is forbidden
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",  # version 00 is exactly 55 characters
        f"00-{TRACE_ID}-{SPAN_ID}-01x",
        f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",  # a trace id one digit short
        f"00-{TRACE_ID}0-{SPAN_ID}-01",  # one digit long
        f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-1",  # flags are two digits
        f"00-{TRACE_ID}-{SPAN_ID}-0g",
        f"0-{TRACE_ID}-{SPAN_ID}-01",
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        f"00-{TRACE_ID} -{SPAN_ID}-01",
        f"00-{TRACE_ID[:-1]}é-{SPAN_ID}-01",  # not ASCII
        f"00-{TRACE_ID}-{SPAN_ID}-01".encode() + b"\x00",
        f"00-{TRACE_ID},00-{TRACE_ID}-{SPAN_ID}-01",  # two values combined
    ],
)
def test_a_malformed_traceparent_reads_as_absent(value: bytes | str | None) -> None:
    assert parse_traceparent(value) is None


def test_surrounding_blanks_are_ignored() -> None:
    assert parse_traceparent(f" {EXAMPLE}\t") == TraceParent(TRACE_ID, SPAN_ID, 0x01)


def test_a_later_version_is_read_as_far_as_version_00_goes() -> None:
    assert parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-add") == TraceParent(
        TRACE_ID, SPAN_ID, 0x01
    )
    assert parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-01") is not None
    assert parse_traceparent(f"cc-{TRACE_ID}-{SPAN_ID}-01x") is None, "what follows the flags starts with a dash"


@given(st.one_of(st.binary(max_size=80), st.text(max_size=80)))
def test_parsing_never_raises_and_whatever_parses_formats_back_to_itself(value: bytes | str) -> None:
    parent = parse_traceparent(value)
    if parent is not None:
        assert parse_traceparent(format_traceparent(parent)) == parent


@given(st.from_regex(r"\A[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}\Z"))
def test_every_well_formed_value_but_version_ff_and_zero_ids_parses(value: str) -> None:
    version, trace_id, span_id, _flags = value.split("-")
    valid = version != "ff" and set(trace_id) != {"0"} and set(span_id) != {"0"}
    assert (parse_traceparent(value) is not None) == valid


# -- new traces and child spans ---------------------------------------------------------------------------


def test_a_new_trace_has_random_valid_ids_and_is_sampled() -> None:
    first, second = start(), start()
    assert is_hex(first.trace_id, 32) and is_hex(first.span_id, 16) and first.sampled
    assert first.trace_id != second.trace_id and first.span_id != second.span_id
    assert parse_traceparent(format_traceparent(first)) == first


def test_a_child_keeps_the_trace_id_and_flags_and_gets_a_new_span_id() -> None:
    parent = TraceParent(TRACE_ID, SPAN_ID, 0x01)
    child = child_of(parent)
    assert child.trace_id == TRACE_ID and child.flags == 0x01
    assert is_hex(child.span_id, 16) and child.span_id != SPAN_ID and child.span_id != child_of(parent).span_id
    assert parse_traceparent(format_traceparent(child)) == child


def test_a_child_propagates_undefined_flags_as_zero() -> None:
    assert child_of(TraceParent(TRACE_ID, SPAN_ID, 0xFF)).flags == 0x03
    assert child_of(TraceParent(TRACE_ID, SPAN_ID, 0x00)).flags == 0x00


# -- headers ------------------------------------------------------------------------------------------------


def test_the_parent_is_read_from_the_traceparent_header_alone() -> None:
    assert parent_of(None) is None and parent_of([]) is None
    assert parent_of([REPLY_TO]) is None
    assert parent_of([REPLY_TO, (TRACEPARENT, EXAMPLE.encode())]) == TraceParent(TRACE_ID, SPAN_ID, 0x01)
    assert parent_of([("Traceparent", EXAMPLE.encode())]) is None, "Kafka header names are case-sensitive"
    assert parent_of([(TRACEPARENT, None)]) is None
    assert parent_of([(TRACEPARENT, EXAMPLE.encode()), (TRACEPARENT, EXAMPLE.encode())]) is None, "two are invalid"
    assert trace_id_of(((TRACEPARENT, EXAMPLE.encode()),)) == TRACE_ID, "aiokafka's tuples read too"
    assert trace_id_of([(TRACEPARENT, b"00-nonsense")]) == ""


def test_outgoing_headers_name_the_child_and_carry_every_other_header_unchanged() -> None:
    parent = TraceParent(TRACE_ID, SPAN_ID, 0x01)
    child = child_of(parent)
    incoming = [("a", b"1"), (TRACEPARENT, EXAMPLE.encode()), REPLY_TO, ("tracestate", b"congo=t61rcWkgMzE"),
                ("a", b"2"), ("empty", None)]  # fmt: skip
    assert outgoing_headers(incoming, parent, child) == [
        (TRACEPARENT, format_traceparent(child)),
        ("a", b"1"),
        REPLY_TO,
        ("tracestate", b"congo=t61rcWkgMzE"),
        ("a", b"2"),
        ("empty", None),
    ]
    assert incoming[1] == (TRACEPARENT, EXAMPLE.encode()), "the incoming headers are not changed"


def test_a_new_trace_drops_the_old_traces_tracestate_and_keeps_the_rest() -> None:
    fresh = start()
    incoming = [(TRACEPARENT, b"junk"), REPLY_TO, ("tracestate", b"congo=t61rcWkgMzE")]
    assert outgoing_headers(incoming, None, fresh) == [(TRACEPARENT, format_traceparent(fresh)), REPLY_TO]
    assert outgoing_headers(None, None, fresh) == [(TRACEPARENT, format_traceparent(fresh))]


# -- spans ----------------------------------------------------------------------------------------------------


@pytest.fixture
def exported() -> Iterator[tuple[StageSpans, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield StageSpans(provider.get_tracer("test"), provider), exporter
    provider.shutdown()


def test_without_spans_a_hop_continues_the_header_and_makes_no_span() -> None:
    parent = TraceParent(TRACE_ID, SPAN_ID, 0x01)
    hop = open_hop(None, "router", [REPLY_TO], parent)
    assert hop.span is None and hop.trace.trace_id == TRACE_ID and hop.trace.span_id != SPAN_ID
    assert hop.headers == [(TRACEPARENT, format_traceparent(hop.trace)), REPLY_TO]
    close_hop(hop, "ok", "r-1")  # nothing to end: a no-op


def test_a_stage_span_is_the_child_of_the_incoming_parent_and_its_outputs_name_it(
    exported: tuple[StageSpans, InMemorySpanExporter],
) -> None:
    spans, exporter = exported
    parent = TraceParent(TRACE_ID, SPAN_ID, 0x01)
    hop = open_hop(spans, "stitcher", [REPLY_TO], parent)
    close_hop(hop, "ok", "r-1", {"extra": 1})
    (span,) = exporter.get_finished_spans()
    assert span.name == "stitcher" and span.parent is not None and span.parent.is_remote
    assert f"{span.parent.trace_id:032x}" == TRACE_ID and f"{span.parent.span_id:016x}" == SPAN_ID
    assert hex_ids(span) == (TRACE_ID, hop.trace.span_id)
    assert hop.headers == [(TRACEPARENT, format_traceparent(hop.trace)), REPLY_TO]
    assert dict(span.attributes or {}) == {
        "switchyard.stage": "stitcher",
        "switchyard.outcome": "ok",
        "switchyard.request_id": "r-1",
        "extra": 1,
    }


def test_a_stage_span_without_a_parent_starts_a_trace_and_a_failure_marks_it(
    exported: tuple[StageSpans, InMemorySpanExporter],
) -> None:
    spans, exporter = exported
    hop = open_hop(spans, "router", None, None)
    close_hop(hop, "dead_lettered", None, error=ValueError("bad bytes"))
    (span,) = exporter.get_finished_spans()
    assert span.parent is None and hex_ids(span) == (hop.trace.trace_id, hop.trace.span_id)
    assert is_hex(hop.trace.trace_id, 32) and hop.trace.sampled
    assert span.status.status_code == StatusCode.ERROR and span.events[0].name == "exception"
    assert (span.attributes or {})["switchyard.outcome"] == "dead_lettered"


def test_spans_are_made_only_when_an_otlp_endpoint_is_set() -> None:
    assert not tracing_enabled({}) and from_environment("switchyard-router", {}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert not tracing_enabled({**endpoint, "OTEL_SDK_DISABLED": "true"})
    assert tracing_enabled({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"})
    spans = from_environment("switchyard-router", endpoint)
    assert spans is not None and spans.provider is not None
    assert spans.provider.resource.attributes["service.name"] == "switchyard-router"
    spans.shutdown()


def test_the_answerers_span_gets_genai_attributes_for_a_model_answer_only() -> None:
    config = parse_provider_config({"kind": "openai", "name": "openai", "base_url": "http://127.0.0.1:9/v1",
                                    "model": "m"})  # fmt: skip
    stage = Answerer(ProviderRegistry({"openai": GuardedProvider.from_config(config, environ={})}, default="openai"))
    record = Governed.model_validate({k: v for k, v in answered("r-1").model_dump().items() if k != "answer"})
    completion = Completion("Open till 9.", "openai", "gpt-x", "1", tokens_in=41, tokens_out=5, latency_ms=80.0,
                            finish_reason="stop")  # fmt: skip
    assert stage.span_attributes(record, model_answer(completion, [], [])) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": "openai",
        "gen_ai.request.model": "gpt-x",
        "gen_ai.request.max_tokens": 64,
        "gen_ai.usage.input_tokens": 41,
        "gen_ai.usage.output_tokens": 5,
    }
    assert stage.span_attributes(record, workflow_answer(record)) == {}, "no model was called"
