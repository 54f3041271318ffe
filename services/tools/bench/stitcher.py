"""Stitcher throughput with the real tables and Weaviate: `python -m services.tools.bench.stitcher`
(`make bench-stitcher`).

Loads the stitcher as `switchyard run stitcher` does (the reference topics as `make seed` fills them, `audited` for
history, the knowledge base as `make seed` ingests it), then stitches generated routed requests in-process, first
one at a time (stitch time p50/p99), then with many in flight (records/s). Prints JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import resource
import statistics
import time
import uuid
from typing import Any

from services.settings import get_settings
from services.stitcher.stage import KNOWLEDGE_BASE, Stitcher
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request, Routed, RouteDecision, RouteKind
from services.wire.schema_registry import SchemaRegistry

# (intent, route id, kind, text): the mix a store sends, workflow questions included
TRAFFIC = [
    ("stock_check", "model.stock_check", RouteKind.SMALL_MODEL, "Is the waxed field jacket in stock in size M?"),
    ("stock_check", "model.stock_check", RouteKind.SMALL_MODEL, "do you have the trailrunner in EU 42 black"),
    ("product_question", "model.product_question", RouteKind.SMALL_MODEL, "how long does the Aurora battery last"),
    ("return_or_refund", "model.return_or_refund", RouteKind.SMALL_MODEL, "can I return shoes without a receipt"),
    ("price_check", "model.price_check", RouteKind.SMALL_MODEL, "do you match online prices"),
    ("discount_request", "model.discount_request", RouteKind.SMALL_MODEL, "can I give this customer 25% off"),
    ("loyalty_account", "model.loyalty_account", RouteKind.SMALL_MODEL, "how many points do gold members earn"),
    ("complaint", "model.large", RouteKind.LARGE_MODEL, "my espresso machine leaks after two weeks, I want a refund"),
    ("store_hours", "workflow.store_hours", RouteKind.WORKFLOW, "What time do you close today?"),
]


def routed_records(
    count: int, store_ids: list[str], customers: int, seed: int = 7, unique_texts: bool = False
) -> list[Routed]:
    rng = random.Random(seed)
    now = int(time.time() * 1000)
    records: list[Routed] = []
    for _ in range(count):
        intent, route_id, kind, text = rng.choice(TRAFFIC)
        if unique_texts:  # defeats the query-embedding cache: every request is embedded
            text = f"{text} (ticket {len(records)})"
        request = Request(
            request_id=str(uuid.uuid4()),
            store_id=rng.choice(store_ids),
            terminal_id="pos-1",
            customer_id=f"C-{rng.randrange(customers)}" if customers and rng.random() < 0.6 else None,
            channel=Channel.POS,
            text=text,
            created_at=now,
        )
        route = RouteDecision(
            route_id=route_id,
            kind=kind,
            intent=intent,
            confidence=0.9,
            provider=None if kind == RouteKind.WORKFLOW else "default",
            reason="bench",
            route_table_version="bench",
        )
        records.append(Routed(request=request, route=route, timings=[]))
    return records


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(records: int, concurrency: int, unique_texts: bool) -> dict[str, Any]:
    settings = get_settings()
    stitcher = Stitcher(settings, AvroCodec(SchemaRegistry.load(settings.schemas_dir)))
    rss_before = rss_mb()
    started = time.perf_counter()
    await stitcher.start()
    load_s = time.perf_counter() - started
    try:
        store_ids = sorted(stitcher.stores.rows)
        if not store_ids or not len(stitcher.inventory):
            raise SystemExit("the reference topics are empty: run `make seed` first")
        work = routed_records(records, store_ids, len(stitcher.customers), unique_texts=unique_texts)
        for record in work[:50]:  # warm-up: connections, caches, the first embeddings
            await stitcher.decide(record)
        times: list[float] = []
        degraded = 0
        for record in work:
            began = time.perf_counter()
            context = await stitcher.decide(record)
            times.append((time.perf_counter() - began) * 1000)
            degraded += KNOWLEDGE_BASE in context.degraded
        gate = asyncio.Semaphore(concurrency)

        async def one(record: Routed) -> None:
            async with gate:
                await stitcher.decide(record)

        began = time.perf_counter()
        if unique_texts:
            work = routed_records(records, store_ids, len(stitcher.customers), seed=8, unique_texts=True)
        await asyncio.gather(*(one(r) for r in work))
        concurrent_s = time.perf_counter() - began
        return {
            "records": records,
            "unique_texts": unique_texts,
            "tables": {t.topic: len(t) for t in stitcher.tables},
            "table_load_s": round(load_s, 2),
            "rss_mb_before_start": round(rss_before, 1),
            "rss_mb_loaded": round(rss_mb(), 1),
            "tokenizer": stitcher.counter.name,
            "sequential": {
                "records_per_s": round(records / (sum(times) / 1000), 1),
                "stitch_ms_p50": round(statistics.median(times), 2),
                "stitch_ms_p99": round(percentile(times, 0.99), 2),
                "degraded": degraded,
            },
            "concurrent": {"in_flight": concurrency, "records_per_s": round(records / concurrent_s, 1)},
        }
    finally:
        await stitcher.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench-stitcher", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000, help="records to stitch")
    parser.add_argument("--concurrency", type=int, default=32, help="records in flight in the second pass")
    parser.add_argument(
        "--unique-texts", action="store_true", help="make every request text new, so that each one is embedded"
    )
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args.records, args.concurrency, args.unique_texts)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
