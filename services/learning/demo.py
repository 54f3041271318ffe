"""`make demo-learning`: the learning loop on this machine, measured before and after.

1. Traffic runs on the large-model route: the trained router and route table decide, the answerer stage answers
   through the providers (an OpenAI-compatible stub standing in for a hosted large model: fixed latency, a hosted
   model's price), every answer is written to switchyard.audit_records as the audit writer would.
2. A simulated store-staff reviewer (a simulation: it knows the ground truth of the generated policy questions)
   corrects a share of the answers or rates them; the feedback goes to the `feedback` topic and ClickHouse.
3. The training sets are exported from ClickHouse; the answer memory and the router are trained and registered.
4. The candidate shadows the large model on new live traffic; shadow and eval are compared in ClickHouse.
5. It is promoted when it beats the incumbent by the margin: a new route-table version sends its intents to it.
6. New traffic runs again and the before/after table is printed.

The chain's stages run in this process (router decision, governance stand-in, answerer stage with its providers),
not as six Kafka consumers, so the latency figures are the router's and answerer's own work plus the model call.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from services.answerer.memory import KIND as MEMORY_KIND
from services.answerer.registry import load_providers
from services.answerer.stage import Answerer
from services.answerer.stub_model import start_stub
from services.learning.compare import shadow_comparison
from services.learning.export import ExportSpec, export_training
from services.learning.feedback import FeedbackPublisher
from services.learning.metrics import is_correct
from services.learning.promotion import MEMORY_PROVIDER, PromotionPolicy, promote
from services.learning.registry import ModelRegistry
from services.learning.shadow import shadow_runner
from services.learning.simulation import (
    SimulatedRequest,
    SimulatedReviewer,
    insert_audited,
    insert_feedback,
    simulated_governor,
    traffic,
)
from services.learning.training import NARROW_INTENTS, train_and_register
from services.router.intents.classifier import IntentClassifier, ensure_trained
from services.router.route_table import RouteTable, load_route_table
from services.runtime.models import (
    Audited,
    AuditInfo,
    Context,
    Feedback,
    Governance,
    Governed,
    StageTiming,
    Verdict,
)
from services.settings import get_settings

LARGE_MODEL_PRICE = {"input_usd": 2.50, "output_usd": 10.00, "per_tokens": 1000000}  # a hosted large model's list price


@dataclass(frozen=True)
class Served:
    intent: str
    route: str
    provider: str
    latency_ms: float
    cost_usd: float
    correct: bool | None  # against the simulated ground truth; None outside the policy questions


class Loop:
    def __init__(self, workdir: Path, stub_url: str, registry: ModelRegistry, concurrency: int, rate: float) -> None:
        self.workdir = workdir
        self.registry = registry
        self.route_table_path = workdir / "route_table.yaml"
        shutil.copyfile(get_settings().route_table, self.route_table_path)
        self.providers_path = workdir / "providers.yaml"
        self.providers_path.write_text(
            yaml.safe_dump(
                {
                    "default_provider": "default",
                    "providers": {
                        "default": {
                            "kind": "openai",
                            "base_url": stub_url,
                            "model": "switchyard-stub",
                            "max_concurrency": 64,
                            "price": LARGE_MODEL_PRICE,
                        },
                        MEMORY_PROVIDER: {"kind": MEMORY_KIND, "registry": str(registry.root), "fallback": ["default"]},
                    },
                }
            )
        )
        self.classifier: IntentClassifier = ensure_trained()
        self.limit = asyncio.Semaphore(concurrency)
        self.rate = rate
        self.seq = 0

    async def run(self, items: Sequence[SimulatedRequest]) -> tuple[list[Served], list[Audited]]:
        """Each request through router, governance stand-in and the answerer stage; audit rows written."""
        table = load_route_table(self.route_table_path)
        answerer = Answerer(load_providers(self.providers_path))
        await answerer.start()
        try:
            results = await asyncio.gather(*[task async for task in self._paced(items, table, answerer)])
            runner = shadow_runner(answerer.providers)
            if runner is not None:
                await runner.drain()
        finally:
            await answerer.stop()
        records = [audited for _, audited in results]
        insert_audited(records)
        return [served for served, _ in results], records

    async def _paced(
        self, items: Sequence[SimulatedRequest], table: RouteTable, answerer: Answerer
    ) -> AsyncIterator[asyncio.Task[tuple[Served, Audited]]]:
        """Requests arrive at `rate` per second, as tills send them (open loop), not all at once."""
        started = time.monotonic()
        for index, item in enumerate(items):
            await asyncio.sleep(max(0.0, started + index / self.rate - time.monotonic()))
            yield asyncio.create_task(self._one(item, table, answerer))

    async def _one(self, item: SimulatedRequest, table: RouteTable, answerer: Answerer) -> tuple[Served, Audited]:
        async with self.limit:
            started = time.perf_counter()
            received_us = time.time_ns() // 1000
            prediction = await asyncio.to_thread(self.classifier.classify, item.request.text)
            route = table.decide(item.request, prediction)
            routed_us = time.time_ns() // 1000
            redacted, findings = simulated_governor(item.request.text)
            governed = Governed(
                request=item.request,
                route=route,
                context=Context(items=[], token_count=0, token_budget=512),
                governance=Governance(
                    verdict=Verdict.MASK if findings else Verdict.ALLOW, findings=findings, redacted_text=redacted
                ),
                timings=[
                    StageTiming(stage="router", received_at=received_us, started_at=received_us, finished_at=routed_us)
                ],
            )
            answer = await answerer.decide(governed)
            latency_ms = (time.perf_counter() - started) * 1000
            finished_us = time.time_ns() // 1000
        self.seq += 1
        audited = Audited(
            request=item.request,
            route=route,
            context=governed.context,
            governance=governed.governance,
            answer=answer,
            audit=AuditInfo(
                audit_id=str(uuid.uuid4()),
                chain_key=item.request.store_id,
                prev_hash="",
                hash=uuid.uuid4().hex,
                recorded_at=finished_us,
                seq=self.seq,
            ),
            timings=[
                *governed.timings,
                StageTiming(stage="answerer", received_at=routed_us, started_at=routed_us, finished_at=finished_us),
            ],
        )
        correct = is_correct(answer.text, item.truth) if item.truth else None
        served = Served(route.intent, route.route_id, answer.provider, latency_ms, answer.cost_usd, correct)
        return served, audited


def review(
    items: Sequence[SimulatedRequest], records: Sequence[Audited], share: float, publisher: FeedbackPublisher
) -> list[Feedback]:
    """The simulated reviewer's feedback, published to the `feedback` topic and written to ClickHouse (as the
    feedback writer does; deduplicated on feedback_id, so both paths count once)."""
    reviewer = SimulatedReviewer(share=share)
    given = []
    for item, record in zip(items, records, strict=True):
        feedback = reviewer.review_record(item, record)
        if feedback is not None:
            publisher.publish(feedback)
            given.append(feedback)
    publisher.flush()
    insert_feedback(given)
    return given


def summary(served: Sequence[Served], intents: Sequence[str]) -> dict[str, Any]:
    latencies = np.array([s.latency_ms for s in served])
    promoted = np.array([s.latency_ms for s in served if s.intent in intents] or [0.0])
    checked = [s.correct for s in served if s.correct is not None]
    return {
        "requests": len(served),
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "p50_intents": float(np.percentile(promoted, 50)),
        "p99_intents": float(np.percentile(promoted, 99)),
        "cost_per_1000": sum(s.cost_usd for s in served) / len(served) * 1000,
        "custom_share": sum(s.provider == MEMORY_PROVIDER for s in served) / len(served),
        "live_accuracy": sum(checked) / len(checked) if checked else 0.0,
    }


def print_table(
    before: dict[str, Any], after: dict[str, Any], evaluation: dict[str, Any], intents: Sequence[str]
) -> None:
    rows = [
        (
            f"accuracy on the eval split ({evaluation['examples']} held-out corrected answers)",
            f"{evaluation['incumbent_accuracy']:.3f}",
            f"{evaluation['candidate_accuracy']:.3f}",
        ),
        (
            "accuracy vs ground truth, live policy questions",
            f"{before['live_accuracy']:.3f}",
            f"{after['live_accuracy']:.3f}",
        ),
        (
            "p50 / p99 latency, all requests (ms)",
            f"{before['p50']:.0f} / {before['p99']:.0f}",
            f"{after['p50']:.0f} / {after['p99']:.0f}",
        ),
        (
            f"p50 / p99 latency, {' + '.join(intents)} (ms)",
            f"{before['p50_intents']:.0f} / {before['p99_intents']:.0f}",
            f"{after['p50_intents']:.0f} / {after['p99_intents']:.0f}",
        ),
        ("cost per 1,000 requests (USD)", f"{before['cost_per_1000']:.4f}", f"{after['cost_per_1000']:.4f}"),
        ("share of traffic on custom models", f"{before['custom_share']:.1%}", f"{after['custom_share']:.1%}"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"\n{'':<{width}}  {'before':>14}  {'after':>14}")
    for name, left, right in rows:
        print(f"{name:<{width}}  {left:>14}  {right:>14}")


async def demo(args: argparse.Namespace) -> int:
    # the memory declining a question hands it to the large model by design; the table counts it, not the log
    logging.getLogger("services.answerer.resilience").setLevel(logging.ERROR)
    settings = get_settings()
    workdir = settings.var_dir / "learning-demo" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    workdir.mkdir(parents=True, exist_ok=True)
    registry = ModelRegistry()
    runner, stub_url = await start_stub(latency_ms=args.model_latency_ms)
    publisher = FeedbackPublisher(settings)
    intents = list(NARROW_INTENTS)
    try:
        loop = Loop(workdir, stub_url, registry, args.concurrency, args.rate)
        run = uuid.uuid4().hex
        print(
            f"learning loop demo in {workdir} (reviewer and traffic are simulated; see services/learning/simulation.py)"
        )
        since = datetime.now(UTC) - timedelta(seconds=1)
        now_ms = int(time.time() * 1000)
        items = list(traffic(args.requests, seed=args.seed, start_ms=now_ms, spacing_ms=0, run=run))
        served_before, records = await loop.run(items)
        feedback = review(items, records, args.review_share, publisher)
        print(
            f"1. {len(items)} requests on the large-model route; the simulated reviewer gave {len(feedback)} feedback"
        )
        until = datetime.now(UTC) + timedelta(seconds=1)
        answers_dir, router_dir = workdir / "datasets" / "answers", workdir / "datasets" / "router"
        answers_set = export_training(ExportSpec("answers", since, until), answers_dir)
        router_set = export_training(ExportSpec("router", since, until), router_dir)
        for name, exported in (("answers", answers_set), ("router", router_set)):
            counts = exported.card["counts"]
            print(
                f"2. exported {exported.card['version']}: {counts['train']['examples']} train / "
                f"{counts['eval']['examples']} eval examples ({name})"
            )
        memory_id = train_and_register("answers", answers_dir, registry, intents=intents)
        router_id = train_and_register("router", router_dir, registry)
        evaluation = registry.card(memory_id)["evaluation"]
        router_eval = registry.card(router_id)["evaluation"]
        print(
            f"3. trained {memory_id} ({evaluation['method']}, threshold {evaluation['threshold']:.3f}): eval accuracy "
            f"{evaluation['candidate_accuracy']:.3f} vs incumbent {evaluation['incumbent_accuracy']:.3f}, "
            f"coverage {evaluation['coverage']:.1%}"
        )
        if "candidate_accuracy" in router_eval:
            print(
                f"   trained {router_id}: production eval accuracy {router_eval['candidate_accuracy']:.3f} vs current "
                f"router {router_eval['incumbent_accuracy']:.3f} (registered, not deployed by the demo)"
            )
        registry.set_shadow({"candidate": memory_id, "incumbents": ["default"]})
        registry.record("shadow_started", memory_id, MEMORY_KIND, intents=intents)
        shadow_items = list(
            traffic(args.shadow_requests, seed=args.seed + 1, start_ms=int(time.time() * 1000), spacing_ms=0, run=run)
        )
        try:
            _, shadow_records = await loop.run(shadow_items)
        finally:  # a shadow left configured would follow every answerer started from this registry
            registry.set_shadow(None)
        review(shadow_items, shadow_records, args.review_share, publisher)
        registry.record("shadow_stopped", memory_id, MEMORY_KIND, intents=intents)
        shadow = shadow_comparison(memory_id, intents)
        print(
            f"4. shadow on {len(shadow_items)} live requests: {shadow.examples} reviewed; accuracy "
            f"{shadow.candidate_accuracy:.3f} vs incumbent {shadow.incumbent_accuracy:.3f}, "
            f"coverage {shadow.coverage:.1%}"
        )
        decision = promote(
            memory_id,
            intents,
            loop.route_table_path,
            registry,
            shadow=shadow,
            policy=PromotionPolicy(margin=args.margin),
        )
        print(f"5. {'promoted' if decision.promote else 'NOT promoted'}: " + "; ".join(decision.reasons))
        if decision.promote:
            print(f"   route table now {load_route_table(loop.route_table_path).version} ({loop.route_table_path})")
        after_items = list(
            traffic(args.requests, seed=args.seed + 2, start_ms=int(time.time() * 1000), spacing_ms=0, run=run)
        )
        served_after, _ = await loop.run(after_items)
        print(f"6. {len(after_items)} new requests after promotion")
        print_table(summary(served_before, intents), summary(served_after, intents), evaluation, intents)
        print(
            f"\nthe answer memory alone, one question at a time on the eval split: p50 "
            f"{evaluation['candidate_p50_ms']:.1f} ms (embedding and lookup); load average now "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(
            f"large model: the stub at {args.model_latency_ms:.0f} ms priced at ${LARGE_MODEL_PRICE['input_usd']}"
            f"/${LARGE_MODEL_PRICE['output_usd']} per 1M tokens; custom model: the answer memory in-process "
            "(API cost 0). `switchyard rollback --route-table " + str(loop.route_table_path) + "` undoes it."
        )
        return 0
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard demo-learning", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="requests before and after promotion, each")
    parser.add_argument("--shadow-requests", type=int, default=300, help="requests answered in shadow")
    parser.add_argument("--review-share", type=float, default=0.5, help="share of policy answers the reviewer sees")
    parser.add_argument("--model-latency-ms", type=float, default=250.0, help="the large model's latency (stub)")
    parser.add_argument("--rate", type=float, default=40.0, help="requests per second the tills send")
    parser.add_argument("--concurrency", type=int, default=64, help="requests in flight at most")
    parser.add_argument(
        "--margin", type=float, default=PromotionPolicy.margin, help="promotion margin over the incumbent"
    )
    parser.add_argument("--seed", type=int, default=417, help="random seed of the traffic and the reviewer")
    return asyncio.run(demo(parser.parse_args(argv)))


if __name__ == "__main__":
    raise SystemExit(main())
