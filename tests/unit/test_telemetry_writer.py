"""The telemetry writer without a broker or ClickHouse: rows ClickHouse refuses are isolated by bisection and
dead-lettered with its error while the rows around them are written once, transient failures are retried without
committing, rows outside the event-time window are dead-lettered before they are buffered, and the buffer is bounded
in bytes. The fakes record every insert, dead letter and commit in one list, so the tests read their order."""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import DatabaseError, DataError, OperationalError

import services.telemetry.writer as telemetry_writer
from services.infra.clickhouse import DDL_DIR, load_migrations
from services.runtime.deadletter import opened_original
from services.runtime.sealing import dead_letter_opener
from services.settings import Settings
from services.telemetry.isolation import is_transient
from services.telemetry.window import EVENT_TIMES, EventTime
from services.telemetry.writer import TABLES, TelemetryWriter, WriterConfig
from services.wire.codec import AvroCodec
from services.wire.models import Audited, AuditInfo, Feedback, FeedbackKind, StageTiming
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from tests.unit.chain_records import answered

CODEC = AvroCodec(SchemaRegistry.load(REPO_SCHEMAS_DIR))
POISON = "POISON"  # ClickHouse refuses any block holding a row with this value
FEEDBACK = TopicPartition("feedback", 0)
AUDITED = TopicPartition("audited", 0)
Event = tuple[Any, ...]


@dataclass
class FakeClickHouse:
    """Takes inserts as clickhouse-connect's client does. It refuses a block holding POISON the way ClickHouse refuses
    a CHECK constraint, a block spanning more than `max_months` months the way ClickHouse refuses too many partitions,
    and is away (connection refused) while `away` is set or on the calls numbered in `away_on`."""

    events: list[Event]
    away: bool = False
    away_on: set[int] = field(default_factory=set)
    max_months: int = 100
    calls: int = 0
    rows: dict[str, list[list[Any]]] = field(default_factory=dict)

    def insert(self, table: str, data: Sequence[list[Any]], column_names: list[str], database: str) -> None:
        self.calls += 1
        if self.away or self.calls in self.away_on:
            self.events.append(("away", table))
            raise OperationalError("Error HTTPConnectionPool: Connection refused executing HTTP request attempt 1")
        if any(POISON in row for row in data):
            self.events.append(("refused", table, len(data)))
            raise DatabaseError(
                "Received ClickHouse exception, code: 469, server response: Code: 469. DB::Exception: Constraint "
                f"`known` for table switchyard.{table} is violated at row 1. (VIOLATED_CONSTRAINT)",
                code=469,
            )
        if table in EVENT_TIMES and len(months_of(table, column_names, data)) > self.max_months:
            self.events.append(("refused", table, len(data)))
            raise DatabaseError(
                "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than "
                f"{self.max_months}). (TOO_MANY_PARTS)",
                code=252,
            )
        self.rows.setdefault(table, []).extend(data)
        self.events.append(("insert", table, len(data)))


def months_of(table: str, columns: list[str], rows: Sequence[list[Any]]) -> set[tuple[int, int]]:
    at = columns.index(EVENT_TIMES[table].column)
    return {(row[at].year, row[at].month) for row in rows}


@dataclass
class FakeProducer:
    events: list[Event]

    async def send_and_wait(self, topic: str, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.events.append(("dead letter", topic, CODEC.decode(value)[1]))


@dataclass
class FakeConsumer:
    events: list[Event]

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.events.append(("commit", dict(offsets)))


@pytest.fixture
def make_writer(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., TelemetryWriter]:
    """A writer whose ClickHouse client, dead-letter producer and consumer are the fakes above."""

    def make(clickhouse: FakeClickHouse, config: WriterConfig | None = None) -> TelemetryWriter:
        monkeypatch.setattr(telemetry_writer, "get_client", lambda settings: clickhouse)
        monkeypatch.setattr(telemetry_writer, "LagSampler", lambda settings, inputs: None)
        writer = TelemetryWriter(Settings(var_dir=tmp_path), config)
        writer._dlq = FakeProducer(clickhouse.events)
        writer._consumer = FakeConsumer(clickhouse.events)
        return writer

    return make


def message(tp: TopicPartition, offset: int, value: bytes) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, b"0417", value, None, 4, len(value), ())


