"""Numbers from answered records: end-to-end and per-stage latency percentiles, orchestration overhead
(end to end minus the model's own time), and the orchestration-work split in the reference form."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from services.pos.answers import Received

# The reference deployment reports its orchestration work in these categories; stages record theirs in
# StageTiming.work_ms under the names on the left.
SPLIT_OF_CATEGORY = {
    "routing": "routing",
    "governance": "governance",
    "context_stitching": "context stitching",
    "policy": "policy",
    "data_prep": "data prep",
    "audit": "audit",
}
SPLIT_ORDER = ["routing", "governance", "context stitching", "monitoring", "policy", "data prep", "audit"]


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {q: round(percentile(values, n), 2) for q, n in (("p50", 50), ("p95", 95), ("p99", 99))}


def model_ms(record: dict[str, Any]) -> float:
    answer = record["answer"]
    return float(answer["latency_ms"]) if answer["provider"] not in ("workflow", "governance") else 0.0


def stage_stats(answers: Iterable[Received]) -> dict[str, dict[str, float]]:
    """Per stage: decision time (started→finished) and time queued before it (previous finish→started)."""
    decide: dict[str, list[float]] = defaultdict(list)
    queued: dict[str, list[float]] = defaultdict(list)
    for received in answers:
        previous = received.record["request"]["created_at"] * 1000
        for timing in received.record["timings"]:
            decide[timing["stage"]].append((timing["finished_at"] - timing["started_at"]) / 1000)
            queued[timing["stage"]].append((timing["started_at"] - previous) / 1000)
            previous = timing["finished_at"]
    return {
        stage: {**{f"decide_{k}": v for k, v in summary(decide[stage]).items()},
                **{f"wait_{k}": v for k, v in summary(queued[stage]).items()}}
        for stage in decide
    }  # fmt: skip


def work_per_request(answers: Iterable[Received]) -> dict[str, float]:
    """Mean measured work per request, in ms, per work category the stages record (the work ledger: thread CPU of
    each decision's parts, the model's own time excluded), and their total."""
    totals: dict[str, float] = defaultdict(float)
    count = 0
    for received in answers:
        count += 1
        for timing in received.record["timings"]:
            for category, ms in (timing.get("work_ms") or {}).items():
                totals[category] += ms
    means = {category: round(total / max(count, 1), 2) for category, total in sorted(totals.items())}
    return {**means, "total": round(sum(totals.values()) / max(count, 1), 2)}


def work_split(answers: Iterable[Received]) -> dict[str, float | None]:
    """Share of measured orchestration work per reference category, in percent, from the work each stage
    measured and recorded in its timing (waiting and the model's own time excluded). Monitoring is the telemetry
    writer's work, not in the records: it is None here (ClickHouse's orchestration_work view has it)."""
    totals: dict[str, float] = defaultdict(float)
    for received in answers:
        for timing in received.record["timings"]:
            for category, ms in (timing.get("work_ms") or {}).items():
                if category in SPLIT_OF_CATEGORY:
                    totals[SPLIT_OF_CATEGORY[category]] += ms
    grand = sum(totals.values()) or 1.0
    return {
        category: (None if category == "monitoring" else round(100 * totals[category] / grand, 1))
        for category in SPLIT_ORDER
    }
