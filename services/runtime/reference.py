"""Tables built from a topic, held in memory: a global view (every partition, no consumer group), read from
the beginning, then kept current; ready once caught up with the topic's end as it was at start. An update on
the topic is visible to the next lookup.

Why not faust tables: these have a faust GlobalTable's semantics (local, current, every replica holds all of it,
next request sees an update) but live inside the stage's own process and event loop, next to the shared
transactional aiokafka runtime that every stage uses, so a lookup is a dict access with no second framework,
worker or changelog topic. Faust keeps the windowed work it is good at (provider health); a reference table
needs no windows, and its compacted source topic already is its changelog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

import confluent_kafka
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]
from pydantic import BaseModel

from services.runtime.kafka_clients import aiokafka_config, confluent_config
from services.wire.codec import AvroCodec

Row = TypeVar("Row")
Model = TypeVar("Model", bound=BaseModel)
log = logging.getLogger("switchyard.reference")


class TopicTable(ABC):
    """Follows every partition of one topic from the beginning and hands each record to `apply`."""

    def __init__(self, *, bootstrap: str, topic: str, since_ms: int | None = None) -> None:
        """`since_ms` starts from the first record at or after that time instead of the beginning (for a
        history kept from a long, non-compacted topic)."""
        self.bootstrap, self.topic, self.since_ms = bootstrap, topic, since_ms
        self.ready = asyncio.Event()
        self.rejected = 0
        self.error = ""  # why the table stopped following its topic; empty while it follows
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    @abstractmethod
    def apply(self, key: bytes | None, value: bytes | None) -> None:
        """Fold one record into the table; must not raise for a bad record (count it in `rejected`)."""

    @abstractmethod
    def __len__(self) -> int: ...

    async def start(self) -> None:
        # No consumer group: every partition is ours, read from the beginning (nothing is ever committed).
        consumer = AIOKafkaConsumer(
            **aiokafka_config(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                isolation_level="read_committed",
                metadata_max_age_ms=5000,
            )
        )
        try:
            await consumer.start()
            topics = await consumer.topics()
            if self.topic not in topics:
                raise RuntimeError(
                    f"topic {self.topic} does not exist; run `make topics` (on SASL_SSL, an ACL may hide it from "
                    "this principal: `make acls-plan`)"
                )
            consumer.subscribe([self.topic])
            if self.since_ms is not None:
                await self._seek_to_time(consumer, self.since_ms)
        except BaseException:  # a start that fails leaves no consumer (and its connections) behind
            await consumer.stop()
            raise
        self._consumer = consumer
        self._task = asyncio.create_task(self._follow(consumer), name=f"table:{self.topic}")
        self._task.add_done_callback(self._stopped)

    def _stopped(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.error = f"{type(task.exception()).__name__}: {task.exception()}"
            log.error("table stopped following its topic", extra={"topic": self.topic, "error": self.error})

    async def _seek_to_time(self, consumer: AIOKafkaConsumer, since_ms: int) -> None:
        """Every partition to its first record at or after `since_ms` (its end when there is none); records
        fetched before the seek are discarded by it."""
        deadline = asyncio.get_running_loop().time() + 30
        while not consumer.assignment():
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"no partitions of {self.topic} assigned within 30 s")
            await asyncio.sleep(0.05)
        partitions = sorted(consumer.assignment())
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since_ms))
        ends = await consumer.end_offsets(partitions)
        for tp in partitions:
            offset = found.get(tp)
            consumer.seek(tp, offset.offset if offset is not None else ends[tp])

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    async def _follow(self, consumer: AIOKafkaConsumer) -> None:
        targets: dict[TopicPartition, int] | None = None
        while True:
            try:
                batch = await consumer.getmany(timeout_ms=200, max_records=5000)
                for messages in batch.values():
                    for message in messages:
                        self.apply(message.key, message.value)
                if self.ready.is_set():
                    continue
                assigned = consumer.assignment()
                if not assigned:
                    continue
                if targets is None or set(targets) != assigned:
                    targets = await consumer.end_offsets(list(assigned))
                positions = {tp: await consumer.position(tp) for tp in assigned}
            except KafkaError as error:
                # A slow broker (a loaded box, a leader moving) times out an offset request now and then: the
                # table keeps following and retries, rather than dying and leaving its stage never ready.
                log.warning("table retrying after a Kafka error", extra={"topic": self.topic, "error": repr(error)})
                targets = None
                await asyncio.sleep(0.5)
                continue
            if all(positions[tp] >= end for tp, end in targets.items()):
                log.info("table ready", extra={"topic": self.topic, "rows": len(self)})
                self.ready.set()

    async def caught_up(self, timeout_s: float = 30.0) -> None:
        """Until the table holds every record committed to its topic now: a process that takes over work from
        another, as at a rebalance, first sees all that the other committed. Raises TimeoutError when the table
        does not get there within `timeout_s`.

        The target is each partition's high watermark (read uncommitted), not the end offset a read_committed
        reader is told (the last stable offset): a producer's commit returns once the coordinator has decided, and
        the commit markers reach the partitions a moment later, so the last stable offset read just after a commit
        can still stop before that transaction (the table then looked caught up holding none of it). A
        read_committed position passes the high watermark of the call only once every transaction below it has
        ended, so one still open at the call is waited for."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError(f"the table of {self.topic} was not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not consumer.assignment():
            if loop.time() > deadline:
                raise TimeoutError(f"no partitions of {self.topic} assigned within {timeout_s} s")
            await asyncio.sleep(0.02)
        assigned = list(consumer.assignment())
        targets = await asyncio.to_thread(high_watermarks, self.bootstrap, assigned, timeout_s)
        # the position passes a record only when getmany hands it out, and _follow applies what it is handed
        # before it awaits again: a position at the target means every record before it is in the table
        while not all([await consumer.position(tp) >= end for tp, end in targets.items()]):
            if loop.time() > deadline:
                raise TimeoutError(f"the table of {self.topic} did not reach the end of its topic in {timeout_s} s")
            await asyncio.sleep(0.02)

    def snapshot(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "rows": len(self),
            "ready": self.ready.is_set(),
            "rejected": self.rejected,
            "error": self.error,
        }


