"""Facts the policy rules are evaluated on, extracted from the request (before the model) and from the answer
(after it): discount percent, amounts, days since purchase, marketplaces, advice topics, commitments, stock claims.

Every value is a string (Governance.facts and Finding.inputs are string maps); numbers are written without
trailing zeros so a fact reads the same however the customer wrote it. Extraction is deterministic.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.wire.models import Context, Request

NUMBER_WORDS: Final[Mapping[str, int]] = {
    "a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "thirty": 30, "forty": 40,
    "forty-five": 45, "fifty": 50, "sixty": 60, "ninety": 90, "a couple of": 2, "a few": 3, "several": 3,
}  # fmt: skip
UNIT_DAYS: Final[Mapping[str, int]] = {"day": 1, "week": 7, "fortnight": 14, "month": 30, "year": 365}

# a number starts where a run of digits does: a later start in the run fails the same way, and trying every one
# made a long run of digits take quadratic time
_NUM = r"((?<!\d)\d+(?:\.\d+)?|" + "|".join(sorted((re.escape(w) for w in NUMBER_WORDS), key=len, reverse=True)) + r")"
PERCENT: Final = re.compile(r"(\d{1,3}(?:\.\d+)?)\s*(?:%|percent\b|per\s*cent\b|pct\b)", re.I)
HALF_OFF: Final = re.compile(r"\b(half[- ](?:price|off)|50/50|1/2[- ]price)\b", re.I)
# a percentage written in words, one to ninety-nine ("ten percent", "twenty-five per cent"); not "a hundred
# percent", which is mostly said of certainty, not of a price
UNIT_WORDS: Final[Mapping[str, int]] = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
}  # fmt: skip
TEEN_WORDS: Final[Mapping[str, int]] = {
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS_WORDS: Final[Mapping[str, int]] = {
    "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90,
}  # fmt: skip


def _words(words: Mapping[str, int]) -> str:
    return "|".join(sorted(words, key=len, reverse=True))


WORD_PERCENT: Final = re.compile(
    rf"\b(?:({_words(TENS_WORDS)})(?:[- ]?({_words(UNIT_WORDS)}))?|({_words(TEEN_WORDS)})|({_words(UNIT_WORDS)}))"
    r"[\s-]*(?:percent\b|per\s*cent\b|pct\b|%)",
    re.I,
)
# a fraction of the price: "1/3", "a third", "two-thirds", "an eighth", "¼". Halves are HALF_OFF's ("and a half
# off" is mostly an amount or a time). A digit fraction is one digit over two to ten, not part of a date ("3/4/25")
# or of a mixed number ("1 1/2").
FRACTION_WORDS: Final[Mapping[str, int]] = {
    "third": 3, "quarter": 4, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8, "ninth": 9,
    "tenth": 10,
}  # fmt: skip
NUMERATOR_WORDS: Final[Mapping[str, int]] = {"a": 1, "an": 1, **UNIT_WORDS}
UNICODE_FRACTIONS: Final[Mapping[str, tuple[int, int]]] = {
    "½": (1, 2), "⅓": (1, 3), "⅔": (2, 3), "¼": (1, 4), "¾": (3, 4), "⅕": (1, 5), "⅖": (2, 5), "⅗": (3, 5),
    "⅘": (4, 5), "⅙": (1, 6), "⅚": (5, 6), "⅛": (1, 8), "⅜": (3, 8), "⅝": (5, 8), "⅞": (7, 8), "⅒": (1, 10),
}  # fmt: skip
FRACTION: Final = re.compile(
    r"(?<![\d/])(?<!\d )([1-9])/(10|[2-9])(?![\d/])(?:st|nd|rd|th)?"
    rf"|\b({_words(NUMERATOR_WORDS)})[\s-]+({_words(FRACTION_WORDS)})s?\b"
    rf"|([{''.join(UNICODE_FRACTIONS)}])",
    re.I,
)
# ...counted only as a discount: followed by "off", "discount", "reduction" or "markdown" (after at most "of the
# price": "a third of the price off"), or after "discount of", "knock off", "take off". So not "a third of the
# shelf", "1/3 of the stock", "a fifth pair", "the quarter ends" or a date.
_FRACTION_OF_PRICE = (
    r"(?:\s+(?:of\s+)?(?:the\s+|its\s+|their\s+|that\s+|this\s+)?(?:(?:sticker|list|retail|ticket|tag)\s+)?"
    r"(?:price|cost|total|bill|rrp|msrp|it|that|this)\b)?"
)
FRACTION_OFF: Final = re.compile(
    r"\b(?:discount|reduction|markdown)\s+of\s+(?:about\s+|around\s+|roughly\s+|maybe\s+|just\s+)?"
    rf"(?:{FRACTION.pattern})"
    rf"|\b(?:knock(?:ed|ing)?|take|taking|took)\s+off\s+(?:{FRACTION.pattern})"
    rf"|(?:{FRACTION.pattern}){_FRACTION_OF_PRICE}[\s-]*(?:off(?![\w-])|discount(?:ed)?\b|reduction\b|markdown\b)",
    re.I,
)
AMOUNT: Final = re.compile(
    r"(?:[$€£]\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?)|(?:\b(\d+)(?:\.(\d{1,2}))?\s?(?:dollars|usd|eur|euros|gbp|pounds|bucks)\b)",
    re.I,
)
DAYS_AGO: Final = re.compile(
    _NUM + r"\s+(day|week|fortnight|month|year)s?\s+(?:ago|back|old|since)\b"
    r"|(?:over|more than|almost|nearly|about|after)\s+" + _NUM + r"\s+(day|week|fortnight|month|year)s?\b"
    r"|\b(?:bought|purchased|got|ordered)\b[^.?!]{0,40}?\b" + _NUM + r"\s+(day|week|fortnight|month|year)s?\b",
    re.I,
)
_TIER: Final = re.compile(r"Loyalty customer [^:]{1,64}: (\w{1,32}) tier;")
MONTHS: Final[Mapping[str, int]] = {
    name: number
    for number, name in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}
_MONTH = (
    r"(?:jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?|sep(?:t(?:ember)?)?"
    r"|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?)"
)
# a date after a purchase cue: "bought on 20 October", "purchased October 3rd", "receipt says 28 Oct", "dated 3 Nov"
PURCHASE_DATE: Final = re.compile(
    r"\b(?:bought|purchased|ordered|got|receipt(?: is)?(?: dated| says| shows)?|dated)\b[^.?!\d]{0,20}?"
    r"(?:(?P<day1>[0-3]?\d)(?:st|nd|rd|th)?(?: of)? (?P<month1>" + _MONTH + r")\b"
    r"|(?P<month2>" + _MONTH + r")\.? (?P<day2>[0-3]?\d)(?:st|nd|rd|th)?\b)",
    re.I,
)
SALE_ITEM: Final = re.compile(r"\b(?:sale|clearance|marked down)\b", re.I)  # "sales" (receipt, associate) is not
LAST_PERIOD: Final = re.compile(r"\b(?:bought|purchased|got|ordered)\b[^.?!]{0,30}\blast\s+(week|month|year)\b", re.I)
MARKETPLACES: Final = (
    "amazon", "ebay", "temu", "aliexpress", "alibaba", "etsy", "shein", "wish.com", "walmart.com",
    "walmart marketplace", "mercado libre", "rakuten", "newegg", "facebook marketplace", "craigslist", "wayfair",
    "online marketplace",
)  # fmt: skip
MARKETPLACE: Final = re.compile(r"\b(" + "|".join(re.escape(m) for m in MARKETPLACES) + r")\b", re.I)
PRICE_MATCH: Final = re.compile(
    r"\bprice[- ]?match|\bmatch (?:the|their|that|a) (?:price|offer|deal)|\bbeat (?:the|their|that) price"
    r"|\bcheaper (?:on|at|from|online)\b",
    re.I,
)
MEDICAL_TERMS: Final = re.compile(
    r"\b(medic(?:ine|ation|al)|dos(?:e|age)|mg\b|symptoms?|diagnos\w*|prescri\w*|pregnan\w*|allerg\w*|rash|"
    r"infection|fever|ibuprofen|paracetamol|acetaminophen|aspirin|antibiotic\w*|blood pressure|diabet\w*|"
    r"migraine|asthma|inhaler|side effects?|overdose|supplements?|vitamins?|chest pain|insulin)\b",
    re.I,
)
ADVICE_CUE: Final = re.compile(
    r"\b(should i|should my|can i take|is it safe|safe to|how much .{0,30}(?:take|give)|what should|"
    r"recommend|treat|cure|help with my|do i need|am i|is my|good for my|mix\w*|together with|interact\w*)\b",
    re.I,
)
LEGAL_TERMS: Final = re.compile(
    r"\b(sue|suing|lawsuit|lawyer|attorney|legal advice|legally|my rights|liable|liability|small claims|court|"
    r"tenant law|contract law|consumer law|press charges|custody|will and testament)\b",
    re.I,
)

# -- commitments in an answer (the output guard's extractor) ---------------------------------------------------

_WE = r"\b(?:i|we|i'll|we'll|i will|we will|i can|we can|i've|we've|you will|you'll|you can|you are|you're)\b"
_NEGATED = re.compile(r"\b(not|n't|cannot|unable|no)\b", re.I)
COMMITMENTS: Final[Mapping[str, re.Pattern[str]]] = {
    "refund": re.compile(
        _WE + r"[^.?!]{0,40}\b(refund|reimburse|money back|credit your|full refund)"
        r"|\b(refund|money back)\b[^.?!]{0,30}\b(approved|processed|guaranteed|granted|on its way|issued)\b"
        r"|\b(refund|money back) is (?:yours|fine|no problem)\b",
        re.I,
    ),
    "discount": re.compile(
        _WE + r"[^.?!]{0,40}\b(discount|\d{1,3}\s*% off|percent off|take \d{1,3}|knock \w+ off|reduce the price)"
        r"|\b(discount|\d{1,3}\s*% off)\b[^.?!]{0,30}\b(approved|applied|granted|is yours|for you)\b",
        re.I,
    ),
    "price_match": re.compile(
        _WE + r"[^.?!]{0,40}\b(price[- ]?match|match (?:the|their|that|amazon|ebay)\w*|beat (?:the|their|that))"
        r"|\bprice match\b[^.?!]{0,30}\b(approved|applied|done|granted)\b",
        re.I,
    ),
    "delivery_date": re.compile(
        _WE + r"[^.?!]{0,40}\b(deliver\w*|arrive\w*|ship\w*|get it|have it)\b[^.?!]{0,30}"
        r"\b(by|on|tomorrow|within|before|guaranteed)\b"
        r"|\b(?:will|'ll)\s+(?:be\s+)?(?:delivered|arrive|ship(?:ped)?|reach you|be with you)\b[^.?!]{0,30}"
        r"\b(?:by|on|tomorrow|within|before|today|guaranteed)\b"
        r"|\bguaranteed (?:delivery|to arrive)\b",
        re.I,
    ),
    "warranty": re.compile(
        _WE + r"[^.?!]{0,40}\b(warrant\w*|guarantee (?:it|that it|the|a free|you)\w*|replace it for free"
        r"|free replacement)"
        r"|\b(warranty|guarantee)\b[^.?!]{0,30}\b(covers|extended|cover it|will cover)\b"
        r"|\blifetime (?:guarantee|warranty)\b",
        re.I,
    ),
    "exception": re.compile(
        _WE + r"[^.?!]{0,40}\b(make an exception|waive|override|special exception)"
        r"|\b(bend the rules|let it slide|let's make an exception)\b"
        r"|\b(exception|waiver)\b[^.?!]{0,30}\b(approved|granted|made)\b",
        re.I,
    ),
}
STOCK_COUNT: Final = re.compile(
    r"\b(\d+)\s+(?:units?|pieces?|items?|left|in stock|available|on (?:the )?shel(?:f|ves))\b", re.I
)
STOCK_CLAIM: Final = re.compile(
    r"\b(in stock|available (?:now|today|in store)|on the shelf|we have (?:it|them|some|plenty))\b", re.I
)
OUT_OF_STOCK_TEXT: Final = re.compile(r"\b(out of stock|sold out|none left|0 in stock|no stock)\b", re.I)
INVENTORY_QUANTITY: Final = re.compile(r"\b(\d+)\s+(?:units?|in stock|on hand|available)\b|\bquantity[:= ]+(\d+)", re.I)


REQUEST: Final = "request"  # the request's envelope (store, channel, time) and what its text asks for
REFERENCE: Final = "reference"  # Switchyard's reference data (the customer table's tier, the stock rows)
APPROVAL: Final = "approval"  # a manager's approval whose signature verified
CLAIM: Final = "claim"  # what the request text states about the world ("bought 3 days ago")
ATTRIBUTE: Final = "attribute"  # a client-set request attribute
TRUSTED_SOURCES: Final = frozenset({REQUEST, REFERENCE, APPROVAL})


@dataclass(frozen=True)
class SourcedFacts:
    """The facts of one request by where they came from. `variants` are what the policy is evaluated on: the
    trusted facts alone, then with the text's claims, then with the client's attributes too; the strictest
    outcome wins (PolicyEngine.decide_strictest), so claims and attributes can tighten a decision but never
    loosen one."""

    trusted: dict[str, str]
    trusted_sources: dict[str, str]
    claims: dict[str, str]
    attributes: dict[str, str]

    @property
    def variants(self) -> tuple[dict[str, str], ...]:
        """Trusted facts alone; with the text's claims; with claims and attributes, each taking precedence where
        both give a fact (a purchase date), so any mix of the client's words is tried."""
        return (
            self.trusted,
            {**self.trusted, **self.claims},
            {**self.trusted, **self.claims, **self.attributes},
            {**self.trusted, **self.attributes, **self.claims},
        )

    @property
    def facts(self) -> dict[str, str]:
        """Every fact, the trusted value where there is one, else the text's claim, else the attribute."""
        return {**self.attributes, **self.claims, **self.trusted}

    def sources(self, facts: Mapping[str, str]) -> dict[str, str]:
        """Where each of `facts` (one of the variants) came from."""
        found = {}
        for name, value in facts.items():
            if self.trusted.get(name) == value:
                found[name] = self.trusted_sources[name]
            elif self.attributes.get(name) == value:
                found[name] = ATTRIBUTE
            else:
                found[name] = CLAIM
        return found


