"""The runtime's pieces without a broker: dead-letter records, retries of transient failures, shutdown
during a retry, telemetry rows, the report's percentiles and work split, and the trace context every produced
record carries (its Kafka headers through _transact, with a recording producer in place of librdkafka's)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from typing import Any, ClassVar, cast

import pytest
from confluent_kafka import KafkaError
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import BaseModel

from services.pos.answers import Received
from services.pos.report import percentile, work_per_request, work_split
from services.runtime import worker as worker_module
from services.runtime.deadletter import dead_letter, opened_original
from services.runtime.faults import TransientError
from services.runtime.sealing import dead_letter_opener
from services.runtime.spans import StageSpans
from services.runtime.stage import SideRecord, Stage
from services.runtime.tracing import TRACEPARENT, Header, Headers, TraceParent, parent_of, trace_id_of
from services.runtime.worker import Consumed, Outgoing, ShuttingDown, StageWorker, WorkerConfig, finish_within
from services.settings import Settings
from services.telemetry.rows import ANSWER_COLUMNS, STAGE_EVENT_COLUMNS, answer_row, stage_event_rows
from services.tools.bench.runtime import Relay
from services.wire.codec import AvroCodec
from services.wire.models import DeadLetter, Request, Routed, RouteDecision
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from tests.unit.chain_records import answered

CODEC = AvroCodec(SchemaRegistry.load(REPO_SCHEMAS_DIR))


def test_a_dead_letter_keeps_the_original_bytes_position_and_reason_and_encodes() -> None:
    error = ValueError("bad store id")
    record = dead_letter(
        stage="router",
        reason="stage raised ValueError: bad store id",
        error=error,
        original=b"\xc3\x01raw",
        key=b"0417",
        topic="requests",
        partition=3,
        offset=42,
        request_id="r-1",
    )
    assert record["error_type"] == "ValueError" and record["original"] == b"\xc3\x01raw"
    assert DeadLetter.model_validate(CODEC.decode(CODEC.encode("DeadLetter", record))[1]).offset == 42
    again = dead_letter(
        stage="router", reason="x", error=error, original=b"", key=None, topic="requests", partition=3, offset=42,
        request_id=None,
    )  # fmt: skip
    assert again["dead_letter_id"] == record["dead_letter_id"], "the same record gets the same dead-letter id"


class Flaky(Stage[Request, RouteDecision]):
    name: ClassVar[str] = "flaky"
    input_topic: ClassVar[str] = "requests"
    input_record: ClassVar[str] = "Request"
    input_model = Request
    output_topic: ClassVar[str] = "routed"
    output_record: ClassVar[str] = "Routed"
    section: ClassVar[str] = "route"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    async def decide(self, record: Request) -> RouteDecision:
        self.calls += 1
        if self.calls <= self.failures:
            raise TransientError("provider timed out", request_id=record.request_id)
        return RouteDecision(
            route_id="r", kind="WORKFLOW", intent="i", confidence=1.0, provider=None, reason="ok",
            route_table_version="t",
        )  # fmt: skip


def worker_for(stage: Stage[Request, RouteDecision]) -> StageWorker:
    return StageWorker(stage, settings=Settings(), config=WorkerConfig(retry_initial_s=0.001), codec=CODEC)


def a_request() -> Request:
    return Request(request_id="r-1", store_id="0417", terminal_id="t", channel="POS", text="hi", created_at=0)


async def test_a_transient_failure_is_retried_until_it_succeeds_and_never_dead_lettered() -> None:
    stage = Flaky(failures=3)
    worker = worker_for(stage)
    result: BaseModel = await worker._decide_with_retries(a_request(), "r-1")
    assert stage.calls == 4
    assert isinstance(result, RouteDecision)
    assert worker.metrics.errors.labels(stage="flaky", kind="transient")._value.get() == 3


async def test_shutdown_interrupts_a_retry_and_leaves_the_batch_uncommitted() -> None:
    worker = worker_for(Flaky(failures=1000))
    retrying = asyncio.create_task(worker._decide_with_retries(a_request(), "r-1"))
    await asyncio.sleep(0.05)
    worker.stop()
    with pytest.raises(ShuttingDown):
        await retrying


def test_each_stage_timing_becomes_one_telemetry_row_and_the_answer_one_more() -> None:
    record = answered("r-9")
    audited = {**record.model_dump(), "audit": {"audit_id": "a", "chain_key": "0417", "prev_hash": "",
                                                "hash": "h", "recorded_at": 5_000}}  # fmt: skip
    events = stage_event_rows(audited)
    assert [row[STAGE_EVENT_COLUMNS.index("stage")] for row in events] == ["router", "answerer"]
    answerer = events[1]
    assert answerer[STAGE_EVENT_COLUMNS.index("tokens_in")] == 3
    assert answerer[STAGE_EVENT_COLUMNS.index("duration_ms")] == pytest.approx(0.001)
    row = answer_row(audited)
    assert len(row) == len(ANSWER_COLUMNS)
    assert row[ANSWER_COLUMNS.index("end_to_end_ms")] == pytest.approx(4.0)


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([], 99) == 0.0


def test_the_work_split_counts_the_work_stages_measured_not_their_waiting() -> None:
    record = answered("r-1").model_dump()
    record["timings"] = [
        {"stage": "router", "received_at": 0, "started_at": 10, "finished_at": 40_000, "work_ms": {"routing": 3.0}},
        {"stage": "stitcher", "received_at": 50, "started_at": 60, "finished_at": 120,
         "work_ms": {"context_stitching": 4.0, "data_prep": 1.0}},
        {"stage": "governor", "received_at": 130, "started_at": 140, "finished_at": 900,
         "work_ms": {"governance": 1.5, "policy": 0.5}},
        {"stage": "answerer", "received_at": 930, "started_at": 940, "finished_at": 10_000, "work_ms": {}},
    ]  # fmt: skip
    split = work_split([Received(record, 0.0)])
    assert split["routing"] == pytest.approx(30.0)
    assert split["context stitching"] == pytest.approx(40.0)
    assert split["policy"] == pytest.approx(5.0) and split["data prep"] == pytest.approx(10.0)
    assert split["audit"] == 0.0 and split["monitoring"] is None
    assert sum(v for v in split.values() if v is not None) == pytest.approx(100, abs=0.2)
    # the same work as ms per request, averaged over the requests: a second one with twice the routing work
    other = {**record, "timings": [{**record["timings"][0], "work_ms": {"routing": 6.0}}]}
    per_request = work_per_request([Received(record, 0.0), Received(other, 0.0)])
    assert per_request["routing"] == pytest.approx(4.5) and per_request["context_stitching"] == pytest.approx(2.0)
    assert per_request["total"] == pytest.approx((3 + 4 + 1 + 1.5 + 0.5 + 6) / 2)


async def test_only_the_finished_head_of_each_partition_is_ready_to_commit_in_offset_order() -> None:
    from collections import deque

    worker = worker_for(Flaky(failures=0))

    def message(tp: tuple[str, int], offset: int) -> Consumed:
        return Consumed(tp[0], tp[1], offset, b"k", b"v")

    async def result(value: bytes) -> Outgoing:
        return Outgoing("routed", b"k", value)

    blocker = asyncio.Event()

    async def slow() -> Outgoing:
        await blocker.wait()
        return Outgoing("routed", b"k", b"slow")

    first, second = ("requests", 0), ("requests", 1)
    worker._pending = {
        first: deque(
            [
                (message(first, 10), asyncio.create_task(result(b"a"))),
                (message(first, 11), asyncio.create_task(slow())),
                (message(first, 12), asyncio.create_task(result(b"c"))),
            ]
        ),
        second: deque([(message(second, 5), asyncio.create_task(result(b"x")))]),
    }
    await asyncio.sleep(0)
    ready = worker._ready_prefixes()
    assert [o.value for o in ready[first]] == [b"a"], "a record behind an unfinished one waits for it"
    assert [o.value for o in ready[second]] == [b"x"]
    blocker.set()
    await asyncio.sleep(0)
    assert [o.value for o in worker._ready_prefixes()[first]] == [b"a", b"slow", b"c"]


# -- a drain bounded in time ----------------------------------------------------------------------------


class OffsetRecordingProducer:
    """A transactional producer that records what each transaction produced and the offsets it committed."""

    def __init__(self) -> None:
        self.produced: list[bytes] = []
        self.committed: list[dict[tuple[str, int], int]] = []

    def begin_transaction(self) -> None: ...
    def commit_transaction(self, *_args: object) -> None: ...

    def send_offsets_to_transaction(self, partitions: list[Any], *_args: object) -> None:
        self.committed.append({(tp.topic, tp.partition): tp.offset for tp in partitions})

    def produce(self, topic: str, value: bytes, key: bytes | None, **_options: object) -> None:
        self.produced.append(value)


async def outgoing(value: bytes, release: asyncio.Event | None = None) -> Outgoing:
    if release is not None:
        await release.wait()
    return Outgoing("routed", b"k", value)


def draining(timeout_s: float) -> tuple[StageWorker, OffsetRecordingProducer]:
    worker = StageWorker(
        Flaky(failures=0), settings=Settings(), config=WorkerConfig(drain_timeout_s=timeout_s), codec=CODEC
    )
    producer = OffsetRecordingProducer()
    worker._producer, worker._group_metadata = cast(Any, producer), object()
    return worker, producer


async def in_flight(worker: StageWorker, slow: asyncio.Task[Outgoing]) -> None:
    """Partition 0 holds offsets 10 (finished), 11 (`slow`) and 12 (finished); partition 1 holds 5 (finished)."""
    first, second = ("requests", 0), ("requests", 1)
    worker._pending = {
        first: deque(
            [
                (Consumed(*first, 10, b"k", b"v"), asyncio.create_task(outgoing(b"a"))),
                (Consumed(*first, 11, b"k", b"v"), slow),
                (Consumed(*first, 12, b"k", b"v"), asyncio.create_task(outgoing(b"c"))),
            ]
        ),
        second: deque([(Consumed(*second, 5, b"k", b"v"), asyncio.create_task(outgoing(b"x")))]),
    }
    for _ in range(4):  # as _dispatch takes capacity for each record
        await worker._capacity.acquire()


async def test_a_drain_out_of_time_commits_the_finished_head_of_each_partition_and_abandons_the_rest(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker, producer = draining(timeout_s=0.05)
    stuck = asyncio.create_task(outgoing(b"stuck", asyncio.Event()))
    await in_flight(worker, stuck)
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="switchyard.runtime"):
        await worker.drain()
    assert time.monotonic() - started < 1.0
    assert producer.committed == [{("requests", 0): 11, ("requests", 1): 6}], "never past the abandoned offset 11"
    assert sorted(producer.produced) == [b"a", b"x"], "offset 12 finished, but behind 11: left for the next owner"
    await asyncio.sleep(0)
    assert stuck.cancelled()
    assert worker._pending == {} and worker._capacity._value == worker.config.max_in_flight
    logged = [r for r in caplog.records if r.getMessage().startswith("drain timed out")]
    assert [getattr(r, "records", None) for r in logged] == [1]


async def test_a_drain_within_its_time_waits_for_the_slow_record_and_commits_everything(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker, producer = draining(timeout_s=5.0)
    release = asyncio.Event()
    await in_flight(worker, asyncio.create_task(outgoing(b"slow", release)))
    asyncio.get_running_loop().call_later(0.02, release.set)
    with caplog.at_level("WARNING", logger="switchyard.runtime"):
        await worker.drain()
    assert producer.committed == [{("requests", 0): 13, ("requests", 1): 6}]
    assert sorted(producer.produced) == [b"a", b"c", b"slow", b"x"]
    assert not [r for r in caplog.records if r.getMessage().startswith("drain timed out")]


async def test_a_record_that_ignores_its_cancellation_does_not_hold_the_drain() -> None:
    release = asyncio.Event()

    async def stubborn() -> Outgoing:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            await release.wait()  # a stage swallowing the cancellation, as a careless one might
        return Outgoing("routed", b"k", b"late")

    task = asyncio.create_task(stubborn())
    started = time.monotonic()
    assert await finish_within([task], 0.02) == {task}
    assert time.monotonic() - started < 1.0
    assert await finish_within([], 0.02) == set()
    release.set()
    assert (await task).value == b"late"


class WedgedProducer(OffsetRecordingProducer):
    """librdkafka's send_offsets_to_transaction as it behaves after the group coordinator went away: it does
    not return, whatever its timeout (librdkafka #5456, #5511)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def send_offsets_to_transaction(self, partitions: list[Any], *_args: object) -> None:
        self.release.wait(30)


def watched(producer: OffsetRecordingProducer) -> StageWorker:
    config = WorkerConfig(transaction_timeout_ms=100, transaction_wedged_after_s=0.2)
    worker = StageWorker(Flaky(failures=0), settings=Settings(), config=config, codec=CODEC)
    worker._producer, worker._group_metadata = cast(Any, producer), object()
    return worker


async def test_a_transaction_wedged_in_librdkafka_ends_the_process_with_nothing_committed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = WedgedProducer()
    exits: list[tuple[str, float]] = []

    def exit_wedged(stage: str, waited_s: float) -> None:  # in place of os._exit, which would end the test run
        exits.append((stage, waited_s))
        producer.release.set()

    monkeypatch.setattr(worker_module, "exit_wedged", exit_wedged)
    started = time.monotonic()
    await watched(producer)._transact_watched([Outgoing("routed", b"k", b"v")], {("requests", 0): 8})
    assert [stage for stage, _ in exits] == ["flaky"]
    assert exits[0][1] >= 0.3 and time.monotonic() - started < 5
    assert producer.committed == []


async def test_a_transaction_that_returns_in_time_is_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "exit_wedged", lambda *_: pytest.fail("a healthy transaction was wedged"))
    producer = OffsetRecordingProducer()
    await watched(producer)._transact_watched([Outgoing("routed", b"k", b"v")], {("requests", 0): 8})
    assert producer.committed == [{("requests", 0): 8}] and producer.produced == [b"v"]


