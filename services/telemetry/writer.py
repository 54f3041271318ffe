"""Batch-inserts telemetry into ClickHouse from `audited` (stage timings, answers, audit records, rule verdicts),
every dead-letter topic, `feedback` and `model.calls`, and samples consumer lag by stage every few seconds.

Batches close by rows, bytes or time, whichever comes first; consumed offsets are committed only after the
insert succeeded, and the tables deduplicate on (stage, request_id) and request_id, so a batch replayed
after a crash is not double counted (query with FINAL for exact counts before merges). ClickHouse being
away is transient: the batch is retried with backoff and nothing is committed meanwhile. A row ClickHouse refuses,
or whose event time is outside the window (window.py), goes with its record to dlq.telemetry and the rest of the
batch is written (isolation.py). The writer's own work per batch (decode and insert time) goes to
`telemetry_batches`: the "monitoring" share of the orchestration work.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.infra.clickhouse import get_client
from services.registry import REGISTRY, Registry
from services.runtime.deadletter import dead_letter_for
from services.runtime.faults import StageError
from services.runtime.kafka_clients import aiokafka_config
from services.runtime.observability import StageMetrics, serve_http
from services.runtime.sealing import dead_letter_sealer
from services.runtime.spans import open_hop
from services.runtime.tracing import parent_of, trace_id_of
from services.settings import Settings, get_settings
from services.telemetry.isolation import IsolatingInsert, RowRefused, is_transient
from services.telemetry.lag import LAG_COLUMNS, LagSampler, stage_inputs
from services.telemetry.rows import (
    ANSWER_COLUMNS,
    AUDIT_RECORD_COLUMNS,
    DEAD_LETTER_COLUMNS,
    FEEDBACK_COLUMNS,
    MODEL_CALL_COLUMNS,
    RULE_VERDICT_COLUMNS,
    STAGE_EVENT_COLUMNS,
    answer_row,
    audit_record_row,
    dead_letter_rows,
    feedback_row,
    model_call_row,
    rule_verdict_rows,
    stage_event_rows,
)
from services.telemetry.window import EventTimeOutOfWindow, EventWindow
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry

log = logging.getLogger("switchyard.telemetry")
NAME = "telemetry"


def consumed_topics(registry: Registry = REGISTRY) -> list[str]:
    """What the writer consumes, from the process registry: its inputs and every other process's dead-letter topic."""
    return list(registry.inputs_of(NAME))


TOPICS = consumed_topics()
TABLES = {
    "stage_events": STAGE_EVENT_COLUMNS,
    "answers": ANSWER_COLUMNS,
    "audit_records": AUDIT_RECORD_COLUMNS,
    "rule_verdicts": RULE_VERDICT_COLUMNS,
    "dead_letters": DEAD_LETTER_COLUMNS,
    "feedback": FEEDBACK_COLUMNS,
    "model_calls": MODEL_CALL_COLUMNS,
}
BATCH_COLUMNS = ["flushed_at", "records", "audited", "rows", "decode_ms", "insert_ms"]
GROUP_ID = str(REGISTRY[NAME].group)


@dataclass(frozen=True)
class WriterConfig:
    max_rows: int = 5000
    max_bytes: int = 16 << 20  # of the buffered records' values (as consumed), a close bound on the buffer's memory
    max_wait_s: float = 1.0
    http_host: str = "127.0.0.1"
    http_port: int = 0
    lag_every_s: float = 5.0


@dataclass
class Buffer:
    """One batch: the rows by table, and every record consumed for it. `sources` holds, for each row of `tables`,
    its record's index in `messages`, so a refused row's dead letter carries the original record; `refused` holds,
    by that index, why the record (or some of its rows) is dead-lettered."""

    tables: dict[str, list[list[Any]]] = field(default_factory=lambda: {table: [] for table in TABLES})
    sources: dict[str, list[int]] = field(default_factory=lambda: {table: [] for table in TABLES})
    messages: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    refused: dict[int, list[Exception]] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    opened_at: float | None = None
    value_bytes: int = 0
    decode_s: float = 0.0

    def rows(self) -> int:
        return sum(len(rows) for rows in self.tables.values())

    def add(self, table: str, row: list[Any], source: int) -> None:
        self.tables[table].append(row)
        self.sources[table].append(source)

    def refuse(self, source: int, error: Exception) -> None:
        self.refused.setdefault(source, []).append(error)


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, writer: TelemetryWriter) -> None:
        self.writer = writer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.writer.flush()

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.writer.metrics.assigned_partitions.set(len(assigned))


