"""Candidate against incumbent, by the metric in metrics.py (the values an answer states): on the evaluation split of
an exported data set (offline) and on live traffic in shadow mode (rows of switchyard.shadow_answers joined in
ClickHouse to the audit records for the intent and to the feedback for the reference answer).

The incumbent is what answers those intents now: where a custom model is promoted for them, its answers (the
configured model's where it declines), else the configured model's. Offline, training.evaluate_memory asks the
promoted model (services/learning/training.py: PromotedIncumbent); in shadow, the promoted model's answers are
recorded as the incumbent's (services/learning/shadow.py)."""

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
) AS fb ON fb.request_id = s.request_id AND fb.store_id = a.store_id
WHERE s.candidate = {{candidate:String}} AND has({{intents:Array(String)}}, a.intent)
ORDER BY s.request_id
SETTINGS join_use_nulls = 1"""


@dataclass(frozen=True)
class Comparison:
    """Accuracy (metrics.is_correct: the values stated) of the incumbent alone and of the candidate with its
    fallback (the candidate answers above its threshold, the incumbent the rest) on the same references; exact
    match and token F1 as secondary figures, and the share of references judged by the fallback (no value)."""

    examples: int
    incumbent_accuracy: float
    candidate_accuracy: float
    coverage: float  # share of requests the candidate answered itself
    candidate_precision: float  # accuracy on the requests it answered
    incumbent_token_f1: float
    candidate_token_f1: float
    incumbent_exact_match: float
    candidate_exact_match: float
    judged_by_fallback: float  # share of references stating no value, judged by exact match
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
        incumbent_exact_match=base.exact_match,
        candidate_exact_match=with_candidate.exact_match,
        judged_by_fallback=base.fallback,
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


ROUTE_SHADOW_QUERY: Final = f"""\
SELECT s.request_id, s.intent, s.incumbent_intent, fb.corrected_intent, fb.rating, fb.correction,
       fb.escalation_outcome
FROM switchyard.shadow_routes AS s FINAL
INNER JOIN switchyard.audit_records AS a FINAL ON a.request_id = s.request_id
LEFT JOIN
(
{feedback_by_request()}
) AS fb ON fb.request_id = s.request_id AND fb.store_id = a.store_id
WHERE s.candidate = {{candidate:String}}
ORDER BY s.request_id
SETTINGS join_use_nulls = 1"""


@dataclass(frozen=True)
class RouteComparison:
    """Intent accuracy of the router in force and of a candidate in shadow on the same live requests. The label is
    the staff's route correction, or the routed intent where staff confirmed it (rated the answer 4 or more,
    corrected only the answer, or approved the escalation), as the router training set labels it. Confirmations
    can only agree with the incumbent, so the comparison leans towards keeping it."""

    examples: int
    incumbent_accuracy: float
    candidate_accuracy: float
    agreement: float  # share of the labelled requests where both predicted the same intent

    @property
    def gain(self) -> float:
        return self.candidate_accuracy - self.incumbent_accuracy

    def as_dict(self) -> dict[str, Any]:
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in vars(self).items()}


def route_label(
    incumbent_intent: str,
    corrected_intent: str | None,
    rating: int | None,
    correction: str | None,
    escalation_outcome: str | None,
) -> str | None:
    """The intent a request should have had, from its feedback; None where nobody said."""
    if corrected_intent:
        return corrected_intent
    confirmed = (rating is not None and rating >= 4) or bool(correction) or escalation_outcome == "approved"
    return incumbent_intent if confirmed else None


def compare_routes(rows: Sequence[tuple[str, str, str | None]]) -> RouteComparison:
    """`rows`: (candidate intent, incumbent intent, label or None); unlabelled rows are left out."""
    labelled = [(c, i, label) for c, i, label in rows if label is not None]
    if not labelled:
        return RouteComparison(0, 0.0, 0.0, 0.0)
    count = len(labelled)
    return RouteComparison(
        examples=count,
        incumbent_accuracy=sum(i == label for _, i, label in labelled) / count,
        candidate_accuracy=sum(c == label for c, _, label in labelled) / count,
        agreement=sum(c == i for c, i, _ in labelled) / count,
    )


def route_shadow_comparison(candidate_id: str, settings: Settings | None = None) -> RouteComparison:
    client = get_client(settings)
    try:
        rows = client.query(ROUTE_SHADOW_QUERY, parameters={"candidate": candidate_id}).result_rows
    finally:
        client.close()
    return compare_routes(
        [
            (intent, incumbent, route_label(incumbent, corrected, rating, correction, escalation))
            for _, intent, incumbent, corrected, rating, correction, escalation in rows
        ]
    )
