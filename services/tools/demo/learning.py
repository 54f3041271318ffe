"""`make demo-learning`: the learning loop on this machine, measured before and after.

1. Traffic runs on the chain as a fresh install answers it: the trained router and route table decide, the
   knowledge-base passages are stitched (services/learning/incumbent.py), and the answerer stage answers as on the
   default, local configuration: quoted from the passages where they answer (services/answerer/grounded.py), else
   through the providers (an OpenAI-compatible stub stands in for the model there: fixed latency, a hosted model's
   price). Every answer is written to switchyard.audit_records as the audit writer would. The unseen questions
   (services/learning/unseen.py) are answered too, and not recorded, so no export can learn them.
2. A simulated store-staff reviewer (a simulation: it knows the ground truth of the generated policy questions)
   corrects a share of the answers or rates them; the feedback goes to the `feedback` topic and ClickHouse.
3. The training sets are exported from ClickHouse; the answer memory and the router are trained and registered.
4. The candidate shadows the incumbent (the quoted answers and the model) on new live traffic; shadow and eval are
   compared in ClickHouse.
5. It is promoted when it beats the incumbent by the margin: a new route-table version sends its intents to it.
6. New traffic and the unseen questions run again and the before/after table is printed: before is the incumbent
   (the grounded answers), after the chain with the promoted custom model, scored by the same judge (the facts each
   answer states, services/learning/simulation.py: is_right).

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
from aiohttp import web

from services.answerer.memory import KIND as MEMORY_KIND
from services.answerer.registry import load_providers
from services.answerer.stage import Answerer
from services.dev.stub_model import STUB_BEHAVIOUR, start_stub
from services.learning.compare import shadow_comparison
from services.learning.export import ExportSpec, export_training
from services.learning.feedback import FeedbackPublisher
from services.learning.incumbent import LocalKnowledge
from services.learning.promotion import MEMORY_PROVIDER, PromotionPolicy, promote
from services.learning.registry import ModelRegistry
from services.learning.shadow import shadow_runner
from services.learning.simulation import (
    SimulatedRequest,
    SimulatedReviewer,
    insert_audited,
    insert_feedback,
    is_right,
    simulated_governor,
    traffic,
)
from services.learning.training import NARROW_INTENTS, train_and_register
from services.learning.unseen import unseen_questions
from services.policy.engine import PolicyEngine
from services.router.intents.classifier import IntentClassifier, ensure_trained
from services.settings import get_settings
from services.shared.embedder import SentenceEmbedder
from services.shared.route_table import RouteTable, load_route_table
from services.stitcher.stage import workflow_context
from services.stitcher.workflows import Declined, WorkflowAnswer, run_workflow
from services.tools.seeded import SeededReference
from services.wire.models import (
    Audited,
    AuditInfo,
    Channel,
    Context,
    Feedback,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    StageTiming,
    Verdict,
)

# where no passage answers, a fresh install calls its local base model; the demo's stand-in answers as the
# answerer's prompt tells a model to when the context does not say (services/answerer/stage.py: SYSTEM_PROMPT),
# never with the facts: a stub quoting its prompt would quote the passages and pass for right
MODEL_STAND_IN_REPLY = "I will check with a colleague."
GROUNDED_PROVIDER = "grounded"  # the provider an answer quoted from the knowledge passages names
LARGE_MODEL_PRICE = {"input_usd": 2.50, "output_usd": 10.00, "per_tokens": 1000000}  # a hosted large model's list price


async def start_model_stand_in(latency_ms: float) -> tuple[web.AppRunner, str]:
    """The OpenAI-compatible stub standing in for the model, at a fixed latency; (runner, base URL)."""
    runner, url = await start_stub(latency_ms=latency_ms)
    runner.app[STUB_BEHAVIOUR].reply = MODEL_STAND_IN_REPLY
    return runner, url


@dataclass(frozen=True)
class Served:
    intent: str
    route: str
    provider: str
    latency_ms: float
    cost_usd: float
    correct: bool | None  # against the simulated ground truth; None outside the policy questions
    truth: str | None = None


class Loop:
    def __init__(
        self,
        workdir: Path,
        stub_url: str,
        registry: ModelRegistry,
        concurrency: int,
        rate: float,
        knowledge: LocalKnowledge | None = None,
    ) -> None:
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
        # the stitcher's knowledge passages, embedded as `knowledge ingest` embeds them
        self.knowledge = knowledge or LocalKnowledge(SentenceEmbedder(max_tokens=256))
        self.reference = SeededReference()
        self.policy = PolicyEngine.from_file(get_settings().policies)
        self.limit = asyncio.Semaphore(concurrency)
        self.rate = rate
        self.seq = 0

    def answerer(self) -> Answerer:
        """The answerer stage as a fresh install builds it: the local default is a base model, so the passages
        answer first (services/stages.py: grounded_first), and the custom model before them on its own routes."""
        return Answerer(load_providers(self.providers_path), grounded_first=True)

    async def run(
        self, items: Sequence[SimulatedRequest], *, record: bool = True
    ) -> tuple[list[Served], list[Audited]]:
        """Each request through router, knowledge stitching, governance stand-in and the answerer stage; audit rows
        written where `record` (not for the unseen questions, which no export may learn)."""
        table = load_route_table(self.route_table_path)
        answerer = self.answerer()
        await answerer.start()
        try:
            results = await asyncio.gather(*[task async for task in self._paced(items, table, answerer)])
            runner = shadow_runner(answerer.providers)
            if runner is not None:
                await runner.drain()
        finally:
            await answerer.stop()
        records = [audited for _, audited in results]
        if record:
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

    def stitch(self, request: Request, route: RouteDecision, table: RouteTable) -> tuple[RouteDecision, Context]:
        """What the stitcher adds, on the seeded reference data: a data workflow's answer where its route has one
        (a workflow that declines moves the request to its fallback route, as the stitcher does), else the
        knowledge passages retrieved with the request's text."""
        if route.kind == RouteKind.WORKFLOW:
            data = self.reference.workflow_data(request, route.intent, self.policy, datetime.now(UTC))
            outcome = run_workflow(route.route_id, data)
            if isinstance(outcome, WorkflowAnswer):
                return route, workflow_context(outcome, data.customer)
            if isinstance(outcome, Declined):
                route = table.fall_back(route, outcome.reason)
        if route.kind == RouteKind.WORKFLOW:
            return route, Context(items=[], token_count=0, token_budget=512)
        store = self.reference.stores.get(request.store_id)
        items = self.knowledge.context(request.text, route.intent, store.region if store else None)
        return route, Context(items=items, token_count=0, token_budget=512)

    async def _one(self, item: SimulatedRequest, table: RouteTable, answerer: Answerer) -> tuple[Served, Audited]:
        async with self.limit:
            started = time.perf_counter()
            received_us = time.time_ns() // 1000
            prediction = await asyncio.to_thread(self.classifier.classify, item.request.text)
            route = table.decide(item.request, prediction)
            route, context = await asyncio.to_thread(self.stitch, item.request, route, table)
            routed_us = time.time_ns() // 1000
            redacted, findings = simulated_governor(item.request.text)
            governed = Governed(
                request=item.request,
                route=route,
                context=context,
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
        correct = is_right(answer.text, item.truth) if item.truth else None
        served = Served(route.intent, route.route_id, answer.provider, latency_ms, answer.cost_usd, correct, item.truth)
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


def unseen_items(run: str, start_ms: int) -> list[SimulatedRequest]:
    """The unseen questions (services/learning/unseen.py) as till requests; the untaught carry no ground truth."""
    return [
        SimulatedRequest(
            Request(
                request_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"unseen:{run}:{start_ms}:{index}")),
                store_id=f"{index % 1600 + 1:04d}",
                terminal_id="pos-01",
                channel=Channel.POS,
                text=question,
                created_at=start_ms,
            ),
            truth,
            intent,
        )
        for index, (question, truth, intent) in enumerate(unseen_questions())
    ]


