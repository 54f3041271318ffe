"""The first logic of each stage, pure: routing by intent, PII masking, store hours in the store's time
zone, the audit hash chain, and the record each stage emits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from services.auditor.stage import Auditor
from services.governor.stage import mask_pii
from services.router.intents.classifier import IntentPrediction
from services.runtime.stage import compose, request_id_of, stage_timing
from services.settings import get_settings
from services.shared.route_table import load_route_table
from services.stitcher.store_hours import describe_hours
from services.tools.seed import stores
from services.wire.models import Channel, HoursException, OpeningHours, Request, RouteKind, Store


def request(text: str, store_id: str = "0417") -> Request:
    return Request(
        request_id="r-1", store_id=store_id, terminal_id="pos-1", channel=Channel.POS, text=text, created_at=0
    )


def test_a_store_hours_question_takes_the_deterministic_workflow_route() -> None:
    table = load_route_table(get_settings().route_table)
    prediction = IntentPrediction("store_hours", 0.97, "small_talk_other", 0.01)
    decision = table.decide(request("What time do you close today?"), prediction)
    assert decision.kind == RouteKind.WORKFLOW
    assert decision.intent == "store_hours"
    assert decision.provider is None
    assert decision.reason.startswith("intent store_hours 0.97")


def test_an_unsure_prediction_goes_to_the_safer_large_model_route_with_fallbacks() -> None:
    table = load_route_table(get_settings().route_table)
    prediction = IntentPrediction("complaint", 0.31, "small_talk_other", 0.28)
    decision = table.decide(request("Summarise this customer's complaint about the delivery."), prediction)
    assert decision.kind == RouteKind.LARGE_MODEL
    assert decision.intent == "complaint"
    assert decision.confidence < 0.5
    assert decision.fallbacks


def test_emails_and_phone_numbers_are_masked_with_stable_typed_tokens() -> None:
    text = "Mail jane.doe@example.com or call +1 (415) 555-0142; again: jane.doe@example.com"
    masked, findings = mask_pii(text)
    assert masked == "Mail <EMAIL_1> or call <PHONE_1>; again: <EMAIL_1>"
    assert sorted(f.rule_id for f in findings) == ["pii.email", "pii.phone"]


def test_short_numbers_such_as_sizes_and_prices_are_not_taken_for_phone_numbers() -> None:
    masked, findings = mask_pii("Size 42, price 129.99, store 0417, 25% off")
    assert findings == []
    assert masked == "Size 42, price 129.99, store 0417, 25% off"


@settings(max_examples=50)
@given(st.emails())
def test_any_email_address_is_masked(address: str) -> None:
    masked, _ = mask_pii(f"contact: {address} thanks")
    assert address not in masked


def make_store(timezone: str = "Europe/Berlin") -> Store:
    return Store(
        store_id="0417",
        name="Harbor Plaza",
        timezone=timezone,
        region="eu-central",
        opening_hours=[OpeningHours(weekday=d, opens="09:00", closes="20:00") for d in range(6)],
        exceptions=[
            HoursException(date="2026-12-24", opens="09:00", closes="14:00", note="closes early on 24 December")
        ],
        updated_at=0,
    )


def test_store_hours_are_told_in_the_stores_own_time_zone() -> None:
    # 07:30 UTC on a Wednesday is 08:30 in Berlin (winter): before opening.
    text = describe_hours(make_store(), datetime(2026, 11, 25, 7, 30, tzinfo=UTC))
    assert "opens at 09:00 today and closes at 20:00" in text
    assert "Local time now 08:30" in text


def test_todays_exception_replaces_the_regular_hours() -> None:
    text = describe_hours(make_store(), datetime(2026, 12, 24, 10, 0, tzinfo=UTC))
    assert "open now, until 14:00 today (closes early on 24 December)" in text


def test_a_weekday_without_hours_is_closed() -> None:
    text = describe_hours(make_store(), datetime(2026, 11, 29, 12, 0, tzinfo=UTC))  # a Sunday
    assert "is closed today" in text


def test_the_seed_has_at_least_1600_distinct_stores_and_is_deterministic() -> None:
    first, second = stores(1600, updated_at=0), stores(1600, updated_at=0)
    assert len({s.store_id for s in first}) == 1600
    assert first == second


def test_the_head_of_the_chain_becomes_the_request_field_and_timings_accumulate() -> None:
    incoming = request("hi").model_dump()
    routed = compose(incoming, "route", {"route_id": "x"}, stage_timing("router", 1, 2, 3))
    assert routed["request"] == incoming and routed["route"] == {"route_id": "x"}
    assert [t["stage"] for t in routed["timings"]] == ["router"]
    stitched = compose(routed, "context", {"items": []}, stage_timing("stitcher", 4, 5, 6))
    assert [t["stage"] for t in stitched["timings"]] == ["router", "stitcher"]
    assert stitched["request"] == incoming and stitched["route"] == {"route_id": "x"}
    assert request_id_of(stitched) == request_id_of(incoming) == "r-1"


def test_each_audit_record_chains_to_the_previous_one_of_its_store() -> None:
    from tests.unit.chain_records import answered

    auditor = Auditor()
    first = asyncio.run(auditor.decide(answered("a", store_id="0417")))
    other = asyncio.run(auditor.decide(answered("b", store_id="1600")))
    second = asyncio.run(auditor.decide(answered("c", store_id="0417")))
    assert first.prev_hash == "" and other.prev_hash == ""
    assert second.prev_hash == first.hash and (first.seq, second.seq, other.seq) == (1, 2, 1)
    assert first.audit_id != second.audit_id


def test_the_escalation_workflow_hands_over_to_staff_instead_of_telling_store_hours() -> None:
    from services.answerer.stage import HOLD_REPLY, workflow_answer
    from services.wire.models import ContextItem, Governance, Governed, Verdict
    from tests.unit.chain_records import answered

    record = answered("r-1").model_dump()
    record["route"].update(route_id="workflow.escalate", kind="WORKFLOW", provider=None)
    governed = Governed.model_validate(
        {
            **{k: v for k, v in record.items() if k != "answer"},
            "governance": Governance(verdict=Verdict.ALLOW, findings=[], redacted_text="hi"),
        }
    )
    assert workflow_answer(governed).text == HOLD_REPLY
    # a data workflow's answer is the stitcher's workflow item, named and versioned in the answer
    answer_item = ContextItem(
        source="workflow", source_id="workflow.store_hours", version="store-hours-v1", text="open"
    )
    governed = governed.model_copy(
        update={
            "route": governed.route.model_copy(update={"route_id": "workflow.store_hours"}),
            "context": governed.context.model_copy(update={"items": [answer_item, *governed.context.items]}),
        }
    )
    answer = workflow_answer(governed)
    assert (answer.text, answer.model, answer.model_version) == ("open", "workflow.store_hours", "store-hours-v1")
