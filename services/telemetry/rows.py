"""Pure mapping from chain records to ClickHouse rows: one row per request per stage, one per final answer,
one per dead letter. Column lists match infra/clickhouse/*.sql."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

STAGE_EVENT_COLUMNS = [
    "request_id", "store_id", "stage", "route", "provider", "model", "received_at", "started_at", "finished_at",
    "duration_ms", "tokens_in", "tokens_out", "cost_usd", "outcome", "error",
]  # fmt: skip
ANSWER_COLUMNS = [
    "request_id", "store_id", "channel", "intent", "route", "route_kind", "route_reason", "verdict", "provider",
    "model", "answer", "tokens_in", "tokens_out", "cost_usd", "model_ms", "created_at", "audited_at",
    "end_to_end_ms", "audit_hash",
]  # fmt: skip
DEAD_LETTER_COLUMNS = [
    "stage", "topic", "partition", "offset", "request_id", "error_type", "reason", "original", "failed_at",
]  # fmt: skip


def micros(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def stage_event_rows(audited: dict[str, Any]) -> list[list[Any]]:
    request, route, answer = audited["request"], audited["route"], audited["answer"]
    rows = []
    for timing in audited["timings"]:
        is_answerer = timing["stage"] == "answerer"
        rows.append(
            [
                request["request_id"],
                request["store_id"],
                timing["stage"],
                route["route_id"],
                answer["provider"] if is_answerer else "",
                answer["model"] if is_answerer else "",
                micros(timing["received_at"]),
                micros(timing["started_at"]),
                micros(timing["finished_at"]),
                (timing["finished_at"] - timing["started_at"]) / 1000,
                answer["tokens_in"] if is_answerer else 0,
                answer["tokens_out"] if is_answerer else 0,
                answer["cost_usd"] if is_answerer else 0.0,
                "ok",
                "",
            ]
        )
    return rows


def answer_row(audited: dict[str, Any]) -> list[Any]:
    request, route, answer, audit = audited["request"], audited["route"], audited["answer"], audited["audit"]
    return [
        request["request_id"],
        request["store_id"],
        request["channel"],
        route["intent"],
        route["route_id"],
        route["kind"],
        route["reason"],
        audited["governance"]["verdict"],
        answer["provider"],
        answer["model"],
        answer["text"],
        answer["tokens_in"],
        answer["tokens_out"],
        answer["cost_usd"],
        answer["latency_ms"],
        millis(request["created_at"]),
        micros(audit["recorded_at"]),
        (audit["recorded_at"] - request["created_at"] * 1000) / 1000,
        audit["hash"],
    ]


def dead_letter_rows(dead: dict[str, Any]) -> tuple[list[Any], list[Any] | None]:
    """The dead_letters row, and a stage_events row when the request is known."""
    row = [
        dead["stage"],
        dead["topic"],
        dead["partition"],
        dead["offset"],
        dead["request_id"],
        dead["error_type"],
        dead["reason"],
        dead["original"],
        micros(dead["failed_at"]),
    ]
    if dead["request_id"] is None:
        return row, None
    failed = micros(dead["failed_at"])
    event = [
        dead["request_id"], "", dead["stage"], "", "", "", failed, failed, failed, 0.0, 0, 0, 0.0,
        "dead_lettered", f"{dead['error_type']}: {dead['reason']}"[:2000],
    ]  # fmt: skip
    return row, event
