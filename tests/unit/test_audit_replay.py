"""`replay` re-runs the routing, context-selection and policy decisions of an audit record with the recorded
versions and inputs: a faithful record comes out the same, a doctored one shows where it differs."""

from __future__ import annotations

from typing import Any

import pytest

from services.auditor.record import tokenised
from services.auditor.replay import replay_policy, replay_routing, replay_stitching
from services.policy.engine import PolicyEngine
from services.router.intents.classifier import IntentPrediction
from services.settings import Settings
from services.shared.route_table import load_route_table
from services.stitcher.budget import fit_to_budget
from services.wire.models import Context, ContextItem, Request
from tests.unit.chain_records import answered

SETTINGS = Settings()
FACTS = {"intent": "discount_request", "discount_percent": "25", "customer_tier": "basic", "store_id": "0417"}


def decided_record() -> dict[str, Any]:
    """An audit record whose decisions were made by the real route table, budget fitter and policy engine."""
    record = answered("r-1")
    record.request.text = "Can I give this customer 25% off on the waxed jacket? Email jane@example.com"
    prediction = IntentPrediction("product_question", 0.91, "returns", 0.04)
    table = load_route_table(SETTINGS.route_table)
    record.route = table.decide(record.request, prediction, unhealthy_providers={"default": "p95 over 2 s"})
    candidates = [
        ContextItem(source="store_hours", source_id="0417", version="3", text="open 9-18", tokens=6),
        ContextItem(source="knowledge_base", source_id="kb-1", version="2", score=0.8, text="discount", tokens=40),
        ContextItem(source="knowledge_base", source_id="kb-2", version="2", score=0.5, text="long", tokens=90),
    ]
    kept, dropped = fit_to_budget(candidates, 60)
    record.context = Context(items=kept, token_count=sum(i.tokens for i in kept), token_budget=60, dropped=dropped)
    engine = PolicyEngine.from_file(SETTINGS.policies)
    record.governance.facts = FACTS
    record.governance.policy_version = engine.version
    record.governance.findings = engine.evaluate(FACTS)
    value = tokenised(record.model_dump(mode="json"))
    value["audit"] = {"audit_id": "a", "chain_key": "0417", "prev_hash": "", "hash": "", "recorded_at": 1, "seq": 1}
    return value


@pytest.fixture
def record() -> dict[str, Any]:
    return decided_record()


def test_a_faithful_record_replays_to_the_same_route_selection_and_policy_findings(record: dict[str, Any]) -> None:
    assert record["governance"]["findings"], "the facts should trigger at least one policy rule"
    for check in (
        replay_routing(record, SETTINGS.route_table),
        replay_stitching(record),
        replay_policy(record, SETTINGS.policies),
    ):
        assert check.same is True, check.render()


def test_the_route_is_replayed_with_the_providers_that_were_unhealthy_then(record: dict[str, Any]) -> None:
    assert record["route"]["route_id"] == "workflow.escalate", "the failover, not the intent's own route"
    check = replay_routing(record, SETTINGS.route_table)
    assert check.same is True and check.summary.startswith("route workflow.escalate")


def test_a_route_the_stitcher_moved_on_from_a_declined_workflow_replays_to_the_same_fallback(
    record: dict[str, Any],
) -> None:
    table = load_route_table(SETTINGS.route_table)
    request = Request.model_validate({k: v for k, v in record["request"].items() if k in Request.model_fields})
    routed = table.decide(request, IntentPrediction("stock_check", 0.91, "price_check", 0.04))
    record["route"] = table.fall_back(routed, "no product in the catalogue matches the request").model_dump(mode="json")
    check = replay_routing(record, SETTINGS.route_table)
    assert check.same is True and check.summary.startswith("route model.stock_check"), check.render()
    record["route"]["reason"] = routed.reason  # the move left out of the record: the replay no longer agrees
    assert replay_routing(record, SETTINGS.route_table).same is False


def test_a_doctored_route_shows_the_difference(record: dict[str, Any]) -> None:
    record["route"]["route_id"] = "model.somewhere_else"
    check = replay_routing(record, SETTINGS.route_table)
    assert check.same is False
    assert any(line.startswith("route_id: recorded 'model.somewhere_else'") for line in check.differences)


def test_an_unknown_route_table_version_is_reported_not_guessed(record: dict[str, Any]) -> None:
    record["route"]["route_table_version"] = "1999-01+000000000000"
    check = replay_routing(record, SETTINGS.route_table)
    assert check.same is None and "no revision" in check.summary


def test_an_item_dropped_as_over_budget_that_would_have_fitted_is_a_difference(record: dict[str, Any]) -> None:
    record["context"]["dropped"][0]["tokens"] = 5
    check = replay_stitching(record)
    assert check.same is False and "fits in the 14 tokens left" in check.differences[0]


def test_a_policy_finding_missing_from_the_record_is_a_difference(record: dict[str, Any]) -> None:
    removed = record["governance"]["findings"].pop()
    check = replay_policy(record, SETTINGS.policies)
    assert check.same is False
    assert any(removed["rule_id"] in line and line.startswith("replayed only") for line in check.differences)
