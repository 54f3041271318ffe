"""W3C trace context across the real chain, as five processes and fused in one: a request produced with a
`traceparent` and a `switchyard-reply-to` header is answered on `audited` in the same trace, under a span of the
chain's own, with the reply-to header intact; a dead letter stays in the request's trace; and telemetry's
stage_events rows are found by the trace id."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from services.infra.clickhouse import get_client
from services.runtime.deadletter import opened_original
from services.runtime.kafka_clients import confluent_config
from services.runtime.request_key import STORE_PARTITIONER
from services.runtime.sealing import dead_letter_opener
from services.runtime.tracing import TRACEPARENT, Header, TraceParent, parent_of
from services.settings import Settings
from services.tools.seed import publish_stores, stores
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import CHAIN, Chain, running_chain

REPLY_TO = "switchyard-reply-to"
Headers = list[Header]


@pytest.fixture(scope="module", params=[False, True], ids=["apart", "fused"])
def chain(
    request: pytest.FixtureRequest,
    settings: Settings,
    codec: AvroCodec,
    admin: AdminClient,
    clickhouse: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Chain]:
    log_dir = tmp_path_factory.mktemp("trace")
    with running_chain(settings, codec, admin, log_dir, fused=request.param) as running:
        yield running


def a_trace() -> tuple[str, str, bytes]:
    """A caller's trace id and span id, and the traceparent naming them."""
    trace_id, span_id = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    return trace_id, span_id, f"00-{trace_id}-{span_id}-01".encode()


def produce(chain: Chain, topic: str, key: bytes, value: bytes, headers: Headers) -> None:
    producer = Producer(confluent_config({"enable.idempotence": True, **STORE_PARTITIONER}, chain.settings))
    producer.produce(chain.topic(topic), value=value, key=key, headers=headers)
    assert producer.flush(30) == 0


