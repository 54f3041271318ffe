"""The stream runtime's exactly-once promise under the faults that break naive pipelines: a stage killed while
its open transaction holds many records, and a paused member the group moved on from, whose replacement has a
different transactional id (KIP-447 fencing by group generation). A relay stage runs as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.runtime.kafka_clients import confluent_config
from services.tools.bench.runtime import routed_value
from services.wire.codec import AvroCodec
from tests.integration.conftest import delete_topics, wait_for_topic


class RelayTopics:
    def __init__(self, admin: AdminClient, partitions: int) -> None:
        self.prefix = f"it-rt-{uuid.uuid4().hex[:8]}."
        self.names = [f"{self.prefix}{name}" for name in ("hop0", "hop1", "dlq.relay0")]
        for future in admin.create_topics([NewTopic(n, partitions, 1) for n in self.names]).values():
            future.result(30)
        for name in self.names:
            wait_for_topic(admin, name)


@pytest.fixture
def topics(admin: AdminClient) -> Iterator[RelayTopics]:
    created = RelayTopics(admin, partitions=3)
    yield created
    delete_topics(admin, created.names)


def start_relay(prefix: str, replica: str, fault: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SWITCHYARD_TOPIC_PREFIX": prefix}
    command = [sys.executable, "-m", "tests.integration.runtime_relay", replica, fault]
    return subprocess.Popen(command, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def publish(kafka: str, codec: AvroCodec, topic: str, count: int, run: str) -> set[str]:
    producer = Producer(confluent_config({"enable.idempotence": True}))
    for index in range(count):
        producer.produce(topic, codec.encode("Routed", routed_value(index, run)), f"{index % 7:04d}".encode())
    assert producer.flush(30) == 0
    return {f"{run}-{i}" for i in range(count)}


def read_committed(kafka: str, codec: AvroCodec, topic: str, until: int, timeout_s: float) -> Counter[str]:
    """Request ids on `topic` as a read_committed reader sees them, counted; reads until `until` distinct ids
    arrived and two quiet seconds passed (so a late duplicate would be seen), or the timeout."""
    consumer = Consumer(
        confluent_config(
            {
                "group.id": f"it-reader-{uuid.uuid4().hex[:6]}",
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
            }
        )
    )
    consumer.subscribe([topic])
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            messages = [m for m in consumer.consume(500, 0.5) if m.error() is None]
            for message in messages:
                seen[codec.decode(message.value() or b"")[1]["request"]["request_id"]] += 1
            if messages:
                quiet_since = time.monotonic()
            elif len(seen) >= until and time.monotonic() - quiet_since > 2:
                break
    finally:
        consumer.close()
    return seen


def process_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_stage_killed_with_an_open_transaction_of_20_or_more_records_loses_none_and_repeats_none(
    kafka: str, codec: AvroCodec, topics: RelayTopics, tmp_path: Path
) -> None:
    expected = publish(kafka, codec, f"{topics.prefix}hop0", 300, uuid.uuid4().hex[:8])
    doomed = start_relay(topics.prefix, "a", "kill-in-commit", tmp_path / "a.log")
    try:
        assert doomed.wait(60) == -signal.SIGKILL, (tmp_path / "a.log").read_text()
    finally:
        if doomed.poll() is None:
            doomed.kill()
    assert "records in the open transaction" in (tmp_path / "a.log").read_text()
    successor = start_relay(topics.prefix, "b", "none", tmp_path / "b.log")
    try:
        # the killed transaction blocks read_committed readers until the broker aborts it (its timeout, 10 s)
        seen = read_committed(kafka, codec, f"{topics.prefix}hop1", until=len(expected), timeout_s=90)
    finally:
        successor.send_signal(signal.SIGTERM)
        code = successor.wait(30)
    assert code == 0, (tmp_path / "b.log").read_text()
    assert set(seen) == expected, f"lost {len(expected - set(seen))}"
    assert [rid for rid, n in seen.items() if n > 1] == [], "answered twice"


def test_a_paused_member_replaced_under_another_transactional_id_cannot_commit_when_it_resumes(
    kafka: str, codec: AvroCodec, topics: RelayTopics, tmp_path: Path
) -> None:
    expected = publish(kafka, codec, f"{topics.prefix}hop0", 60, uuid.uuid4().hex[:8])
    zombie = start_relay(topics.prefix, "a", "stop-before-commit", tmp_path / "a.log")
    successor: subprocess.Popen[bytes] | None = None
    try:
        deadline = time.monotonic() + 60
        while process_state(zombie.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process_state(zombie.pid) == "T", (tmp_path / "a.log").read_text()
        # another replica id is another transactional id: only the group generation can fence the paused one
        successor = start_relay(topics.prefix, "b", "none", tmp_path / "b.log")
        seen = read_committed(kafka, codec, f"{topics.prefix}hop1", until=len(expected), timeout_s=90)
        assert set(seen) == expected, (tmp_path / "b.log").read_text()
        zombie.send_signal(signal.SIGCONT)
        assert zombie.wait(60) != 0, "the resumed member's transaction must fail"
        seen = read_committed(kafka, codec, f"{topics.prefix}hop1", until=len(expected), timeout_s=30)
    finally:
        if zombie.poll() is None:
            zombie.send_signal(signal.SIGCONT)
            zombie.kill()
        if successor is not None:
            successor.send_signal(signal.SIGTERM)
            successor.wait(30)
    assert [rid for rid, n in seen.items() if n > 1] == [], "the resumed member's records became visible"
    assert set(seen) == expected
    assert "commit failed" in (tmp_path / "a.log").read_text(), "the resumed member must stop on its refused commit"
