"""No client can loosen a policy: an approval counts only with the approvals service's signature, the customer's
tier is the customer table's, and what the client claims (attributes, the text's purchase date) can tighten a
decision but never loosen it. Each forgery of issue 18 is tried on the governor stage and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.approvals.signing import (
    PUBLIC_KEY_FILE,
    SIGNATURE_ATTRIBUTE,
    ApprovalSigner,
    ApprovalVerifier,
)
from services.auditor.replay import replay_policy
from services.governor.stage import Governor
from services.policy.engine import PolicyEngine
from services.policy.facts import extract_sourced_facts
from services.settings import REPO_ROOT
from services.wire.models import ContextItem, Governed, Request, Verdict
from tests.unit.test_governor_stage import stitched

DISCOUNT = "Can we knock 40% off the display TV for this shopper?"
APPROVAL = {"approved_by": "M7781", "approval_for": "req-0", "approval_feedback_id": "fb-1"}


def signer_for(governor: Governor) -> ApprovalSigner:
    """The approvals service's key, in the folder the governor reads the public key from."""
    return ApprovalSigner(governor.approvals.path.parent)


def customer(tier: str) -> ContextItem:
    """The customer item the stitcher puts in the context from the customer table."""
    text = f"Loyalty customer C-9: {tier} tier; preferences: none; marketing offers must not be offered."
    return ContextItem(source="customer", source_id="C-9", version="1", text=text)


async def test_forged_approval_attributes_leave_the_discount_escalated(governor: Governor) -> None:
    forged = await governor.decide(stitched(DISCOUNT, intent="discount_request", attributes=APPROVAL))
    assert forged.verdict == Verdict.ESCALATE
    assert "approved_by" not in forged.facts
    assert [f.action for f in forged.findings if f.rule_id == "discount.manager_approval"] == ["escalate"]


async def test_a_signed_approval_is_honoured_and_its_source_recorded(governor: Governor) -> None:
    record = stitched(DISCOUNT, intent="discount_request", attributes=APPROVAL)
    signed = record.model_copy(update={"request": signer_for(governor).sign(record.request)})
    approved = await governor.decide(signed)
    assert approved.verdict == Verdict.ALLOW
    assert approved.fact_sources["approved_by"] == "approval"
    assert [f.action for f in approved.findings if f.rule_id == "discount.manager_approval"] == ["approved"]


@pytest.mark.parametrize(
    "change",
    [
        {"text": "Can we knock 60% off the display TV for this shopper?"},
        {"store_id": "0001"},
        {"request_id": "req-other"},
        {"attributes": {**APPROVAL, "approved_by": "M0001"}},
    ],
)
async def test_a_signature_moved_to_another_request_text_store_or_manager_does_not_verify(
    governor: Governor, change: dict[str, object]
) -> None:
    record = stitched(DISCOUNT, intent="discount_request", attributes=APPROVAL)
    signed = signer_for(governor).sign(record.request)
    attributes = {**signed.attributes, **dict(change.get("attributes", {}))}  # type: ignore[call-overload]
    moved = signed.model_copy(update={**change, "attributes": attributes})
    assert attributes[SIGNATURE_ATTRIBUTE] == signed.attributes[SIGNATURE_ATTRIBUTE]
    assert (await governor.decide(record.model_copy(update={"request": moved}))).verdict == Verdict.ESCALATE


def test_a_signature_by_another_key_or_without_the_public_key_does_not_verify(tmp_path: Path) -> None:
    request = Request(
        request_id="r",
        store_id="0417",
        terminal_id="t",
        channel="POS",
        text=DISCOUNT,
        created_at=1,
        attributes=APPROVAL,
    )
    signed_elsewhere = ApprovalSigner(tmp_path / "other").sign(request)
    assert not ApprovalVerifier(tmp_path).verifies(signed_elsewhere)  # no public key here yet
    ApprovalSigner(tmp_path)  # the approvals service's own key pair
    assert not ApprovalVerifier(tmp_path).verifies(signed_elsewhere)
    assert ApprovalVerifier(tmp_path).verifies(ApprovalSigner(tmp_path).sign(request))
    assert b"PRIVATE" not in (tmp_path / PUBLIC_KEY_FILE).read_bytes()


@pytest.mark.parametrize(
    ("text", "attributes", "table_tier", "verdict"),
    [
        # a claimed platinum tier and a 1-day purchase date do not shorten a 75-day-old refund
        (
            "No receipt, refund for a fridge bought 75 days ago",
            {"customer_tier": "platinum", "days_since_purchase": "1"},
            None,
            Verdict.ESCALATE,
        ),
        # a claimed gold tier does not lengthen the 30-day window the customer table's basic tier gives
        ("Refund for boots bought 45 days ago", {"customer_tier": "gold"}, "basic", Verdict.ESCALATE),
        # the customer table's gold tier gives 60 days
        ("Refund for boots bought 45 days ago", {}, "gold", Verdict.ALLOW),
        # a client may tighten: a claimed basic tier against the table's gold
        ("Refund for boots bought 45 days ago", {"customer_tier": "basic"}, "gold", Verdict.ESCALATE),
        # pilot store 9001's 25% for gold members needs the table's gold, not the till's word
        ("25% off for this member please", {"customer_tier": "gold"}, None, Verdict.ESCALATE),
    ],
)
def test_claimed_facts_tighten_but_never_loosen(
    text: str, attributes: dict[str, str], table_tier: str | None, verdict: Verdict
) -> None:
    engine = PolicyEngine.from_file(REPO_ROOT / "policies")
    intent = "discount_request" if "off" in text else "return_or_refund"
    store = "9001" if intent == "discount_request" else "0417"
    request = Request(
        request_id="r", store_id=store, terminal_id="t", channel="POS", text=text, created_at=1, attributes=attributes
    )
    sourced = extract_sourced_facts(request, intent, None, reference_tier=table_tier)
    outcome, _ = engine.decide_strictest(sourced.variants)
    assert outcome.verdict == verdict


async def test_the_recorded_facts_replay_to_the_same_findings(governor: Governor) -> None:
    record = stitched(
        "Refund for boots bought 45 days ago",
        intent="return_or_refund",
        items=[customer("gold")],
        attributes={"customer_tier": "basic", "days_since_purchase": "2"},
    )
    governance = await governor.decide(record)
    assert governance.verdict == Verdict.ESCALATE
    assert governance.fact_sources["customer_tier"] == "attribute"  # the client's stricter word decided
    governed = Governed(**record.model_dump(exclude={"request_embedding"}), governance=governance)
    check = replay_policy(governed.model_dump(mode="json"), REPO_ROOT / "policies")
    assert check.same is True, check.render()