def extract_facts(request: Request, intent: str, context: Context | None) -> dict[str, str]:
    """The facts the input rules read, as recorded (trusted values first; see extract_sourced_facts)."""
    return extract_sourced_facts(request, intent, context).facts


def extract_sourced_facts(
    request: Request,
    intent: str,
    context: Context | None,
    *,
    approval_verified: bool = False,
    reference_tier: str | None = None,
) -> SourcedFacts:
    """The facts the input rules read: who asks, where, when, and what the request text asks for, each with its
    source. A manager's approval counts only where `approval_verified` (its signature checked by the caller); the
    customer's tier is the customer table's (`reference_tier`, else the stitched customer item), never the
    client's word alone."""
    text = request.text
    trusted: dict[str, str] = {
        "intent": intent,
        "store_id": request.store_id,
        "channel": request.channel.value,
        "hour": str(_local_hour(request)),
    }
    tier = reference_tier or _stitched_tier(context)
    if tier:
        trusted["customer_tier"] = tier.strip().lower()
    attributes = request.attributes
    approved_by, approval_for = attributes.get("approved_by", "").strip(), attributes.get("approval_for", "").strip()
    if approved_by and approval_for and approval_verified:
        trusted["approved_by"], trusted["approval_for"] = approved_by, approval_for
    _put(trusted, "discount_percent", discount_percent(text))
    _put(trusted, "amount", largest_amount(text))
    if SALE_ITEM.search(text):
        trusted["sale_item"] = "true"
    marketplace = MARKETPLACE.search(text)
    if marketplace:
        trusted["marketplace"] = marketplace.group(1).lower()
    if PRICE_MATCH.search(text):
        trusted["price_match"] = "true"
    topic = advice_topic(text)
    if topic:
        trusted["advice_topic"] = topic
    if context is not None and any(item.source == "inventory" for item in context.items):
        trusted["inventory_items"] = str(sum(item.source == "inventory" for item in context.items))
    claims: dict[str, str] = {}
    _put(claims, "days_since_purchase", days_since_purchase(text, _local_date(request)))
    claimed_by_client: dict[str, str] = {}
    for name in ("region", "customer_tier"):
        if attributes.get(name):
            claimed_by_client[name] = attributes[name].strip().lower()
    _put(claimed_by_client, "days_since_purchase", _number_attribute(attributes.get("days_since_purchase")))
    sources = {name: REQUEST for name in trusted}
    if tier:
        sources["customer_tier"] = REFERENCE
    if "approved_by" in trusted:
        sources["approved_by"] = sources["approval_for"] = APPROVAL
    if "inventory_items" in trusted:
        sources["inventory_items"] = REFERENCE
    return SourcedFacts(trusted=trusted, trusted_sources=sources, claims=claims, attributes=claimed_by_client)


