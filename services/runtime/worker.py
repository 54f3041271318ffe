"""The stream runtime: runs one Stage as a consumer-group member, exactly once, as a pipeline, on librdkafka
(confluent-kafka).

Records are dispatched to the stage's decision as soon as they are fetched (at most `max_in_flight` at
once: a slow stage slows consumption instead of growing memory). A single committer loop takes, for every
partition, the contiguous run of finished records at its head and, in ONE Kafka transaction, produces their
results (or dead letters) in offset order and commits the consumed offsets with the consumer's group metadata
(KIP-447): a group commit. It commits at once when nothing else is being decided; under load it waits until
`commit_max_records` are ready or `commit_linger_ms` has passed, so one transaction carries many records.

A crash before a commit aborts the transaction: nothing downstream (read_committed) sees its output and the
records are processed again by whoever owns the partition next; a crash after it loses nothing. Because the
offsets travel with the group's generation, a member the group has moved on from (a paused pod, a replacement
that got a different transactional id) cannot commit: its transaction fails and is aborted. Keys (store ids)
are kept and results leave in offset order, so each store's requests stay in order.

librdkafka's calls block, so they run in threads: one fetch at a time (rebalance callbacks run inside it and
hand the drain to the event loop), and each transaction's produce/commit round trips.

Every record produced for a consumed one (its output, side records, dead letter; in fused stages each stage's
output) carries the consumed record's Kafka headers, with `traceparent` naming a child span of the incoming one,
or a new trace where it had none (services.runtime.tracing): one request is one trace across the chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from pydantic import BaseModel, ValidationError

from services.runtime.deadletter import ConsumedRecord, dead_letter_for
from services.runtime.faults import TransientError
from services.runtime.kafka_clients import confluent_config
from services.runtime.observability import StageMetrics, serve_http
from services.runtime.request_key import STORE_PARTITIONER
from services.runtime.sealing import dead_letter_sealer
from services.runtime.spans import Hop, StageSpans, close_hop, from_environment, open_hop
from services.runtime.stage import Stage, compose, now_us, request_id_of, stage_timing
from services.runtime.tracing import Header, Headers, parent_of
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.errors import DecodeError, EncodeError
from services.wire.registry_client import codec_from_settings

log = logging.getLogger("switchyard.runtime")

PartitionKey = tuple[str, int]


@dataclass(frozen=True)
class WorkerConfig:
    """Every knob of a stage process, with defaults for one 2-core box."""

    replica: str = field(default_factory=lambda: get_settings().replica or socket.gethostname())
    max_batch: int = 500
    max_in_flight: int = 256
    max_record_bytes: int = 1 << 20
    # The broker holds a fetch until a record is readable or this passes, and answers at once when a commit
    # makes records readable (read_committed included), so a long wait adds no latency; a short one made every
    # idle consumer poll 200 times a second, which cost the broker and each stage more CPU than their records.
    fetch_wait_ms: int = 500
    # Group commit: with nothing else being decided a transaction starts at once; under load it waits for this
    # many finished records or this long, whichever comes first. make bench-runtime (five processes), 2026-12-04:
    # 0 / 2 / 10 ms sustained 2,429 / 2,629 / 2,695 records/s at 3,000 offered; at 100 and 1,000/s the latencies
    # differed by less than run-to-run noise.
    commit_max_records: int = field(default_factory=lambda: get_settings().commit_max_records)
    commit_linger_ms: float = field(default_factory=lambda: get_settings().commit_linger_ms)
    retry_initial_s: float = 0.05
    retry_max_s: float = 5.0
    transaction_timeout_ms: int = 15_000
    retry_backoff_ms: int = 5
    # librdkafka's default 45 s would leave a killed replica's partitions idle that long; 10 s as aiokafka had
    session_timeout_ms: int = 10_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    # an abortable transaction failure (a broker briefly away) is retried this many times before the process
    # gives up and exits for a replica to take over
    transaction_attempts: int = 3
    # How long SIGTERM (or a revocation) waits for the records being decided: below Kubernetes' default grace
    # period of 30 s, so the process still commits what finished and leaves the group before it is killed. The
    # records still undecided then are abandoned uncommitted, and the partition's next owner decides them again.
    drain_timeout_s: float = 20.0
    # librdkafka's send_offsets_to_transaction can block past its own timeout when the group coordinator went
    # away (broker restarted: librdkafka issues #5456, #5511); a transaction still running this long after its
    # timeout is wedged, and the process exits (nothing was committed) for its restart to take over
    transaction_wedged_after_s: float = 10.0
    http_host: str = "127.0.0.1"
    http_port: int = 0


class RecordTooLarge(Exception):
    """The consumed record is bigger than this stage accepts."""


class ShuttingDown(Exception):
    """A retry loop was interrupted by shutdown; the batch is left uncommitted for the next owner."""


class TransactionFailed(Exception):
    """A transaction could not be committed (fenced, or the broker kept failing it); the process exits and the
    records are processed again by the partition's next owner."""


