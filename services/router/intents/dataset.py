"""The labelled intent set kept in the repository: reading it, checking it and fingerprinting it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from services.shared.intents import INTENTS

DEFAULT_DATA_PATH: Final = Path(__file__).resolve().parent / "data" / "intents.jsonl"


class IntentDataError(ValueError):
    """A line of the labelled set cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class LabelledExample:
    text: str
    intent: str


def load_examples(path: Path = DEFAULT_DATA_PATH) -> list[LabelledExample]:
    """Every example in file order; blank lines are skipped, anything else malformed is an error."""
    examples: list[LabelledExample] = []
    seen: dict[str, int] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        example = _parse_line(path, number, line)
        key = " ".join(example.text.lower().split())
        if key in seen:
            raise IntentDataError(f"{path}:{number}: duplicate of line {seen[key]}: remove one of them")
        seen[key] = number
        examples.append(example)
    if not examples:
        raise IntentDataError(f"{path}: no examples")
    return examples


def data_sha256(path: Path = DEFAULT_DATA_PATH) -> str:
    """The fingerprint an artifact records, so a changed data set is noticed and retrained on."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _parse_line(path: Path, number: int, line: str) -> LabelledExample:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise IntentDataError(f"{path}:{number}: not JSON ({error.msg}): one object per line") from error
    if not isinstance(record, dict) or set(record) != {"text", "intent"}:
        raise IntentDataError(f'{path}:{number}: expected exactly {{"text": ..., "intent": ...}}')
    text, intent = record["text"], record["intent"]
    if not isinstance(text, str) or not text.strip():
        raise IntentDataError(f"{path}:{number}: text must be a non-empty string")
    if intent not in INTENTS:
        raise IntentDataError(f"{path}:{number}: unknown intent {intent!r}: use one of {', '.join(INTENTS)}")
    return LabelledExample(text=text, intent=intent)