def _stitched_tier(context: Context | None) -> str | None:
    """The tier the stitcher read from the customer table into the context, if it did."""
    if context is None:
        return None
    return next((m.group(1) for i in context.items if i.source == "customer" and (m := _TIER.match(i.text))), None)


def extract_answer_facts(answer: str, context: Context | None, input_facts: Mapping[str, str]) -> dict[str, str]:
    """The facts the output rules read: the input's facts plus the commitments and stock claims in the answer."""
    facts = dict(input_facts)
    for kind in commitments(answer):
        facts[f"promises_{kind}"] = "true"
    offered = discount_percent(answer)
    if offered is not None and "promises_discount" in facts:
        facts["promised_discount_percent"] = _fmt(offered)
        cap = _number_attribute(facts.get("cap_discount_percent"))
        if cap is not None and offered > cap:
            facts["promised_over_cap"] = "true"  # a modify rule capped the offer before the model answered
    claim = stock_claim(answer)
    if claim is not None:
        facts["states_stock"] = "true"
        facts["stock_supported"] = "true" if stock_supported(claim, context) else "false"
    return facts


def commitments(answer: str) -> list[str]:
    """The kinds of commitment the answer makes (refund, discount, price_match, delivery_date, warranty,
    exception), sentence by sentence; a negated sentence ("we cannot refund") commits to nothing."""
    found: list[str] = []
    for sentence in re.split(r"(?<=[.!?])\s+|\n+", answer):
        for kind, pattern in COMMITMENTS.items():
            match = pattern.search(sentence)
            if match and not _negated(sentence, match) and kind not in found:
                found.append(kind)
    return found