def unseen_summary(served: Sequence[Served]) -> dict[str, Any]:
    """On the unseen questions: the share of new phrasings answered right (the facts stated), and the share of
    untaught questions the custom model declined (answered by anything else)."""
    phrasings = [s for s in served if s.truth is not None]
    untaught = [s for s in served if s.truth is None]
    return {
        "phrasings": len(phrasings),
        "phrasings_right": sum(bool(s.correct) for s in phrasings) / len(phrasings) if phrasings else 0.0,
        "untaught": len(untaught),
        "untaught_declined": sum(s.provider != MEMORY_PROVIDER for s in untaught) / len(untaught) if untaught else 0.0,
        "grounded": sum(s.provider == GROUNDED_PROVIDER for s in served) / len(served) if served else 0.0,
    }


def summary(served: Sequence[Served], intents: Sequence[str]) -> dict[str, Any]:
    latencies = np.array([s.latency_ms for s in served])
    promoted = np.array([s.latency_ms for s in served if s.intent in intents] or [0.0])
    checked = [s.correct for s in served if s.correct is not None]
    policy = [s for s in served if s.truth is not None]
    return {
        "requests": len(served),
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "p50_intents": float(np.percentile(promoted, 50)),
        "p99_intents": float(np.percentile(promoted, 99)),
        "cost_per_1000": sum(s.cost_usd for s in served) / len(served) * 1000,
        "custom_share": sum(s.provider == MEMORY_PROVIDER for s in served) / len(served),
        "live_accuracy": sum(checked) / len(checked) if checked else 0.0,
        "grounded_share": sum(s.provider == GROUNDED_PROVIDER for s in policy) / len(policy) if policy else 0.0,
    }