def high_watermarks(bootstrap: str, partitions: list[TopicPartition], timeout_s: float) -> dict[TopicPartition, int]:
    """Blocking: each partition's high watermark, read uncommitted (ListOffsets, latest). A read_committed reader
    that must see everything committed so far reads up to these, not to the end offsets it is told (the last stable
    offset), which can stop before a transaction whose commit returned but whose markers have not landed yet: see
    `TopicTable.caught_up`."""
    admin = AdminClient(confluent_config({"bootstrap.servers": bootstrap}))
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    request = {confluent_kafka.TopicPartition(tp.topic, tp.partition): latest for tp in partitions}
    found = admin.list_offsets(
        request, isolation_level=confluent_kafka.IsolationLevel.READ_UNCOMMITTED, request_timeout=timeout_s
    )
    return {TopicPartition(tp.topic, tp.partition): future.result().offset for tp, future in found.items()}


class ReferenceTable(TopicTable, Generic[Row]):
    """key → latest row of a compacted topic; a record with a null value (tombstone) deletes its key.

    `model` validates each decoded record; `parse` may turn the validated model into a leaner row (memory:
    hundreds of thousands of inventory rows as pydantic models would take several hundred MB)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        record: str,
        model: type[Model],
        codec: AvroCodec,
        key_of: Callable[[Row], str],
        parse: Callable[[Model], Row] | None = None,
    ) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic)
        self.record, self.model, self.codec, self.key_of = record, model, codec, key_of
        self._parse: Callable[[Any], Row] = parse if parse is not None else (lambda row: row)
        self.rows: dict[str, Row] = {}

    def get(self, key: str) -> Row | None:
        return self.rows.get(key)

    def __len__(self) -> int:
        return len(self.rows)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key is not None:
                self.remove(key.decode())
            return
        try:
            _, decoded = self.codec.decode(value, reader=self.record)
            row = self._parse(self.model.model_validate(decoded))
        except Exception as error:  # a bad reference row is skipped and counted, never fatal
            self.rejected += 1
            log.warning("reference row rejected", extra={"topic": self.topic, "error": str(error)})
            return
        self.put(row)

    def put(self, row: Row) -> None:
        self.rows[self.key_of(row)] = row

    def remove(self, key: str) -> None:
        self.rows.pop(key, None)


async def read_rows(table: ReferenceTable[Row], timeout_s: float = 30.0) -> dict[str, Row]:
    """Every row of the table's topic as it stands now, read once and the table stopped: for a command that
    shows or changes reference data, not for a service, which keeps following."""
    await table.start()
    try:
        await asyncio.wait_for(table.ready.wait(), timeout_s)
        return dict(table.rows)
    finally:
        await table.stop()


class GroupedReferenceTable(ReferenceTable[Row]):
    """A reference table indexed by a group (inventory: store → its rows), so that one request reads only its
    group. The topic key must be `<group>:<rest>` (as `ref.inventory`'s `store_id:sku`), which lets a tombstone
    find its group; rows are kept in the index only, not twice."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        record: str,
        model: type[Model],
        codec: AvroCodec,
        key_of: Callable[[Row], str],
        parse: Callable[[Model], Row] | None = None,
        separator: str = ":",
    ) -> None:
        super().__init__(
            bootstrap=bootstrap, topic=topic, record=record, model=model, codec=codec, key_of=key_of, parse=parse
        )
        self.separator = separator
        self.groups: dict[str, dict[str, Row]] = {}
        self._count = 0

    def group(self, name: str) -> dict[str, Row]:
        """The rows of one group by key (empty when the group is unknown); do not modify."""
        return self.groups.get(name, {})

    def get(self, key: str) -> Row | None:
        return self.group(key.partition(self.separator)[0]).get(key)

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[Row]:
        for rows in self.groups.values():
            yield from rows.values()

    def put(self, row: Row) -> None:
        key = self.key_of(row)
        group = self.groups.setdefault(key.partition(self.separator)[0], {})
        self._count += key not in group
        group[key] = row

    def remove(self, key: str) -> None:
        name = key.partition(self.separator)[0]
        group = self.groups.get(name)
        if group is None or group.pop(key, None) is None:
            return
        self._count -= 1
        if not group:
            del self.groups[name]