def now_ms(shift: timedelta = timedelta(0)) -> int:
    return int((datetime.now(tz=UTC) + shift).timestamp() * 1000)


def feedback(offset: int, text: str = "fine", created_at: int | None = None) -> ConsumerRecord[bytes, bytes]:
    record = Feedback(
        feedback_id=f"f-{offset}", request_id=f"r-{offset}", kind=FeedbackKind.CORRECTION, corrected_text=text,
        author="staff-9", created_at=now_ms() if created_at is None else created_at,
    )  # fmt: skip
    return message(FEEDBACK, offset, CODEC.encode("Feedback", record.model_dump()))


def feedback_ids(clickhouse: FakeClickHouse) -> Counter[str]:
    return Counter(row[0] for row in clickhouse.rows.get("feedback", []))


def dead_letters(events: list[Event]) -> list[dict[str, Any]]:
    return [event[2] for event in events if event[0] == "dead letter"]


def kinds(events: list[Event]) -> list[str]:
    return [event[0] for event in events]


async def test_refused_rows_are_dead_lettered_and_every_other_row_is_written_once(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    clickhouse = FakeClickHouse(events=[])
    writer = make_writer(clickhouse)
    poisoned = {3, 4, 11}
    batch = [feedback(i, POISON if i in poisoned else "fine") for i in range(16)]
    writer.take({FEEDBACK: batch})
    await asyncio.wait_for(writer.flush(), timeout=15)

    assert feedback_ids(clickhouse) == Counter(f"f-{i}" for i in range(16) if i not in poisoned)
    letters = dead_letters(clickhouse.events)
    assert [(d["offset"], d["request_id"], d["topic"]) for d in letters] == [
        (3, "r-3", "feedback"), (4, "r-4", "feedback"), (11, "r-11", "feedback"),
    ]  # fmt: skip
    opener = dead_letter_opener(writer.settings)  # the records are sealed to the operator's key
    for letter in letters:
        assert letter["reason"].startswith("ClickHouse refused the feedback row: ")
        assert "VIOLATED_CONSTRAINT" in letter["reason"] and letter["error_type"] == "RowRefused"
        assert opened_original(letter, opener) == batch[letter["offset"]].value and letter["stage"] == "telemetry"
    assert {event[1] for event in clickhouse.events if event[0] == "dead letter"} == {"dlq.telemetry"}
    after_inserts = kinds(clickhouse.events)[-4:]
    assert after_inserts == ["dead letter", "dead letter", "dead letter", "commit"], "acknowledged, then committed"
    assert clickhouse.events[-1] == ("commit", {FEEDBACK: 16})


async def test_a_batch_spanning_too_many_months_is_split_until_clickhouse_takes_every_row(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    clickhouse = FakeClickHouse(events=[], max_months=2)
    writer = make_writer(clickhouse)
    writer.take({FEEDBACK: [feedback(i, created_at=now_ms(timedelta(days=-40 * i))) for i in range(8)]})
    await asyncio.wait_for(writer.flush(), timeout=15)

    assert ("refused", "feedback", 8) in clickhouse.events
    assert feedback_ids(clickhouse) == Counter(f"f-{i}" for i in range(8))
    assert dead_letters(clickhouse.events) == [] and clickhouse.events[-1] == ("commit", {FEEDBACK: 8})


async def test_while_clickhouse_is_away_nothing_is_committed_and_the_flush_waits(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    clickhouse = FakeClickHouse(events=[], away=True)
    writer = make_writer(clickhouse)
    writer.take({FEEDBACK: [feedback(i) for i in range(5)]})
    flush = asyncio.create_task(writer.flush())
    await asyncio.sleep(0.5)

    assert not flush.done(), "the consume loop awaits this flush, so nothing more is fetched meanwhile"
    assert kinds(clickhouse.events).count("away") >= 2 and set(kinds(clickhouse.events)) == {"away"}
    clickhouse.away = False
    await asyncio.wait_for(flush, timeout=15)
    assert feedback_ids(clickhouse) == Counter(f"f-{i}" for i in range(5))
    assert dead_letters(clickhouse.events) == [] and clickhouse.events[-1] == ("commit", {FEEDBACK: 5})


async def test_a_retry_after_a_transient_failure_mid_bisection_writes_no_row_twice(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    # calls: 1 the whole batch (refused), 2 its first half (refused), 3 rows 0-1 (written), 4 rows 2-3: away; the
    # retry resumes at rows 2-3 instead of writing rows 0-1 again
    clickhouse = FakeClickHouse(events=[], away_on={4})
    writer = make_writer(clickhouse)
    writer.take({FEEDBACK: [feedback(i, POISON if i == 2 else "fine") for i in range(8)]})
    await asyncio.wait_for(writer.flush(), timeout=15)

    assert kinds(clickhouse.events)[:4] == ["refused", "refused", "insert", "away"]
    assert feedback_ids(clickhouse) == Counter(f"f-{i}" for i in range(8) if i != 2)
    assert [d["offset"] for d in dead_letters(clickhouse.events)] == [2]
    assert kinds(clickhouse.events).count("commit") == 1 and clickhouse.events[-1] == ("commit", {FEEDBACK: 8})


def audited(offset: int, created_at_ms: int) -> ConsumerRecord[bytes, bytes]:
    now_us = int(datetime.now(tz=UTC).timestamp() * 1_000_000)
    record = answered(f"r-{offset}").model_dump()
    record["request"]["created_at"] = created_at_ms
    record["timings"] = [StageTiming(stage="router", received_at=now_us, started_at=now_us, finished_at=now_us)]
    info = AuditInfo(audit_id=f"a-{offset}", chain_key="0417", prev_hash="", hash="h", recorded_at=now_us, seq=1)
    value = Audited.model_validate({**record, "audit": info}).model_dump()
    return message(AUDITED, offset, CODEC.encode("Audited", value))


async def test_rows_outside_the_event_time_window_are_dead_lettered_naming_the_field_and_value(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    clickhouse = FakeClickHouse(events=[])
    writer = make_writer(clickhouse)
    old, ahead = now_ms(timedelta(days=-400)), now_ms(timedelta(hours=48))
    writer.take({FEEDBACK: [feedback(0, created_at=old), feedback(1), feedback(2, created_at=ahead)]})
    writer.take({AUDITED: [audited(7, created_at_ms=ahead)]})
    await asyncio.wait_for(writer.flush(), timeout=15)

    assert feedback_ids(clickhouse) == Counter(["f-1"])
    assert "answers" not in clickhouse.rows, "the answer row's created_at is two days ahead"
    assert [row[0] for row in clickhouse.rows["audit_records"]] == ["r-7"], "the audit record is kept all the same"
    assert [row[0] for row in clickhouse.rows["stage_events"]] == ["r-7"]
    reasons = {(d["topic"], d["offset"]): d["reason"] for d in dead_letters(clickhouse.events)}
    assert set(reasons) == {("feedback", 0), ("feedback", 2), ("audited", 7)}
    old_iso = datetime.fromtimestamp(old / 1000, tz=UTC).isoformat()
    assert reasons[("feedback", 0)].startswith(f"feedback.created_at {old_iso} is older than the table's TTL of 365")
    assert "feedback.created_at" in reasons[("feedback", 2)] and "more than 24 h ahead" in reasons[("feedback", 2)]
    assert reasons[("audited", 7)].startswith("answers.created_at ") and "(request r-7)" in reasons[("audited", 7)]
    assert clickhouse.events[-1] == ("commit", {FEEDBACK: 3, AUDITED: 8})


async def test_the_buffer_is_due_once_its_records_reach_max_bytes(
    make_writer: Callable[..., TelemetryWriter],
) -> None:
    size = len(feedback(0).value or b"")
    writer = make_writer(FakeClickHouse(events=[]), WriterConfig(max_bytes=3 * size, max_rows=5000, max_wait_s=3600))
    writer.take({FEEDBACK: [feedback(0), feedback(1)]})
    assert not writer._due(), "two records are under the byte bound, the row bound and the wait"
    writer.take({FEEDBACK: [feedback(2)]})
    assert writer._due()


MERGES_BEHIND = (
    "Code: 252. DB::Exception: Too many parts (300). Merges are processing significantly slower than inserts"
)
TOO_MANY_PARTITIONS = (
    "Code: 252. DB::Exception: Too many partitions for single INSERT block (more than 100). The limit is controlled "
    "by 'max_partitions_per_insert_block' setting. (TOO_MANY_PARTS)"
)


def error(message: str, code: int | None = None) -> DatabaseError:
    return DatabaseError(message, code=code)


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (OperationalError("Error executing HTTP request"), True),
        (ConnectionResetError("connection reset by peer"), True),
        (TimeoutError("timed out"), True),
        (error("Code: 241. DB::Exception: Memory limit (total) exceeded. (MEMORY_LIMIT_EXCEEDED)", 241), True),
        (error("Code: 202. DB::Exception: Too many simultaneous queries. (TOO_MANY_SIMULTANEOUS_QUERIES)", 202), True),
        (error(MERGES_BEHIND, 252), True),
        (error("Code: 516. DB::Exception: default: Authentication failed. (AUTHENTICATION_FAILED)", 516), True),
        (error("Code: 60. DB::Exception: Table switchyard.answers does not exist. (UNKNOWN_TABLE)"), True),
        (error("HTTP driver received HTTP status 503, server response: no healthy upstream"), True),
        (error(TOO_MANY_PARTITIONS, 252), False),
        (error("Code: 469. DB::Exception: Constraint `outcome_known` is violated. (VIOLATED_CONSTRAINT)", 469), False),
        (error("Code: 229. DB::Exception: the body is over the server's limit. (QUERY_IS_TOO_LARGE)", 229), False),
        (DataError("Failed to write column 'tokens_in': value out of range"), False),
        (TypeError("'NoneType' object cannot be interpreted as an integer"), False),
    ],
)
def test_an_insert_failure_is_transient_only_when_the_same_insert_may_pass_later(
    failure: BaseException, transient: bool
) -> None:
    assert is_transient(failure) is transient


def test_each_tables_event_time_column_and_ttl_are_the_ones_its_migrations_declare() -> None:
    declared: dict[str, EventTime] = {}
    units = {"DAY": 1, "YEAR": 365}
    for migration in load_migrations(DDL_DIR):
        for statement in migration.statements:
            table = re.search(r"(?:CREATE TABLE IF NOT EXISTS|ALTER TABLE) switchyard\.(\w+)", statement)
            ttl = re.search(r"TTL toDateTime\((\w+)\) \+ INTERVAL (\d+) (DAY|YEAR)", statement)
            if table and ttl:
                partition = re.search(r"PARTITION BY toYYYYMM\((\w+)\)", statement)
                assert partition is None or partition.group(1) == ttl.group(1), statement
                days = int(ttl.group(2)) * units[ttl.group(3)]
                declared[table.group(1)] = EventTime(ttl.group(1), timedelta(days=days))
    assert {table: declared[table] for table in TABLES} == EVENT_TIMES


def test_no_window_spans_more_months_than_clickhouse_takes_in_one_insert_block() -> None:
    max_future = timedelta(hours=Settings.model_fields["telemetry_max_future_hours"].default)
    for table, (_, ttl) in EVENT_TIMES.items():
        months = (ttl + max_future).days // 28 + 1  # every month a window touches, counted generously
        assert months <= 100, f"{table}: a batch may span {months} monthly partitions (max_partitions_per_insert_block)"
