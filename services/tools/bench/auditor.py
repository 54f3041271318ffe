"""`switchyard bench-audit [--records N] [--batch B]`: audit write throughput on this machine, printed as JSON.

Measures the audit path without Kafka: the auditor's decision (tokenise, canonical JSON, sha256 chain) on N
answered requests spread over the stores, the Avro round trip and the telemetry writer's row building, and the
ClickHouse insert in batches of B into a scratch copy of `audit_records` (dropped afterwards).
`audit_records_per_s` is N over the time of all three.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from typing import Any

from services.auditor.stage import Auditor
from services.infra.clickhouse import get_client
from services.runtime.stage import compose, now_us, stage_timing
from services.settings import Settings, get_settings
from services.telemetry.rows import AUDIT_RECORD_COLUMNS, audit_record_row
from services.wire.codec import AvroCodec
from services.wire.models import (
    Answer,
    Answered,
    Channel,
    Context,
    ContextItem,
    Finding,
    Governance,
    Request,
    RouteDecision,
    RouteKind,
    StageTiming,
    Verdict,
)
from services.wire.schema_registry import SchemaRegistry

REASON = "intent discount_request 0.93 (runner-up returns 0.03); route model.discount_request for the intent"


def sample(n: int) -> Answered:
    """A typical model-route request: two context items, a PII mask and a policy escalation."""
    store = f"{n % 1600 + 1:04d}"
    text = f"Can I give this customer 25% off the waxed jacket? Email me at jane{n}@example.com"
    pii = Finding(rule_id="pii.email", rule_version="g-1", kind="pii", action="mask", detail="e-mail")
    policy = Finding(
        rule_id="discount.manager_approval",
        rule_version="1",
        kind="policy.discount_limit",
        action="escalate",
        detail="a discount of 25% is over the 20% staff may give without a manager",
        inputs={"discount_percent": "25"},
    )
    return Answered(
        request=Request(
            request_id=str(uuid.uuid4()),
            store_id=store,
            terminal_id=f"pos-{n % 9}",
            channel=Channel.POS,
            text=text,
            created_at=int(time.time() * 1000),
        ),
        route=RouteDecision(
            route_id="model.discount_request",
            kind=RouteKind.SMALL_MODEL,
            intent="discount_request",
            confidence=0.93,
            provider="default",
            fallbacks=["model.large"],
            reason=REASON,
            route_table_version="2025.06-1+ba1e0a707fb2",
        ),
        context=Context(
            items=[
                ContextItem(source="store_hours", source_id=store, version="7", text="Open 9-18.", tokens=6),
                ContextItem(
                    source="knowledge_base", source_id="kb-12", version="3", score=0.81, text="Ask a manager.", tokens=9
                ),
            ],
            token_count=15,
            token_budget=512,
            template_id="default",
            template_version="3",
        ),
        governance=Governance(
            verdict=Verdict.ESCALATE,
            findings=[pii, policy],
            redacted_text=text.replace(f"jane{n}@example.com", "<EMAIL_1>"),
            policy_version="2026.11-1#f037b4adf576",
        ),
        answer=Answer(
            text="A manager will confirm shortly.",
            provider="default",
            model="gemma3-270m",
            model_version="1",
            prompt_template_version="3",
            prompt_hash="9f" * 32,
            tokens_in=180,
            tokens_out=24,
            cost_usd=0.00004,
            latency_ms=81.0,
        ),
        timings=[
            StageTiming(stage=stage, received_at=1, started_at=2, finished_at=3)
            for stage in ("router", "stitcher", "governor", "answerer")
        ],
    )


def run(records: int, batch: int, settings: Settings) -> dict[str, Any]:
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    auditor = Auditor(settings.model_copy(update={"topic_prefix": f"bench-{uuid.uuid4().hex[:6]}."}))
    inputs = [sample(n) for n in range(records)]
    started = time.perf_counter()
    sections = [_decide(auditor, record) for record in inputs]
    decided = time.perf_counter()
    rows = []
    for n, (record, section) in enumerate(zip(inputs, sections, strict=True)):
        audited = compose(record.model_dump(), "audit", section.model_dump(), stage_timing("auditor", 1, 2, now_us()))
        _, value = codec.decode(codec.encode("Audited", audited))
        rows.append(audit_record_row(value, "audited", n % 12, n))
    built = time.perf_counter()
    client = get_client(settings)
    table = f"audit_records_bench_{uuid.uuid4().hex[:8]}"
    client.command(f"CREATE TABLE {table} AS audit_records")
    try:
        insert_started = time.perf_counter()
        for start in range(0, len(rows), batch):
            client.insert(table, rows[start : start + batch], column_names=AUDIT_RECORD_COLUMNS)
        inserted = time.perf_counter()
        stored = int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])
    finally:
        client.command(f"DROP TABLE IF EXISTS {table}")
    total = (built - started) + (inserted - insert_started)
    return {
        "records": records,
        "batch": batch,
        "stored": stored,
        "decide_per_s": round(records / (decided - started)),
        "row_build_per_s": round(records / (built - decided)),  # Avro round trip included, as the writer decodes
        "insert_per_s": round(records / (inserted - insert_started)),
        "audit_records_per_s": round(records / total),
        "record_bytes_avg": round(sum(len(r[AUDIT_RECORD_COLUMNS.index("record")]) for r in rows) / records),
    }


def _decide(auditor: Auditor, record: Answered) -> Any:
    """decide has no await inside: drive the coroutine to its end without an event loop round trip each."""
    coroutine = auditor.decide(record)
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    raise RuntimeError("Auditor.decide awaited something")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench-audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=20_000, help="audit records to write")
    parser.add_argument("--batch", type=int, default=5_000, help="rows per insert (the telemetry writer's max_rows)")
    args = parser.parse_args(argv)
    print(json.dumps(run(args.records, args.batch, get_settings()), indent=2))
    return 0
