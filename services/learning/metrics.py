"""How an answer is judged against the reference (the corrected or approved answer): the stated, reproducible
metric of the learning loop. Score exact values, not overlaps.

An answer is *correct* when
1. it states every value of the reference: money with its currency ($5, 5 dollars), percentages, durations (30 days,
   a 30-day window, 12 months = 1 year, 2 weeks = 14 days, 3 to 5 business days), quantities with their noun and
   rate (500 points, 1 point per dollar), times of day (9 am = 09:00), dates (December 5, 2026-12-05), weekdays,
   order numbers and SKUs, sizes (size M, XL), bare numbers, and the retail terms a policy turns on (TERMS: the
   remedy, such as refund or store credit, and conditions such as the receipt or final sale);
2. it states no conflicting value of the same kind: "14 days" where the reference says "30 days", "$10" for
   "$5", a store credit where the reference gives a refund (bare numbers and conditions never conflict);
3. it agrees in polarity where the reference is a yes/no answer (can / cannot, in stock / out of stock,
   eligible / not eligible, a leading "yes," / "no,"): a negative must be stated, an affirmative may be implied.
Number words count as digits ("three to five" is 3 to 5). Wording around the values is free: a paraphrase that
states them is right, an answer sharing most words but one value is wrong.

Fallback, where the reference states no value, term or polarity at all: exact match after normalisation. Such a
reference carries its content only in its words; token overlap would call "we give store credit" right against
"we give a refund" (F1 0.8 over five tokens), which is the judgement this module replaces, whereas exact match
never calls a wrong answer right, at the cost of calling a paraphrase wrong. How often it is used is reported
(`AnswerScores.fallback`).

Not modelled: a negation outside the polarity families ("we do not price match"), and a right value said about
the wrong thing (the values and terms are checked, not what they are attached to).

Secondary figures, reported beside accuracy: exact match (normalised: lower case, punctuation to spaces, articles
dropped, whitespace collapsed, as SQuAD does) and token F1 over those normalised tokens.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalise(text: str) -> str:
    text = _PUNCTUATION.sub(" ", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(answer: str, reference: str) -> bool:
    return normalise(answer) == normalise(reference)


def token_f1(answer: str, reference: str) -> float:
    got, want = normalise(answer).split(), normalise(reference).split()
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


@dataclass(frozen=True, order=True)
class Value:
    """One value a text states, canonical: kind, amount, and the unit the amount is in (currency, duration unit,
    quantity noun, a date's year, a term's group)."""

    kind: str
    amount: str
    unit: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.amount}{' ' + self.unit if self.unit else ''}"

    def states(self, wanted: Value) -> bool:
        """Whether this value states `wanted`: equal, a bare number by its amount alone, a date without a year."""
        if wanted.kind == "number":
            return self.amount == wanted.amount and self.kind not in ("id", "date", "time", "term")
        if self.kind != wanted.kind or self.amount != wanted.amount:
            return False
        return self.unit == wanted.unit or (self.kind == "date" and "" in (self.unit, wanted.unit))

    def rivals(self, other: Value) -> bool:
        """Whether the two could state the same thing differently (so a difference between them is a conflict)."""
        if self.kind != other.kind or self.kind == "number":
            return False
        if self.kind in ("duration", "quantity"):
            return self.unit == other.unit
        if self.kind == "term":
            return self.unit == other.unit and self.unit in EXCLUSIVE_TERM_GROUPS
        return True


Polarity = dict[str, frozenset[str]]  # family -> the signs stated in it ("+", "-")


@dataclass(frozen=True)
class Statement:
    """What a text states that an answer is judged on: its values and terms, and its polarity per family."""

    values: frozenset[Value]
    polarity: Polarity = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.values and not self.polarity


# number words, as digits
_SMALL: Final = {
    word: value
    for value, word in enumerate([
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
        "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
    ])
}  # fmt: skip
_TENS: Final = {
    word: 10 * value
    for value, word in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 2)
}
_SCALES: Final = {"hundred": 100, "thousand": 1000}
_WORD_NUMBERS = re.compile(
    r"\b(?:" + "|".join([*_SMALL, *_TENS, *_SCALES, "dozen"]) + r")(?:[\s-]+(?:"
    + "|".join([*_SMALL, *_TENS, *_SCALES]) + r"))*\b"
)  # fmt: skip
_ONE_UNIT = re.compile(r"\b(?:a|an)\s+(?=(?:business |working )?(?:minute|hour|day|week|month|year)\b)")
_ONE_AS_PRONOUN = re.compile(r"\b(the|no|any|each|every|which|this|that|some|only|right|wrong|new|same)\s+$")


def _word_number(match: re.Match[str]) -> str:
    words = match.group(0).replace("-", " ").split()
    if words == ["one"] and _ONE_AS_PRONOUN.search(match.string[: match.start()]):
        return "one"
    if words == ["dozen"]:
        return "12"
    total = current = 0
    for word in words:
        if word in _SCALES:
            current = max(current, 1) * _SCALES[word]
            if word == "thousand":
                total, current = total + current, 0
        else:
            current += _SMALL.get(word, 0) + _TENS.get(word, 0)
    return str(total + current)


def _prepare(text: str) -> str:
    text = text.lower().replace("\u2019", "'").replace("\u2013", "-").replace("\u2014", " - ")
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = _ONE_UNIT.sub("1 ", text)  # "after a year" is after 1 year
    return _WORD_NUMBERS.sub(_word_number, text)


def _amount(text: str) -> str:
    value = Decimal(text).normalize()
    return format(value, "f")


_MONTHS: Final = {
    name: index
    for index, names in enumerate(
        [
            ("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",),
            ("june", "jun"), ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"),
            ("october", "oct"), ("november", "nov"), ("december", "dec"),
        ],
        1,
    )
    for name in names
}  # fmt: skip
_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_CURRENCY_SIGNS: Final = {"$": "USD", "us$": "USD", "usd": "USD", "€": "EUR", "eur": "EUR", "£": "GBP", "gbp": "GBP"}
_CURRENCY_WORDS: Final = {
    "dollar": "USD", "buck": "USD", "usd": "USD", "euro": "EUR", "eur": "EUR", "pound": "GBP", "gbp": "GBP",
    "cent": "USD", "¢": "USD",
}  # fmt: skip
_DURATIONS: Final = {
    "minute": ("minute", 1), "min": ("minute", 1), "hour": ("minute", 60), "hr": ("minute", 60),
    "day": ("day", 1), "week": ("day", 7), "wk": ("day", 7), "month": ("month", 1), "year": ("month", 12),
    "yr": ("month", 12), "business day": ("business_day", 1), "working day": ("business_day", 1),
}  # fmt: skip
_SIZES: Final = {
    "xxs": "XXS", "xs": "XS", "s": "S", "m": "M", "l": "L", "xl": "XL", "xxl": "XXL", "xxxl": "XXXL",
    "small": "S", "medium": "M", "large": "L", "extra small": "XS", "extra-small": "XS", "extra large": "XL",
    "extra-large": "XL", "x-large": "XL", "xx-large": "XXL",
}  # fmt: skip
_SIZE = r"(\d{1,2}(?:\.5)?|" + "|".join(sorted((re.escape(s) for s in _SIZES), key=len, reverse=True)) + r")"
_WEEKDAYS: Final = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# words after a number that are not what it counts: the number is a bare number
_NOT_A_NOUN: Final = frozenset([
    "and", "or", "to", "of", "the", "a", "an", "in", "on", "at", "for", "with", "by", "from", "per", "than", "as",
    "is", "are", "was", "were", "be", "been", "it", "he", "she", "they", "we", "you", "i", "that", "this", "which",
    "who", "if", "but", "so", "more", "less", "up", "till", "until", "after", "before", "within",
])  # fmt: skip
_ID_PREFIX = re.compile(r"^(?:sku|ord|order)(?=\d)")

# Retail terms a policy answer turns on, by group; synonyms are spelled out ("a|b"). The remedy is exclusive (an
# answer naming another remedy than the reference conflicts with it); a condition only has to be stated.
TERMS: Final[dict[str, dict[str, str]]] = {
    "remedy": {
        "refund": r"refunds?|refunded|money back|paid back|pay (?:it |you |them )?back",
        "store credit": r"store credit|credit note|store voucher",
        "exchange": r"exchanges?|exchanged|exchangeable|swap(?:ped|s)?",
    },
    "payment": {
        "original payment method": r"original (?:payment method|form of payment|method of payment|tender|card)"
        r"|same (?:card|payment method)|card (?:you|they|he|she) paid with",
    },
    "condition": {
        "receipt": r"receipts?|proof of purchase|till slip",
        "unworn": r"unworn|not worn|never worn|unused|never used",
        "undamaged": r"undamaged|not damaged|intact",
        "opened": r"opened|open box|unsealed",
        "faulty": r"faulty|defective",
        "final sale": r"final[- ]sale",
        "photo id": r"photo id|photo identification|government id",
    },
}
EXCLUSIVE_TERM_GROUPS: Final = frozenset({"remedy"})

# polarity families: the negative forms first, so "cannot" and "not in stock" are never read as positive
_POLARITY: Final[dict[str, tuple[str, str]]] = {
    "can": (
        r"cannot|can ?not|can't|may not|unable to|not (?:be )?(?:allowed|permitted|accepted|returnable|refundable)"
        r"|non-?(?:returnable|refundable)|(?:isn't|aren't|is not|are not) (?:returnable|refundable|allowed)",
        r"can|may(?! \d)|allowed|permitted|returnable|refundable|able to",
    ),
    "stock": (
        r"out of stock|not in stock|sold out|oos|unavailable|not available|none (?:in stock|left)|no stock",
        r"in stock|in-stock|available",
    ),
    "eligible": (
        r"not eligible|ineligible|(?:isn't|aren't|is not|are not) eligible|(?:doesn't|does not|don't|do not) qualify",
        r"eligible|qualif(?:y|ies)",
    ),
}
YES_NO: Final = "yes/no"
_AFFIRMATIVE: Final = frozenset({"+"})
_YES_NO = re.compile(r"^\W*(?:(?P<neg>no|nope)[,.!;:]|(?P<pos>yes|yep|yeah)\b)")
_POLARITY_PATTERNS: Final = {
    family: re.compile(rf"(?<![\w-])(?:(?P<neg>{neg})|(?P<pos>{pos}))(?![\w-])")
    for family, (neg, pos) in _POLARITY.items()
}


def _polarity(text: str) -> Polarity:
    found: dict[str, set[str]] = {}
    answer = _YES_NO.search(text)
    if answer:
        found[YES_NO] = {"-" if answer.group("neg") else "+"}
    for family, pattern in _POLARITY_PATTERNS.items():
        for match in pattern.finditer(text):
            found.setdefault(family, set()).add("-" if match.group("neg") else "+")
    return {family: frozenset(signs) for family, signs in found.items()}


Extractor = Callable[[re.Match[str]], Iterator[Value]]
_NUMBER = r"(?<![\w.])(?P<n>\d+(?:\.\d+)?)(?![.,]?\d)"
_RANGE = r"(?:(?<![\w.])(?P<n0>\d+(?:\.\d+)?)\s*(?:-|to|and|or)\s*)?"  # "3 to 5 days": both values stated


def _numbers(match: re.Match[str]) -> list[str]:
    return [n for n in (match.groupdict().get("n0"), match.group("n")) if n]


def _money_sign(match: re.Match[str]) -> Iterator[Value]:
    yield Value("money", _amount(match.group("n")), _CURRENCY_SIGNS[match.group("sign").strip()])


def _money_word(match: re.Match[str]) -> Iterator[Value]:
    word = match.group("word").removesuffix("s")
    scale = Decimal("0.01") if word in ("cent", "¢") else Decimal(1)
    for number in _numbers(match):
        yield Value("money", _amount(str(Decimal(number) * scale)), _CURRENCY_WORDS[word])


def _percent(match: re.Match[str]) -> Iterator[Value]:
    for number in _numbers(match):
        yield Value("percent", _amount(number))


def _duration(match: re.Match[str]) -> Iterator[Value]:
    name = " ".join(match.group("unit").split()).removesuffix("s")
    unit, factor = _DURATIONS[name]
    for number in _numbers(match):
        yield Value("duration", _amount(str(Decimal(number) * factor)), unit)


def _clock(match: re.Match[str]) -> Iterator[Value]:
    hour, minute = int(match.group("h")), int(match.group("m") or 0)
    half = (match.groupdict().get("half") or "").replace(".", "")
    if half == "pm" and hour < 12:
        hour += 12
    elif half == "am" and hour == 12:
        hour = 0
    yield Value("time", f"{hour:02d}:{minute:02d}")


def _noon(match: re.Match[str]) -> Iterator[Value]:
    yield Value("time", "12:00" if match.group(0) == "noon" else "00:00")


def _iso_date(match: re.Match[str]) -> Iterator[Value]:
    year, month, day = match.group(0).split("-")
    yield Value("date", f"{int(month):02d}-{int(day):02d}", year)


def _named_date(match: re.Match[str]) -> Iterator[Value]:
    month, day = _MONTHS[match.group("month")], int(match.group("day"))
    if 1 <= day <= 31:
        yield Value("date", f"{month:02d}-{day:02d}", match.group("year") or "")


def _literal(kind: str) -> Extractor:
    def extract(match: re.Match[str]) -> Iterator[Value]:
        yield Value(kind, match.group(0))

    return extract


def _identifier(match: re.Match[str]) -> Iterator[Value]:
    token = re.sub(r"[^a-z0-9]", "", match.group("id"))
    yield Value("id", _ID_PREFIX.sub("", token).upper())


def _sizes(match: re.Match[str]) -> Iterator[Value]:
    listed = match.group(0).split(None, 1)[1]
    for size in re.findall(rf"(?<![\w-]){_SIZE}(?![\w-])", listed):
        yield Value("size", _SIZES.get(size, size))


def _size_word(match: re.Match[str]) -> Iterator[Value]:
    yield Value("size", _SIZES[match.group(0)])


def _singular(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if re.search(r"(?:ch|sh|x|ss)es$", word):
        return word[:-2]
    return word[:-1] if word.endswith("s") and not word.endswith("ss") else word


def _quantity(match: re.Match[str]) -> Iterator[Value]:
    noun = match.group("noun")
    if noun in _NOT_A_NOUN:
        yield from (Value("number", _amount(n)) for n in _numbers(match))
        return
    unit = _singular(noun) + (f"/{_singular(match.group('per'))}" if match.group("per") else "")
    yield from (Value("quantity", _amount(n), unit) for n in _numbers(match))


def _number(match: re.Match[str]) -> Iterator[Value]:
    yield Value("number", _amount(match.group("n")))


_DURATION_UNITS = r"(?:business|working)\s+days?|minutes?|mins?|hours?|hrs?|days?|weeks?|wks?|months?|years?|yrs?"
_ALONE = r"(?![\w-])"
# in this order: what a pattern matched is blanked out before the next one reads the text, so "30-day" is a
# duration and not a quantity, and "order 44718" an order number and not a bare number
_EXTRACTORS: Final[list[tuple[re.Pattern[str], Extractor]]] = [
    (re.compile(rf"(?<![\w-])\d{{4}}-\d{{2}}-\d{{2}}{_ALONE}"), _iso_date),
    (re.compile(rf"(?<![\w/-])\d{{1,2}}/\d{{1,2}}/\d{{2,4}}{_ALONE}"), _literal("date")),
    (re.compile(rf"\b(?P<month>{_MONTH})\.?\s+(?P<day>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(?P<year>\d{{4}}))?\b"),
     _named_date),
    (re.compile(rf"\b(?P<day>\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<month>{_MONTH})\b\.?(?:,?\s+(?P<year>\d{{4}}))?"),
     _named_date),
    (re.compile(rf"\b({'|'.join(_WEEKDAYS)})(?=s?\b)"), _literal("weekday")),
    (re.compile(r"(?<![\w.:])(?P<h>1[0-2]|0?\d)(?::(?P<m>[0-5]\d))?\s*(?P<half>a\.?m\.?|p\.?m\.?)(?!\w)"), _clock),
    (re.compile(r"(?<![\w.:])(?P<h>[01]?\d|2[0-3]):(?P<m>[0-5]\d)(?![\d:])"), _clock),
    (re.compile(r"\b(?:noon|midnight)\b"), _noon),
    (re.compile(r"(?P<sign>us\$|\$|€|£|\busd\s?|\beur\s?|\bgbp\s?)(?P<n>\d+(?:\.\d+)?)(?![.,]?\d)"), _money_sign),
    (re.compile(rf"{_RANGE}{_NUMBER}\s*-?\s*(?P<word>dollars?|bucks?|usd|euros?|eur|pounds?|gbp|cents?|¢)(?!\w)"),
     _money_word),
    (re.compile(rf"{_RANGE}{_NUMBER}\s*(?:%|percent\b|per cent\b|pct\b)"), _percent),
    (re.compile(r"#\s?(?P<id>[a-z0-9][a-z0-9-]*)"), _identifier),
    (re.compile(r"\b(?:order|sku|item|article|ref|reference|transaction|tracking|style)s?"
                rf"(?:\s+(?:number|no\.?|num|id))?\s*[:#]?\s*(?P<id>\d[\d-]{{2,}}\d){_ALONE}"), _identifier),
    (re.compile(rf"(?<![\w-])(?P<id>(?=[a-z0-9-]*\d)[a-z][a-z0-9]*(?:-[a-z0-9]+)*)(?<=[\w-]{{4}}){_ALONE}"),
     _identifier),
    (re.compile(rf"{_RANGE}{_NUMBER}[\s-]*(?P<unit>{_DURATION_UNITS})(?!\w)"), _duration),
    (re.compile(rf"\bsizes?\s+{_SIZE}(?:\s*(?:,|/|and|or)\s*{_SIZE})*{_ALONE}"), _sizes),
    (re.compile(rf"(?<![\w-])(?:xxs|xs|xl|xxl|xxxl){_ALONE}"), _size_word),
    (re.compile(rf"{_RANGE}{_NUMBER}[\s-]*(?P<noun>[a-z]+)"
                r"(?:\s+(?:per|for every|for each|every|each)\s+(?P<per>[a-z]+))?"), _quantity),
    (re.compile(_NUMBER), _number),
]  # fmt: skip
_TERMS: Final = [
    (re.compile(rf"\b(?:{synonyms})\b"), Value("term", term, group))  # "no-receipt" names the receipt
    for group, terms in TERMS.items()
    for term, synonyms in terms.items()
]


def _blank(text: str, spans: Sequence[tuple[int, int]]) -> str:
    chars = list(text)
    for start, end in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)


def statement(text: str) -> Statement:
    """The values, terms and polarity `text` states (see the module's docstring)."""
    prepared = _prepare(text)
    values = {value for pattern, value in _TERMS if pattern.search(prepared)}
    remaining = prepared
    for pattern, extract in _EXTRACTORS:
        matches = list(pattern.finditer(remaining))
        for match in matches:
            values.update(extract(match))
        remaining = _blank(remaining, [match.span() for match in matches])
    return Statement(frozenset(values), _polarity(prepared))


def _polarity_agrees(reference: Polarity, answer: Polarity) -> bool:
    """Every family the reference states a polarity in, the answer states the same signs in, an answer that says
    nothing in a family being affirmative ("items come back within 30 days" agrees with "items can be returned");
    a leading yes/no may be left out, but not contradicted."""
    for family, signs in reference.items():
        if family != YES_NO and answer.get(family, _AFFIRMATIVE) != signs:
            return False
    if YES_NO in answer:
        stated = reference.get(YES_NO) or frozenset().union(*reference.values())
        if len(stated) == 1 and answer[YES_NO] != stated:
            return False
    if YES_NO in reference and YES_NO not in answer:
        opposite = {"+": "-", "-": "+"}
        return not any(opposite[sign] in signs for sign in reference[YES_NO] for signs in answer.values())
    return True


@dataclass(frozen=True)
class Judgement:
    correct: bool
    missing: tuple[Value, ...] = ()  # values of the reference the answer does not state
    conflicting: tuple[Value, ...] = ()  # values of the answer that contradict one of the reference's
    polarity_agrees: bool = True
    fallback: bool = False  # the reference states nothing to check: judged by exact match


def judge(answer: str, reference: str) -> Judgement:
    """The judgement of `answer` against `reference`, with what it missed or contradicted."""
    want = statement(reference)
    if want.empty:
        return Judgement(exact_match(answer, reference), fallback=True)
    got = statement(answer)
    missing = tuple(sorted(v for v in want.values if not any(g.states(v) for g in got.values)))
    conflicting = tuple(
        sorted(
            g
            for g in got.values
            if any(g.rivals(w) for w in want.values) and not any(g.states(w) or w.states(g) for w in want.values)
        )
    )
    agrees = _polarity_agrees(want.polarity, got.polarity)
    return Judgement(not missing and not conflicting and agrees, missing, conflicting, agrees)


def is_correct(answer: str, reference: str) -> bool:
    return judge(answer, reference).correct


@dataclass(frozen=True)
class AnswerScores:
    examples: int
    exact_match: float
    token_f1: float
    accuracy: float  # share judged correct by the values stated (is_correct)
    fallback: float = 0.0  # share whose reference stated no value: judged by exact match

    def as_dict(self) -> dict[str, float | int]:
        return {
            "examples": self.examples,
            "exact_match": round(self.exact_match, 6),
            "token_f1": round(self.token_f1, 6),
            "accuracy": round(self.accuracy, 6),
            "fallback": round(self.fallback, 6),
        }


def score_answers(answers: Sequence[str], references: Sequence[str]) -> AnswerScores:
    pairs = list(zip(answers, references, strict=True))
    if not pairs:
        return AnswerScores(0, 0.0, 0.0, 0.0)
    judged = [judge(a, r) for a, r in pairs]
    return AnswerScores(
        examples=len(pairs),
        exact_match=sum(exact_match(a, r) for a, r in pairs) / len(pairs),
        token_f1=sum(token_f1(a, r) for a, r in pairs) / len(pairs),
        accuracy=sum(j.correct for j in judged) / len(pairs),
        fallback=sum(j.fallback for j in judged) / len(pairs),
    )
