"""Pure mapping from chain records to ClickHouse rows: one row per request per stage, one per final answer, one
audit record per answer, one per rule that matched, one per dead letter, feedback event and model call. Column
lists match infra/clickhouse/*.sql."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.auditor.record import canonical_json, tokenised

STAGE_EVENT_COLUMNS = [
    "request_id", "store_id", "stage", "route", "provider", "model", "received_at", "started_at", "finished_at",
    "duration_ms", "tokens_in", "tokens_out", "cost_usd", "outcome", "error", "work_ms", "trace_id",
]  # fmt: skip
ANSWER_COLUMNS = [
    "request_id", "store_id", "channel", "intent", "route", "route_kind", "route_reason", "verdict", "provider",
    "model", "answer", "tokens_in", "tokens_out", "cost_usd", "model_ms", "created_at", "audited_at",
    "end_to_end_ms", "audit_hash", "failover", "api_key",
]  # fmt: skip
AUDIT_RECORD_COLUMNS = [
    "request_id", "audit_id", "chain_key", "seq", "prev_hash", "hash", "recorded_at", "store_id", "intent", "route",
    "route_table_version", "verdict", "policy_version", "provider", "model", "prompt_template", "prompt_hash",
    "record", "kafka_topic", "kafka_partition", "kafka_offset",
]  # fmt: skip
RULE_VERDICT_COLUMNS = [
    "request_id", "store_id", "stage", "position", "rule_id", "rule_version", "kind", "action", "verdict", "route",
    "detail", "decided_at",
]  # fmt: skip
FEEDBACK_COLUMNS = [
    "feedback_id", "request_id", "kind", "rating", "corrected_text", "corrected_intent", "outcome", "author",
    "created_at", "attributes",
]  # fmt: skip
MODEL_CALL_COLUMNS = [
    "call_id", "request_id", "provider", "model", "started_at", "latency_ms", "ttft_ms", "tokens_in", "tokens_out",
    "outcome", "error",
]  # fmt: skip
DEAD_LETTER_COLUMNS = [
    "stage", "topic", "partition", "offset", "request_id", "error_type", "reason", "original", "failed_at",
    "original_sealed_with",
]  # fmt: skip


def micros(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def millis(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1000, tz=UTC)


def stage_event_rows(audited: dict[str, Any], trace_id: str = "") -> list[list[Any]]:
    """One row per stage timing. Every stage continued the request's trace (its Kafka headers), so the trace id
    the audited record carries is each stage's, and every row gets it."""
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
                {category: float(ms) for category, ms in (timing.get("work_ms") or {}).items()},
                trace_id,
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
        list(answer.get("failover", [])),
        request.get("attributes", {}).get("api_key", ""),
    ]


def audit_record_row(audited: dict[str, Any], topic: str, partition: int, offset: int) -> list[Any]:
    """The audit_records row: the PII-tokenised audit record as canonical JSON (what `verify` rehashes), the
    columns it is filtered on, and where it sits on the `audited` topic (the auditor's recovery checkpoint)."""
    record = tokenised(audited)
    request, route, answer, audit = record["request"], record["route"], record["answer"], record["audit"]
    context, governance = record["context"], record["governance"]
    return [
        request["request_id"],
        audit["audit_id"],
        audit["chain_key"],
        audit.get("seq", 0),
        audit["prev_hash"],
        audit["hash"],
        micros(audit["recorded_at"]),
        request["store_id"],
        route["intent"],
        route["route_id"],
        route["route_table_version"],
        governance["verdict"],
        governance.get("policy_version", ""),
        answer["provider"],
        answer["model"],
        answer["prompt_template_version"] or context.get("template_version", ""),
        answer["prompt_hash"],
        canonical_json(record),
        topic,
        partition,
        offset,
    ]


def rule_verdict_rows(audited: dict[str, Any]) -> list[list[Any]]:
    """One row per finding: the governor's on the request and prompt, the answerer's output guard's on the answer,
    each timed at the end of the stage that made it."""
    request, route, verdict = audited["request"], audited["route"], audited["governance"]["verdict"]
    finished = {t["stage"]: t["finished_at"] for t in audited["timings"]}
    fallback = audited["audit"]["recorded_at"]
    rows = []
    for stage, findings in (
        ("governor", audited["governance"]["findings"]),
        ("answerer", audited["answer"].get("output_findings", [])),
    ):
        decided_at = micros(finished.get(stage, fallback))
        for position, finding in enumerate(findings):
            rows.append(
                [
                    request["request_id"], request["store_id"], stage, position, finding["rule_id"],
                    finding["rule_version"], finding["kind"], finding["action"], verdict, route["route_id"],
                    finding["detail"], decided_at,
                ]
            )  # fmt: skip
    return rows


def feedback_row(feedback: dict[str, Any]) -> list[Any]:
    return [
        feedback["feedback_id"],
        feedback["request_id"],
        feedback["kind"],
        feedback.get("rating"),
        feedback.get("corrected_text"),
        feedback.get("corrected_intent"),
        feedback.get("outcome"),
        feedback["author"],
        millis(feedback["created_at"]),
        dict(feedback.get("attributes", {})),
    ]


def model_call_row(call: dict[str, Any]) -> list[Any]:
    return [
        call["call_id"],
        call.get("request_id"),
        call["provider"],
        call["model"],
        micros(call["started_at"]),
        call["latency_ms"],
        call.get("ttft_ms"),
        call.get("tokens_in", 0),
        call.get("tokens_out", 0),
        call["outcome"],
        call.get("error", ""),
    ]


def dead_letter_rows(dead: dict[str, Any], trace_id: str = "") -> tuple[list[Any], list[Any] | None]:
    """The dead_letters row, and a stage_events row (in the dead letter's trace) when the request is known."""
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
        dead.get("original_sealed_with") or "",
    ]
    if dead["request_id"] is None:
        return row, None
    failed = micros(dead["failed_at"])
    event = [
        dead["request_id"], "", dead["stage"], "", "", "", failed, failed, failed, 0.0, 0, 0, 0.0,
        "dead_lettered", f"{dead['error_type']}: {dead['reason']}"[:2000], {}, trace_id,
    ]  # fmt: skip
    return row, event