class FreshProducer(OffsetRecordingProducer):
    made: ClassVar[list[FreshProducer]] = []

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config, self.initialised = config, False
        FreshProducer.made.append(self)

    def init_transactions(self, _timeout_s: float) -> None:
        self.initialised = True


async def test_after_every_broker_was_down_the_next_transaction_runs_on_a_new_producer_with_the_same_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "Producer", FreshProducer)
    FreshProducer.made.clear()
    old = OffsetRecordingProducer()
    worker = watched(old)
    worker._on_client_error(KafkaError(KafkaError._TRANSPORT))  # one connection lost: nothing to do
    await worker._transact_watched([Outgoing("routed", b"k", b"1")], {("requests", 0): 1})
    assert FreshProducer.made == [] and old.committed == [{("requests", 0): 1}]
    worker._on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    await worker._transact_watched([Outgoing("routed", b"k", b"2")], {("requests", 0): 2})
    (fresh,) = FreshProducer.made
    assert fresh.initialised and fresh.config["transactional.id"] == worker.producer_config()["transactional.id"]
    assert fresh.committed == [{("requests", 0): 2}] and fresh.produced == [b"2"]
    assert old.committed == [{("requests", 0): 1}], "the old producer is not used again"
    assert cast(Any, worker._producer) is fresh


