"""Data questions answered from data: deterministic, versioned workflows over the stitched reference data (stock,
price, discount limit, return window, loyalty tier, store hours). A workflow either answers, with the data items
it read as provenance, or declines with the reason, and the request goes on to its route's first fallback.

Wording lives in workflow_phrases.yaml (per language); money is written for the request's locale and times are
the store's own. Nothing here calls a model or reads the network: `run_workflow` is pure.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence, Set
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Final

import yaml

from services.policy.engine import APPROVED_ACTION, PolicyEngine
from services.policy.facts import SourcedFacts, extract_sourced_facts
from services.stitcher.inventory import StockRow, in_stock_at, relevant_rows
from services.stitcher.prep import StockLine, stock_row
from services.stitcher.store_hours import asked_day, describe_day, describe_hours, local_now
from services.wire.models import ContextItem, Customer, Request, Store, Verdict

PHRASES_FILE: Final = Path(__file__).resolve().parent / "workflow_phrases.yaml"
WORKFLOW_SOURCE: Final = "workflow"
ELSEWHERE_STORES: Final = 3  # other stores named when this one has none
CATALOGUE_MATCHES: Final = 24  # variants of the asked product a stock answer lists at most
CURRENCY_SYMBOLS: Final[Mapping[str, str]] = {"USD": "$", "CAD": "CA$", "GBP": "£", "EUR": "€"}
# languages that write 1.099,00 € rather than €1,099.00
COMMA_DECIMAL_LANGUAGES: Final = frozenset({"de", "fr", "nl", "es", "it"})
_BALANCE = re.compile(r"\b(points?|balance|credit|rewards?|vouchers?|cashback)\b", re.IGNORECASE)


@dataclass(frozen=True)
class WorkflowData:
    """What the stitcher looked up for one request: everything a workflow may read."""

    request: Request
    store: Store | None
    now_utc: datetime
    facts: Mapping[str, str]
    policy: PolicyEngine
    # what the policy is evaluated on (services.policy.facts.SourcedFacts.variants); by default the facts alone
    fact_variants: tuple[Mapping[str, str], ...] = ()
    rows: Sequence[StockRow] = ()  # this store's stock
    catalogue: Sequence[StockRow] = ()  # one row per SKU in the chain, for what a store does not carry
    vocabulary: Set[str] | None = None
    elsewhere: Callable[[Store, Sequence[str]], list[tuple[Store, int]]] = lambda _store, _skus: []
    customer: Customer | None = None


@dataclass(frozen=True)
class WorkflowAnswer:
    workflow: str
    version: str
    text: str
    sources: tuple[ContextItem, ...] = field(default=())

    def items(self) -> list[ContextItem]:
        """The answer as the context's first item (what the answerer sends), then the data it was read from."""
        answer = ContextItem(source=WORKFLOW_SOURCE, source_id=self.workflow, version=self.version, text=self.text)
        return [answer, *self.sources]


@dataclass(frozen=True)
class Declined:
    workflow: str
    reason: str


Outcome = WorkflowAnswer | Declined


@dataclass(frozen=True)
class Phrases:
    version: str
    by_language: Mapping[str, Mapping[str, str]]

    def say(self, locale: str, key: str, **values: object) -> str:
        language = locale.split("-")[0].lower()
        phrase = self.by_language.get(language, {}).get(key) or self.by_language["en"][key]
        return phrase.format(**values)


@functools.cache
def load_phrases(path: Path = PHRASES_FILE) -> Phrases:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    languages = {k: v for k, v in data.items() if k != "version"}
    if "en" not in languages:
        raise ValueError(f"{path}: the English phrases (key en) are missing: every other language falls back to them")
    return Phrases(version=str(data["version"]), by_language=languages)


