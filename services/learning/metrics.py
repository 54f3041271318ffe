"""How an answer is judged against the reference (the corrected answer): the stated, reproducible metric.

normalise: lower case, punctuation to spaces, articles (a, an, the) dropped, whitespace collapsed (as SQuAD does).
exact match: normalised texts equal. token F1: harmonic mean of token precision and recall over the normalised
bags of tokens. An answer is *correct* when it matches exactly or its token F1 reaches 0.8.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

CORRECT_F1: Final = 0.8
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


def is_correct(answer: str, reference: str) -> bool:
    return exact_match(answer, reference) or token_f1(answer, reference) >= CORRECT_F1


@dataclass(frozen=True)
class AnswerScores:
    examples: int
    exact_match: float
    token_f1: float
    accuracy: float  # share judged correct (exact match, or token F1 >= 0.8)

    def as_dict(self) -> dict[str, float | int]:
        return {
            "examples": self.examples,
            "exact_match": round(self.exact_match, 6),
            "token_f1": round(self.token_f1, 6),
            "accuracy": round(self.accuracy, 6),
        }


def score_answers(answers: Sequence[str], references: Sequence[str]) -> AnswerScores:
    pairs = list(zip(answers, references, strict=True))
    if not pairs:
        return AnswerScores(0, 0.0, 0.0, 0.0)
    return AnswerScores(
        examples=len(pairs),
        exact_match=sum(exact_match(a, r) for a, r in pairs) / len(pairs),
        token_f1=sum(token_f1(a, r) for a, r in pairs) / len(pairs),
        accuracy=sum(is_correct(a, r) for a, r in pairs) / len(pairs),
    )