EXIT_TRANSACTION_WEDGED = 75  # EX_TEMPFAIL: start the process again


def exit_wedged(stage: str, waited_s: float) -> None:
    """Ends the process at once: the wedged librdkafka call holds a thread that an orderly exit would wait for
    forever. Nothing of the open transaction was committed, so the next owner decides its records again."""
    log.critical(
        "transaction wedged in librdkafka; exiting for a restart",
        extra={"stage": stage, "waited_s": round(waited_s, 1), "exit_code": EXIT_TRANSACTION_WEDGED},
    )
    logging.shutdown()
    os._exit(EXIT_TRANSACTION_WEDGED)


@dataclass(frozen=True, slots=True)
class Consumed:
    """One consumed record, copied out of librdkafka's message."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None

    @classmethod
    def of(cls, message: Message) -> Consumed:
        # a message without an error always has a topic, partition and offset
        topic, partition, offset = message.topic(), message.partition(), message.offset()
        assert topic is not None and partition is not None and offset is not None
        headers = message.headers()  # a list of (name, value) when consumed; typed to allow a dict as produce does
        if isinstance(headers, dict):
            headers = list(headers.items())
        return cls(topic, partition, offset, message.key(), message.value(), headers)


@dataclass
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    dead_lettered: bool = False
    side: tuple[Outgoing, ...] = ()  # the stage's side records, produced in the same transaction
    partition: int = -1  # -1: the producer's partitioner (murmur2 of the key, as Java clients)
    headers: list[Header] | None = None  # the consumed record's, traceparent continued (services.runtime.tracing)

    def flattened(self) -> list[Outgoing]:
        """This record's side records, then itself, in the order they are produced."""
        return [*self.side, replace(self, side=())]


@dataclass(frozen=True)
class Link:
    """One stage of those this process runs in sequence, with its topics resolved."""

    stage: Stage[Any, Any]
    output_topic: str
    dead_letter_topic: str
    output_fields: frozenset[str]


