"""What a manager's decision (an ESCALATION_OUTCOME feedback record) is about, and what an approval releases, as
pure functions; services.approvals.state decides whether it may.

An approval names the store it is for (attribute `store_id`: the gateway sets its key's store, the CLI takes
`--store`) and releases only that store's request: clients choose their own request ids, so two stores may have
sent the same one. It becomes a new Request: the original's fields, a deterministic id (uuid5 of the store and
the original id, so the same approval released twice is the same request, and two stores' approvals of the
same id are different requests), and the attributes
`approval_for` (the original id) and `approved_by` (the manager), which services.policy.facts turns into the
facts that satisfy require_approval rules (never block rules, never caps). A rejection releases nothing: the held
answer stands, and the outcome is in ClickHouse (switchyard.feedback).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from typing import Any, Final

from services.runtime.request_key import feedback_store, store_request_key
from services.wire.models import Feedback, Request

APPROVED: Final = "approved"
REJECTED: Final = "rejected"
# the request attributes that may name the member of staff who asked (the POS sends one of them)
REQUESTER_ATTRIBUTES: Final = ("staff_id", "requested_by", "author")
# the author the HTTP gateway writes on feedback sent with an API key: a till, never a manager
API_AUTHOR_PREFIX: Final = "api:"


class ApprovalRejected(ValueError):
    """An approval that cannot release anything; the message is the dead-letter reason."""


def approved_request_id(store_id: str, original_id: str) -> str:
    """The id of the request an approval of store `store_id`'s `original_id` releases: the same for every copy of
    the approval, another for another store's request of the same id."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{store_request_key(store_id, original_id)}:approved"))


def approval_store(feedback: Feedback) -> str:
    """The store an approval is for ('' when it names none)."""
    return feedback_store(feedback.attributes)


def escalated(audited: Mapping[str, Any]) -> bool:
    """Whether the chain held this request for a manager: the governor escalated it before any model, or the
    answerer's output guard escalated the model's answer."""
    governance = audited.get("governance") or {}
    if governance.get("verdict") == "ESCALATE":
        return True
    answer = audited.get("answer") or {}
    return any(finding.get("action") == "escalate" for finding in answer.get("output_findings") or [])


def requester(request: Mapping[str, Any]) -> str | None:
    attributes = request.get("attributes") or {}
    for name in REQUESTER_ATTRIBUTES:
        value = str(attributes.get(name) or "").strip()
        if value:
            return value
    return None


def parse_record(record_json: str) -> dict[str, Any]:
    """The Audited record from switchyard.audit_records.record (canonical JSON of the Avro dict form)."""
    value = json.loads(record_json)
    if not isinstance(value, dict) or not isinstance(value.get("request"), dict):
        raise ApprovalRejected("the audit record holds no request")
    return value


def decider(feedback: Feedback) -> tuple[str, str]:
    """(manager, store) of a decision; raises ApprovalRejected when it names no manager (or an API key) or no
    store. Whether that manager may decide for that store is services.approvals.staff's question."""
    manager = feedback.author.strip()
    if not manager or manager in ("cli", "customer"):
        raise ApprovalRejected(f"request {feedback.request_id}: a decision must name the manager (--manager ID)")
    if manager.startswith(API_AUTHOR_PREFIX):
        raise ApprovalRejected(f"request {feedback.request_id}: {manager} is an API key, not a manager")
    store = approval_store(feedback)
    if not store:
        raise ApprovalRejected(f"request {feedback.request_id}: a decision must name its store (--store ID)")
    return manager, store


def escalation(feedback: Feedback, audited: Mapping[str, Any] | None, store: str) -> dict[str, Any]:
    """The escalated original request a decision is about, from its audit record; raises ApprovalRejected when
    the store never sent it, it was not escalated, or it is itself a released approval."""
    if audited is None or audited["request"].get("store_id") != store:
        raise ApprovalRejected(f"request {feedback.request_id}: unknown request of store {store} (no audit record)")
    if not escalated(audited):
        raise ApprovalRejected(f"request {feedback.request_id}: was not escalated, so there is nothing to decide")
    original = dict(audited["request"])
    if (original.get("attributes") or {}).get("approval_for"):
        raise ApprovalRejected(f"request {feedback.request_id}: is itself a released approval; approve the original")
    return original


def released_request(feedback: Feedback, audited: Mapping[str, Any] | None) -> Request:
    """The request an approval releases; raises ApprovalRejected with the reason for an approval that must not
    release anything. Who may decide, and whether the request is still pending, is services.approvals.state's
    question, asked before this one."""
    manager, store = decider(feedback)
    original = escalation(feedback, audited, store)
    if requester(original) == manager:
        raise ApprovalRejected(f"request {feedback.request_id}: {manager} asked for it and cannot approve it too")
    attributes = {str(k): str(v) for k, v in (original.get("attributes") or {}).items()}
    attributes.update(approval_for=feedback.request_id, approved_by=manager, approval_feedback_id=feedback.feedback_id)
    note = feedback.attributes.get("note")
    if note:
        attributes["approval_note"] = note
    original.pop("text_chars", None)  # added by the audit view, not a Request field
    return Request.model_validate(
        {
            **original,
            "request_id": approved_request_id(store, feedback.request_id),
            "created_at": feedback.created_at,
            "attributes": attributes,
        }
    )
