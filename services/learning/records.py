"""The rows the learning loop reads and writes in ClickHouse, in one place: an Audited record parsed back from
`audit_records.record` (plain JSON or Avro's JSON encoding), and the row shapes of audit_records and feedback
exactly as their writers insert them (tests and the demo insert through these)."""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, get_args

from fastavro import json_reader, json_writer
from pydantic import BaseModel, ValidationError

from services.auditor.record import tokenised
from services.settings import get_settings
from services.wire.codec import wire_schema
from services.wire.models import Audited, Feedback
from services.wire.schema_registry import SchemaRegistry

AUDIT_RECORD_COLUMNS = [
    "request_id", "audit_id", "chain_key", "seq", "prev_hash", "hash", "recorded_at", "store_id", "intent", "route",
    "route_table_version", "verdict", "policy_version", "provider", "model", "prompt_template", "prompt_hash",
    "record",
]  # fmt: skip
FEEDBACK_COLUMNS = [
    "feedback_id", "request_id", "kind", "rating", "corrected_text", "corrected_intent", "outcome", "author",
    "created_at", "attributes",
]  # fmt: skip


def feedback_by_request(where: str = "") -> str:
    """SQL: the latest feedback of each kind per request (ties broken by feedback id), for joining on store_id and
    request_id both: a request id names a request only within its store. Feedback that names no store (written
    before feedback named one) has store_id '' and joins no request."""
    latest = "(created_at, feedback_id), kind = "
    return f"""\
    SELECT
        store_id,
        request_id,
        argMaxIf(corrected_text, {latest}'CORRECTION') AS correction,
        argMaxIf(corrected_intent, {latest}'ROUTE_CORRECTION') AS corrected_intent,
        argMaxIf(rating, {latest}'RATING') AS rating,
        argMaxIf(outcome, {latest}'ESCALATION_OUTCOME') AS escalation_outcome
    FROM switchyard.feedback FINAL{where}
    GROUP BY store_id, request_id"""


class AuditRecordError(ValueError):
    """An audit_records.record value is neither the Audited record as JSON nor in Avro's JSON encoding."""


@lru_cache(maxsize=1)
def _audited_schema() -> Any:
    return wire_schema(SchemaRegistry.load(get_settings().schemas_dir).schema("Audited"))


def parse_audited(record_json: str, request_id: str = "") -> Audited:
    """The Audited record stored in `audit_records.record`: its JSON form (the audit writer's canonical JSON of
    the PII-tokenised record, whose extra keys such as request.text_chars are ignored here) or Avro's JSON
    encoding (unions wrapped as {"string": ...}); whichever the writer chose, the learning loop reads it."""
    try:
        data = json.loads(record_json)
        return Audited.model_validate(_known_fields(Audited, data))
    except (ValueError, ValidationError):
        pass
    try:
        decoded = next(iter(json_reader(io.StringIO(record_json), _audited_schema())))
        return Audited.model_validate(decoded)
    except Exception as error:  # fastavro raises several types for a value that does not fit the schema
        raise AuditRecordError(f"request {request_id or '?'}: audit record is not an Audited record: {error}") from None


def _known_fields(model: type[BaseModel], value: Any) -> Any:
    """`value` without the keys `model` (and the models nested in it) does not declare: a newer writer's extra
    fields must not stop an older reader."""
    if not isinstance(value, dict):
        return value
    known = {}
    for name, field in model.model_fields.items():
        if name in value:
            nested = _nested_model(field.annotation)
            item = value[name]
            if nested is not None and isinstance(item, list):
                item = [_known_fields(nested, element) for element in item]
            elif nested is not None:
                item = _known_fields(nested, item)
            known[name] = item
    return known


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _nested_model(argument)
        if found is not None:
            return found
    return None


def tokenised_json(audited: Audited) -> str:
    """The record as the audit writer stores it: canonical JSON with the request text and the rendered prompt
    replaced by the governor's tokenised versions, and the original text length kept as request.text_chars."""
    return canonical_json(tokenised(audited.model_dump(mode="json", exclude={"pii_vault"})))


def avro_json(audited: Audited) -> str:
    """The record in Avro's JSON encoding, one of the two forms `parse_audited` reads."""
    out = io.StringIO()
    json_writer(out, _audited_schema(), [audited.model_dump(mode="json")])
    return out.getvalue().strip()


def micros(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def audit_row(audited: Audited, *, record_json: str | None = None) -> list[Any]:
    """One audit_records row (infra/clickhouse/007), as the audit writer inserts it."""
    request, route, answer, audit = audited.request, audited.route, audited.answer, audited.audit
    return [
        request.request_id,
        audit.audit_id,
        audit.chain_key,
        audit.seq,
        audit.prev_hash,
        audit.hash,
        micros(audit.recorded_at),
        request.store_id,
        route.intent,
        route.route_id,
        route.route_table_version,
        audited.governance.verdict.value,
        audited.governance.policy_version,
        answer.provider,
        answer.model,
        answer.prompt_template_version,
        answer.prompt_hash,
        record_json if record_json is not None else tokenised_json(audited),
    ]


def feedback_row(feedback: Feedback) -> list[Any]:
    """One feedback row (infra/clickhouse/008), as the feedback writer inserts it."""
    return [
        feedback.feedback_id,
        feedback.request_id,
        feedback.kind.value,
        feedback.rating,
        feedback.corrected_text,
        feedback.corrected_intent,
        feedback.outcome,
        feedback.author,
        datetime.fromtimestamp(feedback.created_at / 1000, tz=UTC),
        feedback.attributes,
    ]


def content_hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\x00")
    return digest.hexdigest()


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
