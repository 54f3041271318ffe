"""`make bench-runtime`: the stream runtime alone, printed as JSON. Five relay stages (a `decide` that returns the
route it was given) in five processes chain six topics on the real broker, transactions on, exactly as the chain's
stages run: decode, validate, decide, encode, produce and commit. An open-loop producer offers Routed records at
each rate; a read_committed reader at the end measures per-hop and five-hop time and counts every record.

usage: python -m services.tools.bench.runtime [--rates 100 1000 3000] [--duration 20] [--linger-ms 0] [--fused]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from confluent_kafka import Consumer, KafkaException, Producer
from confluent_kafka import TopicPartition as KafkaPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.pos.answers import AnswerReader
from services.pos.report import summary
from services.runtime.kafka_clients import confluent_config
from services.runtime.stage import Stage, now_us
from services.runtime.worker import StageWorker, WorkerConfig
from services.settings import get_settings
from services.wire.codec import AvroCodec
from services.wire.models import Routed, RouteDecision
from services.wire.schema_registry import SchemaRegistry

HOPS = 5
PARTITIONS = 12


class Relay(Stage[Routed, RouteDecision]):
    """A stage whose decision is the route it was given: what is left is the runtime's own cost."""

    input_record: ClassVar[str] = "Routed"
    input_model = Routed
    output_record: ClassVar[str] = "Routed"
    section: ClassVar[str] = "route"

    def __init__(self, hop: int) -> None:
        self.hop = hop

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"relay{self.hop}"

    @property
    def input_topic(self) -> str:  # type: ignore[override]
        return f"hop{self.hop}"

    @property
    def output_topic(self) -> str:  # type: ignore[override]
        return f"hop{self.hop + 1}"

    async def decide(self, record: Routed) -> RouteDecision:
        return record.route


def relay_main(hops: list[int], linger_ms: float, max_records: int) -> None:
    """One relay process: the real StageWorker around Relay(hop) (several consecutive hops fused), until SIGTERM."""
    import asyncio

    async def run() -> None:
        config = WorkerConfig(replica=f"bench-{hops[0]}", commit_linger_ms=linger_ms, commit_max_records=max_records)
        relays = [Relay(hop) for hop in hops]
        worker = StageWorker(relays[0], config=config, downstream=relays[1:])
        worker.install_signal_handlers()
        await worker.run()

    asyncio.run(run())


def routed_value(index: int, run: str) -> dict[str, Any]:
    request: dict[str, Any] = {
        "request_id": f"{run}-{index}",
        "store_id": f"{index % 1600:04d}",
        "terminal_id": "t1",
        "customer_id": None,
        "channel": "POS",
        "locale": "en-US",
        "text": f"Is the waxed field jacket in stock in size M? ({index})",
        "created_at": now_us() // 1000,
        "attributes": {},
    }
    route = RouteDecision(
        route_id="store-hours", kind="WORKFLOW", intent="store_hours", confidence=0.97, provider=None,
        reason="bench", route_table_version="bench",
    )  # fmt: skip
    sent_at = now_us()
    timing = {"stage": "bench", "received_at": sent_at, "started_at": sent_at, "finished_at": sent_at, "work_ms": {}}
    return {"request": request, "route": route.model_dump(), "request_embedding": None, "timings": [timing]}


def measure(
    rate: float, duration_s: float, prefix: str, codec: AvroCodec, producer: Producer, reader: AnswerReader
) -> dict[str, Any]:
    run = uuid.uuid4().hex[:8]
    duplicates_before = reader.duplicates
    count = int(rate * duration_s)
    started = time.monotonic()
    for index in range(count):
        due = started + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        value = codec.encode("Routed", routed_value(index, run))
        producer.produce(f"{prefix}hop0", value, f"{index % 1600:04d}".encode())
        producer.poll(0)
    producer.flush(30)
    offered_s = time.monotonic() - started
    expected = {f"{run}-{i}" for i in range(count)}
    missing = reader.wait_for(expected, timeout_s=max(30.0, duration_s))
    drained_s = time.monotonic() - started
    mine = [reader.received[rid] for rid in expected - missing]
    five_hops = [got.received_ms - got.record["timings"][0]["finished_at"] / 1000 for got in mine]
    per_hop = [
        (timings[i + 1]["received_at"] - timings[i]["finished_at"]) / 1000
        for timings in (got.record["timings"] for got in mine)
        for i in range(1, len(timings) - 1)
    ]
    return {
        "rate_target_per_s": rate,
        "sent": count,
        "offered_per_s": round(count / offered_s, 1),
        "received": len(mine),
        "lost": len(missing),
        "duplicates": reader.duplicates - duplicates_before,
        "sustained_per_s": round(len(mine) / drained_s, 1),
        "five_hops_ms": summary(five_hops),
        "hop_ms": summary(per_hop),
    }


