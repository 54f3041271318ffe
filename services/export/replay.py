"""The decisions one Switchyard tree makes for a fixed set of requests, with no broker: the route (the tree's intent
model and route table), the policy verdict (its policy rules) and, for workflow routes, the answer. Model text is
left out: it is not deterministic across machines.

Run inside a tree (`python -m services.export.replay --requests FILE`, cwd and PYTHONPATH the tree) so that the
tree's own code, configuration and weights decide; prints one JSON object per request.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import services
from services.answerer.stage import workflow_answer
from services.export.equivalence import DEFAULT_REQUESTS
from services.router.intents.classifier import IntentClassifier
from services.settings import REPO_ROOT, get_settings
from services.shared.route_table import load_route_table
from services.stitcher.stage import workflow_context
from services.stitcher.store_hours import describe_hours
from services.stitcher.workflows import Declined, WorkflowAnswer, run_workflow
from services.tools.seeded import SeededReference
from services.wire.models import (
    Context,
    ContextItem,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    Store,
    Verdict,
)

# a fixed instant, so "open now" and today's hours are the same in every replay
REPLAY_NOW: Final = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def load_requests(path: Path) -> list[Request]:
    return [Request.model_validate_json(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def replay(requests: Sequence[Request]) -> list[dict[str, Any]]:
    settings = get_settings()
    table = load_route_table(settings.route_table)
    classifier = IntentClassifier.load(settings.var_dir / "models" / "intent")
    policy = _policy_engine(getattr(settings, "policies", None) or REPO_ROOT / "policies")
    reference = SeededReference()
    predictions = classifier.classify_many([request.text for request in requests])
    results: list[dict[str, Any]] = []
    for request, prediction in zip(requests, predictions, strict=True):
        route = table.decide(request, prediction)
        context = _context(request, reference.stores.get(request.store_id))
        if route.kind == RouteKind.WORKFLOW:
            outcome = run_workflow(route.route_id, reference.workflow_data(request, route.intent, policy, REPLAY_NOW))
            if isinstance(outcome, WorkflowAnswer):
                customer = reference.customers.get(request.customer_id or "")
                context = workflow_context(outcome, customer)
            elif isinstance(outcome, Declined):
                route = table.fall_back(route, outcome.reason)
        verdict, policy_result = _policy(policy, request, route.intent, context)
        results.append(
            {
                "request_id": request.request_id,
                "intent": route.intent,
                "confidence": round(route.confidence, 6),
                "route_id": route.route_id,
                "kind": route.kind.value,
                "provider": route.provider,
                "fallbacks": route.fallbacks,
                "route_table_version": route.route_table_version,
                "intent_model_version": classifier.version,
                "policy": policy_result,
                "answer": _workflow_answer(request, route, context, verdict),
            }
        )
    return results


def _context(request: Request, store: Store | None) -> Context:
    text = describe_hours(store, REPLAY_NOW) if store else f"Store {request.store_id} is not in the store directory."
    item = ContextItem(source="store_hours", source_id=request.store_id, version="replay", score=None, text=text)
    return Context(items=[item], token_count=0, token_budget=1024)


def _policy_engine(policies_dir: Path) -> Any:
    """The tree's policy rules, when it has any (the engine and its rules may not exist in an older tree)."""
    if not any(policies_dir.glob("*.y*ml")):
        return None
    from services.policy.engine import PolicyEngine

    return PolicyEngine.from_file(policies_dir)


def _policy(engine: Any, request: Request, intent: str, context: Context) -> tuple[Verdict, dict[str, Any] | None]:
    if engine is None:
        return Verdict.ALLOW, None
    from services.policy.facts import extract_sourced_facts

    outcome, _ = engine.decide_strictest(extract_sourced_facts(request, intent, context).variants)
    return outcome.verdict, {
        "version": engine.version,
        "verdict": outcome.verdict.value,
        "rules": [finding.rule_id for finding in outcome.findings],
    }


def _workflow_answer(request: Request, route: RouteDecision, context: Context, verdict: Verdict) -> str | None:
    if route.kind != RouteKind.WORKFLOW or verdict in (Verdict.BLOCK, Verdict.ESCALATE):
        return None
    governance = Governance(verdict=verdict, findings=[], redacted_text=request.text)
    record = Governed(request=request, route=route, context=context, governance=governance, timings=[])
    return workflow_answer(record).text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.export.replay", description=__doc__)
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS)
    args = parser.parse_args(argv)
    print(json.dumps({"code": str(Path(services.__file__).resolve().parent.parent)}))
    for result in replay(load_requests(args.requests)):
        print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
