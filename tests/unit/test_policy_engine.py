"""The policy engine: the shipped rules, validation errors that name the file and the rule, deterministic order,
hot reload, and properties of rule evaluation over generated facts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.policy.engine import PolicyEngine, PolicyError, PolicyWatcher, load_policy
from services.settings import REPO_ROOT
from services.wire.models import Verdict

POLICIES = REPO_ROOT / "policies"


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.from_file(POLICIES)


def rule_ids(engine: PolicyEngine, facts: dict[str, str], stage: str = "input") -> list[str]:
    return [finding.rule_id for finding in engine.evaluate(facts, stage)]  # type: ignore[arg-type]


def test_discount_over_20_percent_needs_manager_approval(engine: PolicyEngine) -> None:
    outcome = engine.decide({"intent": "discount_request", "discount_percent": "25", "store_id": "0417"})
    assert outcome.verdict == Verdict.ESCALATE
    [finding] = outcome.findings
    assert finding.rule_id == "discount.manager_approval"
    assert finding.action == "escalate"
    assert finding.rule_version == "1"
    assert finding.inputs["discount_percent"] == "25"
    assert finding.inputs["policy_version"] == engine.version
    assert "25%" in finding.detail


def test_discount_of_20_percent_is_allowed(engine: PolicyEngine) -> None:
    assert engine.decide({"intent": "discount_request", "discount_percent": "20"}).verdict == Verdict.ALLOW


def test_pilot_store_exempts_gold_members_from_the_discount_approval(engine: PolicyEngine) -> None:
    facts = {"store_id": "9001", "customer_tier": "gold", "discount_percent": "25"}
    assert rule_ids(engine, facts) == ["discount.pilot_stores_25"]
    assert engine.decide({**facts, "customer_tier": "basic"}).verdict == Verdict.ESCALATE


def test_returns_after_30_days_need_approval_but_top_tier_has_60(engine: PolicyEngine) -> None:
    late = {"intent": "return_or_refund", "days_since_purchase": "45"}
    assert rule_ids(engine, late) == ["returns.window_standard"]
    assert rule_ids(engine, {**late, "customer_tier": "gold"}) == []
    assert rule_ids(engine, {**late, "customer_tier": "gold", "days_since_purchase": "61"}) == [
        "returns.window_top_tier"
    ]
    assert rule_ids(engine, {**late, "days_since_purchase": "30"}) == []


def test_price_match_against_a_marketplace_is_blocked_with_a_safe_reply(engine: PolicyEngine) -> None:
    outcome = engine.decide({"intent": "price_check", "marketplace": "amazon", "price_match": "true"})
    assert outcome.verdict == Verdict.BLOCK
    assert outcome.reply is not None and "online marketplaces" in outcome.reply


def test_medical_and_legal_advice_are_blocked(engine: PolicyEngine) -> None:
    assert rule_ids(engine, {"advice_topic": "medical"}) == ["advice.no_medical"]
    assert rule_ids(engine, {"advice_topic": "legal"}) == ["advice.no_legal"]


def test_self_service_discounts_late_in_the_evening_are_capped(engine: PolicyEngine) -> None:
    outcome = engine.decide({"channel": "KIOSK", "hour": "22", "discount_percent": "15"})
    assert outcome.action == "modify"
    assert outcome.caps == {"discount_percent": 10.0}
    assert engine.decide({"channel": "POS", "hour": "22", "discount_percent": "15"}).action == "allow"


def test_output_rules_do_not_run_on_the_input_and_input_rules_not_on_the_output(engine: PolicyEngine) -> None:
    assert rule_ids(engine, {"promises_refund": "true"}) == []
    assert rule_ids(engine, {"discount_percent": "50"}, "output") == []
    assert rule_ids(engine, {"promises_refund": "true"}, "output") == ["output.no_refund_promise"]


def test_stock_the_inventory_does_not_show_is_never_stated(engine: PolicyEngine) -> None:
    outcome = engine.decide({"states_stock": "true", "stock_supported": "false"}, "output")
    assert outcome.verdict == Verdict.BLOCK
    assert engine.decide({"states_stock": "true", "stock_supported": "true"}, "output").verdict == Verdict.ALLOW


def test_the_strictest_action_wins_and_findings_keep_priority_order(engine: PolicyEngine) -> None:
    facts = {"advice_topic": "legal", "discount_percent": "30", "marketplace": "ebay", "price_match": "true"}
    outcome = engine.decide(facts)
    assert [f.rule_id for f in outcome.findings] == [
        "advice.no_legal",
        "discount.manager_approval",
        "price_match.no_marketplaces",
    ]
    assert outcome.verdict == Verdict.BLOCK
    assert outcome.reply is not None and "legal advice" in outcome.reply


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


VALID = """
version: "t-1"
rules:
  - id: discount.limit
    version: 1
    kind: discount_limit
    description: limit
    when: [{fact: discount_percent, gt: 20}]
    action: require_approval
    reason: "{discount_percent}% is too much"
