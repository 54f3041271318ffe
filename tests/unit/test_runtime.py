"""The runtime's pieces without a broker: dead-letter records, retries of transient failures, shutdown
during a retry, telemetry rows, and the report's percentiles and work split."""

from __future__ import annotations

import asyncio
from typing import ClassVar

import pytest
from pydantic import BaseModel

from services.pos.answers import Received
from services.pos.report import percentile, work_split
from services.runtime.codec import AvroCodec
from services.runtime.deadletter import dead_letter
from services.runtime.faults import TransientError
from services.runtime.models import DeadLetter, Request, RouteDecision
from services.runtime.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from services.runtime.stage import Stage
from services.runtime.worker import ShuttingDown, StageWorker, WorkerConfig
from services.settings import Settings
from services.telemetry.rows import ANSWER_COLUMNS, STAGE_EVENT_COLUMNS, answer_row, stage_event_rows
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


async def test_only_the_finished_head_of_each_partition_is_ready_to_commit_in_offset_order() -> None:
    from collections import deque

    from services.runtime.worker import Consumed, Outgoing

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
