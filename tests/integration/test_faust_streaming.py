"""faust-streaming against the real broker: a worker process consumes a topic, keeps a table with its
changelog on Kafka, and produces results, which is how the stateful stages will run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from services.runtime.kafka_clients import confluent_config
from tests.integration.conftest import delete_topics

WORKER = Path(__file__).with_name("faust_counter.py")


def test_faust_worker_counts_per_key_in_a_table_and_publishes_results(
    kafka: str, admin: AdminClient, new_topic: Callable[[int], str], tmp_path: Path
) -> None:
    source, sink = new_topic(1), new_topic(1)
    app_id = f"it-faust-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "FAUST_APP_ID": app_id, "FAUST_BROKER": kafka, "FAUST_IN": source, "FAUST_OUT": sink}
    log = (tmp_path / "faust.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), "worker", "--loglevel", "warn", "--without-web"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        producer = Producer(confluent_config())
        for key in [b"0417", b"0417", b"1600", b"0417"]:
            producer.produce(source, key=key, value=b"stock check")
        assert producer.flush(15) == 0

        consumer = Consumer(confluent_config({"group.id": app_id + "-check", "auto.offset.reset": "earliest"}))
        consumer.subscribe([sink])
        results: list[str] = []
        deadline = time.monotonic() + 90
        while len(results) < 4 and time.monotonic() < deadline and worker.poll() is None:
            message = consumer.poll(0.5)
            value = message.value() if message is not None and not message.error() else None
            if value is not None:
                results.append(value.decode())
        consumer.close()
        assert results == ["0417:1", "0417:2", "1600:1", "0417:3"], (tmp_path / "faust.log").read_text()[-3000:]
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        changelogs = [t for t in admin.list_topics(timeout=10).topics if t.startswith(app_id)]
        delete_topics(admin, changelogs)