def read_one(
    chain: Chain, topic: str, matches: Callable[[dict[str, Any]], bool], timeout_s: float = 90.0
) -> tuple[dict[str, Any], Headers]:
    """The first committed record on `topic` that `matches`, decoded, with its Kafka headers."""
    consumer = Consumer(
        confluent_config(
            {
                "group.id": f"trace-reader-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            },
            chain.settings,
        )
    )
    consumer.subscribe([chain.topic(topic)])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() or message.value() is None:
                continue
            _, record = chain.codec.decode(message.value() or b"")
            if matches(record):
                headers = message.headers() or []
                assert isinstance(headers, list)
                return record, headers
    finally:
        consumer.close()
    raise AssertionError(f"no matching record on {topic} within {timeout_s}s; logs in {chain.log_dir}")


def continued(headers: Headers, trace_id: str, span_id: str) -> TraceParent:
    """The record's trace parent, checked to be in the caller's trace under a span of the chain's own."""
    assert sum(name == TRACEPARENT for name, _ in headers) == 1, headers
    parent = parent_of(headers)
    assert parent is not None, headers
    assert parent.trace_id == trace_id and parent.span_id != span_id
    return parent


def stage_events(settings: Settings, trace_id: str, expected: int, timeout_s: float = 30.0) -> list[tuple[str, str]]:
    """(stage, outcome) of the stage_events rows with this trace id, once telemetry wrote `expected` of them."""
    client = get_client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        rows = client.query(
            "SELECT stage, outcome FROM switchyard.stage_events FINAL WHERE trace_id = {t:String} ORDER BY started_at",
            parameters={"t": trace_id},
        ).result_rows
        if len(rows) >= expected or time.monotonic() > deadline:
            return [(str(stage), str(outcome)) for stage, outcome in rows]
        time.sleep(0.5)


def test_an_answer_stays_in_the_requests_trace_and_keeps_its_reply_to_header(chain: Chain, settings: Settings) -> None:
    trace_id, span_id, traceparent = a_trace()
    request = chain.requests(1, run=f"trace-{uuid.uuid4().hex[:6]}")[0]
    reply_to = f"gateway-{uuid.uuid4().hex[:6]}".encode()
    headers: Headers = [(TRACEPARENT, traceparent), (REPLY_TO, reply_to)]
    produce(chain, "requests", request.store_id.encode(), chain.codec.encode("Request", request.model_dump()), headers)

    audited, audited_headers = read_one(chain, "audited", lambda r: r["request"]["request_id"] == request.request_id)
    continued(audited_headers, trace_id, span_id)
    assert [value for name, value in audited_headers if name == REPLY_TO] == [reply_to]
    assert [t["stage"] for t in audited["timings"]] == CHAIN

    # every hop between is in the trace, each stage under its own span
    spans = {span_id}
    for topic in ("routed", "stitched", "governed", "answered"):
        _, hop_headers = read_one(chain, topic, lambda r: r["request"]["request_id"] == request.request_id)
        spans.add(continued(hop_headers, trace_id, span_id).span_id)
        assert [value for name, value in hop_headers if name == REPLY_TO] == [reply_to], topic
    spans.add(continued(audited_headers, trace_id, span_id).span_id)
    assert len(spans) == len(CHAIN) + 1, "the caller's span and one per stage"

    assert sorted(stage_events(settings, trace_id, len(CHAIN))) == sorted((stage, "ok") for stage in CHAIN)


def test_a_request_without_a_traceparent_is_answered_in_a_new_trace_with_its_reply_to(chain: Chain) -> None:
    request = chain.requests(1, run=f"untraced-{uuid.uuid4().hex[:6]}")[0]
    produce(chain, "requests", request.store_id.encode(), chain.codec.encode("Request", request.model_dump()),
            [(REPLY_TO, b"gateway-0")])  # fmt: skip
    _, headers = read_one(chain, "audited", lambda r: r["request"]["request_id"] == request.request_id)
    assert parent_of(headers) is not None, "the router started a trace"
    assert [value for name, value in headers if name == REPLY_TO] == [b"gateway-0"]


def test_a_record_dead_lettered_at_the_head_keeps_its_trace_id_and_headers(chain: Chain) -> None:
    trace_id, span_id, traceparent = a_trace()
    poison = b"\x00\x01 not avro " + uuid.uuid4().bytes
    produce(chain, "requests", b"0001", poison, [(TRACEPARENT, traceparent), (REPLY_TO, b"gateway-1")])
    opener = dead_letter_opener(chain.settings)  # dead letters hold their record sealed to the operator's key
    letter, headers = read_one(chain, "dlq.router", lambda r: opened_original(r, opener) == poison)
    assert letter["stage"] == "router" and poison not in letter["original"] and letter["original_sealed_with"]
    continued(headers, trace_id, span_id)
    assert [value for name, value in headers if name == REPLY_TO] == [b"gateway-1"]


def test_a_record_a_stage_dead_letters_mid_chain_stays_in_its_trace_down_to_clickhouse(
    chain: Chain, codec: AvroCodec, settings: Settings
) -> None:
    broken_store = stores(1, updated_at=0)[0].model_copy(update={"store_id": "9999", "timezone": "Mars/Olympus_Mons"})
    publish_stores(chain.settings.kafka_bootstrap, codec, [broken_store], chain.topic("ref.stores"))
    time.sleep(1.0)
    trace_id, span_id, traceparent = a_trace()
    request = chain.requests(1, run=f"trace-raise-{uuid.uuid4().hex[:6]}")[0].model_copy(
        update={"store_id": "9999", "text": "When do you open?"}
    )
    produce(chain, "requests", b"9999", codec.encode("Request", request.model_dump()),
            [(TRACEPARENT, traceparent), (REPLY_TO, b"gateway-3")])  # fmt: skip

    letter, headers = read_one(chain, "dlq.stitcher", lambda r: r["request_id"] == request.request_id)
    dead = continued(headers, trace_id, span_id)
    assert [value for name, value in headers if name == REPLY_TO] == [b"gateway-3"]
    _, routed_headers = read_one(chain, "routed", lambda r: r["request"]["request_id"] == request.request_id)
    assert continued(routed_headers, trace_id, span_id).span_id != dead.span_id, "the stitcher's own span"
    assert stage_events(settings, trace_id, 1) == [("stitcher", "dead_lettered")], letter["reason"]
