"""Work timings: stages measure their own orchestration work per record (waiting excluded), the runtime stores
it in the stage's timing, and telemetry carries it into stage_events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel

from services.runtime.batcher import MicroBatcher
from services.runtime.stage import MAX_OPEN_WORK, Stage, WorkLedger, record_request_id, stage_timing
from services.stitcher.stage import PrepClock, near_duplicates
from services.telemetry.rows import STAGE_EVENT_COLUMNS, dead_letter_rows, stage_event_rows
from services.wire.models import Request, StageTiming
from tests.unit.chain_records import answered


def busy(cpu_s: float) -> None:
    """Work (not sleep) for this much CPU time of the calling thread."""
    started = time.thread_time()
    while time.thread_time() - started < cpu_s:
        pass


class Echo(BaseModel):
    text: str


class Auditing(Stage[Request, Echo]):
    name: ClassVar[str] = "auditing"
    input_topic: ClassVar[str] = "in"
    input_record: ClassVar[str] = "Request"
    input_model = Request
    output_topic: ClassVar[str] = "out"
    output_record: ClassVar[str] = "Request"
    section: ClassVar[str] = "echo"
    work_category: ClassVar[str] = "audit"

    async def decide(self, record: Request) -> Echo:
        return Echo(text=record.text)


class Unnamed(Auditing):
    work_category: ClassVar[str] = ""


def test_a_ledger_adds_work_per_request_and_category_and_pop_forgets_it() -> None:
    ledger = WorkLedger()
    ledger.add("r-1", "governance", 1.5)
    ledger.add("r-2", "governance", 7.0)
    ledger.add("r-1", "governance", 0.5)
    ledger.add("r-1", "policy", 0.25)
    assert ledger.pop("r-1") == {"governance": 2.0, "policy": 0.25}
    assert ledger.pop("r-1") == {}
    assert ledger.pop("r-2") == {"governance": 7.0}


def test_a_ledger_counts_the_cpu_time_of_a_block_even_when_it_raises_and_not_its_sleep() -> None:
    ledger = WorkLedger()
    try:
        with ledger.measure("r-1", "routing"):
            busy(0.002)
            raise ValueError("route table rejected it")
    except ValueError:
        pass
    with ledger.measure("r-2", "routing"):
        time.sleep(0.05)
    assert ledger.pop("r-1")["routing"] >= 2.0
    assert ledger.pop("r-2")["routing"] < 50.0


def test_a_ledger_forgets_the_oldest_records_whose_decide_never_finished() -> None:
    ledger = WorkLedger()
    for n in range(MAX_OPEN_WORK + 5):
        ledger.add(f"r-{n}", "routing", 1.0)
    assert ledger.pop("r-0") == {} and ledger.pop(f"r-{MAX_OPEN_WORK + 4}") == {"routing": 1.0}


def test_a_stage_reports_its_decide_time_under_its_category_by_default_and_nothing_without_one() -> None:
    request = answered("r-9").request
    assert Auditing().work(request, Echo(text="x"), 4.5) == {"audit": 4.5}
    assert Unnamed().work(request, Echo(text="x"), 4.5) == {}
    assert record_request_id(request) == "r-9" and record_request_id(answered("r-9")) == "r-9"


def test_a_timing_carries_work_per_category_and_reads_back_as_the_schema_model() -> None:
    timing = stage_timing("governor", 1, 2, 3, {"governance": 1.25, "policy": 0.5})
    assert StageTiming.model_validate(timing).work_ms == {"governance": 1.25, "policy": 0.5}
    assert StageTiming.model_validate(stage_timing("router", 1, 2, 3)).work_ms == {}


async def test_a_batched_item_is_charged_its_share_of_the_batch_compute_not_its_wait() -> None:
    def slow_upper(texts: Sequence[str]) -> list[str]:
        busy(0.02)
        return [text.upper() for text in texts]

    batcher: MicroBatcher[str, str] = MicroBatcher(slow_upper, window_s=0.01, max_batch=8, concurrency=1)
    first = asyncio.create_task(batcher.submit_timed("a"))
    await asyncio.sleep(0)
    rest = await asyncio.gather(*(batcher.submit_timed(t) for t in "bcd"))
    (result, first_ms), shares = await first, [ms for _, ms in rest]
    await batcher.aclose()
    assert result == "A" and [text for text, _ in rest] == ["B", "C", "D"]
    assert first_ms >= 20.0  # alone in its batch: the whole compute
    assert len(set(shares)) == 1 and shares[0] >= 20.0 / 3  # three waited together and share one batch


def test_prep_calls_in_the_stitcher_are_timed_on_the_prep_clock() -> None:
    before = PrepClock.ms
    assert near_duplicates(["Store hours 9 to 5", "store hours 9 to 5", "Returns within 30 days"]) == [1]
    assert PrepClock.ms > before


def test_stage_events_carry_each_stages_work_and_dead_letters_carry_none() -> None:
    record = answered("r-3").model_dump()
    record["timings"] = [
        stage_timing("router", 1, 2, 3, {"routing": 2.0}),
        stage_timing("governor", 4, 5, 6, {"governance": 1.0, "policy": 0.5}),
    ]
    rows = [dict(zip(STAGE_EVENT_COLUMNS, row, strict=True)) for row in stage_event_rows(record)]
    assert [row["work_ms"] for row in rows] == [{"routing": 2.0}, {"governance": 1.0, "policy": 0.5}]
    dead = {"stage": "router", "topic": "requests", "partition": 0, "offset": 1, "request_id": "r-3",
            "error_type": "RejectedRecord", "reason": "bad", "original": "", "failed_at": 1}  # fmt: skip
    _, event = dead_letter_rows(dead)
    assert event is not None and dict(zip(STAGE_EVENT_COLUMNS, event, strict=True))["work_ms"] == {}
