"""Batch-inserts telemetry into ClickHouse from `audited` and every dead-letter topic.

Batches close by size or by time, whichever comes first; consumed offsets are committed only after the
insert succeeded, and the tables deduplicate on (stage, request_id) and request_id, so a batch replayed
after a crash is not double counted (query with FINAL for exact counts before merges). ClickHouse being
away is transient: the batch is retried with backoff and nothing is committed meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord

from services.infra.clickhouse import get_client
from services.runtime.codec import AvroCodec
from services.runtime.deadletter import dead_letter_for
from services.runtime.observability import StageMetrics, serve_http
from services.runtime.schema_registry import SchemaRegistry
from services.settings import Settings, get_settings
from services.telemetry.rows import (
    ANSWER_COLUMNS,
    DEAD_LETTER_COLUMNS,
    STAGE_EVENT_COLUMNS,
    answer_row,
    dead_letter_rows,
    stage_event_rows,
)

log = logging.getLogger("switchyard.telemetry")
STAGES = ["router", "stitcher", "governor", "answerer", "auditor"]
TOPICS = ["audited", *[f"dlq.{stage}" for stage in STAGES]]
GROUP_ID = "switchyard-telemetry"


@dataclass(frozen=True)
class WriterConfig:
    max_rows: int = 5000
    max_wait_s: float = 1.0
    http_host: str = "127.0.0.1"
    http_port: int = 0


@dataclass
class Buffer:
    stage_events: list[list[Any]] = field(default_factory=list)
    answers: list[list[Any]] = field(default_factory=list)
    dead_letters: list[list[Any]] = field(default_factory=list)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    rejected: list[bytes] = field(default_factory=list)
    opened_at: float | None = None

    def rows(self) -> int:
        return len(self.stage_events) + len(self.answers) + len(self.dead_letters)


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
        self.config = config or WriterConfig()
        self.codec = AvroCodec(SchemaRegistry.load(self.settings.schemas_dir))
        self.metrics = StageMetrics("telemetry")
        self.stopping = asyncio.Event()
        self.buffer = Buffer()
        self.flush_lock = asyncio.Lock()
        self._consumer: AIOKafkaConsumer | None = None
        self._dlq: AIOKafkaProducer | None = None
        self._client = get_client(self.settings)

    def stop(self) -> None:
        self.stopping.set()

    async def health(self) -> tuple[bool, str]:
        if self._consumer is None or not self._consumer.assignment():
            return False, "no partitions assigned"
        ok = await asyncio.to_thread(self._client.ping)
        return (True, "ClickHouse answers") if ok else (False, "ClickHouse does not answer")

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.settings.topic(GROUP_ID),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=50,
        )
        self._dlq = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap, enable_idempotence=True, max_request_size=16 << 20
        )
        self._consumer = consumer
        await self._dlq.start()
        await consumer.start()
        consumer.subscribe([self.settings.topic(t) for t in TOPICS], listener=_FlushOnRevoke(self))
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        log.info("telemetry writer started", extra={"topics": TOPICS})
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=self.config.max_rows)
                for tp, messages in batch.items():
                    for message in messages:
                        self._add(message)
                    self.buffer.offsets[tp] = messages[-1].offset + 1
                if self._due():
                    await self.flush()
            await self.flush()
        finally:
            await consumer.stop()
            await self._dlq.stop()
            await runner.cleanup()
            log.info("telemetry writer stopped")

    def _due(self) -> bool:
        opened = self.buffer.opened_at
        if opened is None:
            return bool(self.buffer.offsets)
        loop = asyncio.get_running_loop()
        return self.buffer.rows() >= self.config.max_rows or loop.time() - opened >= self.config.max_wait_s

    def _add(self, message: ConsumerRecord[bytes, bytes]) -> None:
        self.metrics.records_in.inc()
        if self.buffer.opened_at is None:
            self.buffer.opened_at = asyncio.get_running_loop().time()
        try:
            writer, value = self.codec.decode(message.value or b"")
            if writer == "switchyard.Audited":
                self.buffer.stage_events += stage_event_rows(value)
                self.buffer.answers.append(answer_row(value))
            elif writer == "switchyard.DeadLetter":
                row, event = dead_letter_rows(value)
                self.buffer.dead_letters.append(row)
                if event is not None:
                    self.buffer.stage_events.append(event)
            else:
                raise ValueError(f"{writer} records do not belong on {message.topic}")
        except Exception as error:  # one bad record goes to dlq.telemetry; the batch goes on
            record = dead_letter_for(message, stage="telemetry", reason=str(error), error=error, request_id=None)
            self.buffer.rejected.append(self.codec.encode("DeadLetter", record))
            self.metrics.dead_letter(type(error).__name__)

    async def flush(self) -> None:
        async with self.flush_lock:
            buffer, self.buffer = self.buffer, Buffer()
            if not buffer.offsets:
                return
            delay = 0.1
            while True:
                try:
                    await asyncio.to_thread(self._insert, buffer)
                    break
                except Exception as error:  # ClickHouse away or refusing: retry, commit nothing meanwhile
                    self.metrics.error("clickhouse")
                    log.warning("insert failed; retrying", extra={"error": str(error), "retry_in_s": delay})
                    await asyncio.sleep(delay * (0.5 + random.random()))
                    delay = min(delay * 2, 10.0)
            assert self._dlq is not None and self._consumer is not None
            for value in buffer.rejected:
                await self._dlq.send_and_wait(self.settings.topic("dlq.telemetry"), value)
            await self._consumer.commit(buffer.offsets)
            self.metrics.records_out.inc(buffer.rows())

    def _insert(self, buffer: Buffer) -> None:
        database = self.settings.clickhouse_database
        for table, columns, rows in (
            ("stage_events", STAGE_EVENT_COLUMNS, buffer.stage_events),
            ("answers", ANSWER_COLUMNS, buffer.answers),
            ("dead_letters", DEAD_LETTER_COLUMNS, buffer.dead_letters),
        ):
            if rows:
                self._client.insert(table, rows, column_names=columns, database=database)


async def run_writer(config: WriterConfig | None = None) -> None:
    import signal

    writer = TelemetryWriter(config=config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, writer.stop)
    await writer.run()