"""


def test_an_invalid_rule_is_reported_with_its_file_and_rule_id(tmp_path: Path) -> None:
    bad = write(
        tmp_path / "bad.yaml",
        VALID.replace("gt: 20", "gt: 20, lt: 50").replace("action: require_approval", "action: refuse"),
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    text = str(caught.value)
    assert f"{bad}: rule discount.limit: action" in text
    assert "when[0]" in text and "exactly one operator" in text


def test_a_block_rule_without_a_reply_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", VALID.replace("action: require_approval", "action: block\n    colour: red"))
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    assert "rule discount.limit: colour: unknown key" in str(caught.value)


def test_duplicate_rule_ids_across_files_and_unknown_exemptions_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", VALID)
    write(tmp_path / "b.yaml", VALID.replace('reason: "', 'exempts: [nothing.here]\n    reason: "'))
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path)
    problems = caught.value.problems
    assert any("b.yaml: rule discount.limit: duplicate rule id" in line for line in problems)
    assert any("exempts: unknown rule id 'nothing.here'" in line for line in problems)


def test_a_key_given_twice_and_broken_yaml_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "p.yaml", VALID.replace('version: "t-1"', 'version: "t-1"\nversion: "t-2"'))
    with pytest.raises(PolicyError, match="given twice"):
        load_policy(tmp_path)
    write(tmp_path / "p.yaml", "rules: [")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(tmp_path)


def test_the_version_changes_with_the_content(tmp_path: Path) -> None:
    first = load_policy(write(tmp_path / "p.yaml", VALID)).version
    second = load_policy(write(tmp_path / "p.yaml", VALID.replace("gt: 20", "gt: 25"))).version
    assert first.startswith("t-1#") and second.startswith("t-1#") and first != second


def test_a_changed_policy_is_reloaded_and_a_broken_change_keeps_the_last_good_one(tmp_path: Path) -> None:
    path = write(tmp_path / "p.yaml", VALID)
    now = [0.0]
    watcher = PolicyWatcher(tmp_path, check_every_s=1.0, clock=lambda: now[0])
    first = watcher.load()
    write(path, VALID.replace("gt: 20", "gt: 30"))
    os.utime(path, ns=(1, 10**18))
    assert watcher.current() is first  # not yet due for a check
    now[0] = 2.0
    second = watcher.current()
    assert second is not first
    assert second.evaluate({"discount_percent": "25"}) == []
    write(path, "rules: [")
    os.utime(path, ns=(1, 2 * 10**18))
    now[0] = 4.0
    assert watcher.current() is second


# -- properties --------------------------------------------------------------------------------------------------

FACT_VALUES = {
    "intent": st.sampled_from(["discount_request", "return_or_refund", "price_check", "complaint", "stock_check"]),
    "discount_percent": st.integers(0, 100).map(str),
    "days_since_purchase": st.integers(0, 400).map(str),
    "customer_tier": st.sampled_from(["basic", "silver", "gold", "platinum"]),
    "store_id": st.sampled_from(["0417", "9001", "1200"]),
    "channel": st.sampled_from(["POS", "KIOSK", "STORE_APP"]),
    "hour": st.integers(0, 23).map(str),
    "marketplace": st.sampled_from(["amazon", "ebay", "temu"]),
    "price_match": st.just("true"),
    "advice_topic": st.sampled_from(["medical", "legal"]),
}
facts_strategy = st.fixed_dictionaries({}, optional=FACT_VALUES)


@settings(max_examples=300, deadline=None)
@given(facts=facts_strategy)
def test_evaluation_is_deterministic_and_independent_of_fact_order(engine: PolicyEngine, facts: dict[str, str]) -> None:
    reordered = dict(reversed(list(facts.items())))
    assert engine.evaluate(facts) == engine.evaluate(reordered) == engine.evaluate(dict(facts))


@settings(max_examples=300, deadline=None)
@given(facts=facts_strategy)
def test_no_discount_over_20_percent_is_allowed_outside_the_pilot(engine: PolicyEngine, facts: dict[str, str]) -> None:
    outcome = engine.decide(facts)
    percent = float(facts.get("discount_percent", "0"))
    pilot = facts.get("store_id") in {"9001", "9002"} and facts.get("customer_tier") in {"gold", "platinum"}
    if percent > 20 and not (pilot and percent <= 25):
        assert outcome.verdict in (Verdict.ESCALATE, Verdict.BLOCK)


@settings(max_examples=300, deadline=None)
@given(facts=facts_strategy)
def test_a_late_return_is_never_simply_allowed(engine: PolicyEngine, facts: dict[str, str]) -> None:
    if facts.get("intent") != "return_or_refund":
        return
    days = float(facts.get("days_since_purchase", "0"))
    window = 60 if facts.get("customer_tier") in {"gold", "platinum"} else 30
    verdict = engine.decide(facts).verdict
    assert (verdict in (Verdict.ESCALATE, Verdict.BLOCK)) or days <= window


@settings(max_examples=200, deadline=None)
@given(facts=facts_strategy, extra=st.text(max_size=20))
def test_adding_an_unrelated_fact_changes_nothing(engine: PolicyEngine, facts: dict[str, str], extra: str) -> None:
    assert engine.evaluate(facts) == engine.evaluate({**facts, "unrelated_note": extra})
