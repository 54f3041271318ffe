"""`switchyard approve|reject REQUEST_ID --store ID --manager ID [--note TEXT]`: a manager's decision on one
store's escalated request, published as an ESCALATION_OUTCOME feedback record (outcome approved or rejected, the
manager as author, the store and the note in attributes; a request id names a request only within its store).
The approvals process releases an approved request through the chain again; a rejection releases nothing and
the held answer stands."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from services.learning.feedback import FeedbackError, FeedbackPublisher, make_feedback
from services.wire.models import Feedback, FeedbackKind

OUTCOME_OF = {"approve": "approved", "reject": "rejected"}


def decision(command: str, request_id: str, manager: str, note: str | None = None, *, store: str) -> Feedback:
    """The feedback record of one decision; raises FeedbackError when the manager or the store is missing."""
    if not manager.strip():
        raise FeedbackError(f"request {request_id}: --manager must name the manager who decides")
    if not store.strip():
        raise FeedbackError(f"request {request_id}: --store must name the store the request came from")
    return make_feedback(
        request_id,
        FeedbackKind.ESCALATION_OUTCOME,
        store_id=store,
        author=manager.strip(),
        outcome=OUTCOME_OF[command],
        attributes={"note": note} if note else None,
    )


def main(command: str, argv: Sequence[str] | None = None) -> int:
    verb = "release it through the chain again" if command == "approve" else "keep the held answer"
    parser = argparse.ArgumentParser(
        prog=f"switchyard {command}", description=f"{command} an escalated request ({verb})"
    )
    parser.add_argument("request_id", help="the escalated request's id")
    parser.add_argument("--store", required=True, help="the store the request came from")
    parser.add_argument("--manager", required=True, help="the deciding manager's staff id")
    parser.add_argument("--note", help="why, recorded with the decision")
    args = parser.parse_args(argv)
    try:
        feedback = decision(command, args.request_id, args.manager, args.note, store=args.store)
    except FeedbackError as error:
        parser.error(str(error))
    publisher = FeedbackPublisher()
    publisher.publish(feedback)
    publisher.flush()
    print(f"{feedback.outcome} request {feedback.request_id} by {feedback.author} (feedback {feedback.feedback_id})")
    return 0