async def test_a_record_over_the_size_limit_is_dead_lettered_under_its_request_id() -> None:
    worker = StageWorker(Relay(1), settings=Settings(), config=WorkerConfig(max_record_bytes=32), codec=CODEC)
    value = routed_bytes("r-big")
    assert len(value) > 32
    out = await worker._handle(Consumed("hop1", 0, 7, b"k", value))
    letter = CODEC.decode(out.value)[1]
    assert out.topic == "dlq.relay1" and letter["error_type"] == "RecordTooLarge"
    assert letter["request_id"] == "r-big" and value not in letter["original"]  # sealed to the operator's key
    assert opened_original(letter, dead_letter_opener(Settings())) == value
    garbage = await worker._handle(Consumed("hop1", 0, 8, b"k", b"\xc3\x01" + b"\x00" * 100))
    assert CODEC.decode(garbage.value)[1]["request_id"] is None, "undecodable as well as too large: no id"


# -- trace context through the produce path -------------------------------------------------------------

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
REPLY_TO = ("switchyard-reply-to", b"gateway-2")


class Vaulting(Relay):
    """A relay that also emits a side record, as the governor does its vault entry."""

    def side_records(self, record: Routed, section: RouteDecision) -> list[SideRecord]:
        return [SideRecord("side", "Request", record.request.store_id, record.request.model_dump())]


