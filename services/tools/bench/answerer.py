"""`python -m services.tools.bench.answerer` (`make bench-answerer`): the answerer's output guard's own cost, as JSON.

Runs the real Answerer's guard (the policy's output rules, the toxicity cascade: the cheap n-gram model, then the
MiniLM classifier batched across answers in flight for what it is unsure of, leaked-PII withholding, token
restoring) in this process on model-like answers of about 64 tokens, some promising what the policy forbids, at a
fixed number of answers in flight, and prints answers per second, the CPU per answer, the latency the guard adds
(p50/p95/p99) and which toxicity model decided. No model is called and no Kafka hop is included.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from services.answerer.guard import GuardResult
from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.answerer.stage import Answerer, load_toxicity
from services.runtime.inflight import run_in_flight
from services.wire.models import (
    Channel,
    Context,
    ContextItem,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    Verdict,
)

# (answer, the governor's facts): one in six promises a refund the policy forbids (45 days after purchase)
ANSWERS = (
    (
        "Yes, the waxed field jacket in size M is in stock at store {n}. It is water resistant, has two front "
        "pockets and a cord collar, and it can be reproofed with wax. A colleague can hold one at the till for "
        "you until closing today if you would like to come and try it on.",
        {"intent": "stock_check"},
    ),
    (
        "Thanks <PERSON_1>. You can return the kettle within 30 days of purchase with your receipt, and the "
        "refund goes back to the card you paid with. Order {n} is still inside that window, so bring the kettle "
        "and its box to any store and the service desk will process it for you.",
        {"intent": "return_or_refund", "days_since_purchase": "12"},
    ),
    (
        "We close at 9 pm today and open again at 8 am tomorrow. Store {n} also has late opening until 10 pm on "
        "Fridays and Saturdays, and the click and collect desk closes thirty minutes before the store does, so "
        "please arrive a little earlier if you are collecting an order.",
        {"intent": "store_hours"},
    ),
    (
        "Good news: we will refund you in full today for order {n}, no receipt needed, and you can keep the item "
        "as well. I have also added a voucher to your account for the trouble, so you will see it at the till "
        "the next time you shop with us in any of our stores.",
        {"intent": "return_or_refund", "days_since_purchase": "45"},
    ),
    (
        "The blender comes with a two year manufacturer warranty on the motor and the jug, and the terms are "
        "printed in the booklet in the box. Keep your receipt for order {n} safe, as the manufacturer asks for it. "
        "Accidental damage is not covered, and the blades are sold separately as a spare part.",
        {"intent": "product_question"},
    ),
    (
        "I have checked your loyalty account and you have {n} points, which is enough for a ten pound voucher. "
        "The voucher can be printed at the till and used on anything in store except gift cards. Points expire "
        "after twelve months without a purchase, so it is worth using them before the summer.",
        {"intent": "loyalty"},
    ),
)
INVENTORY = ContextItem(
    source="inventory", source_id="sku-1", version="1", score=None, text="Waxed jacket M: 4 in stock"
)


def governed(n: int) -> tuple[Governed, str]:
    template, facts = ANSWERS[n % len(ANSWERS)]
    record = Governed(
        request=Request(
            request_id=f"bench-{n}",
            store_id=f"{n % 1600:04d}",
            terminal_id="pos-1",
            channel=Channel.POS,
            text="a question",
            created_at=int(time.time() * 1000),
        ),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent=facts["intent"],
            confidence=0.9,
            provider="default",
            reason="bench",
            route_table_version="bench",
        ),
        context=Context(items=[INVENTORY], token_count=10, token_budget=1024),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text="a question", facts=facts),
        timings=[],
    )
    return record, template.format(n=n)


async def run(answerer: Answerer, first: int, count: int, in_flight: int) -> dict[str, Any]:
    """Answers `first` to `first + count`: each run its own, as the answerer remembers the answers it scored."""
    replaced = 0
    engine = answerer.policy.current()
    deciders_before = Counter(answerer.toxicity_deciders)
    tokens = {"<PERSON_1>": "Maria"}

    async def one(n: int) -> None:
        nonlocal replaced
        record, text = governed(n)
        result: GuardResult = await answerer.guard(record, text, engine, tokens)
        replaced += result.replaced

    timed = await run_in_flight(one, first, count, in_flight)
    return {
        "in_flight": in_flight,
        "answers": count,
        "replaced": replaced,
        "answers_per_s": round(count / timed.elapsed_s, 1),
        "cpu_ms_per_answer": round(timed.cpu_s * 1000 / count, 2),
        **timed.latency_percentiles(),
        "toxicity_decided_by": dict(answerer.toxicity_deciders - deciders_before),
    }


async def bench(count: int, in_flight: Sequence[int]) -> dict[str, Any]:
    started = time.perf_counter()
    toxicity = await asyncio.to_thread(load_toxicity)
    load_s = time.perf_counter() - started
    # a provider is required to build the stage; the guard never calls it
    idle = parse_provider_config(
        {"kind": "openai", "name": "default", "base_url": "http://127.0.0.1:9/v1", "model": "unused"}
    )
    answerer = Answerer(ProviderRegistry({"default": GuardedProvider.from_config(idle, environ={})}), toxicity=toxicity)
    await answerer.start()
    try:
        await run(answerer, 0, 32, 8)  # warm-up
        results = [await run(answerer, 32 + i * count, count, level) for i, level in enumerate(in_flight)]
    finally:
        await answerer.stop()
    sure_clean = answerer.sure_clean.version if answerer.sure_clean else "none"
    return {
        "bench": "answerer output guard (in process, no model, no Kafka)",
        "models": f"toxicity {toxicity.version}; sure-clean {sure_clean}",
        "model_load_s": round(load_s, 2),
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench-answerer", description=__doc__)
    parser.add_argument("--answers", type=int, default=300, help="answers per run")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16, 64], help="answers in flight per run")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(bench(args.answers, args.in_flight)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
