"""The labelled intent set in the repository: coverage, and errors that name the line to fix."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from services.router.intents.dataset import IntentDataError, load_examples
from services.shared.intents import INTENTS

MIN_EXAMPLES_PER_INTENT = 40


def test_every_intent_has_enough_examples() -> None:
    counts = Counter(example.intent for example in load_examples())
    assert set(counts) == set(INTENTS)
    assert min(counts.values()) >= MIN_EXAMPLES_PER_INTENT


def test_a_duplicate_text_names_both_lines(tmp_path: Path) -> None:
    data = tmp_path / "intents.jsonl"
    data.write_text('{"text": "hi", "intent": "small_talk_other"}\n{"text": "HI ", "intent": "small_talk_other"}\n')
    with pytest.raises(IntentDataError, match=r"intents.jsonl:2: duplicate of line 1"):
        load_examples(data)


def test_an_unknown_intent_names_the_line_and_the_known_ones(tmp_path: Path) -> None:
    data = tmp_path / "intents.jsonl"
    data.write_text('\n{"text": "hi", "intent": "greeting"}\n')
    with pytest.raises(IntentDataError, match=r"intents.jsonl:2: unknown intent 'greeting': use one of store_hours"):
        load_examples(data)


@pytest.mark.parametrize(
    "line",
    ["not json", '["hi", "small_talk_other"]', '{"text": "", "intent": "complaint"}', '{"text": "hi"}'],
)
def test_a_malformed_line_is_an_error(tmp_path: Path, line: str) -> None:
    data = tmp_path / "intents.jsonl"
    data.write_text(line + "\n")
    with pytest.raises(IntentDataError, match=r"intents.jsonl:1: "):
        load_examples(data)
