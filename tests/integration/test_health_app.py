"""The provider health app (a real faust worker) on the real broker: model calls in, ProviderHealth out on
model.health; a latency spike takes the provider down within the window, and it comes back, with
hysteresis, once calls are fast again."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from services.infra.topics import reconcile
from services.runtime.kafka_clients import confluent_config
from services.runtime.stage import now_us
from services.settings import REPO_ROOT, Settings
from services.wire.codec import AvroCodec
from tests.integration.conftest import delete_topics


def test_a_latency_spike_takes_the_provider_down_and_recovery_brings_it_back(
    settings: Settings, kafka: str, codec: AvroCodec, admin: AdminClient, tmp_path: Path
) -> None:
    prefix = f"it-health-{uuid.uuid4().hex[:6]}."
    reconcile(REPO_ROOT / "topics", kafka, out=io.StringIO(), prefix=prefix)
    env = {
        **os.environ,
        "SWITCHYARD_TOPIC_PREFIX": prefix,
        "SWITCHYARD_VAR": str(tmp_path),
        "SWITCHYARD_VAR_DIR": str(tmp_path),
        "SWITCHYARD_HEALTH_WINDOW_S": "4",
        "SWITCHYARD_HEALTH_STEP_S": "1",
        # the var dir is the test's own: the Kafka credentials stay where the broker's are
        "SWITCHYARD_KAFKA_PASSWORD_FILE": str(settings.kafka_password_path()),
        "SWITCHYARD_KAFKA_CA_FILE": str(settings.kafka_ca_path()),
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "services.health"],
        env=env,
        cwd=tmp_path,
        stdout=(tmp_path / "health.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    producer = Producer(confluent_config())

    def calls(latency_ms: float, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            record = {
                "call_id": str(uuid.uuid4()), "request_id": None, "provider": "primary", "model": "stub",
                "started_at": now_us(), "latency_ms": latency_ms, "ttft_ms": None, "tokens_in": 5,
                "tokens_out": 5, "outcome": "OK", "error": "",
            }  # fmt: skip
            producer.produce(f"{prefix}model.calls", key=b"primary", value=codec.encode("ModelCall", record))
            producer.poll(0)
            time.sleep(0.05)
        producer.flush(10)

    try:
        time.sleep(6)  # the worker joins its group and recovers its (empty) table
        calls(40, 4)
        spike_at = time.time()
        calls(3000, 6)
        calls(40, 8)
        consumer = Consumer(confluent_config({"group.id": f"{prefix}check", "auto.offset.reset": "earliest"}))
        consumer.subscribe([f"{prefix}model.health"])
        states: list[tuple[float, str, str]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            value = message.value() if message is not None and not message.error() else None
            if value is not None:
                record = codec.decode(value, reader="ProviderHealth")[1]
                states.append((record["observed_at"] / 1e6, record["state"], record["reason"]))
        consumer.close()
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        delete_topics(admin, [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)])

    log = (tmp_path / "health.log").read_text(errors="replace")[-3000:]
    sequence = [state for _, state, _ in states]
    assert "HEALTHY" in sequence and "DOWN" in sequence, (states, log)
    down_at = next(at for at, state, _ in states if state == "DOWN")
    assert down_at - spike_at < 6, f"took {down_at - spike_at:.1f} s to react"
    assert any("over 1.5 s limit" in reason for _, state, reason in states if state == "DOWN")
    first_down = sequence.index("DOWN")
    assert "HEALTHY" in sequence[first_down:], "came back after the spike"
    assert any(reason.startswith("recovering") for _, _, reason in states), "recovery waits for good windows"