def print_table(
    before: dict[str, Any],
    after: dict[str, Any],
    evaluation: dict[str, Any],
    intents: Sequence[str],
    unseen: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    """Before: the incumbent (a fresh install's answers); after: the chain with the promoted custom model."""
    unseen_before, unseen_after = unseen
    alone = evaluation["unseen"]
    rows = [
        (
            f"accuracy on the eval split ({evaluation['examples']} held-out corrected answers)",
            f"{evaluation['incumbent_accuracy']:.3f}",
            f"{evaluation['candidate_accuracy']:.3f}",
        ),
        (
            "  eval references stating no value (judged by exact match)",
            "-",
            f"{evaluation.get('judged_by_fallback', 0.0):.1%}",
        ),
        (
            "accuracy vs ground truth, live policy questions",
            f"{before['live_accuracy']:.3f}",
            f"{after['live_accuracy']:.3f}",
        ),
        (
            f"accuracy on {unseen_before['phrasings']} unseen phrasings of taught answers (never in traffic)",
            f"{unseen_before['phrasings_right']:.3f}",
            f"{unseen_after['phrasings_right']:.3f}",
        ),
        (
            "custom model alone on them: right / wrong / declined",
            "-",
            f"{alone['phrasings_right']:.2f}/{alone['phrasings_wrong']:.2f}/{alone['phrasings_declined']:.2f}",
        ),
        (
            f"{unseen_before['untaught']} untaught questions the custom model declined",
            "-",
            f"{unseen_after['untaught_declined']:.3f}",
        ),
        (
            "policy answers quoted from the knowledge base",
            f"{before['grounded_share']:.1%}",
            f"{after['grounded_share']:.1%}",
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
    runner, stub_url = await start_model_stand_in(args.model_latency_ms)
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
        unseen_before, _ = await loop.run(unseen_items(run, now_ms), record=False)
        feedback = review(items, records, args.review_share, publisher)
        print(
            f"1. {len(items)} requests answered by the incumbent (knowledge passages first, the model where they do "
            f"not answer); the simulated reviewer gave {len(feedback)} feedback"
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
        registry.set_shadow({"candidate": memory_id, "incumbents": ["default", GROUNDED_PROVIDER]})
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
        unseen_after, _ = await loop.run(unseen_items(run, int(time.time() * 1000)), record=False)
        print(f"6. {len(after_items)} new requests and the unseen questions after promotion")
        print_table(
            summary(served_before, intents),
            summary(served_after, intents),
            evaluation,
            intents,
            (unseen_summary(unseen_before), unseen_summary(unseen_after)),
        )
        print(
            f"\nthe answer memory alone, one question at a time on the eval split: p50 "
            f"{evaluation['candidate_p50_ms']:.1f} ms (embedding and lookup); load average now "
            f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
        )
        print(
            "incumbent: the answers quoted from the knowledge passages (in-process retrieval over knowledge/); where "
            f"none answers, the stub at {args.model_latency_ms:.0f} ms priced at ${LARGE_MODEL_PRICE['input_usd']}"
            f"/${LARGE_MODEL_PRICE['output_usd']} per 1M tokens stands in for the model (it replies "
            f"{MODEL_STAND_IN_REPLY!r}); custom model: the answer "
            "memory in-process (API cost 0). `switchyard rollback --route-table "
            + str(loop.route_table_path)
            + "` undoes it."
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
