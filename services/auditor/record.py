"""The audit record and its hash chain, shared by the auditor (which writes it), the telemetry writer (which
stores it) and `switchyard verify` (which checks it).

The audit record is the Audited record with its PII tokenised: the request text is replaced by the governor's
redacted text (its original length kept as `request.text_chars`) and the rendered prompt by the redacted prompt,
the most any model was allowed to see. Each
record's hash covers the previous record's hash and the canonical JSON of the whole record (the audit entry
included, its own hash and the auditor's own timing excepted, which do not exist yet when the hash is taken).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

AUDITOR_STAGE = "auditor"


def canonical_json(value: Any) -> str:
    """One spelling per value: sorted keys, no spaces, UTF-8 kept; what the hash is taken over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tokenised(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a chain record (Answered or Audited, in Avro's dict form) with the request text and the
    rendered prompt replaced by the governor's PII-tokenised versions."""
    view = dict(record)  # only the two replaced fields' parents are copied: the input is left as it was
    governance = view.get("governance") or {}
    request = view["request"] = dict(view["request"])
    # the original length stays: route conditions (min_chars, max_chars) were decided on it, and replay needs it
    request["text_chars"] = len(request["text"])
    request["text"] = governance.get("redacted_text", "")
    if "context" in view:
        view["context"] = {**view["context"], "prompt": governance.get("redacted_prompt", [])}
    return view


def chain_payload(audit_record: dict[str, Any]) -> dict[str, Any]:
    """What the hash covers: the audit record without the entry's own hash and without the auditor's timing."""
    payload = dict(audit_record)
    payload["timings"] = [t for t in audit_record.get("timings", []) if t.get("stage") != AUDITOR_STAGE]
    payload["audit"] = {k: v for k, v in audit_record["audit"].items() if k != "hash"}
    return payload


def chain_hash(prev_hash: str, payload: dict[str, Any]) -> str:
    """sha256 over the previous record's hash, a newline and the canonical JSON of this record's payload."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical_json(payload).encode()).hexdigest()


def expected_hash(audit_record: dict[str, Any]) -> str:
    """The hash an intact audit record carries, recomputed from its content."""
    return chain_hash(audit_record["audit"]["prev_hash"], chain_payload(audit_record))
