"""Runs the whole chain for tests: the five stages and the telemetry writer as real processes, on topics of
their own (a unique SWITCHYARD_TOPIC_PREFIX), with the OpenAI-compatible stub model answering model routes.
Tests publish requests, read `audited` as a store would, and kill or add processes to see what happens.

On a SASL_SSL listener (what `make test` runs on) the harness and its clients are the admin, and each process
logs in as its own principal (`switchyard-<process>`) with the ACLs of services/infra/acls.py applied under the
chain's prefix for its lifetime: the chain proves it works with least privilege."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.infra import acls
from services.infra.topics import reconcile
from services.launcher import Launcher, free_port
from services.runtime.kafka_clients import confluent_config
from services.runtime.request_key import STORE_PARTITIONER
from services.settings import REPO_ROOT, Settings
from services.stages import CHAIN
from services.tools.seed import publish_staff, publish_stores, staff_rows, stores
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request
from tests.integration.conftest import delete_topics

STORES = [f"{n:04d}" for n in range(1, 21)]
TEXTS = [
    "What time do you close today?",
    "Is the waxed field jacket in stock in size M?",
    "Can I give this customer 25% off? Email me at jane.doe@example.com",
    "Summarise this return: customer brought back boots, call +1 415 555 0142",
    "Does this blender come with a warranty?",
]


@dataclass
class Chain:
    settings: Settings
    codec: AvroCodec
    log_dir: Path
    model_url: str
    prefix: str = field(default_factory=lambda: f"it-{uuid.uuid4().hex[:8]}.")
    extra_env: dict[str, str] = field(default_factory=dict)
    fused: bool = False  # the five stages as one process (`switchyard run chain`)
    exit_codes: dict[str, int] = field(default_factory=dict)  # of each process, once stop_all ran
    launcher: Launcher = field(init=False)
    grants: ExitStack = field(init=False, default_factory=ExitStack)  # the processes' ACLs, from prepare to tear_down

    def __post_init__(self) -> None:
        self.launcher = Launcher(self.log_dir, env=self.env())

    @property
    def admin_settings(self) -> Settings:
        """The harness's own settings (the admin's on SASL_SSL) under the chain's prefix."""
        return self.settings.model_copy(update={"topic_prefix": self.prefix})

    def topic(self, name: str) -> str:
        return self.prefix + name

    def env(self) -> dict[str, str]:
        return {
            "SWITCHYARD_TOPIC_PREFIX": self.prefix,
            "SWITCHYARD_MODEL_PROVIDER": "openai",
            "SWITCHYARD_MODEL_BASE_URL": self.model_url,
            "SWITCHYARD_MODEL_NAME": "stub",
            "SWITCHYARD_LOG_LEVEL": "INFO",
            **self.extra_env,
        }

    def prepare(self) -> None:
        """The chain's topics, reference data and, on SASL_SSL, its processes' ACLs (until `tear_down`)."""
        self.grants.enter_context(acls.granted(self.admin_settings))
        reconcile(REPO_ROOT / "topics", self.settings.kafka_bootstrap, out=io.StringIO(), prefix=self.prefix)
        publish_stores(self.settings.kafka_bootstrap, self.codec, stores(len(STORES)), self.topic("ref.stores"))
        # who may approve: mgr-0001-1 and mgr-0001-2 for store 0001, and so on (services.tools.seed.staff_rows)
        publish_staff(
            self.settings.kafka_bootstrap, self.codec, staff_rows(stores(len(STORES))), self.topic("ref.staff")
        )

    def start(self, name: str, replica: str = "0") -> str:
        return self.launcher.start(name, replica)

    def start_all(self) -> None:
        self.launcher.start_all(fused=self.fused)

    def healthz(self, key: str) -> tuple[int, str]:
        return self.launcher.healthz(key)

    def wait_ready(self, key: str, timeout_s: float = 60.0) -> None:
        self.launcher.wait_ready(key, timeout_s)

    def kill(self, key: str, sig: int = signal.SIGKILL) -> int:
        return self.launcher.kill(key, sig)

    def stop_all(self) -> dict[str, int]:
        self.exit_codes = self.launcher.stop_all()
        return self.exit_codes

    def kill_mid_stream(self, process: str, run: str, count: int = 200) -> list[Request]:
        """Publish `count` requests at 100/s, SIGKILL `process` (replica 0) while they flow, start it again and
        wait until it is ready; returns the requests, for the caller to check what was answered."""
        requests = self.requests(count, run=run)
        publisher = threading.Thread(target=self.publish, args=(requests, 100.0))
        publisher.start()
        time.sleep(0.8)
        assert self.kill(f"{process}/0", signal.SIGKILL) == -signal.SIGKILL
        time.sleep(0.5)
        self.wait_ready(self.start(process, "0"))
        publisher.join()
        return requests

    def set_model_reply(self, reply: str) -> None:
        """Tell the stub model what to answer from now on (POST /stub/behaviour)."""
        body = json.dumps({"reply": reply}).encode()
        base = self.model_url.removesuffix("/v1")
        request = urllib.request.Request(
            f"{base}/stub/behaviour", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.status == 200

    def tear_down(self, admin: AdminClient) -> None:
        """Revokes the processes' ACLs and deletes the chain's topics (after stop_all)."""
        self.grants.close()
        delete_topics(admin, [t for t in admin.list_topics(timeout=10).topics if t.startswith(self.prefix)])

    # -- traffic ---------------------------------------------------------------------------------

    def requests(self, count: int, run: str) -> list[Request]:
        now = int(time.time() * 1000)
        return [
            Request(
                request_id=str(uuid.uuid4()),
                store_id=STORES[n % len(STORES)],
                terminal_id=f"pos-{n % 7}",
                customer_id=f"C-{n % 50}" if n % 3 else None,
                channel=Channel.POS,
                text=TEXTS[n % len(TEXTS)],
                created_at=now,
                attributes={"run": run, "seq": str(n)},
            )
            for n in range(count)
        ]

    def publish(self, requests: list[Request], rate_per_s: float | None = None) -> None:
        # keyed and partitioned as every producer of requests (services/runtime/request_key.py)
        producer = Producer(confluent_config({"enable.idempotence": True, **STORE_PARTITIONER}, self.settings))
        started = time.monotonic()
        for index, request in enumerate(requests):
            if rate_per_s:
                time.sleep(max(0.0, started + index / rate_per_s - time.monotonic()))
            producer.produce(
                self.topic("requests"),
                key=request.store_id.encode(),
                value=self.codec.encode("Request", request.model_dump()),
            )
            producer.poll(0)
        assert producer.flush(30) == 0

    def publish_raw(self, topic: str, value: bytes, key: bytes = b"0001") -> None:
        producer = Producer(confluent_config({"message.max.bytes": 12 << 20}, self.settings))
        producer.produce(self.topic(topic), key=key, value=value)
        assert producer.flush(30) == 0

    def read(self, topic: str, until: int, run: str | None = None, timeout_s: float = 120.0) -> list[dict[str, Any]]:
        """Every committed record on a topic from the start, as (decoded) dicts, until `until` records of
        this run were seen or the time is up; then a further second to catch duplicates."""
        consumer = Consumer(
            confluent_config(
                {
                    "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                    "auto.offset.reset": "earliest",
                    "isolation.level": "read_committed",
                    "enable.auto.commit": False,
                },
                self.settings,
            )
        )
        consumer.subscribe([self.topic(topic)])
        seen: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout_s
        settle_until: float | None = None
        try:
            while time.monotonic() < (settle_until or deadline):
                message = consumer.poll(0.2)
                if message is None or message.error():
                    continue
                value = message.value()
                assert value is not None
                _, record = self.codec.decode(value)
                record["_partition"] = message.partition()
                if run is None or run_of(record) == run:
                    seen.append(record)
                if settle_until is None and len(seen) >= until:
                    settle_until = time.monotonic() + 1.0
        finally:
            consumer.close()
        return seen

    def end_offsets(self, topic: str) -> int:
        consumer = Consumer(confluent_config({"group.id": "offsets"}, self.settings))
        metadata = consumer.list_topics(self.topic(topic), timeout=10).topics[self.topic(topic)]
        total = 0
        for partition in metadata.partitions:
            _, high = consumer.get_watermark_offsets(TopicPartition(self.topic(topic), partition), timeout=10)
            total += high
        consumer.close()
        return total


@contextmanager
def running_chain(
    settings: Settings,
    codec: AvroCodec,
    admin: AdminClient,
    log_dir: Path,
    model_latency_ms: int = 10,
    extra_env: dict[str, str] | None = None,
    fused: bool = False,
) -> Iterator[Chain]:
    """Every process of the chain on topics of its own, the stub model answering; stopped and deleted after."""
    port = free_port()
    stub_model = ["-m", "services.dev.stub_model", "--port", str(port), "--latency-ms", str(model_latency_ms)]
    stub = subprocess.Popen(
        [sys.executable, *stub_model],
        stdout=(log_dir / "stub.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    running = Chain(settings, codec, log_dir, f"http://127.0.0.1:{port}/v1", extra_env=extra_env or {}, fused=fused)
    try:
        running.prepare()
        wait_for_leaders(admin, running.prefix)
        running.start_all()
        yield running
    finally:
        running.stop_all()
        stub.terminate()
        stub.wait(10)
        running.tear_down(admin)


def wait_for_leaders(admin: AdminClient, prefix: str, timeout_s: float = 30.0) -> None:
    """Until every partition of the chain's new topics has a leader: a process that reads a topic whose
    partition is still leaderless right after its creation can fail its start."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topics = [t for name, t in admin.list_topics(timeout=10).topics.items() if name.startswith(prefix)]
        if topics and all(p.leader >= 0 for t in topics for p in t.partitions.values()):
            return
        time.sleep(0.2)
    raise TimeoutError(f"topics of {prefix} still have partitions without a leader after {timeout_s}s")


def run_of(record: dict[str, Any]) -> str | None:
    request = record.get("request", record)
    attributes = request.get("attributes", {}) if isinstance(request, dict) else {}
    run = attributes.get("run")
    return run if isinstance(run, str) else None


def duplicates(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = Counter(r["request"]["request_id"] for r in records)
    return {rid: n for rid, n in counts.items() if n > 1}


__all__ = ["CHAIN", "Chain", "duplicates", "free_port", "run_of"]
