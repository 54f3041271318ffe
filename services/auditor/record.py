"""The audit record and its hash chain, shared by the auditor (which writes it), the telemetry writer (which
stores it) and `switchyard verify` (which checks it).

The audit record is the Audited record with its PII tokenised: the request text is the governor's redacted text
(its original length kept as `request.text_chars`), the rendered prompt the redacted prompt, the most any model
was allowed to see, and the answer the answerer's tokenised one; the sealed vault entry the record carries for the
edge is left out. So the chain never covers a raw value or anything that opens one, and erasing a customer's
vault entries (services.governor.erase) leaves every hash as it was. Each
record's hash covers the previous record's hash and the canonical JSON of the whole record (the audit entry
included, its own hash and the auditor's own timing excepted, which do not exist yet when the hash is taken).

The canonical JSON is RFC 8785's (JCS: keys in UTF-16 order, ECMAScript numbers, minimal string escapes), so a
verifier in any language recomputes the hash; the record says so in `audit.hash_scheme`. Records chained before
it carry no scheme (or the empty one) and were hashed over the JSON Python writes with sorted keys: `verify`
checks each record with the scheme it names.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

import rfc8785

AUDITOR_STAGE = "auditor"
JCS_SCHEME: Final = "sha256-jcs"
LEGACY_SCHEME: Final = ""  # before RFC 8785: Python's sorted-key JSON


class UnknownHashScheme(ValueError):
    """A record names a hash scheme this version does not know."""


def canonical_json(value: Any) -> str:
    """Sorted keys, no spaces, UTF-8 kept: how audit_records stores a record, and what legacy hashes covered."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def jcs(value: Any) -> bytes:
    """RFC 8785 canonical JSON, UTF-8. Raises rfc8785.CanonicalizationError for what JSON cannot carry exactly
    (an integer beyond ±(2**53 - 1), NaN, infinity, a lone surrogate)."""
    return rfc8785.dumps(value)


def tokenised(record: dict[str, Any]) -> dict[str, Any]:
    """A copy of a chain record (Answered or Audited, in Avro's dict form) with the request text and the
    rendered prompt replaced by the governor's PII-tokenised versions, and without the sealed vault entry."""
    view = {k: v for k, v in record.items() if k != "pii_vault"}  # the replaced fields' parents are copied
    governance = view.get("governance") or {}
    request = view["request"] = dict(view["request"])
    # the original length stays: route conditions (min_chars, max_chars) were decided on it, and replay needs it;
    # the governor records it since request.text reaches here tokenised (0: a record from before, text raw)
    request["text_chars"] = governance.get("request_text_chars") or len(request["text"])
    request["text"] = governance.get("redacted_text", "")
    if "context" in view:
        view["context"] = {**view["context"], "prompt": governance.get("redacted_prompt", [])}
    return view


def hash_scheme(audit_record: dict[str, Any]) -> str:
    return str(audit_record["audit"].get("hash_scheme", LEGACY_SCHEME))


def chain_payload(audit_record: dict[str, Any]) -> dict[str, Any]:
    """What the hash covers: the audit record without the entry's own hash and without the auditor's timing (and
    without the empty scheme that a reader of today's schema adds to a legacy record)."""
    payload = dict(audit_record)
    payload["timings"] = [t for t in audit_record.get("timings", []) if t.get("stage") != AUDITOR_STAGE]
    excluded = {"hash"} if hash_scheme(audit_record) != LEGACY_SCHEME else {"hash", "hash_scheme"}
    payload["audit"] = {k: v for k, v in audit_record["audit"].items() if k not in excluded}
    return payload


def chain_hash(prev_hash: str, payload: dict[str, Any], scheme: str = JCS_SCHEME) -> str:
    """sha256 over the previous record's hash, a newline and the canonical JSON of this record's payload."""
    if scheme == JCS_SCHEME:
        canonical = jcs(payload)
    elif scheme == LEGACY_SCHEME:
        canonical = canonical_json(payload).encode()
    else:
        raise UnknownHashScheme(f"unknown hash scheme {scheme!r}: this verifier knows {JCS_SCHEME!r} and legacy ''")
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()


def expected_hash(audit_record: dict[str, Any]) -> str:
    """The hash an intact audit record carries, recomputed from its content with the scheme it names."""
    return chain_hash(audit_record["audit"]["prev_hash"], chain_payload(audit_record), hash_scheme(audit_record))
