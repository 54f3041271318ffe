"""The stream runtime: runs one Stage as a consumer-group member, exactly once.

For each batch it consumes (aiokafka), decodes and validates every record, calls the stage's decision with
bounded concurrency, and in ONE Kafka transaction produces the results (or dead letters) and commits the
consumed offsets. A crash before the commit aborts the transaction: nothing downstream (read_committed)
sees its output and the batch is processed again by whoever owns the partition next; a crash after it loses
nothing. Records keep their key (the store id), and results are produced in input order, so each store's
requests stay in order. The next batch is fetched only after the last one committed: a slow stage slows
consumption instead of growing memory.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ValidationError

from services.runtime.codec import AvroCodec
from services.runtime.deadletter import dead_letter
from services.runtime.errors import DecodeError, EncodeError
from services.runtime.faults import TransientError
from services.runtime.observability import StageMetrics, serve_http
from services.runtime.schema_registry import SchemaRegistry
from services.runtime.stage import Stage, compose, now_us, request_id_of, stage_timing
from services.settings import Settings, get_settings

log = logging.getLogger("switchyard.runtime")


@dataclass(frozen=True)
class WorkerConfig:
    """Every knob of a stage process, with defaults for one 2-core box."""

    replica: str = field(default_factory=lambda: os.environ.get("SWITCHYARD_REPLICA", socket.gethostname()))
    max_batch: int = 500
    max_in_flight: int = 64
    max_record_bytes: int = 1 << 20
    fetch_wait_ms: int = 5
    retry_initial_s: float = 0.05
    retry_max_s: float = 5.0
    transaction_timeout_ms: int = 15_000
    retry_backoff_ms: int = 5
    http_host: str = "127.0.0.1"
    http_port: int = 0


class RecordTooLarge(Exception):
    """The consumed record is bigger than this stage accepts."""


class ShuttingDown(Exception):
    """A retry loop was interrupted by shutdown; the batch is left uncommitted for the next owner."""


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    dead_lettered: bool = False


class _WaitForBatch(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits for the batch in flight to commit, so the next owner starts after it."""

    def __init__(self, worker: StageWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        async with self.worker.batch_lock:
            log.info("partitions revoked", extra={"stage": self.worker.stage.name, "partitions": str(revoked)})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.metrics.assigned_partitions.set(len(assigned))
        log.info("partitions assigned", extra={"stage": self.worker.stage.name, "partitions": str(assigned)})


class StageWorker:
    """Consumes, decides, produces and commits for one stage; see the module doc for the guarantees."""

    def __init__(
        self,
        stage: Stage[Any, Any],
        *,
        settings: Settings | None = None,
        config: WorkerConfig | None = None,
        codec: AvroCodec | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings or get_settings()
        self.config = config or WorkerConfig()
        self.codec = codec or AvroCodec(SchemaRegistry.load(self.settings.schemas_dir))
        self.metrics = StageMetrics(stage.name)
        self.batch_lock = asyncio.Lock()
        self.stopping = asyncio.Event()
        self.http_port: int | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._in_flight = asyncio.Semaphore(self.config.max_in_flight)
        self.group_id = self.settings.topic(stage.group_id)
        self.input_topic = self.settings.topic(stage.input_topic)
        self.output_topic = self.settings.topic(stage.output_topic)
        self.dead_letter_topic = self.settings.topic(stage.dead_letter_topic)
        self._positions: dict[TopicPartition, int] = {}

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stop() (or SIGTERM/SIGINT when installed): finish the batch in flight, commit it,
        leave the group, return."""
        await self.stage.start()
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=self.group_id,
            client_id=f"{self.group_id}-{self.config.replica}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            fetch_max_wait_ms=self.config.fetch_wait_ms,
            max_partition_fetch_bytes=self.config.max_record_bytes * 8,
        )
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.group_id}-{self.config.replica}",
            transactional_id=f"{self.group_id}-{self.config.replica}",
            transaction_timeout_ms=self.config.transaction_timeout_ms,
            enable_idempotence=True,
            acks="all",
            linger_ms=0,
            # A transaction begun while the coordinator still writes the last one's markers is refused with
            # CONCURRENT_TRANSACTIONS and retried after this backoff; the default 100 ms would add that much
            # to every hop under steady traffic.
            retry_backoff_ms=self.config.retry_backoff_ms,
            max_request_size=self.config.max_record_bytes * 12,
        )
        self._consumer, self._producer = consumer, producer
        await producer.start()
        await consumer.start()
        consumer.subscribe([self.input_topic], listener=_WaitForBatch(self))
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        self.http_port = runner.addresses[0][1] if runner.addresses else None
        log.info(
            "stage started",
            extra={"stage": self.stage.name, "replica": self.config.replica, "http_port": self.http_port},
        )
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=100, max_records=self.config.max_batch)
                if batch:
                    async with self.batch_lock:
                        await self._process_batch(batch)
                self._record_lag()
        except ShuttingDown:
            log.info("shutdown interrupted a retry; the batch stays uncommitted", extra={"stage": self.stage.name})
        finally:
            await consumer.stop()
            await producer.stop()
            await runner.cleanup()
            await self.stage.stop()
            log.info("stage stopped", extra={"stage": self.stage.name, "replica": self.config.replica})

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def health(self) -> tuple[bool, str]:
        consumer = self._consumer
        if consumer is None or not consumer.assignment():
            return False, "no partitions assigned"
        ok, detail = await self.stage.healthy()
        return ok, detail if not ok else f"{len(consumer.assignment())} partitions assigned"

    # -- one batch -----------------------------------------------------------------------------------

    async def _process_batch(self, batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        assert self._producer is not None
        loop = asyncio.get_running_loop()
        started = loop.time()
        received_at = now_us()
        messages = [m for records in batch.values() for m in records]
        self.metrics.records_in.inc(len(messages))
        self.metrics.batch_size.observe(len(messages))
        results = await asyncio.gather(*(self._handle(m, received_at) for m in messages))
        offsets = {tp: records[-1].offset + 1 for tp, records in batch.items()}
        async with self._producer.transaction():
            for out in results:
                await self._producer.send(out.topic, out.value, key=out.key)
            await self._producer.send_offsets_to_transaction(offsets, self.group_id)
        self._positions.update(offsets)
        produced = sum(not r.dead_lettered for r in results)
        self.metrics.records_out.inc(produced)
        self.metrics.batch_seconds.observe(loop.time() - started)

    async def _handle(self, message: ConsumerRecord[bytes, bytes], received_at: int) -> Outgoing:
        async with self._in_flight:
            value: dict[str, Any] | None = None
            try:
                raw = message.value or b""
                if len(raw) > self.config.max_record_bytes:
                    raise RecordTooLarge(
                        f"record is {len(raw):,} bytes, over this stage's limit of {self.config.max_record_bytes:,}"
                    )
                _, value = self.codec.decode(raw, reader=self.stage.input_record)
                record = self.stage.input_model.model_validate(value)
                started_at = now_us()
                section = await self._decide_with_retries(record, request_id_of(value))
                finished_at = now_us()
                self.metrics.processing_seconds.observe((finished_at - received_at) / 1e6)
                timing = stage_timing(self.stage.name, received_at, started_at, finished_at)
                outgoing = compose(value, self.stage.section, section.model_dump(), timing)
                encoded = self.codec.encode(self.stage.output_record, outgoing)
                return Outgoing(self.output_topic, message.key, encoded)
            except ShuttingDown:
                raise
            except Exception as error:  # every other failure dead-letters this record alone
                return self._dead_letter(message, error, value)

    async def _decide_with_retries(self, record: BaseModel, request_id: str | None) -> BaseModel:
        delay = self.config.retry_initial_s
        while True:
            try:
                result: BaseModel = await self.stage.decide(record)
                return result
            except TransientError as error:
                self.metrics.error("transient")
                log.warning(
                    "transient failure; retrying",
                    extra={
                        "stage": self.stage.name,
                        "request_id": request_id,
                        "error": str(error),
                        "retry_in_s": delay,
                    },
                )
                try:
                    await asyncio.wait_for(self.stopping.wait(), timeout=delay * (0.5 + random.random()))
                except TimeoutError:
                    delay = min(delay * 2, self.config.retry_max_s)
                    continue
                raise ShuttingDown from error

    def _dead_letter(
        self, message: ConsumerRecord[bytes, bytes], error: Exception, value: dict[str, Any] | None
    ) -> Outgoing:
        reason = _reason(error)
        request_id = request_id_of(value) if value is not None else None
        self.metrics.dead_letter(type(error).__name__)
        log.warning(
            "dead-lettered",
            extra={
                "stage": self.stage.name,
                "request_id": request_id,
                "error_type": type(error).__name__,
                "reason": reason,
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        record = dead_letter(
            stage=self.stage.name,
            reason=reason,
            error=error,
            original=message.value or b"",
            key=message.key,
            topic=message.topic,
            partition=message.partition,
            offset=message.offset,
            request_id=request_id,
        )
        return Outgoing(
            self.dead_letter_topic, message.key, self.codec.encode("DeadLetter", record), dead_lettered=True
        )

    def _record_lag(self) -> None:
        consumer = self._consumer
        if consumer is None:
            return
        for tp in consumer.assignment():
            end = consumer.last_stable_offset(tp) or consumer.highwater(tp)
            position = self._positions.get(tp)
            if end is not None and position is not None:
                self.metrics.consumer_lag.labels(self.stage.name, tp.topic, str(tp.partition)).set(
                    max(end - position, 0)
                )


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        return f"record fails validation: {problems}"
    if isinstance(error, DecodeError | EncodeError | RecordTooLarge):
        return str(error)
    return f"stage raised {type(error).__name__}: {error}"


async def run_stage(stage: Stage[Any, Any], config: WorkerConfig | None = None) -> None:
    """Entry point of a stage process: run until SIGTERM, then exit cleanly."""
    worker = StageWorker(stage, config=config)
    worker.install_signal_handlers()
    await worker.run()
