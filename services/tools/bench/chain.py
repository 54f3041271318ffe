"""`make bench`: the full chain's throughput and latency on this machine, printed as JSON.

The model route is served by the OpenAI-compatible stub model with a fixed, stated latency (the way peer
gateways measure their own overhead), so `overhead` = end to end minus the model's own time is what
Switchyard adds: five transactional hops through Kafka, decoding, deciding, encoding, auditing.
Runs on topics of its own (a fresh prefix), deleted afterwards.

usage: python -m services.tools.bench.chain [--rate 100] [--duration 30] [--model-latency-ms 50]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from confluent_kafka.admin import AdminClient

from services.dashboard.queries import measured_split
from services.infra import acls
from services.infra.probe import http_ok
from services.infra.topics import reconcile
from services.launcher import Launcher, free_port
from services.pos.answers import AnswerReader
from services.pos.report import model_ms, stage_stats, summary, work_per_request, work_split
from services.pos.simulator import PosPublisher, request_mix
from services.runtime.kafka_clients import confluent_config
from services.settings import DATA_ROOT, get_settings
from services.stitcher.knowledge import DEFAULT_SOURCES_DIR, connect, ingest, injection_scorer
from services.tools.seed import inventory_rows, publish_inventory, publish_stores, stores
from services.wire.codec import AvroCodec
from services.wire.models import Request
from services.wire.schema_registry import SchemaRegistry


def serve_stub(latency_ms: float) -> tuple[str, subprocess.Popen[bytes]]:
    """The stub model in a process of its own, so it does not share a GIL with the load generator."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "services.dev.stub_model",
        "--port",
        str(port),
        "--latency-ms",
        str(latency_ms),
    ]
    stub = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while not http_ok(f"http://127.0.0.1:{port}/health") and time.monotonic() < deadline:
        time.sleep(0.1)
    return f"http://127.0.0.1:{port}/v1", stub


def stub_chain_env(prefix: str, model_url: str) -> dict[str, str]:
    """The environment of a benchmarked chain: topics of its own, the stub model answering, quiet logs."""
    return {
        "SWITCHYARD_TOPIC_PREFIX": prefix,
        "SWITCHYARD_MODEL_PROVIDER": "openai",
        "SWITCHYARD_MODEL_BASE_URL": model_url,
        "SWITCHYARD_MODEL_NAME": "stub",
        "SWITCHYARD_LOG_LEVEL": "WARNING",
    }


def delete_prefixed_topics(bootstrap: str, prefix: str) -> None:
    """Every topic a benchmark made, deleted when it ends."""
    admin = AdminClient(confluent_config({"bootstrap.servers": bootstrap}))
    doomed = [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)]
    for future in admin.delete_topics(doomed, operation_timeout=30).values():
        future.result(30)


@dataclass(frozen=True)
class StubChain:
    """A chain's topics (under `prefix`), its stores, the stub model at `model_url`, and a launcher for its
    processes (not yet started)."""

    prefix: str
    model_url: str
    launcher: Launcher


@contextmanager
def stub_chain(
    name: str, codec: AvroCodec, *, store_count: int, model_latency_ms: float, extra_env: dict[str, str] | None = None
) -> Iterator[StubChain]:
    """Topics of a fresh prefix, `store_count` stores on `ref.stores` and their stock on `ref.inventory`, the stub
    model and a launcher with the stub-chain environment; afterwards every process is stopped, the stub too, and the
    topics deleted."""
    settings = get_settings()
    prefix = f"{name}-{uuid.uuid4().hex[:6]}."
    reconcile(DATA_ROOT / "topics", settings.kafka_bootstrap, out=io.StringIO(), prefix=prefix)
    directory = stores(store_count)
    publish_stores(settings.kafka_bootstrap, codec, directory, f"{prefix}ref.stores")
    # the stores' stock, as `make seed` publishes it: without it every stock, price and discount question found no
    # product, the workflow declined, and the request took the model route the demo answers from data
    publish_inventory(settings.kafka_bootstrap, codec, inventory_rows(directory), f"{prefix}ref.inventory")
    url, stub = serve_stub(model_latency_ms)
    env = {**stub_chain_env(prefix, url), **(extra_env or {})}
    launcher = Launcher(Path(tempfile.mkdtemp(prefix=f"switchyard-{name}-")), env=env)
    try:
        # on SASL_SSL each process logs in as its own principal: its ACLs under the prefix, for the run
        with acls.granted(settings.model_copy(update={"topic_prefix": prefix})):
            try:
                yield StubChain(prefix, url, launcher)
            finally:
                launcher.stop_all()
    finally:
        stub.terminate()
        stub.wait(10)
        delete_prefixed_topics(settings.kafka_bootstrap, prefix)


def clickhouse_split(since: datetime) -> dict[str, Any]:
    """The orchestration_work view's split (monitoring included) over the run's minutes, in percent, next to
    the reference; other traffic written in those minutes counts too."""
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    try:
        rows = asyncio.run(measured_split(since, until))
    except (aiohttp.ClientError, OSError) as error:
        return {"error": f"orchestration_work view unavailable: {error}"}
    return {
        "window": f"{since:%H:%M}-{until:%H:%M} UTC",
        "percent": {row["category"]: row["percent"] for row in rows},
        "reference_percent": {row["category"]: row["reference_percent"] for row in rows},
    }


