"""Fact extraction for the policy rules, and the labelled governance set's rule cases (100% by construction: rules
are deterministic, so any miss is a bug in a rule or in extraction)."""

from __future__ import annotations

import pytest

from services.policy.engine import PolicyEngine
from services.policy.facts import (
    days_since_purchase,
    discount_percent,
    extract_facts,
    extract_sourced_facts,
    largest_amount,
)
from services.settings import REPO_ROOT
from services.tools.eval.governance import load_cases, rule_accuracy
from services.wire.models import Channel, Context, ContextItem, Request, Verdict


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
    ("text", "percent"),
    [
        # the phrasings that got through with no discount fact
        ("can we do a 1/3 discount for the display model", "33.33"),
        ("give her a fifth off the blender", "20"),
        ("ten percent off the hoodie", "10"),
        # a percentage in words
        ("fifteen per cent off for a staff friend?", "15"),
        ("twenty-five percent off the floor lamp", "25"),
        ("would twenty five pct be ok", "25"),
        ("thirty-three percent discount on the rug", "33"),
        ("Seventeen Percent off the kettle", "17"),
        # a fraction of the price, in words, digits or a fraction sign
        ("could you take a third off the armchair", "33.33"),
        ("a quarter off if I take both?", "25"),
        ("two-thirds off the ex-display fridge", "66.67"),
        ("two thirds off because of the dent", "66.67"),
        ("one third off the mattress please", "33.33"),
        ("is a tenth off possible", "10"),
        ("an eighth off the paint", "12.5"),
        ("1/4 off the toaster since the box is torn", "25"),
        ("1/2 off this stool", "50"),
        ("3/4 off the last one?", "75"),
        ("1/3rd off the duvet", "33.33"),
        ("\u2153 off the curtains", "33.33"),
        ("a 1/5 reduction for the scratch", "20"),
        ("a quarter price discount on the desk", "25"),
        ("knock a third of the price off and I'll buy it", "33.33"),
        ("knock off a quarter and we have a deal", "25"),
        ("what about a discount of one fifth", "20"),
        # halves (HALF_OFF)
        ("half off the throw", "50"),
        ("half-off cushions?", "50"),
        ("half price on the shelf unit", "50"),
        # several asks: the largest wins, as with several percents
        ("10% or a third off, whichever you can", "33.33"),
        ("a third off, or 40% if it's the last one", "40"),
        ("twelve percent or 1/10 off", "12"),
    ],
)
def test_a_discount_in_words_or_as_a_fraction_is_a_discount_fact(text: str, percent: str) -> None:
    assert extract_facts(request(text), "discount_request", None)["discount_percent"] == percent


@pytest.mark.parametrize(
    "text",
    [
        "a third of the shelf is empty",
        "1/3 of the stock came in damaged",
        "the quarter ends on Friday, any deals?",
        "I'd like a fifth pair of the same socks",
        "can I grab a fifth pair off the rack",
        "bought on 3/4, is there a discount",
        "the receipt says 3/4/25 off-peak",
        "this is a third time I ask about a discount",
        "a third offer from the shop next door",
        "a third off-white cushion for the set",
        "1 1/2 off the delivery charge",  # a mixed number is an amount, not a fraction of the price
        "25 off?",  # 25 what: dollars or percent; an amount without a currency is not a percentage
        "20 pc off",  # pieces as often as percent
        "take 15 off percent",
    ],
)
def test_a_fraction_or_number_that_is_not_a_discount_is_no_discount_fact(text: str) -> None:
    assert "discount_percent" not in extract_facts(request(text), "discount_request", None)


@pytest.mark.parametrize(
    "unit",
    ["1/", "a third ", "a - ", "discount of ", "knock off ", "twenty-", "1/3 ", "1/3 of the ", "a third of the price "],
)
def test_a_hostile_text_of_fractions_is_scanned_to_the_end(unit: str) -> None:
    # the patterns are linear (test_pii_linear_time times them): this only has to finish, and still find an ask
    # at the very end of 50,000 characters
    text = (unit * (50_000 // len(unit) + 1))[:50_000]
    assert "discount_percent" not in extract_facts(request(text), "general", None)
    assert extract_facts(request(text + " a quarter off"), "general", None)["discount_percent"] == "25"


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


def test_a_days_since_purchase_attribute_from_the_till_cannot_shorten_what_the_text_says() -> None:
    sourced = extract_sourced_facts(
        request("bought it 90 days ago", days_since_purchase="12"), "return_or_refund", None
    )
    assert sourced.facts["days_since_purchase"] == "90"
    assert sourced.sources(sourced.facts)["days_since_purchase"] == "claim"
    assert [v.get("days_since_purchase") for v in sourced.variants] == [None, "90", "12", "90"]
    outcome, decided_on = PolicyEngine.from_file(REPO_ROOT / "policies").decide_strictest(sourced.variants)
    assert outcome.verdict == Verdict.ESCALATE and decided_on["days_since_purchase"] == "90"


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
