"""Reference data from a compacted topic, held in memory as a table: a global view (every partition, no
consumer group), read from the beginning, then kept current; ready once it has caught up with the topic's
end as it was at start. An update on the topic is visible to the next lookup."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from pydantic import BaseModel

from services.runtime.codec import AvroCodec

Row = TypeVar("Row", bound=BaseModel)
log = logging.getLogger("switchyard.reference")


class ReferenceTable(Generic[Row]):
    """key → latest row of a compacted topic; a record with a null value (tombstone) deletes its key."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        record: str,
        model: type[Row],
        codec: AvroCodec,
        key_of: Callable[[Row], str],
    ) -> None:
        self.topic, self.record, self.model, self.codec, self.key_of = topic, record, model, codec, key_of
        self.bootstrap = bootstrap
        self.rows: dict[str, Row] = {}
        self.ready = asyncio.Event()
        self.rejected = 0
        self._task: asyncio.Task[None] | None = None
        self._consumer: AIOKafkaConsumer | None = None

    def get(self, key: str) -> Row | None:
        return self.rows.get(key)

    def __len__(self) -> int:
        return len(self.rows)

    async def start(self) -> None:
        # No consumer group: every partition is ours, read from the beginning (nothing is ever committed).
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            metadata_max_age_ms=5000,
        )
        await consumer.start()
        self._consumer = consumer
        topics = await consumer.topics()
        if self.topic not in topics:
            await consumer.stop()
            raise RuntimeError(f"reference topic {self.topic} does not exist; run `make topics`")
        consumer.subscribe([self.topic])
        self._task = asyncio.create_task(self._follow(consumer), name=f"reference:{self.topic}")

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
            batch = await consumer.getmany(timeout_ms=200, max_records=5000)
            for messages in batch.values():
                for message in messages:
                    self._apply(message.key, message.value)
            if self.ready.is_set():
                continue
            assigned = consumer.assignment()
            if not assigned:
                continue
            if targets is None:
                targets = await consumer.end_offsets(list(assigned))
            positions = {tp: await consumer.position(tp) for tp in assigned}
            if all(positions[tp] >= end for tp, end in targets.items()):
                log.info("reference table ready", extra={"topic": self.topic, "rows": len(self.rows)})
                self.ready.set()

    def _apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            if key is not None:
                self.rows.pop(key.decode(), None)
            return
        try:
            _, decoded = self.codec.decode(value, reader=self.record)
            row = self.model.model_validate(decoded)
        except Exception as error:  # a bad reference row is skipped and counted, never fatal
            self.rejected += 1
            log.warning("reference row rejected", extra={"topic": self.topic, "error": str(error)})
            return
        self.rows[self.key_of(row)] = row

    def snapshot(self) -> dict[str, Any]:
        return {"topic": self.topic, "rows": len(self.rows), "ready": self.ready.is_set(), "rejected": self.rejected}