class Broken(Relay):
    async def decide(self, record: Routed) -> RouteDecision:
        raise ValueError("no such store")


class RecordingProducer:
    """What _transact asks of confluent-kafka's transactional producer, recording each produce."""

    def __init__(self) -> None:
        self.produced: list[tuple[str, bytes | None, bytes, list[Header] | None]] = []

    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(self, *_args: object) -> None: ...
    def commit_transaction(self, *_args: object) -> None: ...

    def produce(
        self, topic: str, value: bytes, key: bytes | None, *, partition: int = -1, headers: list[Header] | None = None
    ) -> None:
        self.produced.append((topic, key, value, headers))


def relays(*stages: Relay, spans: StageSpans | None = None) -> StageWorker:
    return StageWorker(
        stages[0], settings=Settings(), config=WorkerConfig(), codec=CODEC, downstream=stages[1:], spans=spans
    )


def routed_bytes(request_id: str = "r-1") -> bytes:
    decision = RouteDecision(route_id="r", kind="WORKFLOW", intent="i", confidence=1.0, provider=None, reason="ok",
                             route_table_version="t")  # fmt: skip
    routed = Routed(request=a_request().model_copy(update={"request_id": request_id}), route=decision, timings=[])
    return CODEC.encode("Routed", routed.model_dump())