class TelemetryWriter:
    def __init__(self, settings: Settings | None = None, config: WriterConfig | None = None) -> None:
        self.settings = settings or get_settings()
        self.sealer = dead_letter_sealer(self.settings)  # a refused row's record, sealed to the operator's key
        self.config = config or WriterConfig()
        self.codec = AvroCodec(SchemaRegistry.load(self.settings.schemas_dir))
        self.metrics = StageMetrics(NAME)
        self.stopping = asyncio.Event()
        self.buffer = Buffer()
        self.window = EventWindow(max_future=timedelta(hours=self.settings.telemetry_max_future_hours))
        self.flush_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._client = get_client(self.settings)
        self.lag_sampler = LagSampler(self.settings, stage_inputs())
        self._lag_client = get_client(self.settings)  # its own session: one client runs one query at a time

    def stop(self) -> None:
        self.stopping.set()

    async def health(self) -> tuple[bool, str]:
        if self._consumer is None or not self._consumer.assignment():
            return False, "no partitions assigned"
        ok = await asyncio.to_thread(self._client.ping)
        return (True, "ClickHouse answers") if ok else (False, "ClickHouse does not answer")

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            **aiokafka_config(
                self.settings,
                group_id=self.settings.topic(GROUP_ID),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                # rows wait up to telemetry_flush_s in the buffer anyway: the broker may hold a fetch until a MiB
                # is ready or a quarter of that has passed, instead of answering one fetch per record it receives
                fetch_min_bytes=1 << 20,
                fetch_max_wait_ms=int(min(500.0, self.settings.telemetry_flush_s * 250)),
            )
        )
        self._dlq = AIOKafkaProducer(
            **aiokafka_config(self.settings, enable_idempotence=True, max_request_size=16 << 20)
        )
        self._consumer = consumer
        await self._dlq.start()
        await consumer.start()
        consumer.subscribe([self.settings.topic(t) for t in TOPICS], listener=_FlushOnRevoke(self))
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        log.info("telemetry writer started", extra={"topics": TOPICS})
        sampler = asyncio.create_task(self._sample_lag(), name="telemetry-lag-sampler")
        try:
            while not self.stopping.is_set():
                self.take(await consumer.getmany(timeout_ms=100, max_records=self.config.max_rows))
                if self._due():
                    await self.flush()
            await self.flush()
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await consumer.stop()
            await self._dlq.stop()
            await runner.cleanup()
            log.info("telemetry writer stopped")

    def take(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        """Buffers one fetch: its records, and per partition the offset to commit once they are stored."""
        for tp, messages in batch.items():
            for message in messages:
                self._add(message)
            self.buffer.offsets[tp] = messages[-1].offset + 1

    def _due(self) -> bool:
        opened = self.buffer.opened_at
        if opened is None:
            return bool(self.buffer.offsets)
        if self.buffer.rows() >= self.config.max_rows or self.buffer.value_bytes >= self.config.max_bytes:
            return True
        return asyncio.get_running_loop().time() - opened >= self.config.max_wait_s

    async def _sample_lag(self) -> None:
        """Consumer lag of every stage into ClickHouse every `lag_every_s`; a failed sample is logged and skipped.
        Only the replica holding partition 0 of `audited` samples, so replicas do not write the same sample."""
        sampler_partition = TopicPartition(self.settings.topic("audited"), 0)
        while True:
            try:
                assigned = self._consumer is not None and sampler_partition in self._consumer.assignment()
                rows = await asyncio.to_thread(self.lag_sampler.sample) if assigned else []
                if rows:
                    await asyncio.to_thread(
                        self._lag_client.insert,
                        "consumer_lag",
                        rows,
                        column_names=LAG_COLUMNS,
                        database=self.settings.clickhouse_database,
                    )
            except Exception as error:
                log.warning("consumer lag sample failed", extra={"error": str(error)})
            await asyncio.sleep(self.config.lag_every_s)

    def _add(self, message: ConsumerRecord[bytes, bytes]) -> None:
        self.metrics.records_in.inc()
        buffer = self.buffer
        if buffer.opened_at is None:
            buffer.opened_at = asyncio.get_running_loop().time()
        started = time.perf_counter()
        source = len(buffer.messages)
        buffer.messages.append(message)
        buffer.value_bytes += len(message.value or b"")
        try:
            tables = self._rows_of(message)
        except Exception as error:  # one bad record goes to dlq.telemetry; the batch goes on
            buffer.refuse(source, error)
        else:
            self._buffer_in_window(source, tables)
        buffer.decode_s += time.perf_counter() - started

    def _buffer_in_window(self, source: int, tables: dict[str, list[list[Any]]]) -> None:
        """Buffers the record's rows whose event time is in the window; the others are refused, so the record goes
        to dlq.telemetry with the reason, and its rows in the window are still written."""
        now = datetime.now(tz=UTC)
        for table, rows in tables.items():
            for row in rows:
                try:
                    self.window.check(table, TABLES[table], row, now)
                except EventTimeOutOfWindow as error:
                    self.buffer.refuse(source, error)
                    continue
                self.buffer.add(table, row, source)

    def _rows_of(self, message: ConsumerRecord[bytes, bytes]) -> dict[str, list[list[Any]]]:
        """Every row one record makes, by table; built whole before any is buffered, so a record that fails
        half-way leaves nothing behind. The trace id comes from the record's Kafka headers (traceparent)."""
        writer, value = self.codec.decode(message.value or b"")
        if writer == "switchyard.Audited":
            return {
                "stage_events": stage_event_rows(value, trace_id_of(message.headers)),
                "answers": [answer_row(value)],
                "audit_records": [audit_record_row(value, message.topic, message.partition, message.offset)],
                "rule_verdicts": rule_verdict_rows(value),
            }
        if writer == "switchyard.DeadLetter":
            row, event = dead_letter_rows(value, trace_id_of(message.headers))
            return {"dead_letters": [row], "stage_events": [event] if event is not None else []}
        if writer == "switchyard.Feedback":
            return {"feedback": [feedback_row(value)]}
        if writer == "switchyard.ModelCall":
            return {"model_calls": [model_call_row(value)]}
        raise ValueError(f"{writer} records do not belong on {message.topic}")

    async def flush(self) -> None:
        """Inserts the buffer, dead-letters the records of the rows refused, then commits the buffer's offsets.

        A transient failure (isolation.is_transient: ClickHouse away, busy or misconfigured) is retried with backoff
        for as long as it lasts, committing nothing. That is the writer's back-pressure: the consume loop awaits this
        flush and fetches nothing meanwhile, so memory stays at one buffer (max_rows, max_bytes) however long
        ClickHouse is away, and the records wait in Kafka. A refusal of the data is isolated row by row
        (IsolatingInsert): the rows ClickHouse takes are written, each record with a refused row goes to
        dlq.telemetry with ClickHouse's error, and the dead letters are acknowledged before the offsets are
        committed, so no record is skipped without a trace."""
        async with self.flush_lock:
            buffer, self.buffer = self.buffer, Buffer()
            if not buffer.offsets:
                return
            inserts = {table: IsolatingInsert(rows) for table, rows in buffer.tables.items() if rows}
            delay = 0.1
            while True:
                try:
                    await asyncio.to_thread(self._insert, buffer, inserts)
                    break
                except Exception as error:  # transient: the isolation lets no refusal of the data out
                    self.metrics.error("clickhouse")
                    log.warning("insert failed; retrying", extra={"error": str(error), "retry_in_s": delay})
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
            for table, insert in inserts.items():
                for index, refusal in insert.refused:
                    request_id = insert.rows[index][TABLES[table].index("request_id")]
                    buffer.refuse(buffer.sources[table][index], RowRefused(table, refusal, request_id=request_id))
            await self._dead_letter(buffer)
            assert self._consumer is not None
            await self._consumer.commit(buffer.offsets)
            self.metrics.records_out.inc(sum(insert.written for insert in inserts.values()))

    async def _dead_letter(self, buffer: Buffer) -> None:
        """One dead letter per record with a refused row (or none at all), each acknowledged before the next."""
        assert self._dlq is not None
        for source, errors in buffer.refused.items():
            message, first = buffer.messages[source], errors[0]
            reason = "; ".join(dict.fromkeys(str(error) for error in errors))
            request_id = first.request_id if isinstance(first, StageError) else None
            record = dead_letter_for(
                message, stage="telemetry", reason=reason, error=first, request_id=request_id, sealer=self.sealer
            )
            # the dead letter stays in the record's trace, as the stages' do
            headers = open_hop(None, "telemetry", message.headers, parent_of(message.headers)).headers
            value = self.codec.encode("DeadLetter", record)
            await self._dlq.send_and_wait(self.settings.topic("dlq.telemetry"), value, headers=headers)
            self.metrics.dead_letter(type(first).__name__)
            where = {"topic": message.topic, "partition": message.partition, "offset": message.offset}
            log.warning("record dead-lettered", extra={"request_id": request_id, **where, "reason": reason})

    def _insert(self, buffer: Buffer, inserts: dict[str, IsolatingInsert]) -> None:
        """Every table's rows (resuming where a transient failure stopped the last try), then the batch's work row."""
        started = time.perf_counter()
        for table, insert in inserts.items():
            insert.run(partial(self._insert_rows, table, TABLES[table]))
        insert_ms = (time.perf_counter() - started) * 1000
        rows = sum(insert.written for insert in inserts.values())
        audited = inserts["audit_records"].written if "audit_records" in inserts else 0
        work = [datetime.now(tz=UTC), len(buffer.messages), audited, rows, buffer.decode_s * 1000, insert_ms]
        try:
            self._insert_rows("telemetry_batches", BATCH_COLUMNS, [work])
        except Exception as error:
            if is_transient(error):
                raise
            log.warning("telemetry_batches refused the batch's work row; skipped", extra={"error": str(error)})

    def _insert_rows(self, table: str, columns: list[str], rows: Sequence[list[Any]]) -> None:
        self._client.insert(table, rows, column_names=columns, database=self.settings.clickhouse_database)


async def run_writer(config: WriterConfig | None = None) -> None:
    import signal

    writer = TelemetryWriter(config=config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    await writer.run()