class StageWorker:
    """Consumes, decides, produces and commits for one stage; see the module doc for the guarantees."""

    def __init__(
        self,
        stage: Stage[Any, Any],
        *,
        settings: Settings | None = None,
        config: WorkerConfig | None = None,
        codec: AvroCodec | None = None,
        downstream: Sequence[Stage[Any, Any]] = (),
        spans: StageSpans | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings or get_settings()
        self.config = config or WorkerConfig()
        self.codec = codec or codec_from_settings(self.settings)
        self.sealer = dead_letter_sealer(self.settings)  # dead letters hold requests as sent: sealed to the operator
        self.links = [self._link(s) for s in (stage, *downstream)]
        for upstream, next_stage in zip((stage, *downstream), downstream, strict=False):
            if (upstream.output_topic, upstream.output_record) != (next_stage.input_topic, next_stage.input_record):
                raise ValueError(
                    f"{next_stage.name} reads {next_stage.input_record} from {next_stage.input_topic}, not what "
                    f"{upstream.name} writes ({upstream.output_record} to {upstream.output_topic}): run them apart"
                )
        self.metrics = StageMetrics(stage.name)
        for link in self.links:
            link.stage.register_metrics(self.metrics.registry)
        # one span per stage per record, only when OTEL_EXPORTER_OTLP_ENDPOINT is set; None costs nothing
        service = f"switchyard-{'chain' if downstream else stage.name}"
        self.spans = spans if spans is not None else from_environment(service)
        self.stopping = asyncio.Event()
        self.interrupt_retries = asyncio.Event()
        self.http_port: int | None = None
        self._consumer: Consumer | None = None
        self._producer: Producer | None = None
        # set when every broker was seen down: the producer is replaced before its next transaction, because
        # librdkafka's send_offsets_to_transaction can block forever on a coordinator it cached before the
        # outage (librdkafka #5456, #5511); a fresh producer looks the coordinator up again
        self._brokers_were_down = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._capacity = asyncio.Semaphore(self.config.max_in_flight)
        self._pending: dict[PartitionKey, deque[tuple[Consumed, asyncio.Task[Outgoing]]]] = {}
        self._deciding = 0
        self._finished = asyncio.Event()
        self._dispatch_open = asyncio.Event()
        self._dispatch_open.set()
        self._commit_lock = asyncio.Lock()
        self._committer_error: BaseException | None = None
        self._transact_step_at = time.monotonic()  # the last librdkafka call _transact began (its watchdog)
        self._assigned: frozenset[PartitionKey] = frozenset()
        # the group generation the partitions were assigned in: every transaction commits offsets with it, so
        # a member the group has since moved on from is refused, even after it rejoins (KIP-447)
        self._group_metadata: Any = None
        self._lag_sampled_at = 0.0
        self.group_id = self.settings.topic(stage.group_id)
        self.input_topic = self.settings.topic(stage.input_topic)
        self._positions: dict[PartitionKey, int] = {}

    def _link(self, stage: Stage[Any, Any]) -> Link:
        return Link(
            stage,
            self.settings.topic(stage.output_topic),
            self.settings.topic(stage.dead_letter_topic),
            self.codec.field_names(stage.output_record),
        )

    @property
    def fused(self) -> bool:
        """Whether this process runs several consecutive stages (each output still produced to its topic)."""
        return len(self.links) > 1

    # -- clients -------------------------------------------------------------------------------------

    def consumer_config(self) -> dict[str, Any]:
        client_id = f"{self.group_id}-{self.config.replica}"
        return confluent_config(
            {
                "group.id": self.group_id,
                "client.id": client_id,
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.wait.max.ms": self.config.fetch_wait_ms,
                "max.partition.fetch.bytes": self.config.max_record_bytes * 8,
                "session.timeout.ms": self.config.session_timeout_ms,
                "heartbeat.interval.ms": self.config.heartbeat_interval_ms,
                "max.poll.interval.ms": self.config.max_poll_interval_ms,
                # librdkafka prefetches up to 64 MiB a partition by default; a stage needs a few batches
                "queued.max.messages.kbytes": 16 * 1024,
                "error_cb": self._on_client_error,
            },
            self.settings,
        )

    def producer_config(self) -> dict[str, Any]:
        client_id = f"{self.group_id}-{self.config.replica}"
        return confluent_config(
            {
                "client.id": client_id,
                "transactional.id": client_id,
                "transaction.timeout.ms": self.config.transaction_timeout_ms,
                "enable.idempotence": True,
                "acks": "all",
                # commit_transaction flushes at once; lingering would only delay the produce requests it waits for
                "linger.ms": 0,
                # the partition of a key as Java clients (and aiokafka) choose it, so a store's records land where
                # they did before and where other clients put them
                **STORE_PARTITIONER,
                "message.max.bytes": self.config.max_record_bytes * 12,
                # A transaction begun while the coordinator still writes the last one's markers is refused with
                # CONCURRENT_TRANSACTIONS and retried after this backoff; librdkafka's default 100 ms would add that
                # much to every hop under steady traffic.
                "retry.backoff.ms": self.config.retry_backoff_ms,
                "error_cb": self._on_client_error,
            },
            self.settings,
        )

    def _on_client_error(self, error: KafkaError) -> None:
        """librdkafka's client-wide errors (it retries them itself); an outage of every broker marks the
        producer for replacement."""
        if error.code() == KafkaError._ALL_BROKERS_DOWN and not self._brokers_were_down.is_set():
            self._brokers_were_down.set()
            log.warning("every broker is down; the producer is replaced before its next transaction",
                        extra={"stage": self.stage.name, "error": str(error)})  # fmt: skip

    # -- lifecycle -----------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run until stop() (or SIGTERM/SIGINT when installed): finish the batch in flight, commit it,
        leave the group, return."""
        for link in self.links:
            await link.stage.start()
        self._loop = asyncio.get_running_loop()
        producer = Producer(self.producer_config())
        # fences any earlier producer with this transactional id and aborts what it left open
        await asyncio.to_thread(producer.init_transactions, self.config.transaction_timeout_ms / 1000)
        consumer = Consumer(self.consumer_config())
        self._consumer, self._producer = consumer, producer
        if self.fused:
            await asyncio.to_thread(self._check_partitions, consumer)
        consumer.subscribe(
            [self.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        self.http_port = runner.addresses[0][1] if runner.addresses else None
        log.info(
            "stage started",
            extra={"stage": self.stage.name, "replica": self.config.replica, "http_port": self.http_port},
        )
        committer = asyncio.create_task(self._commit_loop(), name=f"{self.stage.name}-committer")
        try:
            while not self.stopping.is_set():
                for message in await asyncio.to_thread(self._fetch):
                    await self._dispatch(message)
            if self._committer_error is not None:
                # a failed transaction (fenced by a newer replica, broker gone): exit non-zero, commit nothing
                raise self._committer_error
            await self.drain()
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            # leaving the group revokes the partitions: a last drain (a no-op after the one above) runs then
            await asyncio.to_thread(consumer.close)
            await asyncio.to_thread(self._producer.flush, 10)
            await runner.cleanup()
            for link in reversed(self.links):
                await link.stage.stop()
            if self.spans is not None:
                await asyncio.to_thread(self.spans.shutdown)  # exports the spans still batched
            log.info("stage stopped", extra={"stage": self.stage.name, "replica": self.config.replica})

    def _check_partitions(self, consumer: Consumer) -> None:
        """Fused stages write each record to the partition number it was read from, so that every topic of the
        chain keeps a store on one partition number (the auditor continues its chains by partition): the topics
        must have as many partitions as the input."""
        names = [self.input_topic, *(link.output_topic for link in self.links)]
        metadata = consumer.list_topics(timeout=30).topics
        counts = {name: len(metadata[name].partitions) if name in metadata else 0 for name in names}
        if len(set(counts.values())) != 1:
            raise ValueError(
                f"fused stages need topics with equal partition counts, found {counts}: align them in topics/ "
                "(make topics) or run the stages apart"
            )

    def stop(self) -> None:
        self.stopping.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)

    async def health(self) -> tuple[bool, str]:
        if not self._assigned:
            return False, "no partitions assigned"
        for link in self.links:
            ok, detail = await link.stage.healthy()
            if not ok:
                return False, detail if not self.fused else f"{link.stage.name}: {detail}"
        return True, f"{len(self._assigned)} partitions assigned"

    # -- the fetch thread and rebalances ---------------------------------------------------------------

    def _fetch(self) -> list[Consumed]:
        """Runs in a thread: the next record as soon as one is readable (or nothing after a short wait), then
        whatever else is already fetched, without waiting, up to `max_batch`."""
        consumer = self._consumer
        assert consumer is not None
        first = consumer.poll(0.1)
        if first is None:
            return []
        messages = [first, *consumer.consume(self.config.max_batch - 1, 0)]
        self._record_lag(consumer)
        consumed = []
        for message in messages:
            error = message.error()
            if error is None:
                consumed.append(Consumed.of(message))
            elif error.code() != KafkaError._PARTITION_EOF:
                self.metrics.error("consumer")
                log.warning("consumer error", extra={"stage": self.stage.name, "error": str(error)})
        return consumed

    def _on_loop(self, coroutine: Any) -> None:
        """From a librdkafka callback (the fetch thread): run `coroutine` on the event loop and wait for it."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        # read here, in the callback's own thread: from the event loop's thread the call waits on the rebalance
        self._group_metadata = consumer.consumer_group_metadata()
        self._on_loop(self._assign(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        self._on_loop(self._revoke(partitions, lost=False))

    def _on_lost(self, _consumer: Consumer, partitions: list[KafkaPartition]) -> None:
        self._on_loop(self._revoke(partitions, lost=True))

    async def _assign(self, partitions: list[KafkaPartition]) -> None:
        self._assigned = frozenset((tp.topic, tp.partition) for tp in partitions)
        self.metrics.assigned_partitions.set(len(self._assigned))
        for link in self.links:  # fused stages write each record to the partition it was read from: same numbers
            await link.stage.on_assigned(sorted(p for _topic, p in self._assigned))
        log.info("partitions assigned", extra={"stage": self.stage.name, "partitions": str(sorted(self._assigned))})

    async def _revoke(self, partitions: list[KafkaPartition], *, lost: bool) -> None:
        """Revocation waits until every record in flight is decided and committed, so the next owner of a
        partition starts exactly after what this one committed. Lost partitions (the group moved on without
        us) are not committed: the transaction would be refused, and the next owner redoes them."""
        self._assigned = frozenset()
        # A record stuck retrying a transient failure must not hold the rebalance: it is interrupted and
        # left uncommitted, and its partition's next owner retries it.
        self.interrupt_retries.set()
        try:
            await self.drain(commit=not lost and self._committer_error is None)
        finally:
            self.interrupt_retries.clear()
        revoked = sorted((tp.topic, tp.partition) for tp in partitions)
        log.info("partitions revoked", extra={"stage": self.stage.name, "partitions": str(revoked), "lost": lost})

    # -- one batch -----------------------------------------------------------------------------------

    async def _dispatch(self, message: Consumed) -> None:
        """Start deciding one record; waits while `max_in_flight` records are in flight or a drain runs."""
        await self._dispatch_open.wait()
        # Capacity returns when a record is committed, not when it is decided: finished records waiting behind
        # a slow one at the head of their partition count too, so memory stays bounded.
        await self._capacity.acquire()
        key = (message.topic, message.partition)
        if key not in self._assigned:
            self._capacity.release()
            return  # fetched just before a revocation; the partition's next owner processes it
        self.metrics.records_in.inc()
        self._deciding += 1
        task = asyncio.create_task(self._handle(message))
        task.add_done_callback(self._on_finished)
        self._pending.setdefault(key, deque()).append((message, task))

    def _on_finished(self, _task: asyncio.Task[Outgoing]) -> None:
        self._deciding -= 1
        self._finished.set()

    def _ready_prefixes(self) -> dict[PartitionKey, list[Outgoing]]:
        """Per partition, the results of the finished records at the head, in offset order. A record whose
        decision was interrupted by shutdown ends the run: it and everything behind it stay uncommitted."""
        ready: dict[PartitionKey, list[Outgoing]] = {}
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
        async with self._commit_lock:
            ready = self._ready_prefixes()
            if not ready:
                return 0
            started = time.perf_counter()
            batch = [out for results in ready.values() for out in results]
            offsets = {tp: self._pending[tp][len(results) - 1][0].offset + 1 for tp, results in ready.items()}
            await self._transact_watched(batch, offsets)
            for tp, results in ready.items():
                for _ in results:
                    self._pending[tp].popleft()
                    self._capacity.release()
            self.metrics.records_out.inc(sum(not out.dead_lettered for out in batch))
            self._positions.update(offsets)
            self.metrics.batch_size.observe(len(batch))
            self.metrics.batch_seconds.observe(time.perf_counter() - started)
            return len(batch)

    async def _transact_watched(self, batch: list[Outgoing], offsets: dict[PartitionKey, int]) -> None:
        """`_transact` in a thread, with a watchdog: each librdkafka call in it is bounded by the transaction
        timeout, so one that has not returned `transaction_wedged_after_s` past that never will."""
        stall_limit_s = self.config.transaction_timeout_ms / 1000 + self.config.transaction_wedged_after_s
        self._transact_step_at = time.monotonic()
        running = asyncio.ensure_future(asyncio.to_thread(self._transact, batch, offsets))
        while not running.done():
            await asyncio.wait({running}, timeout=1.0)
            stalled_s = time.monotonic() - self._transact_step_at
            if not running.done() and stalled_s > stall_limit_s:
                exit_wedged(self.stage.name, stalled_s)
        running.result()

    def _mark_progress(self) -> None:
        """Marks progress in `_transact` for its watchdog."""
        self._transact_step_at = time.monotonic()

    def _transact(self, batch: list[Outgoing], offsets: dict[PartitionKey, int]) -> None:
        """Runs in a thread: produce the batch and commit its offsets in one transaction. An abortable failure
        aborts and retries the whole transaction (the results are still in memory); a fatal one (fenced) or
        one that keeps failing raises TransactionFailed. A member the group has moved on from fails here too:
        the broker refuses offsets sent with a stale generation."""
        group_metadata = self._group_metadata
        assert self._producer is not None and group_metadata is not None
        partitions = [KafkaPartition(topic, partition, offset) for (topic, partition), offset in offsets.items()]
        timeout_s = self.config.transaction_timeout_ms / 1000
        for attempt in range(1, self.config.transaction_attempts + 1):
            producer, began = self._producer, False
            try:
                if self._brokers_were_down.is_set():
                    producer = self._renew_producer(timeout_s)
                self._mark_progress()
                producer.begin_transaction()
                began = True
                for out in batch:
                    for side in out.side:
                        self._produce(producer, side)
                    self._produce(producer, out)
                self._mark_progress()
                producer.send_offsets_to_transaction(partitions, group_metadata, timeout_s)
                self._mark_progress()
                self._commit_transaction(producer, timeout_s)
                return
            except KafkaException as failure:
                error: KafkaError = failure.args[0]
                if error.fatal() or attempt == self.config.transaction_attempts:
                    raise TransactionFailed(f"transaction of {len(batch)} records failed: {error}") from failure
                log.warning(
                    "transaction aborted; retrying",
                    extra={"stage": self.stage.name, "error": str(error), "attempt": attempt},
                )
                self._mark_progress()
                if began:
                    with contextlib.suppress(KafkaException):
                        producer.abort_transaction(timeout_s)
                time.sleep(self.config.retry_initial_s * attempt)

    def _renew_producer(self, timeout_s: float) -> Producer:
        """A new transactional producer with the same id in place of the current one: its init_transactions
        fences the old one and aborts whatever transaction that left open. The old one is let go in a daemon
        thread, since destroying a handle wedged on its coordinator may block."""
        self._brokers_were_down.clear()
        self._mark_progress()
        fresh = Producer(self.producer_config())
        try:
            fresh.init_transactions(timeout_s)
        except KafkaException:
            self._brokers_were_down.set()  # still away: try again at the next attempt
            raise
        old, self._producer = self._producer, fresh
        threading.Thread(target=_let_go, args=(old,), name="retired-producer", daemon=True).start()
        log.info("producer replaced after a broker outage", extra={"stage": self.stage.name})
        return fresh

    @staticmethod
    def _produce(producer: Producer, out: Outgoing) -> None:
        while True:
            try:
                producer.produce(out.topic, out.value, out.key, partition=out.partition, headers=out.headers)
                return
            except BufferError:  # librdkafka's local queue is full: let it send, then enqueue again
                producer.poll(0.05)

    def _commit_transaction(self, producer: Producer, timeout_s: float) -> None:
        """Commit the open transaction; a retriable failure (a slow coordinator) is retried as librdkafka asks."""
        while True:
            try:
                self._mark_progress()
                producer.commit_transaction(timeout_s)
                return
            except KafkaException as failure:
                if not failure.args[0].retriable():
                    raise

    async def _commit_loop(self) -> None:
        try:
            while True:
                await self._finished.wait()
                self._finished.clear()
                await self._gather_batch()
                await self._commit_ready()
        except asyncio.CancelledError:
            raise
        except BaseException as error:  # a failed transaction is fatal: the process exits, a replica takes over
            log.error("commit failed; stopping", extra={"stage": self.stage.name, "error": repr(error)})
            self._committer_error = error
            self.stopping.set()

    async def _gather_batch(self) -> None:
        """Under load, let more records finish before committing: until `commit_max_records` are ready,
        `commit_linger_ms` has passed, or nothing is being decided any more (then waiting gains nothing)."""
        linger_s = self.config.commit_linger_ms / 1000
        if linger_s <= 0:
            return
        deadline = time.monotonic() + linger_s
        while self._deciding > 0 and self._ready_count() < self.config.commit_max_records:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._finished.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._finished.wait(), remaining)

    def _ready_count(self) -> int:
        return sum(len(results) for results in self._ready_prefixes().values())

    async def drain(self, *, commit: bool = True) -> None:
        """Wait for every record in flight (at most `drain_timeout_s`), then commit what finished: the finished
        head of each partition, so never a record behind one abandoned. No record is dispatched meanwhile."""
        self._dispatch_open.clear()
        try:
            await self._drain_pending(commit)
        finally:
            self._dispatch_open.set()

    async def _drain_pending(self, commit: bool) -> None:
        tasks = [task for queue in self._pending.values() for _message, task in queue]
        abandoned = await finish_within(tasks, self.config.drain_timeout_s)
        if abandoned:
            log.warning(
                "drain timed out; records still being decided are abandoned for the next owner",
                extra={"stage": self.stage.name, "records": len(abandoned), "timeout_s": self.config.drain_timeout_s},
            )
        if commit:
            await self._commit_ready()
        async with self._commit_lock:  # a transaction still under way (lost partitions) ends first
            interrupted = sum(len(queue) for queue in self._pending.values())
            for _ in range(interrupted):
                self._capacity.release()
            if interrupted:
                log.info(
                    "records left uncommitted for the next owner",
                    extra={"stage": self.stage.name, "records": interrupted},
                )
            self._pending.clear()

    async def _handle(self, message: Consumed) -> Outgoing:
        """Decode the record, then run each stage of this process on it in turn. A stage that fails dead-letters
        the record (what the stages before it produced is kept, as when they run apart). Each stage continues
        the record's trace: its outputs name its own span as their parent."""
        first = self.links[0]
        hop = open_hop(self.spans, first.stage.name, message.headers, parent_of(message.headers))
        value: dict[str, Any] | None = None
        try:
            raw = message.value or b""
            if len(raw) > self.config.max_record_bytes:
                raise RecordTooLarge(
                    f"record is {len(raw):,} bytes, over this stage's limit of {self.config.max_record_bytes:,}"
                )
            _, value = self.codec.decode(raw, reader=self.stage.input_record)
        except Exception as error:
            return self._dead_letter(message, error, value, first, hop)
        partition = message.partition if self.fused else -1
        produced: list[Outgoing] = []
        source = message
        for link in self.links:
            if link is not first:  # the stage before it in this process is its parent, as over Kafka
                hop = open_hop(self.spans, link.stage.name, hop.headers, hop.trace)
            try:
                value, out = await self._step(link, value, message.key, partition, hop)
            except (ShuttingDown, asyncio.CancelledError):
                close_hop(hop, "interrupted", request_id_of(value))
                raise
            except Exception as error:  # every other failure dead-letters this record alone
                return _after(produced, self._dead_letter(source, error, value, link, hop))
            produced.append(out)
            source = Consumed(out.topic, message.partition, message.offset, message.key, out.value, out.headers)
        return _after(produced[:-1], produced[-1])

    async def _step(
        self, link: Link, value: dict[str, Any], key: bytes | None, partition: int, hop: Hop
    ) -> tuple[dict[str, Any], Outgoing]:
        """One stage's decision on a decoded record: the record it passes on, and its encoded output (and side
        records) carrying the hop's headers."""
        stage = link.stage
        received_at = now_us()
        record = stage.input_model.model_validate(value)
        started_at = now_us()
        decide_started = time.perf_counter()
        request_id = request_id_of(value)
        section = await self._decide_with_retries(record, request_id, stage, hop.trace.trace_id)
        decide_ms = (time.perf_counter() - decide_started) * 1000
        work_ms = stage.work(record, section, decide_ms)
        finished_at = now_us()
        self.metrics.processing_seconds.observe((finished_at - received_at) / 1e6)
        timing = stage_timing(stage.name, received_at, started_at, finished_at, work_ms)
        outgoing = compose(value, stage.section, section.model_dump(), timing)
        outgoing.update(stage.passed_on(record, section))
        # a field the incoming record carried for the stages up to this one (the router's request embedding
        # stops at the governor) ends where the output record has none; anything else unknown still fails
        outgoing = {k: v for k, v in outgoing.items() if k in link.output_fields or k not in value}
        encoded = self.codec.encode(stage.output_record, outgoing, validate=False)
        headers = hop.headers
        side = tuple(
            Outgoing(
                self.settings.topic(extra.topic),
                extra.key.encode(),
                self.codec.encode(extra.record, extra.value),
                headers=headers,
            )
            for extra in stage.side_records(record, section)
        )
        if hop.span is not None:
            close_hop(hop, "ok", request_id, stage.span_attributes(record, section))
        return outgoing, Outgoing(link.output_topic, key, encoded, side=side, partition=partition, headers=headers)

    async def _decide_with_retries(
        self,
        record: BaseModel,
        request_id: str | None,
        stage: Stage[Any, Any] | None = None,
        trace_id: str | None = None,
    ) -> BaseModel:
        stage = stage or self.stage
        delay = self.config.retry_initial_s
        while True:
            try:
                result: BaseModel = await stage.decide(record)
                return result
            except TransientError as error:
                self.metrics.error("transient")
                log.warning(
                    "transient failure; retrying",
                    extra={
                        "stage": stage.name,
                        "request_id": request_id,
                        "trace_id": trace_id,
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

    def _decoded_or_none(self, message: ConsumedRecord) -> dict[str, Any] | None:
        try:
            return self.codec.decode(message.value or b"", reader=self.stage.input_record)[1]
        except Exception:
            return None

    def _dead_letter(
        self, message: ConsumedRecord, error: Exception, value: dict[str, Any] | None, link: Link, hop: Hop
    ) -> Outgoing:
        """The record's dead letter on the stage's dead-letter topic, in the record's trace (the hop's headers)."""
        reason = _reason(error)
        if value is None and isinstance(error, RecordTooLarge):
            value = self._decoded_or_none(message)  # only to name the request its dead letter belongs to
        request_id = request_id_of(value) if value is not None else None
        self.metrics.dead_letter(type(error).__name__)
        close_hop(hop, "dead_lettered", request_id, error=error)
        log.warning(
            "dead-lettered",
            extra={
                "stage": link.stage.name,
                "request_id": request_id,
                "trace_id": hop.trace.trace_id,
                "error_type": type(error).__name__,
                "reason": reason,
                "topic": message.topic,
                "partition": message.partition,
                "offset": message.offset,
            },
        )
        record = dead_letter_for(
            message, stage=link.stage.name, reason=reason, error=error, request_id=request_id, sealer=self.sealer
        )
        return Outgoing(
            link.dead_letter_topic,
            message.key,
            self.codec.encode("DeadLetter", record),
            dead_lettered=True,
            headers=hop.headers,
        )

    def _record_lag(self, consumer: Consumer) -> None:
        """Consumer lag per partition (from librdkafka's cached high watermark), at most once a second."""
        now = time.monotonic()
        if now - self._lag_sampled_at < 1.0:
            return
        self._lag_sampled_at = now
        for topic, partition in self._assigned:
            position = self._positions.get((topic, partition))
            if position is None:
                continue
            _low, high = consumer.get_watermark_offsets(KafkaPartition(topic, partition), cached=True)
            if high >= 0:
                self.metrics.consumer_lag.labels(self.stage.name, topic, str(partition)).set(max(high - position, 0))


def _let_go(producer: Producer | None) -> None:
    """Drops the last reference to a retired producer, in the daemon thread that calls this."""
    del producer


async def finish_within(tasks: Collection[asyncio.Task[Any]], timeout_s: float) -> set[asyncio.Task[Any]]:
    """Waits up to `timeout_s` for `tasks` to finish; those still running then are cancelled (not awaited: a task
    that ignores its cancellation must not hold the shutdown) and returned."""
    if not tasks:
        return set()
    _finished, running = await asyncio.wait(tasks, timeout=timeout_s)
    for task in running:
        task.cancel()
    return running


def _after(earlier: list[Outgoing], last: Outgoing) -> Outgoing:
    """`last`, carrying the outputs of the stages before it (fused stages) to be produced first, in order."""
    if not earlier:
        return last
    before = [record for out in earlier for record in out.flattened()]
    return replace(last, side=(*before, *last.side))


def _reason(error: Exception) -> str:
    if isinstance(error, ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        return f"record fails validation: {problems}"
    if isinstance(error, DecodeError | EncodeError | RecordTooLarge):
        return str(error)
    return f"stage raised {type(error).__name__}: {error}"


async def run_stage(
    stage: Stage[Any, Any], config: WorkerConfig | None = None, downstream: Sequence[Stage[Any, Any]] = ()
) -> None:
    """Entry point of a stage process (with `downstream`, of consecutive stages fused): run until SIGTERM, then
    exit cleanly."""
    worker = StageWorker(stage, config=config, downstream=downstream)
    worker.install_signal_handlers()
    await worker.run()