def _negated(sentence: str, match: re.Match[str]) -> bool:
    """A negation in the clause of the commitment ("we cannot refund", "we won't bend the rules"), not one
    before it ("No problem, we will refund you")."""
    clause_start = max(sentence.rfind(mark, 0, match.start()) for mark in ",;:") + 1
    return bool(_NEGATED.search(sentence[clause_start : match.end()]))


def stock_claim(answer: str) -> int | None:
    """The quantity the answer says is in stock (-1 when it says so without a number), or None for no claim."""
    for sentence in re.split(r"(?<=[.!?])\s+", answer):
        if sentence.rstrip().endswith("?") or OUT_OF_STOCK_TEXT.search(sentence):
            continue  # a question claims nothing
        if re.search(r"\b(no|not|n't)\b", sentence, re.I):
            continue
        count = STOCK_COUNT.search(sentence)
        if count:
            return int(count.group(1))
        if STOCK_CLAIM.search(sentence):
            return -1
    return None


def stock_supported(claim: int, context: Context | None) -> bool:
    """Whether the inventory context shows the stock claimed: some inventory item with that quantity (or any
    positive quantity, for a claim without a number)."""
    if context is None:
        return False
    quantities: list[int] = []
    for item in context.items:
        if item.source != "inventory":
            continue
        quantities += [int(a or b) for a, b in INVENTORY_QUANTITY.findall(item.text)]
    if claim < 0:
        return any(quantity > 0 for quantity in quantities)
    return claim in quantities and claim > 0


