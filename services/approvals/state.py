"""The approval state machine, as one pure function: what one manager's decision does to one store's escalated
request, given what was decided before.

    pending ──approve──> approved   (released once; approving again releases nothing)
       │    ──reject───> rejected   (final: an approval after it is refused)
       └─ any decision after the approval TTL ──> expired (final, refused)

Pending is the absence of a state record: the approvals process does not read `audited`, so it first hears of an
escalation when a manager decides it. Every decided state is a record on the compacted `approvals.state`, keyed
by the store-scoped request key and written in the transaction that releases the request and commits the
decision's feedback offset; a restarted process reads the topic back before it decides anything, so a decision
it made is never made differently, whatever killed it. A refusal that changes nothing (an unknown manager, the
requester approving their own request) leaves the request pending for a manager who may decide it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from services.approvals.release import APPROVED, REJECTED, ApprovalRejected, decider, escalation, released_request
from services.approvals.staff import authorise
from services.runtime.request_key import store_request_key
from services.wire.models import Approval, ApprovalState, Feedback, FeedbackKind, Request, Staff

STATE_TOPIC: Final = "approvals.state"
FINAL: Final = frozenset({ApprovalState.APPROVED, ApprovalState.REJECTED, ApprovalState.EXPIRED})


@dataclass(frozen=True, slots=True)
class Decision:
    """What one decision does: the state record to write (None: the state is unchanged), the request to release,
    and the reason it was refused (dead-lettered); an expired decision both writes its state and is refused."""

    state: Approval | None = None
    release: Request | None = None
    refused: ApprovalRejected | None = None


def state_key(approval: Approval) -> str:
    """The record's key on `approvals.state`: the request id scoped to its store."""
    return store_request_key(approval.store_id, approval.request_id)


def escalated_at(original: Mapping[str, Any], audited: Mapping[str, Any] | None) -> int:
    """When the request was escalated, in ms: when the auditor recorded it, or the request's own created_at when
    that is earlier (a client's clock can bring expiry forward, never put it off)."""
    created = int(original["created_at"])
    recorded = ((audited or {}).get("audit") or {}).get("recorded_at")
    return min(created, int(recorded) // 1000) if recorded is not None else created


def decide_approval(
    feedback: Feedback,
    audited: Mapping[str, Any] | None,
    *,
    current: Approval | None,
    staff: Mapping[str, Staff],
    decided_at: int,
    ttl_ms: int,
) -> Decision:
    """The Decision for one ESCALATION_OUTCOME feedback record (nothing for other kinds). `audited` is the
    request's audit record (None when unknown; not needed once `current` holds a decided state), `current` its
    state record, `staff` the staff table, `decided_at` when the decision arrived (ms)."""
    if feedback.kind != FeedbackKind.ESCALATION_OUTCOME:
        return Decision()
    try:
        outcome = (feedback.outcome or "").strip().lower()
        if outcome not in (APPROVED, REJECTED):
            raise ApprovalRejected(f"request {feedback.request_id}: unknown outcome {feedback.outcome!r}")
        manager, store = decider(feedback)
        authorise(manager, store, staff, feedback.request_id)
        if current is not None and current.state in FINAL:
            return _decided_before(current, outcome, feedback)
        return _pending(feedback, audited, outcome, manager=manager, store=store, decided_at=decided_at, ttl_ms=ttl_ms)
    except ApprovalRejected as refused:
        return Decision(refused=refused)


def _pending(
    feedback: Feedback,
    audited: Mapping[str, Any] | None,
    outcome: str,
    *,
    manager: str,
    store: str,
    decided_at: int,
    ttl_ms: int,
) -> Decision:
    """A decision on a pending request, by a member of staff who may decide it."""
    original = escalation(feedback, audited, store)
    since = escalated_at(original, audited)

    def state(to: ApprovalState, released: str | None = None) -> Approval:
        return Approval(
            store_id=store,
            request_id=feedback.request_id,
            state=to,
            decided_by=manager,
            feedback_id=feedback.feedback_id,
            released_request_id=released,
            escalated_at=since,
            decided_at=decided_at,
        )

    if decided_at - since > ttl_ms:
        hours = (decided_at - since) / 3_600_000
        reason = (
            f"request {feedback.request_id}: expired: escalated {hours:.1f} h before this decision, longer than the "
            f"approval TTL of {ttl_ms / 3_600_000:g} h; the held answer stands"
        )
        return Decision(state=state(ApprovalState.EXPIRED), refused=ApprovalRejected(reason))
    if outcome == REJECTED:
        return Decision(state=state(ApprovalState.REJECTED))
    request = released_request(feedback, audited)
    return Decision(state=state(ApprovalState.APPROVED, request.request_id), release=request)


def _decided_before(current: Approval, outcome: str, feedback: Feedback) -> Decision:
    """A decision on a request already decided: the same decision again changes nothing; any other is refused."""
    by, request_id = current.decided_by, feedback.request_id
    if current.state == ApprovalState.EXPIRED:
        raise ApprovalRejected(f"request {request_id}: expired: it was not decided within the approval TTL")
    if current.state == ApprovalState.REJECTED and outcome == APPROVED:
        raise ApprovalRejected(f"request {request_id}: was rejected by {by}; a rejection is final, nothing is released")
    if current.state == ApprovalState.APPROVED and outcome == REJECTED:
        raise ApprovalRejected(f"request {request_id}: was already approved by {by} and released; too late to reject")
    return Decision()
