"""The data workflows answer stock, price, discount, return-window, loyalty and store-hours questions from the seeded
reference data and the policy, in the request's locale, or decline with the reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from services.policy.engine import PolicyEngine
from services.settings import get_settings
from services.stitcher.workflows import Declined, WorkflowAnswer, load_phrases, money, run_workflow
from services.tools.seeded import SeededReference
from services.wire.models import Channel, Request

NOW = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> SeededReference:
    return SeededReference()


@pytest.fixture(scope="module")
def policy() -> PolicyEngine:
    return PolicyEngine.from_file(get_settings().policies)


def ask(
    reference: SeededReference, policy: PolicyEngine, route: str, text: str, store: str = "0007", **fields: Any
) -> WorkflowAnswer | Declined:
    request = Request(
        request_id="w-1", store_id=store, terminal_id="pos-1", channel=Channel.POS, text=text, created_at=0, **fields
    )
    outcome = run_workflow(route, reference.workflow_data(request, route.removeprefix("workflow."), policy, NOW))
    assert outcome is not None
    return outcome


def answered(outcome: WorkflowAnswer | Declined) -> WorkflowAnswer:
    assert isinstance(outcome, WorkflowAnswer), outcome
    return outcome


def seed_rows(reference: SeededReference, store: str, product: str, size: str) -> list[Any]:
    return [r for r in reference.group(store).values() if r.product == product and r.variant.split(" / ")[0] == size]


def test_a_stock_question_with_a_size_states_each_colours_units_at_this_store(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    rows = seed_rows(reference, "0007", "Waxed field jacket", "M")
    assert rows, "the seed stocks the jacket in M at store 0007"
    answer = answered(ask(reference, policy, "workflow.stock_check", "is the waxed field jacket in stock in size M?"))
    for row in rows:
        stated = f"{row.variant}: {row.quantity} in stock" if row.quantity else f"{row.variant}: sold out"
        assert stated in answer.text
    assert {item.source_id for item in answer.sources if item.source == "inventory"} == {r.key for r in rows}
    assert answer.workflow == "workflow.stock_check" and answer.version.endswith(load_phrases().version)


def test_a_product_the_store_does_not_carry_names_other_stores_of_its_region_with_units(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    store = reference.stores["0007"]
    carried = {row.product for row in reference.group("0007").values()}
    product = next(row.product for row in reference.catalogue.values() if row.product not in carried)
    answer = answered(ask(reference, policy, "workflow.stock_check", f"do you have the {product}?"))
    assert f"does not carry the {product}" in answer.text
    assert f"In stock at other {store.region} stores:" in answer.text
    named = [s for s in reference.stores.values() if f"{s.name}: " in answer.text]
    assert named and all(s.region == store.region and s.store_id != "0007" for s in named)


def test_a_product_no_catalogue_has_is_declined_for_the_model(reference: SeededReference, policy: PolicyEngine) -> None:
    outcome = ask(reference, policy, "workflow.stock_check", "any unicorn slippers left?")
    assert outcome == Declined("workflow.stock_check", "no product in the catalogue matches the request")


def test_a_price_is_written_for_the_requests_locale(reference: SeededReference, policy: PolicyEngine) -> None:
    store = next(
        s
        for s, rows in reference.groups.items()
        if any(r.product == "Brewmaster espresso machine" and r.currency == "EUR" for r in rows.values())
    )
    german = answered(
        ask(
            reference,
            policy,
            "workflow.price_check",
            "was kostet the brewmaster espresso machine",
            store,
            locale="de-DE",
        )
    )
    assert "449,00 €" in german.text and "kostet" in german.text
    english = answered(
        ask(reference, policy, "workflow.price_check", "price of the brewmaster espresso machine?", store)
    )
    assert "€449.00" in english.text


@pytest.mark.parametrize(
    ("cents", "currency", "locale", "written"),
    [
        (22900, "USD", "en-US", "$229.00"),
        (109900, "GBP", "en-GB", "£1,099.00"),
        (109900, "EUR", "de-DE", "1.099,00 €"),
        (5499, "CAD", "en-CA", "CA$54.99"),
        (1000, "SEK", "en-US", "SEK 10.00"),
    ],
)
def test_money_is_written_the_locales_way(cents: int, currency: str, locale: str, written: str) -> None:
    assert money(cents, currency, locale) == written


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("can I give 15% off the blender", "A 15% discount is within what staff may give"),
        ("give her a fifth off the toaster", "A 20% discount is within what staff may give"),
        ("can we do a 1/3 discount for the display model", "A 33.33% discount needs a manager's approval"),
        ("25 percent off for this customer?", "A 25% discount needs a manager's approval"),
    ],
)
def test_a_discount_is_judged_by_the_policy_the_governor_enforces(
    reference: SeededReference, policy: PolicyEngine, text: str, says: str
) -> None:
    assert says in answered(ask(reference, policy, "workflow.discount_request", text)).text


def test_a_discount_on_a_product_sold_here_gives_the_price_after_it(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    answer = answered(ask(reference, policy, "workflow.discount_request", "10% off the waxed field jacket ok?"))
    assert "€229.00 becomes €206.10 after 10% off" in answer.text


def test_a_discount_request_without_a_percent_is_declined(reference: SeededReference, policy: PolicyEngine) -> None:
    outcome = ask(reference, policy, "workflow.discount_request", "any deals on today?")
    assert outcome == Declined("workflow.discount_request", "the request names no discount percent")


def test_the_return_window_is_the_policys_for_the_customers_tier(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    gold = next(c for c in reference.customers.values() if c.tier == "gold").customer_id
    basic = next(c for c in reference.customers.values() if c.tier == "basic").customer_id
    route = "workflow.return_or_refund"
    inside = answered(ask(reference, policy, route, "bought a kettle 12 days ago, can she return it?"))
    assert "Bought 12 days ago: within the 30-day return window" in inside.text
    late = answered(ask(reference, policy, route, "boots bought 40 days ago, refund?", customer_id=basic))
    assert "past the 30-day return window" in late.text
    member = answered(ask(reference, policy, route, "boots bought 40 days ago, refund?", customer_id=gold))
    assert "within the 60-day return window" in member.text
    assert ask(reference, policy, route, "can he return this?") == Declined(route, "the request gives no purchase date")


def test_loyalty_tier_is_answered_and_a_points_balance_is_declined(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    customer = reference.customers["C-5"]
    tier = answered(ask(reference, policy, "workflow.loyalty_account", "what tier is she on?", customer_id="C-5"))
    assert f"Customer C-5 is a {customer.tier} member" in tier.text
    points = ask(reference, policy, "workflow.loyalty_account", "how many points has she got", customer_id="C-5")
    assert isinstance(points, Declined) and "points balances" in points.reason
    nobody = ask(reference, policy, "workflow.loyalty_account", "what tier am I")
    assert nobody == Declined("workflow.loyalty_account", "the request names no known loyalty customer")


def test_order_status_and_unknown_stores_are_declined_and_escalation_has_no_workflow(
    reference: SeededReference, policy: PolicyEngine
) -> None:
    assert isinstance(ask(reference, policy, "workflow.order_status", "where is order 5521"), Declined)
    unknown = ask(reference, policy, "workflow.store_hours", "when do you close", store="9999")
    assert unknown == Declined("workflow.store_hours", "store 9999 is not in the store directory")
    request = Request(request_id="w", store_id="0007", terminal_id="t", channel=Channel.POS, text="help", created_at=0)
    assert run_workflow("workflow.escalate", reference.workflow_data(request, "complaint", policy, NOW)) is None


def test_store_hours_are_the_stores_own_in_its_time_zone(reference: SeededReference, policy: PolicyEngine) -> None:
    answer = answered(ask(reference, policy, "workflow.store_hours", "what are your opening hours?"))
    store = reference.stores["0007"]
    assert answer.text.startswith(store.name) and f"({store.timezone})" in answer.text
    assert "Regular hours:" in answer.text and "Tomorrow (Saturday 5 December)" in answer.text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("are you open on Sunday?", "on Sunday 6 December: 11:00-18:00."),
        ("hours on christmas eve", "on Thursday 24 December: 10:00-16:00 (closes early on 24 December)."),
        ("open on 25 December?", "on Friday 25 December: closed on Christmas Day."),
        ("when do you close tonight", "is open now, until 22:00 today."),
    ],
)
def test_a_question_about_one_day_gets_that_days_hours(
    reference: SeededReference, policy: PolicyEngine, text: str, says: str
) -> None:
    answer = answered(ask(reference, policy, "workflow.store_hours", text))
    assert answer.text == f"{reference.stores['0007'].name} {says}"