def discount_percent(text: str) -> float | None:
    """The largest percentage the text asks for or offers ("25% off", "30 percent", "ten percent", "half price"
    = 50, "a third off" = 33.33…, "a 1/4 discount" = 25)."""
    values = [float(match.group(1)) for match in PERCENT.finditer(text)]
    for match in WORD_PERCENT.finditer(text):
        tens, unit, teen, alone = match.groups()
        if tens:
            values.append(float(TENS_WORDS[tens.lower()] + (UNIT_WORDS[unit.lower()] if unit else 0)))
        else:
            values.append(float(TEEN_WORDS[teen.lower()] if teen else UNIT_WORDS[alone.lower()]))
    for match in FRACTION_OFF.finditer(text):
        fraction = _fraction_percent(match.group(0))
        if fraction is not None:
            values.append(fraction)
    if HALF_OFF.search(text):
        values.append(50.0)
    values = [value for value in values if 0 < value <= 100]
    return max(values) if values else None


def _fraction_percent(phrase: str) -> float | None:
    """The percentage of the (proper) fraction in a FRACTION_OFF match: "a third off" = 33.33…, "2/3" = 66.66…"""
    found = FRACTION.search(phrase)
    if found is None:
        return None
    digit_top, digit_bottom, word_top, word_bottom, symbol = found.groups()
    if symbol:
        top, bottom = UNICODE_FRACTIONS[symbol]
    elif digit_top:
        top, bottom = int(digit_top), int(digit_bottom)
    else:
        top, bottom = NUMERATOR_WORDS[word_top.lower()], FRACTION_WORDS[word_bottom.lower()]
    return 100 * top / bottom if top < bottom else None


