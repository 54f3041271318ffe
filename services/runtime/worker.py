"""The stream runtime: runs one Stage as a consumer-group member, exactly once, as a pipeline.

Records are dispatched to the stage's decision as soon as they are fetched (at most `max_in_flight` at
once: a slow stage slows consumption instead of growing memory). A single committer loop takes, for every
partition, the contiguous run of finished records at its head and, in ONE Kafka transaction, produces their
results (or dead letters) in offset order and commits the consumed offsets: a group commit, so one
transaction carries whatever finished while the previous one was committing. A crash before a commit aborts
the transaction: nothing downstream (read_committed) sees its output and the records are processed again by
whoever owns the partition next; a crash after it loses nothing. Keys (store ids) are kept and results leave
in offset order, so each store's requests stay in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ValidationError

from services.runtime.codec import AvroCodec
from services.runtime.deadletter import dead_letter_for
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
    max_in_flight: int = 256
    max_record_bytes: int = 1 << 20
    # The broker holds a fetch until a record is readable or this passes, and answers at once when a commit
    # makes records readable (read_committed included), so a long wait adds no latency; a short one made every
    # idle consumer poll 200 times a second, which cost the broker and each stage more CPU than their records.
    fetch_wait_ms: int = 500
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
    side: tuple[Outgoing, ...] = ()  # the stage's side records, produced in the same transaction


class _DrainOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """Revocation waits until every record in flight is decided and committed, so the next owner of a
    partition starts exactly after what this one committed."""

    def __init__(self, worker: StageWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        # A record stuck retrying a transient failure must not hold the rebalance: it is interrupted and
        # left uncommitted, and its partition's next owner retries it.
        self.worker.interrupt_retries.set()
        try:
            await self.worker.drain()
        finally:
            self.worker.interrupt_retries.clear()
        log.info("partitions revoked", extra={"stage": self.worker.stage.name, "partitions": str(revoked)})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.worker.metrics.assigned_partitions.set(len(assigned))
        await self.worker.stage.on_assigned(sorted(tp.partition for tp in assigned))
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
        self._output_fields = self.codec.field_names(stage.output_record)
        self.metrics = StageMetrics(stage.name)
        self.stopping = asyncio.Event()
        self.interrupt_retries = asyncio.Event()
        self.http_port: int | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._capacity = asyncio.Semaphore(self.config.max_in_flight)
        self._pending: dict[TopicPartition, deque[tuple[ConsumerRecord[bytes, bytes], asyncio.Task[Outgoing]]]] = {}
        self._finished = asyncio.Event()
        self._dispatch_open = asyncio.Event()
        self._dispatch_open.set()
        self._commit_lock = asyncio.Lock()
        self._committer_error: BaseException | None = None
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
        consumer.subscribe([self.input_topic], listener=_DrainOnRevoke(self))
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        self.http_port = runner.addresses[0][1] if runner.addresses else None
        log.info(
            "stage started",
            extra={"stage": self.stage.name, "replica": self.config.replica, "http_port": self.http_port},
        )
        committer = asyncio.create_task(self._commit_loop(), name=f"{self.stage.name}-committer")
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=50, max_records=self.config.max_batch)
                for tp, messages in batch.items():
                    for message in messages:
                        await self._dispatch(tp, message)
                self._record_lag()
            if self._committer_error is not None:
                # a failed transaction (fenced by a newer replica, broker gone): exit non-zero, commit nothing
                raise self._committer_error
            await self.drain()
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
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

    async def _dispatch(self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes]) -> None:
        """Start deciding one record; waits while `max_in_flight` records are in flight or a drain runs."""
        await self._dispatch_open.wait()
        # Capacity returns when a record is committed, not when it is decided: finished records waiting behind
        # a slow one at the head of their partition count too, so memory stays bounded.
        await self._capacity.acquire()
        consumer = self._consumer
        if consumer is not None and tp not in consumer.assignment():
            self._capacity.release()
            return  # fetched just before a revocation; the partition's next owner processes it
        self.metrics.records_in.inc()
        task = asyncio.create_task(self._handle(message))
        task.add_done_callback(self._on_finished)
        self._pending.setdefault(tp, deque()).append((message, task))

    def _on_finished(self, _task: asyncio.Task[Outgoing]) -> None:
        self._finished.set()

    def _ready_prefixes(self) -> dict[TopicPartition, list[Outgoing]]:
        """Per partition, the results of the finished records at the head, in offset order. A record whose
        decision was interrupted by shutdown ends the run: it and everything behind it stay uncommitted."""
        ready: dict[TopicPartition, list[Outgoing]] = {}
        for tp, queue in self._pending.items():
            results: list[Outgoing] = []
            for _message, task in queue:
                if not task.done() or task.cancelled() or task.exception() is not None:
                    break
                results.append(task.result())
            if results:
                ready[tp] = results
        return ready

    async def _commit_ready(self) -> int:
        """One transaction for everything finished so far; returns the number of records committed."""
        assert self._producer is not None
        async with self._commit_lock:
            ready = self._ready_prefixes()
            if not ready:
                return 0
            loop = asyncio.get_running_loop()
            started = loop.time()
            offsets: dict[TopicPartition, int] = {}
            async with self._producer.transaction():
                for tp, results in ready.items():
                    for out in results:
                        for side in out.side:
                            await self._producer.send(side.topic, side.value, key=side.key)
                        await self._producer.send(out.topic, out.value, key=out.key)
                    last_message, _ = self._pending[tp][len(results) - 1]
                    offsets[tp] = last_message.offset + 1
                await self._producer.send_offsets_to_transaction(offsets, self.group_id)
            count = 0
            for tp, results in ready.items():
                for _ in results:
                    self._pending[tp].popleft()
                    self._capacity.release()
                count += len(results)
                self.metrics.records_out.inc(sum(not r.dead_lettered for r in results))
            self._positions.update(offsets)
            self.metrics.batch_size.observe(count)
            self.metrics.batch_seconds.observe(loop.time() - started)
            return count

    async def _commit_loop(self) -> None:
        try:
            while True:
                await self._finished.wait()
                self._finished.clear()
                await self._commit_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # a failed transaction is fatal: the process exits, a replica takes over
            log.error("commit failed; stopping", extra={"stage": self.stage.name, "error": repr(error)})
            self._committer_error = error
            self.stopping.set()

    async def drain(self) -> None:
        """Wait for every record in flight, then commit what finished (all of it, unless shutting down).
        No record is dispatched meanwhile."""
        self._dispatch_open.clear()
        try:
            await self._drain_pending()
        finally:
            self._dispatch_open.set()

    async def _drain_pending(self) -> None:
        tasks = [task for queue in self._pending.values() for _message, task in queue]
        if tasks:
            await asyncio.wait(tasks)
        await self._commit_ready()
        interrupted = sum(len(queue) for queue in self._pending.values())
        for _ in range(interrupted):
            self._capacity.release()
        if interrupted:
            log.info(
                "records left uncommitted for the next owner",
                extra={"stage": self.stage.name, "records": interrupted},
            )
        self._pending.clear()

    async def _handle(self, message: ConsumerRecord[bytes, bytes]) -> Outgoing:
        received_at = now_us()
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
            decide_started = time.perf_counter()
            section = await self._decide_with_retries(record, request_id_of(value))
            decide_ms = (time.perf_counter() - decide_started) * 1000
            work_ms = self.stage.work(record, section, decide_ms)
            finished_at = now_us()
            self.metrics.processing_seconds.observe((finished_at - received_at) / 1e6)
            timing = stage_timing(self.stage.name, received_at, started_at, finished_at, work_ms)
            outgoing = compose(value, self.stage.section, section.model_dump(), timing)
            outgoing.update(self.stage.passed_on(record, section))
            # a field the incoming record carried for the stages up to this one (the router's request embedding
            # stops at the governor) ends where the output record has none; anything else unknown still fails
            outgoing = {k: v for k, v in outgoing.items() if k in self._output_fields or k not in value}
            encoded = self.codec.encode(self.stage.output_record, outgoing)
            side = tuple(
                Outgoing(
                    self.settings.topic(extra.topic), extra.key.encode(), self.codec.encode(extra.record, extra.value)
                )
                for extra in self.stage.side_records(record, section)
            )
            return Outgoing(self.output_topic, message.key, encoded, side=side)
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
                if await self._interrupted_within(delay * (0.5 + random.random())):
                    raise ShuttingDown from error
                delay = min(delay * 2, self.config.retry_max_s)

    async def _interrupted_within(self, seconds: float) -> bool:
        """Sleeps, unless shutdown or a revocation interrupts the wait first (then True)."""
        if self.stopping.is_set() or self.interrupt_retries.is_set():
            return True
        waits = [asyncio.ensure_future(self.stopping.wait()), asyncio.ensure_future(self.interrupt_retries.wait())]
        done, pending = await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()
        return bool(done)

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
        record = dead_letter_for(message, stage=self.stage.name, reason=reason, error=error, request_id=request_id)
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