def money(cents: int, currency: str, locale: str) -> str:
    """229.00 in the locale's way: `$229.00`, `£1,099.00`, `229,00 €`, `1.099,00 €`."""
    symbol = CURRENCY_SYMBOLS.get(currency, currency + " ")
    amount = f"{cents / 100:,.2f}"
    if locale.split("-")[0].lower() in COMMA_DECIMAL_LANGUAGES:
        amount = amount.replace(",", " ").replace(".", ",").replace(" ", ".")
        return f"{amount} {symbol.strip()}"
    return f"{symbol}{amount}"


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _store_name(data: WorkflowData) -> str:
    return data.store.name if data.store else data.request.store_id


def _stock_items(rows: Sequence[StockRow]) -> tuple[ContextItem, ...]:
    return tuple(
        ContextItem(
            source="inventory",
            source_id=row.key,
            version=str(row.updated_at),
            text=stock_row(StockLine(row.sku, row.product, row.variant, row.quantity, row.price_cents, row.currency)),
        )
        for row in rows
    )


def _store_item(store: Store) -> ContextItem:
    return ContextItem(source="store", source_id=store.store_id, version=str(store.updated_at), text=store.name)


@dataclass(frozen=True)
class _Asked:
    """The product and variants a request asks about, and which of them this store holds."""

    product: str
    skus: tuple[str, ...]
    here: tuple[StockRow, ...]


def _asked(data: WorkflowData) -> _Asked | None:
    """The catalogue's best match for the request (a product and the variants it names), or None."""
    matches = relevant_rows(data.request.text, data.catalogue, data.vocabulary, limit=len(data.catalogue))
    if not matches:
        return None
    by_sku = {row.sku: row for row in data.rows}
    # products the request matches equally well ("the blender": eight lines): the first this store carries
    products = list(dict.fromkeys(row.product for row, _ in matches))
    product = next((p for p in products if any(r.sku in by_sku for r, _ in matches if r.product == p)), products[0])
    skus = tuple(row.sku for row, _ in matches if row.product == product)[:CATALOGUE_MATCHES]
    return _Asked(product, skus, tuple(by_sku[s] for s in skus if s in by_sku))


def _product_at_store(data: WorkflowData, name: str) -> tuple[Store, _Asked] | Declined:
    """The request's store and the product it asks about, or why a workflow cannot answer."""
    if data.store is None:
        return Declined(name, f"store {data.request.store_id} is not in the store directory")
    asked = _asked(data)
    if asked is None:
        return Declined(name, "no product in the catalogue matches the request")
    return data.store, asked


def _variant(row: StockRow) -> str:
    return row.variant or row.product


def store_hours(data: WorkflowData) -> Outcome:
    name = "workflow.store_hours"
    if data.store is None:
        return Declined(name, f"store {data.request.store_id} is not in the store directory")
    local = local_now(data.store, data.now_utc)
    day = asked_day(data.request.text, local.date())
    # the day asked about, or with none named the whole picture: now, today, tomorrow, what is coming, the week
    hours = describe_day(data.store, data.now_utc, day) if day is not None else describe_hours(data.store, data.now_utc)
    return WorkflowAnswer(name, "store-hours-v2", hours, (_store_item(data.store),))


def stock_check(data: WorkflowData) -> Outcome:
    found = _product_at_store(data, "workflow.stock_check")
    if isinstance(found, Declined):
        return found
    here, asked = found
    locale, say = data.request.locale, load_phrases().say
    store = here.name
    if not asked.here:
        text = say(locale, "not_carried", store=store, product=asked.product)
    else:
        carried = {row.sku: row for row in asked.here}
        lines = []
        for sku in asked.skus:
            row = carried.get(sku)
            if row is None:
                continue
            key = "stock_line" if row.quantity > 0 else "stock_line_sold_out"
            lines.append(say(locale, key, variant=_variant(row), quantity=row.quantity))
        text = say(locale, "stock_here", product=asked.product, store=store, lines="; ".join(lines))
    if not any(row.quantity > 0 for row in asked.here):
        text += " " + _elsewhere(data, here, asked)
    return WorkflowAnswer(
        "workflow.stock_check", "stock-check-v1", text, (_store_item(here), *_stock_items(asked.here))
    )


