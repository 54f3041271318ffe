"""Fact extraction for the policy rules, and the labelled governance set's rule cases (100% by construction: rules
are deterministic, so any miss is a bug in a rule or in extraction)."""

from __future__ import annotations

import pytest

from services.governor.eval import load_cases, rule_accuracy
from services.policy.engine import PolicyEngine
from services.policy.facts import days_since_purchase, discount_percent, extract_facts, largest_amount
from services.runtime.models import Channel, Context, ContextItem, Request
from services.settings import REPO_ROOT


def request(text: str, **attributes: str) -> Request:
    return Request(
        request_id="r",
        store_id="0417",
        terminal_id="t",
        channel=Channel.KIOSK,
        text=text,
        created_at=1_764_021_600_000,  # 2025-11-24 22:00 UTC
        attributes=attributes,
    )


@pytest.mark.parametrize(
    ("text", "percent"),
    [("25% off?", 25.0), ("a 30 percent discount", 30.0), ("12.5 per cent", 12.5), ("half price", 50.0), ("hi", None)],
)
def test_discount_percent_is_read_however_it_is_written(text: str, percent: float | None) -> None:
    assert discount_percent(text) == percent


@pytest.mark.parametrize(
    ("text", "days"),
    [
        ("I bought it 45 days ago", 45.0),
        ("purchased three weeks ago", 21.0),
        ("got it 2 months ago", 60.0),
        ("it's over 5 weeks since I bought it", 35.0),
        ("bought it last year", 365.0),
        ("it arrived broken", None),
    ],
)
def test_days_since_purchase_is_read_from_the_text(text: str, days: float | None) -> None:
    assert days_since_purchase(text) == days


def test_amounts_take_the_largest_in_any_currency() -> None:
    assert largest_amount("it was $1,249.50, now £999") == 1249.5
    assert largest_amount("40 dollars or 35 euros") == 40.0


def test_extracted_facts_cover_who_where_when_and_what() -> None:
    facts = extract_facts(
        request(
            "Can you price match Amazon? It's 25% cheaper, I bought it 40 days ago",
            customer_tier="Gold",
            region="north",
            timezone="Europe/London",
        ),
        "price_check",
        Context(
            items=[ContextItem(source="inventory", source_id="s", version="1", score=None, text="4 in stock")],
            token_count=1,
            token_budget=1,
        ),
    )
    assert facts == {
        "intent": "price_check",
        "store_id": "0417",
        "channel": "KIOSK",
        "hour": "22",
        "region": "north",
        "customer_tier": "gold",
        "discount_percent": "25",
        "days_since_purchase": "40",
        "marketplace": "amazon",
        "price_match": "true",
        "inventory_items": "1",
    }


def test_a_days_since_purchase_attribute_from_the_till_wins_over_the_text() -> None:
    facts = extract_facts(request("bought it 90 days ago", days_since_purchase="12"), "return_or_refund", None)
    assert facts["days_since_purchase"] == "12"


def test_medical_advice_needs_an_advice_question_not_just_a_product() -> None:
    assert extract_facts(request("is it safe to take ibuprofen with aspirin"), "product_question", None)[
        "advice_topic"
    ] == ("medical")
    assert "advice_topic" not in extract_facts(request("do you sell ibuprofen"), "product_question", None)


def test_every_rule_case_of_the_governance_set_evaluates_as_labelled() -> None:
    cases = [case for case in load_cases() if case["category"] == "policy"]
    accuracy, wrong = rule_accuracy(cases, PolicyEngine.from_file(REPO_ROOT / "policies"))
    assert len(cases) >= 80
    assert wrong == []
    assert accuracy == 1.0