def largest_amount(text: str) -> float | None:
    values: list[float] = []
    for match in AMOUNT.finditer(text):
        whole = (match.group(1) or match.group(3) or "0").replace(",", "")
        cents = match.group(2) or match.group(4) or "0"
        values.append(float(f"{whole}.{cents}"))
    return max(values) if values else None


def days_since_purchase(text: str, today: date | None = None) -> float | None:
    """Days since the purchase the text mentions ("45 days ago", "three weeks back", "bought it two months ago",
    "bought on 20 October" or "receipt says 28 Oct" counted back from `today`); the largest when several are given."""
    values: list[float] = []
    if today is not None:
        values += [float(days) for days in _days_since_dates(text, today)]
    for match in DAYS_AGO.finditer(text):
        groups = [g for g in match.groups() if g is not None]
        count, unit = groups[0], groups[1]
        values.append(_count(count) * UNIT_DAYS[unit.lower()])
    for match in LAST_PERIOD.finditer(text):
        values.append(float(UNIT_DAYS[match.group(1).lower()]))
    return max(values) if values else None


def _days_since_dates(text: str, today: date) -> list[int]:
    """Days from each purchase date the text names (a day and a month, no year: the latest such date not after
    today) to today."""
    found = []
    for match in PURCHASE_DATE.finditer(text):
        day = int(match["day1"] or match["day2"])
        month = MONTHS[(match["month1"] or match["month2"])[:3].lower()]
        for year in (today.year, today.year - 1):
            with contextlib.suppress(ValueError):
                bought = date(year, month, day)
                if bought <= today:
                    found.append((today - bought).days)
                    break
    return found


def advice_topic(text: str) -> str | None:
    """medical when the text asks for advice about a health matter, legal when about a legal one."""
    if LEGAL_TERMS.search(text):
        return "legal"
    if MEDICAL_TERMS.search(text) and ADVICE_CUE.search(text):
        return "medical"
    return None


def _count(word: str) -> float:
    try:
        return float(word)
    except ValueError:
        return float(NUMBER_WORDS[word.lower()])


def _number_attribute(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _local_time(request: Request) -> datetime:
    created = datetime.fromtimestamp(request.created_at / 1000, tz=UTC) if request.created_at else datetime.now(UTC)
    zone = request.attributes.get("timezone")
    if zone:
        with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
            created = created.astimezone(ZoneInfo(zone))
    return created


def _local_hour(request: Request) -> int:
    return _local_time(request).hour


def _local_date(request: Request) -> date:
    return _local_time(request).date()


def _put(facts: dict[str, str], name: str, value: float | None) -> None:
    if value is not None:
        facts[name] = _fmt(value)


def _fmt(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")