def _elsewhere(data: WorkflowData, store: Store, asked: _Asked) -> str:
    say, locale = load_phrases().say, data.request.locale
    found = data.elsewhere(store, asked.skus)[:ELSEWHERE_STORES]
    if not found:
        return say(locale, "elsewhere_none", region=store.region)
    named = ", ".join(
        say(locale, "elsewhere_store", name=other.name, store_id=other.store_id, quantity=quantity)
        for other, quantity in found
    )
    return say(locale, "elsewhere", region=store.region, stores=named)


def price_check(data: WorkflowData) -> Outcome:
    if data.facts.get("discount_percent") is not None:
        return discount_request(data)  # "what is it after 10% off": the discount workflow gives both prices
    found = _product_at_store(data, "workflow.price_check")
    if isinstance(found, Declined):
        return found
    here, asked = found
    locale, say = data.request.locale, load_phrases().say
    store = here.name
    if not asked.here:
        text = say(locale, "price_not_carried", store=store, product=asked.product)
    elif len({row.price_cents for row in asked.here}) == 1:
        row = asked.here[0]
        text = say(
            locale, "price_one", product=asked.product, store=store, price=money(row.price_cents, row.currency, locale)
        )
    else:
        lines = "; ".join(
            say(locale, "price_line", variant=_variant(r), price=money(r.price_cents, r.currency, locale))
            for r in asked.here
        )
        text = say(locale, "price_many", product=asked.product, store=store, lines=lines)
    return WorkflowAnswer(
        "workflow.price_check", "price-check-v1", text, (_store_item(here), *_stock_items(asked.here))
    )


def discount_request(data: WorkflowData) -> Outcome:
    """Whether the discount asked is within the staff limit, by the same policy the governor enforces, and the
    price it gives where the request names a product this store sells at one price."""
    name = "workflow.discount_request"
    percent = _number(data.facts.get("discount_percent"))
    if percent is None:
        return Declined(name, "the request names no discount percent")
    locale, say = data.request.locale, load_phrases().say
    outcome, _ = data.policy.decide_strictest(data.fact_variants or (data.facts,))
    asked = _fmt(percent)
    cap = outcome.caps.get("discount_percent")
    if outcome.verdict in (Verdict.ESCALATE, Verdict.BLOCK):
        return WorkflowAnswer(name, "discount-v1", say(locale, "discount_needs_approval", percent=asked))
    approved = any(finding.action == APPROVED_ACTION for finding in outcome.findings)
    if cap is not None and cap < percent:
        text, percent = say(locale, "discount_capped", cap=_fmt(cap), percent=asked), cap
    elif approved:
        text = say(locale, "discount_approved", percent=asked, manager=data.facts.get("approved_by", ""))
    else:
        text = say(locale, "discount_within", percent=asked)
    asked_product = _asked(data) if data.catalogue else None
    sources: tuple[ContextItem, ...] = ()
    if asked_product and asked_product.here and len({r.price_cents for r in asked_product.here}) == 1:
        row = asked_product.here[0]
        discounted = round(row.price_cents * (100 - percent) / 100)
        text += " " + say(
            locale,
            "discount_price",
            product=asked_product.product,
            price=money(row.price_cents, row.currency, locale),
            discounted=money(discounted, row.currency, locale),
            percent=_fmt(percent),
        )
        sources = _stock_items(asked_product.here[:1])
    return WorkflowAnswer(name, f"discount-v1+{data.policy.version}", text, sources)