def consumed(value: bytes, headers: Headers | None) -> Consumed:
    return Consumed("hop0", 3, 41, b"0417", value, headers)


def produced_through(worker: StageWorker, message: Consumed, out: Outgoing) -> list[tuple[str, list[Header]]]:
    """Each produced record's topic and headers, as _transact hands them to the producer."""
    producer: Any = RecordingProducer()
    worker._producer, worker._group_metadata = producer, object()
    worker._transact([out], {(message.topic, message.partition): message.offset + 1})
    assert all(headers is not None for _topic, _key, _value, headers in producer.produced)
    return [(topic, headers or []) for topic, _key, _value, headers in producer.produced]


def traceparents(records: list[tuple[str, list[Header]]]) -> list[TraceParent]:
    parents = [parent_of(headers) for _topic, headers in records]
    assert all(parent is not None for parent in parents), records
    return [parent for parent in parents if parent is not None]


async def test_every_record_produced_for_one_carries_its_headers_with_a_child_span_of_its_traceparent() -> None:
    worker = relays(Vaulting(0))
    incoming = [(TRACEPARENT, f"00-{TRACE_ID}-{INCOMING_SPAN}-01".encode()), REPLY_TO, ("tenant", b"north")]
    message = consumed(routed_bytes(), incoming)
    records = produced_through(worker, message, await worker._handle(message))
    assert [topic for topic, _headers in records] == ["side", "hop1"]
    (parent,) = set(traceparents(records))  # the side record and the output share the stage's span
    assert parent.trace_id == TRACE_ID and parent.span_id != INCOMING_SPAN and parent.sampled
    assert all(headers[1:] == [REPLY_TO, ("tenant", b"north")] for _topic, headers in records)


async def test_a_record_without_a_traceparent_starts_a_trace_and_keeps_its_other_headers() -> None:
    worker = relays(Relay(0))
    for headers in ([REPLY_TO], [(TRACEPARENT, b"00-not-a-trace"), REPLY_TO]):
        message = consumed(routed_bytes(), headers)
        records = produced_through(worker, message, await worker._handle(message))
        (parent,) = traceparents(records)
        assert parent.trace_id != TRACE_ID and len(parent.trace_id) == 32
        assert records[0][1][1:] == [REPLY_TO]
    message = consumed(routed_bytes(), None)
    assert len(traceparents(produced_through(worker, message, await worker._handle(message)))) == 1


async def test_fused_stages_each_continue_the_trace_from_the_stage_before_them() -> None:
    worker = relays(Relay(0), Vaulting(1), Relay(2))
    message = consumed(routed_bytes(), [REPLY_TO, (TRACEPARENT, f"00-{TRACE_ID}-{INCOMING_SPAN}-01".encode())])
    records = produced_through(worker, message, await worker._handle(message))
    assert [topic for topic, _headers in records] == ["hop1", "side", "hop2", "hop3"]
    parents = traceparents(records)
    assert {parent.trace_id for parent in parents} == {TRACE_ID}
    assert parents[1] == parents[2], "relay1's side record and output name relay1's span"
    spans = [parents[0].span_id, parents[2].span_id, parents[3].span_id]
    assert len({INCOMING_SPAN, *spans}) == 4, "each stage its own span"
    assert all(headers[1:] == [REPLY_TO] for _topic, headers in records)


