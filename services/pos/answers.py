"""Reads answers as a store receives them: from `audited` (read_committed), with the time each arrived."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer

from services.runtime.codec import AvroCodec


@dataclass(frozen=True)
class Received:
    record: dict[str, Any]
    received_ms: float

    @property
    def end_to_end_ms(self) -> float:
        return self.received_ms - float(self.record["request"]["created_at"])


class AnswerReader(threading.Thread):
    """Collects audited records for a set of request ids in the background; `on_answer` sees each."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        codec: AvroCodec,
        on_answer: Callable[[Received], None] | None = None,
    ) -> None:
        super().__init__(daemon=True, name="answer-reader")
        self.codec, self.on_answer = codec, on_answer
        self.wanted: set[str] | None = None
        self.received: dict[str, Received] = {}
        self.duplicates = 0
        self.stop_event = threading.Event()
        self.consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"pos-answers-{uuid.uuid4().hex[:8]}",
                "auto.offset.reset": "latest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        self.assigned = threading.Event()
        self.consumer.subscribe([topic], on_assign=lambda consumer, partitions: self.assigned.set())

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                message = self.consumer.poll(0.1)
                if message is None or message.error():
                    continue
                value = message.value()
                if value is None:
                    continue
                received = Received(self.codec.decode(value, reader="Audited")[1], time.time() * 1000)
                request_id = received.record["request"]["request_id"]
                if request_id in self.received:
                    self.duplicates += 1
                    continue
                self.received[request_id] = received
                if self.on_answer is not None:
                    self.on_answer(received)
        finally:
            self.consumer.close()

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
