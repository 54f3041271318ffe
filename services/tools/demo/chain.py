"""`make demo`: the whole chain on this machine. Brings up the six processes on the running infrastructure,
publishes a realistic mix of POS requests from many stores, prints each answer as it is released from
`audited` with its route and stage timings, and ends with a summary. Ctrl-C stops the processes cleanly.

usage: python -m services.tools.demo.chain [--requests N] [--rate R] [--model local_gguf|openai]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from datetime import UTC, datetime, timedelta

import aiohttp

from services.dashboard.queries import measured_split
from services.gateway.restore import AnswerRestorer
from services.infra.topics import reconcile
from services.launcher import Launcher
from services.pos.answers import AnswerReader, Received
from services.pos.report import model_ms, stage_stats, summary, work_split
from services.pos.simulator import PosPublisher, request_mix
from services.runtime.kafka_clients import confluent_config
from services.settings import DATA_ROOT, get_settings
from services.stages import CHAIN
from services.tools.seed import publish_staff, publish_stores, staff_rows, stores
from services.wire.codec import AvroCodec
from services.wire.models import Request
from services.wire.schema_registry import SchemaRegistry

STORE_COUNT = 1600


def print_answer(received: Received) -> None:
    record = received.record
    request, route, answer = record["request"], record["route"], record["answer"]
    stages = " ".join(f"{t['stage'][:5]}={(t['finished_at'] - t['started_at']) / 1000:.1f}" for t in record["timings"])
    text = answer["text"].replace("\n", " ")
    print(
        f"[{request['store_id']}] {route['intent']:<16} {route['kind']:<11} {received.end_to_end_ms:7.0f} ms  "
        f"{request['text'][:48]!r:<52} -> {text[:90]!r}  ({stages} ms)",
        flush=True,
    )


def dead_letter_count(bootstrap: str, prefix: str) -> int:
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(confluent_config({"bootstrap.servers": bootstrap, "group.id": "switchyard-demo-offsets"}))
    total = 0
    try:
        for stage in CHAIN:
            topic = f"{prefix}dlq.{stage}"
            metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
            for partition in metadata.partitions if metadata else []:
                for attempt in range(5):  # a partition just created may still be electing its leader
                    try:
                        total += consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)[1]
                        break
                    except KafkaException:
                        if attempt == 4:
                            raise
                        time.sleep(0.5)
    finally:
        consumer.close()
    return total


def run(count: int, rate: float, model: str | None) -> int:
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    print(f"Switchyard demo: {count} POS requests at {rate:g}/s through the six-stage chain", flush=True)
    reconcile(DATA_ROOT / "topics", settings.kafka_bootstrap, out=io.StringIO(), prefix=settings.topic_prefix)
    seeded = publish_stores(settings.kafka_bootstrap, codec, stores(STORE_COUNT), settings.topic("ref.stores"))
    staff = publish_staff(settings.kafka_bootstrap, codec, staff_rows(stores(STORE_COUNT)), settings.topic("ref.staff"))
    print(f"  topics reconciled; {seeded} stores and {staff} staff published to ref.stores, ref.staff", flush=True)

    env = {"SWITCHYARD_MODEL_PROVIDER": model} if model else {}
    log_dir = settings.var_dir / "demo"
    launcher = Launcher(log_dir, env=env)
    mix = request_mix([s.store_id for s in stores(STORE_COUNT)])
    planned = [next(mix) for _ in range(count)]
    wanted = {r.request_id for r in planned}
    sent: list[Request] = []

    def show(received: Received) -> None:
        if received.record["request"]["request_id"] in wanted:  # not leftovers of an earlier run
            print_answer(received)

    # the demo reads answers as a till would: restored at the edge for what the store may see
    restorer = AnswerRestorer.from_settings(settings)
    reader = AnswerReader(settings.kafka_bootstrap, settings.topic("audited"), codec, on_answer=show, restorer=restorer)
    dead_before = dead_letter_count(settings.kafka_bootstrap, settings.topic_prefix)
    started = time.monotonic()
    run_started = datetime.now(UTC)
    try:
        launcher.start_all()
        print(f"  six processes ready in {time.monotonic() - started:.1f} s (logs in {log_dir})", flush=True)
        reader.start()
        reader.assigned.wait(30)
        publisher = PosPublisher(settings.kafka_bootstrap, settings.topic("requests"), codec)
        sent = publisher.publish(iter(planned), count, rate)
        missing = reader.wait_for({r.request_id for r in sent}, timeout_s=120)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the processes", flush=True)
        return 130
    finally:
        reader.stop()
        codes = launcher.stop_all()
        print(f"  processes stopped: {json.dumps(codes)}", flush=True)

    answers = [reader.received[r.request_id] for r in sent if r.request_id in reader.received]
    end_to_end = [a.end_to_end_ms for a in answers]
    overhead = [a.end_to_end_ms - model_ms(a.record) for a in answers]
    print("\nSummary", flush=True)
    print(f"  sent {len(sent)}, answered {len(answers)}, unanswered {len(missing)}, "
          f"dead-lettered {dead_letter_count(settings.kafka_bootstrap, settings.topic_prefix) - dead_before}, "
          f"answered twice {reader.duplicates}")  # fmt: skip
    print(f"  end to end ms: {summary(end_to_end)}   orchestration overhead ms: {summary(overhead)}")
    for stage, numbers in stage_stats(answers).items():
        print(f"  {stage:<9} {numbers}")
    print_split(run_started, answers)
    print("  Query it: make query SQL='SELECT route, count(), quantile(0.99)(end_to_end_ms) "
          "FROM switchyard.answers FINAL GROUP BY route'", flush=True)  # fmt: skip
    return 0 if not missing else 1


def print_split(since: datetime, answers: list[Received]) -> None:
    """The orchestration-work split of the run's minutes from ClickHouse's orchestration_work view (monitoring
    included; other traffic in those minutes too), else the run's own records' split (monitoring left out)."""
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    try:
        rows = asyncio.run(measured_split(since, until))
    except (aiohttp.ClientError, OSError) as error:
        rows = []
        print(f"  orchestration_work view unavailable ({error}); the run's records instead", flush=True)
    if sum(row["work_ms"] for row in rows) > 0:
        shown = ", ".join(f"{row['category']} {row['percent']}% (ref {row['reference_percent']:g}%)" for row in rows)
        print(f"  orchestration work split, {since:%H:%M}-{until:%H:%M} UTC: {shown}")
        return
    split = work_split(answers)
    shown = ", ".join(f"{k} {v}%" if v is not None else f"{k} n/a" for k, v in split.items())
    print(f"  orchestration work split (this run's records): {shown}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard demo", description=__doc__.splitlines()[0])
    # The local model answers one request at a time on one core (about 0.5-1 s each): a gentle default load.
    parser.add_argument("--requests", type=int, default=30, help="requests to send (default %(default)s)")
    parser.add_argument("--rate", type=float, default=1.5, help="requests per second")
    parser.add_argument("--model", choices=["local_gguf", "openai"], help="default: SWITCHYARD_MODEL_PROVIDER")
    args = parser.parse_args(argv)
    try:
        return run(args.requests, args.rate, args.model)
    except Exception as exc:  # the demo reports any failure in one line, then exits non-zero
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
