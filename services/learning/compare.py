"""Candidate against incumbent, by the metric in metrics.py: on the evaluation split of an exported data set
(offline) and on live traffic in shadow mode (rows of switchyard.shadow_answers joined in ClickHouse to the audit
records for the intent and to the feedback for the reference answer)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from services.infra.clickhouse import get_client
from services.learning.metrics import score_answers
from services.learning.records import feedback_by_request
from services.settings import Settings

SHADOW_QUERY: Final = f"""\
SELECT s.request_id, a.intent, s.answered, s.answer, s.incumbent_answer, s.latency_ms, s.incumbent_latency_ms,
       s.incumbent_cost_usd, fb.correction, fb.rating
FROM switchyard.shadow_answers AS s FINAL
INNER JOIN switchyard.audit_records AS a FINAL ON a.request_id = s.request_id
LEFT JOIN
(
{feedback_by_request()}
) AS fb ON fb.request_id = s.request_id
WHERE s.candidate = {{candidate:String}} AND has({{intents:Array(String)}}, a.intent)
ORDER BY s.request_id
SETTINGS join_use_nulls = 1"""


@dataclass(frozen=True)
class Comparison:
    """Accuracy of the incumbent alone and of the candidate with its fallback (the candidate answers above its
    threshold, the incumbent the rest) on the same references."""

    examples: int
    incumbent_accuracy: float
    candidate_accuracy: float
    coverage: float  # share of requests the candidate answered itself
    candidate_precision: float  # accuracy on the requests it answered
    incumbent_token_f1: float
    candidate_token_f1: float
    candidate_p50_ms: float
    incumbent_p50_ms: float

    @property
    def gain(self) -> float:
        return self.candidate_accuracy - self.incumbent_accuracy

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in vars(self).items()}


def compare(
    references: Sequence[str],
    incumbent: Sequence[str],
    candidate: Sequence[str | None],
    candidate_ms: Sequence[float] = (),
    incumbent_ms: Sequence[float] = (),
) -> Comparison:
    """`candidate[i]` None: the candidate declined, so the incumbent's answer stands for it."""
    combined = [c if c is not None else i for c, i in zip(candidate, incumbent, strict=True)]
    answered = [(c, r) for c, r in zip(candidate, references, strict=True) if c is not None]
    base, with_candidate = score_answers(incumbent, references), score_answers(combined, references)
    own = score_answers([c for c, _ in answered], [r for _, r in answered])
    return Comparison(
        examples=len(references),
        incumbent_accuracy=base.accuracy,
        candidate_accuracy=with_candidate.accuracy,
        coverage=len(answered) / len(references) if references else 0.0,
        candidate_precision=own.accuracy,
        incumbent_token_f1=base.token_f1,
        candidate_token_f1=with_candidate.token_f1,
        candidate_p50_ms=float(np.median(candidate_ms)) if len(candidate_ms) else 0.0,
        incumbent_p50_ms=float(np.median(incumbent_ms)) if len(incumbent_ms) else 0.0,
    )


def shadow_comparison(candidate_id: str, intents: Sequence[str], settings: Settings | None = None) -> Comparison:
    """The shadow rows of `candidate_id` for `intents` that have a reference: a correction, or the incumbent's
    answer rated 4 or 5."""
    client = get_client(settings)
    try:
        rows = client.query(SHADOW_QUERY, parameters={"candidate": candidate_id, "intents": list(intents)}).result_rows
    finally:
        client.close()
    references, incumbent, candidate, candidate_ms, incumbent_ms = [], [], [], [], []
    for _, _, answered, answer, incumbent_answer, latency, incumbent_latency, _, correction, rating in rows:
        reference = correction or (incumbent_answer if rating is not None and rating >= 4 else None)
        if reference is None:
            continue
        references.append(reference)
        incumbent.append(incumbent_answer)
        candidate.append(answer if answered else None)
        candidate_ms.append(latency)
        incumbent_ms.append(incumbent_latency)
    return compare(references, incumbent, candidate, candidate_ms, incumbent_ms)
