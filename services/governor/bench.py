"""`python -m services.governor.bench` (`make bench-governor`): the governor's own cost, as JSON.

Runs the real Governor stage (Presidio + spaCy, toxicity and injection classifiers, the policy, the vault
encryption) in this process on requests with and without PII and a stitched prompt with passages, at a fixed
number of records in flight (as the runtime's max_in_flight would), and prints records per second and the
latency `decide` adds per record (p50/p95/p99). Kafka hops are not included: `make bench` measures the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from services.governor.stage import Analyzer, Governor
from services.runtime.inflight import run_in_flight
from services.runtime.models import (
    Channel,
    Context,
    ContextItem,
    PromptMessage,
    Request,
    RouteDecision,
    RouteKind,
    Stitched,
)
from services.settings import get_settings

TEXTS = (
    "Hi, I'm {name}, my email is {user}@example.com, can I return the kettle I bought 12 days ago?",
    "Is the waxed field jacket in stock in size M at store {n}?",
    "Can I get 25% off this sofa? Call me on +1 (415) 555-{n:04d}",
    "My card 4111 1111 1111 1111 was charged twice for order {n}",
    "What time do you close today?",
    "Does this blender come with a warranty? My loyalty number is LOY-{n:08d}",
)
NAMES = ("Maria Lopez", "James Smith", "Priya Sharma", "Chen Wei", "Aisha Khan")
PASSAGE = "Returns are accepted within 30 days with a receipt; refunds go back to the original payment method."


def record(n: int) -> Stitched:
    name = NAMES[n % len(NAMES)]
    text = TEXTS[n % len(TEXTS)].format(name=name, user=name.split()[0].lower() + str(n), n=n % 10_000)
    return Stitched(
        request=Request(
            request_id=f"bench-{n}",
            store_id=f"{n % 1600:04d}",
            terminal_id="pos-1",
            channel=Channel.POS,
            text=text,
            created_at=int(time.time() * 1000),
        ),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent="return_or_refund",
            confidence=0.9,
            provider="default",
            reason="bench",
            route_table_version="bench",
        ),
        context=Context(
            items=[ContextItem(source="knowledge_base", source_id="kb-1", version="1", score=0.8, text=PASSAGE)],
            token_count=40,
            token_budget=1024,
            prompt=[
                PromptMessage(role="system", content="You help store staff. Answer briefly."),
                PromptMessage(role="user", content=f"Context:\n- {PASSAGE}\n\nQuestion: {text}"),
            ],
        ),
        timings=[],
    )


async def run(governor: Governor, first: int, count: int, in_flight: int) -> dict[str, Any]:
    """Records `first` to `first + count`: each run its own requests, as the governor remembers texts it saw."""

    async def one(n: int) -> None:
        section = await governor.decide(record(n))
        governor.side_records(record(n), section)  # the vault entry is part of the governor's work

    timed = await run_in_flight(one, first, count, in_flight)
    return {
        "in_flight": in_flight,
        "records": count,
        "records_per_s": round(count / timed.elapsed_s, 1),
        **timed.latency_percentiles(),
    }


async def bench(count: int, in_flight: Sequence[int], use_ner: bool) -> dict[str, Any]:
    settings = get_settings()
    with tempfile.TemporaryDirectory() as scratch:
        bench_settings = settings.model_copy(update={"var_dir": Path(scratch)})
        started = time.perf_counter()
        analyzer = await asyncio.to_thread(Analyzer.load, use_ner=use_ner)
        load_s = time.perf_counter() - started
        governor = Governor(bench_settings, analyzer=analyzer)
        await governor.start()
        try:
            await run(governor, 0, 32, 8)  # warm-up
            results = [await run(governor, 32 + i * count, count, level) for i, level in enumerate(in_flight)]
        finally:
            await governor.stop()
    return {
        "bench": "governor decide (in process, no Kafka)",
        "models": analyzer.version,
        "ner": use_ner,
        "model_load_s": round(load_s, 2),
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.governor.bench", description=__doc__)
    parser.add_argument("--records", type=int, default=600, help="records per run")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16, 64], help="records in flight per run")
    parser.add_argument("--no-ner", action="store_true", help="Presidio pattern recognizers only, no spaCy NER")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(bench(args.records, args.in_flight, not args.no_ner)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