def ingest_knowledge_base() -> dict[str, Any]:
    """The knowledge base in Weaviate, so the stitcher's hybrid search does its real work (without it, every
    search fails and the stitcher answers degraded, which is cheaper), each passage scored for injection as
    `switchyard knowledge ingest` scores it. Idempotent: only new or changed passages are embedded, so after the
    first run this takes about a second."""
    from services.shared.embedder import SentenceEmbedder

    settings = get_settings()
    try:
        client = connect(
            settings.weaviate_host,
            settings.weaviate_http_port,
            settings.weaviate_grpc_port,
            api_key=settings.weaviate_api_key,
        )
    except Exception as error:  # the bench still runs, degraded, and says so
        return {"error": f"Weaviate unavailable, the stitcher runs degraded: {error}"}
    try:
        report = ingest(client, SentenceEmbedder(max_tokens=256), DEFAULT_SOURCES_DIR, injection=injection_scorer())
    finally:
        client.close()
    return {"passages": report.passages, "written": report.written, "seconds": round(report.seconds, 2)}


def bench(
    rate: float,
    duration_s: float,
    model_latency_ms: float,
    store_count: int,
    unique_texts: bool = False,
    fused: bool = False,
    replicas: int = 1,
) -> dict[str, Any]:
    knowledge_base = ingest_knowledge_base()
    window_start = datetime.now(UTC)
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    count = int(rate * duration_s)
    with stub_chain("bench", codec, store_count=store_count, model_latency_ms=model_latency_ms) as chain:
        reader = AnswerReader(settings.kafka_bootstrap, f"{chain.prefix}audited", codec)
        try:
            chain.launcher.start_all(fused=fused, replicas=replicas)
            reader.start()
            reader.assigned.wait(30)
            publisher = PosPublisher(settings.kafka_bootstrap, f"{chain.prefix}requests", codec)
            started = time.monotonic()
            requests = request_mix([s.store_id for s in stores(store_count)])
            sent = publisher.publish(with_unique_texts(requests) if unique_texts else requests, count, rate)
            publish_s = time.monotonic() - started
            missing = reader.wait_for({r.request_id for r in sent}, timeout_s=max(60.0, duration_s))
            drained_s = time.monotonic() - started
        finally:
            reader.stop()
    answers = [reader.received[r.request_id] for r in sent if r.request_id in reader.received]
    model_answers = [a for a in answers if model_ms(a.record) > 0]
    return {
        "rate_target_per_s": rate,
        "duration_s": duration_s,
        "unique_texts": unique_texts,
        "stages": ("fused in one process" if fused else "one process each")
        + (f", {replicas} replicas" if replicas > 1 else ""),
        "model": {"kind": "openai-compatible stub", "fixed_latency_ms": model_latency_ms},
        "sent": len(sent),
        "answered": len(answers),
        "lost": len(missing),
        "answered_twice": reader.duplicates,
        "publish_rate_per_s": round(len(sent) / publish_s, 1),
        "sustained_answers_per_s": round(len(answers) / drained_s, 1),
        "end_to_end_ms": summary([a.end_to_end_ms for a in answers]),
        "knowledge_base": knowledge_base,
        "model_route_share": round(len(model_answers) / max(1, len(answers)), 3),
        "overhead_ms": summary([a.end_to_end_ms - model_ms(a.record) for a in answers]),
        "overhead_model_route_ms": summary([a.end_to_end_ms - model_ms(a.record) for a in model_answers]),
        "stages_ms": stage_stats(answers),
        "work_split_percent": work_split(answers),
        "work_ms_per_request": work_per_request(answers),
        "work_split_clickhouse": clickhouse_split(window_start),
    }


def with_unique_texts(requests: Iterator[Request]) -> Iterator[Request]:
    """Every text new (a ticket number appended): the mix repeats about 60 phrasings, which every stage
    remembers, so this is the cost of traffic that does not repeat itself."""
    for ticket, request in enumerate(requests):
        yield request.model_copy(update={"text": f"{request.text} (ticket {ticket})"})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench", description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second offered")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds of offered load")
    parser.add_argument("--model-latency-ms", type=float, default=50.0, help="the stub model's fixed latency")
    parser.add_argument("--stores", type=int, default=1600, help="stores the requests come from")
    parser.add_argument(
        "--unique-texts", action="store_true", help="make every request text new, so no stage can reuse its work"
    )
    parser.add_argument(
        "--fused", action="store_true", help="run the five stages in one process (`switchyard run chain`)"
    )
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="replicas of each stage (of the fused chain with --fused), sharing the consumer groups: one process "
        "is one Python interpreter, so more than one is how the chain uses more than one core",
    )
    args = parser.parse_args(argv)
    if args.replicas < 1:
        parser.error("--replicas must be at least 1")
    result = bench(
        args.rate, args.duration, args.model_latency_ms, args.stores, args.unique_texts, args.fused, args.replicas
    )
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0 if result["lost"] == 0 and result["answered_twice"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