def return_or_refund(data: WorkflowData) -> Outcome:
    """Whether a purchase is inside its return window: the window is the threshold of the policy's return-window
    rule that applies to this customer (the rule the governor escalates on), so the two never disagree."""
    name = "workflow.return_or_refund"
    days = _number(data.facts.get("days_since_purchase"))
    if days is None:
        return Declined(name, "the request gives no purchase date")
    # the shortest window any trusted or claimed fact gives: a client's word can shorten it, never lengthen it
    windows = [w for v in data.fact_variants or (data.facts,) if (w := return_window(data.policy, v)) is not None]
    window = min(windows, default=None)
    if window is None:
        return Declined(name, "no return-window rule of the policy applies to this request")
    key = "return_within" if days <= window else "return_past"
    text = load_phrases().say(data.request.locale, key, days=_fmt(days), window=_fmt(window))
    return WorkflowAnswer(name, f"return-window-v1+{data.policy.version}", text)


def return_window(policy: PolicyEngine, facts: Mapping[str, str]) -> float | None:
    """The day count of the first return-window rule whose other conditions hold for these facts."""
    for rule in policy.rules:
        spec = rule.spec
        if spec.kind != "return_window" or spec.stage != "input":
            continue
        thresholds = [c.gt for c in spec.when if c.fact == "days_since_purchase" and c.gt is not None]
        others = [c for c in spec.when if c.fact != "days_since_purchase"]
        if thresholds and all(c.holds(facts) for c in others):
            return float(thresholds[0])
    return None


def loyalty_account(data: WorkflowData) -> Outcome:
    name = "workflow.loyalty_account"
    if data.customer is None:
        return Declined(name, "the request names no known loyalty customer")
    if _BALANCE.search(data.request.text):
        return Declined(name, "points balances are not in Switchyard's reference data")
    say, locale, customer = load_phrases().say, data.request.locale, data.customer
    offers = say(locale, "offers_allowed" if customer.consent_marketing else "offers_refused")
    text = say(locale, "loyalty_tier", customer_id=customer.customer_id, tier=customer.tier, offers=offers)
    source = ContextItem(
        source="customer", source_id=customer.customer_id, version=str(customer.updated_at), text=customer.tier
    )
    return WorkflowAnswer(name, "loyalty-v1", text, (source,))


def order_status(data: WorkflowData) -> Outcome:
    return Declined("workflow.order_status", "order data is not connected to Switchyard")


WORKFLOWS: Final[Mapping[str, Callable[[WorkflowData], Outcome]]] = {
    "workflow.store_hours": store_hours,
    "workflow.stock_check": stock_check,
    "workflow.price_check": price_check,
    "workflow.discount_request": discount_request,
    "workflow.return_or_refund": return_or_refund,
    "workflow.loyalty_account": loyalty_account,
    "workflow.order_status": order_status,
}


def workflow_facts(
    request: Request, intent: str, customer: Customer | None, *, approval_verified: bool = False
) -> SourcedFacts:
    """The policy facts of the request as the governor extracts them, with the tier from the customer table."""
    tier = customer.tier if customer is not None else None
    return extract_sourced_facts(request, intent, None, approval_verified=approval_verified, reference_tier=tier)


def stocked_elsewhere(
    stores: Mapping[str, Store],
    group: Callable[[str], Mapping[str, StockRow]],
    store: Store,
    skus: Sequence[str],
) -> list[tuple[Store, int]]:
    """The other stores of `store`'s region holding any of these SKUs, with the units, most units first."""
    region = [s.store_id for s in stores.values() if s.region == store.region and s.store_id != store.store_id]
    return [(stores[store_id], units) for store_id, units in in_stock_at(group, region, skus)]


def run_workflow(route_id: str, data: WorkflowData) -> Outcome | None:
    """The workflow of a route, run; None for a workflow route with no data workflow (workflow.escalate)."""
    workflow = WORKFLOWS.get(route_id)
    if workflow is None:
        return None
    outcome = workflow(data)
    if isinstance(outcome, WorkflowAnswer):
        return WorkflowAnswer(
            outcome.workflow, f"{outcome.version}+{load_phrases().version}", outcome.text, outcome.sources
        )
    return outcome
