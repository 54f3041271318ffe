"""A rendered prompt is scanned for PII piece by piece (issue 17): the pieces between "<" and ">" (the template's
tags) are remembered, so a passage or a template text is scanned once, not once per request. That must give exactly
the spans the whole text gives: every registered regex is parsed to show no match can cross a piece's edge, and
rendered prompts (built with the stitcher's own templates and sections, PII in the request, history, passages and
across lines) and hostile texts are scanned both ways. The pattern recognizers also no longer get spaCy's tokens,
which nothing of theirs reads: the spans are those of the old path, tokens and all."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from presidio_analyzer import Pattern

from services.governor.stage import AnalysisInput, Analyzer
from services.shared.pii import (
    PiiDetector,
    PiiSpan,
    _CardRecognizer,
    _GroupRecognizer,
    _resolve,
    pattern_recognizers,
    segments,
)
from services.stitcher.prompt import SECTION_SOURCES, TemplateSet, render
from services.wire.models import ContextItem

with warnings.catch_warnings():  # deprecated as modules, still what `re` parses with
    warnings.simplefilter("ignore", DeprecationWarning)
    import sre_constants as sre
    import sre_parse

SEPARATORS = "<>"
# anchors that read the text's or a line's edges: a piece's edge is not one in the whole text
EDGE_ANCHORS = {sre.AT_BEGINNING, sre.AT_BEGINNING_LINE, sre.AT_BEGINNING_STRING, sre.AT_END, sre.AT_END_LINE}
EDGE_ANCHORS |= {sre.AT_END_STRING}
CATEGORIES = {
    sre.CATEGORY_DIGIT: r"\d",
    sre.CATEGORY_NOT_DIGIT: r"\D",
    sre.CATEGORY_SPACE: r"\s",
    sre.CATEGORY_NOT_SPACE: r"\S",
    sre.CATEGORY_WORD: r"\w",
    sre.CATEGORY_NOT_WORD: r"\W",
    sre.CATEGORY_LINEBREAK: r"\n",
    sre.CATEGORY_NOT_LINEBREAK: r"[^\n]",
}


def nodes(parsed: Any) -> Iterator[tuple[Any, Any]]:
    """Every node of a parsed regex, lookarounds, branches and repeats included."""
    for op, av in parsed:
        yield op, av
        if op in (sre.BRANCH,):
            for branch in av[1]:
                yield from nodes(branch)
        elif op in (sre.SUBPATTERN,):
            yield from nodes(av[3])
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            yield from nodes(av[2])
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            yield from nodes(av[1])
        elif op is sre.ATOMIC_GROUP:
            yield from nodes(av)
        elif op is sre.GROUPREF_EXISTS:
            yield from nodes(av[1])
            if av[2] is not None:
                yield from nodes(av[2])


def in_class(items: list[tuple[Any, Any]], char: str) -> bool:
    code, negated, found = ord(char), False, False
    for op, av in items:
        if op is sre.NEGATE:
            negated = True
        elif op is sre.LITERAL:
            found |= av == code
        elif op is sre.RANGE:
            found |= av[0] <= code <= av[1]
        elif op is sre.CATEGORY:
            found |= re.fullmatch(CATEGORIES[av], char) is not None
        else:
            raise AssertionError(f"unexpected item {op} in a character class")
    return found != negated


def reads(op: Any, av: Any, char: str) -> bool:
    """Whether one node can match `char` (as part of a match or in a lookaround)."""
    if op is sre.LITERAL:
        return bool(av == ord(char))
    if op is sre.NOT_LITERAL:
        return bool(av != ord(char))
    if op is sre.ANY:
        return True
    if op is sre.IN:
        return in_class(av, char)
    if op is sre.AT:
        assert av not in EDGE_ANCHORS, f"anchor {av}: a piece's edge would read as the text's"
    if op in (sre.GROUPREF, sre.GROUPREF_EXISTS):
        raise AssertionError("a back-reference: check by hand what it can match")
    return False


def registered_regexes() -> list[tuple[str, str, int]]:
    """(recognizer, regex, flags) of every pattern the detector runs, as it runs them."""
    found: list[tuple[str, str, int]] = []
    for recognizer in pattern_recognizers():
        patterns: list[Pattern] = recognizer.patterns  # type: ignore[has-type]  # Presidio leaves it unannotated
        name: str = recognizer.name  # type: ignore[has-type]
        compiled = recognizer._compiled if isinstance(recognizer, _GroupRecognizer) else None
        flags = compiled.flags if compiled is not None else recognizer.global_regex_flags or 0
        found += [(name, pattern.regex, flags) for pattern in patterns]
    return found


@pytest.mark.parametrize(("recognizer", "regex", "flags"), registered_regexes())
def test_no_pattern_can_match_or_look_at_a_piece_separator(recognizer: str, regex: str, flags: int) -> None:
    parsed = sre_parse.parse(regex, flags)
    for op, av in nodes(parsed):
        for char in SEPARATORS:
            assert not reads(op, av, char), f"{recognizer}: {op} {av} can match {char!r} in {regex}"


@pytest.mark.parametrize("regex", [r"\S+", r"[^a-z]", r"(?s:.)", r"\W", r"a(?=\D)", r"[!-@]"])
def test_the_check_sees_a_pattern_that_could_cross_a_separator(regex: str) -> None:
    assert any(reads(op, av, "<") for op, av in nodes(sre_parse.parse(regex)))


@pytest.mark.parametrize("regex", [r"^name", r"name$", r"\Aname"])
def test_the_check_refuses_a_pattern_anchored_on_an_edge(regex: str) -> None:
    with pytest.raises(AssertionError, match="anchor"):
        any(reads(op, av, "<") for op, av in nodes(sre_parse.parse(regex, re.MULTILINE)))


def test_the_card_recognizer_runs_the_regex_it_registers() -> None:
    card = next(r for r in pattern_recognizers() if isinstance(r, _CardRecognizer))
    patterns: list[Pattern] = card.patterns  # type: ignore[has-type]
    assert [p.regex for p in patterns] == [card._compiled.pattern]


def test_pieces_are_the_runs_between_separators_at_their_offsets() -> None:
    text = '<a>\nfirst\n</a>\n\n<b x="1">\nsecond</b>'
    found = segments(text)
    assert [piece for _, piece in found] == ["a", "\nfirst\n", "/a", "\n\n", 'b x="1"', "\nsecond", "/b"]
    assert all(text[offset : offset + len(piece)] == piece for offset, piece in found)
    assert segments("") == [] and segments("<<>>") == [] and segments("plain") == [(0, "plain")]


@pytest.fixture(scope="module")
def patterns_only() -> PiiDetector:
    return PiiDetector(use_ner=False)


@pytest.fixture(scope="module")
def fresh(analyzer: Analyzer, patterns_only: PiiDetector) -> Analyzer:
    return Analyzer(analyzer.detector, analyzer.toxicity, analyzer.injection, patterns_only)


def with_tokens(detector: PiiDetector, text: str) -> list[PiiSpan]:
    """The old path: Presidio's analysis of the whole text with the blank spaCy pipeline's tokens."""
    artifacts = detector._nlp.process_text(text, "en")
    found = detector._analyzer.analyze(text, language="en", nlp_artifacts=artifacts)
    return _resolve(found, text)


def by_piece(analyzer: Analyzer, text: str) -> list[PiiSpan]:
    return analyzer.find_pii([AnalysisInput(request_text="", prompt_texts=[text], passage_texts=[])])[0][1][0]


VALUES = [
    "Maria Lopez",
    "my name is john doe",
    "Mr. James Smith",
    "ask for Priya Sharma",
    "maria.lopez@example.com",
    "+1 (415) 555-0134",
    "0161 496 0000",
    "415-555-0199",
    "4111 1111 1111 1111",
    "5500-0000-0000-0004",
    "credit card 4111111111111111",
    "my loyalty number is 4820 1193 2277",
    "LOY-00482911",
    "ssn 078-05-1120",
    "social security 078 05 1120",
    "national insurance AB 12 34 56 C",
    "passport no. X1234567",
    "born on 14/03/1987",
    "date of birth:\n14/03/1987",
    "42 Elm Road, Springfield, IL 62704",
    "221B Baker\nStreet, London NW1 6XE",
    "call me on\n+1 415 555 0134",
    "Mrs.\nOkafor",
]
FILLERS = ["can I return this", "the kettle is broken", "order 55123", "thanks", "Hi,", "1000", "0", "-", "@", "."]
HOSTILE = ["<", ">", "</passage>", "<request>", "\n", "\n\n", " ", "a@", "!", "#", "<!--", "-->", "my name is", "Mr."]
pieces_of_text = st.lists(st.sampled_from(VALUES + FILLERS), min_size=1, max_size=6)
spacing = st.sampled_from([" ", "\n", ", ", " \n", "\n\n"])


@st.composite
def texts(draw: st.DrawFn) -> str:
    return draw(spacing).join(draw(pieces_of_text))


@st.composite
def context_items(draw: st.DrawFn) -> list[ContextItem]:
    items = []
    for number in range(draw(st.integers(0, 8))):
        source = draw(st.sampled_from(sorted(SECTION_SOURCES.values())))
        text = draw(texts())
        if source == "customer_history":
            text = f'2026-11-0{number % 9 + 1} return_or_refund: asked "{text}"; answered "{draw(texts())}"'
        elif source == "inventory":
            text = f"SW00{number:02d}-05 | {text} | M / olive | {number} | 229.00 USD"
        flags = draw(st.sampled_from([[], ["instruction_like"]]))
        item = ContextItem(
            source=source, source_id=f"{source}-{number}", version="1", score=0.5, text=text, flags=flags
        )
        items.append(item)
    return items


TEMPLATES = sorted(TemplateSet.load().templates.values(), key=lambda template: template.id)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(template=st.sampled_from(TEMPLATES), request_text=texts(), items=context_items())
def test_a_rendered_prompt_scanned_piece_by_piece_has_exactly_the_whole_texts_spans(
    fresh: Analyzer, patterns_only: PiiDetector, template: Any, request_text: str, items: list[ContextItem]
) -> None:
    for message in render(template, request_text, items):
        whole = with_tokens(patterns_only, message.content)
        assert by_piece(fresh, message.content) == whole
        assert patterns_only.detect(message.content) == whole


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(st.sampled_from(VALUES + FILLERS + HOSTILE), min_size=1, max_size=12), glue=spacing)
@example(parts=["my name is", "<", "Maria Lopez"], glue="")
@example(parts=["4111 1111", ">", "1111 1111"], glue=" ")
@example(parts=["42 Elm", "</passage>", "Road"], glue=" ")
@example(parts=["maria.lopez", "<", "@example.com"], glue="")
def test_a_hostile_text_scanned_piece_by_piece_has_exactly_the_whole_texts_spans(
    fresh: Analyzer, patterns_only: PiiDetector, parts: list[str], glue: str
) -> None:
    text = glue.join(parts)
    whole = with_tokens(patterns_only, text)
    assert by_piece(fresh, text) == whole
    assert patterns_only.detect(text) == whole


@pytest.mark.parametrize("use_ner", [False, True])
def test_neither_spacy_pipeline_has_lemmas_so_presidios_context_step_changes_no_score(use_ner: bool) -> None:
    # the pattern recognizers run without tokens because of this: with a lemmatizer, context words ("card", "ssn")
    # near a match would raise its score, and the tokens would matter again
    detector = PiiDetector(use_ner=use_ner)
    artifacts = detector._nlp.process_text("my credit card is 4111 1111 1111 1111, ssn 078-05-1120", "en")
    assert artifacts.tokens and set(artifacts.lemmas) == {""}