def make_topics(admin: AdminClient, prefix: str) -> list[str]:
    names = [f"{prefix}hop{i}" for i in range(HOPS + 1)] + [f"{prefix}dlq.relay{i}" for i in range(HOPS)]
    futures = admin.create_topics([NewTopic(name, PARTITIONS, 1) for name in names], operation_timeout=30)
    for future in futures.values():
        future.result(30)
    wait_for_leaders(f"{prefix}hop{HOPS}")
    return names


def wait_for_leaders(topic: str, timeout_s: float = 30.0) -> None:
    """Each partition's leader answers a moment after CreateTopics returns (its metadata may name it sooner): until
    then the answer reader's offset look-up fails with NOT_LEADER_FOR_PARTITION and the bench measures nothing."""
    probe = Consumer(confluent_config({"group.id": f"{topic}.probe"}))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                for partition in range(PARTITIONS):
                    probe.get_watermark_offsets(KafkaPartition(topic, partition), timeout=10)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        probe.close()


def bench(
    rates: list[float], duration_s: float, linger_ms: float, max_records: int, fused: bool = False
) -> dict[str, Any]:
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    prefix = f"bench-rt-{uuid.uuid4().hex[:6]}."
    admin = AdminClient(confluent_config(settings=settings))
    topics = make_topics(admin, prefix)
    logs = Path(tempfile.mkdtemp(prefix="switchyard-bench-runtime-"))
    env = {**os.environ, "SWITCHYARD_TOPIC_PREFIX": prefix, "SWITCHYARD_LOG_LEVEL": "WARNING"}
    relays = []
    for hops in [list(range(HOPS))] if fused else [[hop] for hop in range(HOPS)]:
        command = [sys.executable, "-m", "services.tools.bench.runtime", "relay", ",".join(map(str, hops))]
        relays.append(
            subprocess.Popen(
                [*command, str(linger_ms), str(max_records)],
                env=env,
                stdout=(logs / f"relay{hops[0]}.log").open("wb"),
                stderr=subprocess.STDOUT,
            )
        )
    # one reader for every run, started before the warm-up: a reader that joins with the load would add its own
    # start (offset look-ups, the first fetch) to the first records' latency
    reader = AnswerReader(settings.kafka_bootstrap, f"{prefix}hop{HOPS}", codec, record="Routed")
    producer = Producer(confluent_config({"enable.idempotence": True, "linger.ms": 1}, settings))
    reader.start()
    try:
        reader.assigned.wait(30)
        measure(20, 3, prefix, codec, producer, reader)  # warm-up: groups joined, producer ids, transactions begun
        results = [measure(rate, duration_s, prefix, codec, producer, reader) for rate in rates]
    finally:
        reader.stop()
        for relay in relays:
            relay.terminate()
        for relay in relays:
            relay.wait(30)
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result(30)
    clean = [
        r
        for r in results
        if r["lost"] == 0 and r["duplicates"] == 0 and r["sustained_per_s"] >= 0.9 * r["rate_target_per_s"]
    ]
    return {
        "hops": HOPS,
        "partitions": PARTITIONS,
        "processes": 1 if fused else HOPS,
        "commit_linger_ms": linger_ms,
        "commit_max_records": max_records,
        "duration_s": duration_s,
        "runs": results,
        "highest_sustained_without_loss_per_s": max((r["sustained_per_s"] for r in clean), default=0.0),
        "relay_logs": str(logs),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["relay"]:
        relay_main([int(hop) for hop in args[1].split(",")], float(args[2]), int(args[3]))
        return 0
    parser = argparse.ArgumentParser(prog="switchyard bench-runtime", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[100.0, 1000.0, 3000.0], help="offered records/s, one run each"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of offered load per rate")
    parser.add_argument(
        "--linger-ms", type=float, default=get_settings().commit_linger_ms, help="commit a group after this long"
    )
    parser.add_argument(
        "--max-records", type=int, default=get_settings().commit_max_records, help="commit a group at this many records"
    )
    parser.add_argument("--fused", action="store_true", help="the five relays in one process, one transaction")
    parsed = parser.parse_args(args)
    result = bench(parsed.rates, parsed.duration, parsed.linger_ms, parsed.max_records, parsed.fused)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if all(r["lost"] == 0 and r["duplicates"] == 0 for r in result["runs"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
