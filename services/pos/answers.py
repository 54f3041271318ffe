"""Reads answers as a store receives them: from `audited` (read_committed), with the time each arrived; given the
edge's restorer (services.gateway.restore), with the store's PII put back in the answer, as a till reads it."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from services.gateway.restore import AnswerRestorer
from services.runtime.kafka_clients import confluent_config
from services.wire.codec import AvroCodec


@dataclass(frozen=True)
class Received:
    record: dict[str, Any]
    received_ms: float

    @property
    def end_to_end_ms(self) -> float:
        return self.received_ms - float(self.record["request"]["created_at"])


class AnswerReader(threading.Thread):
    """Collects audited records (or any chain record, `record`) in the background, once per request id, counting
    duplicates; `on_answer` sees each."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        codec: AvroCodec,
        on_answer: Callable[[Received], None] | None = None,
        record: str = "Audited",
        restorer: AnswerRestorer | None = None,
    ) -> None:
        super().__init__(daemon=True, name="answer-reader")
        self.codec, self.on_answer, self.record = codec, on_answer, record
        self.restorer = restorer
        self.wanted: set[str] | None = None
        self.received: dict[str, Received] = {}
        self.duplicates = 0
        self.repeated: list[str] = []  # the request id of each duplicate, in arrival order
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            confluent_config(
                {
                    "bootstrap.servers": bootstrap,
                    "group.id": f"pos-answers-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "latest",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 5,
                }
            )
        )
        self.topic = topic
        self.assigned = threading.Event()

    def _assign_at_end(self) -> None:
        """Every partition of the topic from its current end, assigned (not subscribed): no group membership, so a
        broker restart longer than the session timeout cannot rebalance the reader and reset it to the latest
        offset, skipping the answers released while it was away. Retries until the topic exists."""
        while not self.stop_event.is_set():
            found = self.consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
            if found is not None and found.error is None and found.partitions:
                ends = [
                    TopicPartition(
                        self.topic, p, self.consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
                    )
                    for p in sorted(found.partitions)
                ]
                self.consumer.assign(ends)
                self.assigned.set()
                return
            time.sleep(0.2)

    def run(self) -> None:
        try:
            self._assign_at_end()
            while not self.stop_event.is_set():
                # poll returns as soon as one record is readable; then take what else has arrived, not waiting
                first = self.consumer.poll(0.1)
                if first is None:
                    continue
                arrived_ms = time.time() * 1000
                for message in [first, *self.consumer.consume(1000, 0)]:
                    value = message.value()
                    if message.error() is None and value is not None:
                        record = self.codec.decode(value, reader=self.record)[1]
                        if self.restorer is not None:
                            record = self.restorer.restored(record)
                        self._take(Received(record, arrived_ms))
        finally:
            self.consumer.close()

    def _take(self, received: Received) -> None:
        request_id = received.record["request"]["request_id"]
        if request_id in self.received:
            self.duplicates += 1
            self.repeated.append(request_id)
            return
        self.received[request_id] = received
        if self.on_answer is not None:
            self.on_answer(received)

    def wait_for(self, request_ids: set[str], timeout_s: float) -> set[str]:
        """Waits until every id has an answer or the time is up; returns the ids still unanswered."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = request_ids - self.received.keys()
            if not missing:
                return set()
            time.sleep(0.05)
        return request_ids - self.received.keys()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