async def test_dead_letters_stay_in_the_records_trace(caplog: pytest.LogCaptureFixture) -> None:
    incoming = [(TRACEPARENT, f"00-{TRACE_ID}-{INCOMING_SPAN}-01".encode()), REPLY_TO]
    worker = relays(Relay(0), Broken(1))
    poison = consumed(b"\x00\x01 not avro", incoming)
    (letter,) = produced_through(worker, poison, await worker._handle(poison))
    assert letter[0] == "dlq.relay0" and letter[1][1:] == [REPLY_TO]
    assert traceparents([letter])[0].trace_id == TRACE_ID
    message = consumed(routed_bytes("r-7"), incoming)
    caplog.clear()
    with caplog.at_level("WARNING", logger="switchyard.runtime"):
        records = produced_through(worker, message, await worker._handle(message))
    assert [topic for topic, _headers in records] == ["hop1", "dlq.relay1"]
    relayed, dead = traceparents(records)
    assert relayed.trace_id == dead.trace_id == TRACE_ID and dead.span_id not in (relayed.span_id, INCOMING_SPAN)
    assert records[1][1][1:] == [REPLY_TO]
    logged = [r for r in caplog.records if r.getMessage() == "dead-lettered"]
    assert [(getattr(r, "request_id", None), getattr(r, "trace_id", None)) for r in logged] == [("r-7", TRACE_ID)]


async def test_with_tracing_on_each_stage_makes_one_span_whose_id_its_outputs_carry() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    worker = relays(Relay(0), Relay(1), Broken(2), spans=StageSpans(provider.get_tracer("test"), provider))
    message = consumed(routed_bytes("r-9"), [(TRACEPARENT, f"00-{TRACE_ID}-{INCOMING_SPAN}-01".encode()), REPLY_TO])
    records = produced_through(worker, message, await worker._handle(message))
    finished = exporter.get_finished_spans()
    provider.shutdown()
    assert [span.name for span in finished] == ["relay0", "relay1", "relay2"]
    contexts = [span.get_span_context() for span in finished]
    ids = [f"{context.span_id:016x}" for context in contexts if context is not None]
    assert [parent.span_id for parent in traceparents(records)] == ids, "each output names its stage's span"
    assert [f"{span.parent.span_id:016x}" if span.parent else None for span in finished] == [INCOMING_SPAN, *ids[:2]]
    assert {f"{context.trace_id:032x}" for context in contexts if context is not None} == {TRACE_ID}
    outcomes = [(span.attributes or {}).get("switchyard.outcome") for span in finished]
    assert outcomes == ["ok", "ok", "dead_lettered"]
    assert all((span.attributes or {}).get("switchyard.request_id") == "r-9" for span in finished)


def test_telemetry_rows_carry_the_trace_id_of_the_records_headers() -> None:
    record = answered("r-3")
    audited = {**record.model_dump(), "audit": {"audit_id": "a", "chain_key": "0417", "prev_hash": "",
                                                "hash": "h", "recorded_at": 5_000}}  # fmt: skip
    headers = ((TRACEPARENT, f"00-{TRACE_ID}-{INCOMING_SPAN}-01".encode()), REPLY_TO)  # as aiokafka gives them
    rows = stage_event_rows(audited, trace_id_of(headers))
    assert {row[STAGE_EVENT_COLUMNS.index("trace_id")] for row in rows} == {TRACE_ID}
    assert all(len(row) == len(STAGE_EVENT_COLUMNS) for row in rows)
    assert stage_event_rows(audited)[0][STAGE_EVENT_COLUMNS.index("trace_id")] == "", "no header, no trace id"


def test_the_group_commit_knobs_are_settings_an_operator_sets_without_code(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.settings import get_settings

    assert (WorkerConfig().commit_max_records, WorkerConfig().commit_linger_ms) == (200, 2.0)
    monkeypatch.setenv("SWITCHYARD_COMMIT_MAX_RECORDS", "50")
    monkeypatch.setenv("SWITCHYARD_COMMIT_LINGER_MS", "10")
    get_settings.cache_clear()
    try:
        assert (WorkerConfig().commit_max_records, WorkerConfig().commit_linger_ms) == (50, 10.0)
        assert WorkerConfig(commit_linger_ms=0).commit_linger_ms == 0  # code still overrides
        monkeypatch.setenv("SWITCHYARD_COMMIT_MAX_RECORDS", "0")
        get_settings.cache_clear()
        with pytest.raises(ValueError, match="commit_max_records"):
            get_settings()
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
