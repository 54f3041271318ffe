"""Rows the telemetry writer derives from chain records, feedback and model calls."""

from __future__ import annotations

from services.telemetry.rows import (
    ANSWER_COLUMNS,
    FEEDBACK_COLUMNS,
    RULE_VERDICT_COLUMNS,
    answer_row,
    feedback_row,
    rule_verdict_rows,
)
from services.wire.models import Answer, Feedback, FeedbackKind, Finding
from tests.unit.chain_records import answered


def audited_with_findings() -> dict[str, object]:
    record = answered("r-1")
    record.governance.findings = [
        Finding(rule_id="pii.email", rule_version="g-3", kind="pii.email", action="mask", detail="e-mail"),
        Finding(rule_id="policy.discount", rule_version="p-7", kind="policy.discount_limit", action="escalate",
                detail="25% > 20%"),
    ]  # fmt: skip
    answer: Answer = record.answer
    answer.output_findings = [
        Finding(rule_id="out.price", rule_version="g-3", kind="output.price_claim", action="block", detail="price")
    ]
    answer.failover = ["primary: timeout", "secondary"]
    value = record.model_dump(mode="json")
    value["audit"] = {"audit_id": "a", "chain_key": "0417", "prev_hash": "", "hash": "h", "recorded_at": 99, "seq": 1}
    return value


def test_every_finding_becomes_one_rule_verdict_row_with_its_rule_version_and_stage() -> None:
    rows = [dict(zip(RULE_VERDICT_COLUMNS, row, strict=True)) for row in rule_verdict_rows(audited_with_findings())]
    assert [(r["stage"], r["rule_id"], r["rule_version"], r["action"]) for r in rows] == [
        ("governor", "pii.email", "g-3", "mask"),
        ("governor", "policy.discount", "p-7", "escalate"),
        ("answerer", "out.price", "g-3", "block"),
    ]
    assert {r["request_id"] for r in rows} == {"r-1"} and {r["route"] for r in rows} == {"model.general"}


def test_the_answer_row_keeps_the_provider_chain_tried_for_failover_counts() -> None:
    row = dict(zip(ANSWER_COLUMNS, answer_row(audited_with_findings()), strict=True))
    assert row["failover"] == ["primary: timeout", "secondary"]


def test_a_rating_becomes_a_feedback_row_with_its_optional_fields_empty() -> None:
    feedback = Feedback(
        feedback_id="f-1", request_id="r-1", kind=FeedbackKind.RATING, rating=2, author="staff-9", created_at=1000
    )
    row = dict(zip(FEEDBACK_COLUMNS, feedback_row(feedback.model_dump(mode="json")), strict=True))
    assert (row["kind"], row["rating"], row["corrected_text"], row["outcome"]) == ("RATING", 2, None, None)
