"""The POS side of feedback: a till or store app rates an answer, corrects it, or says how an escalation ended,
with one call each; published to the `feedback` topic by the learning loop's publisher."""

from __future__ import annotations

from services.learning.feedback import FeedbackPublisher, make_feedback
from services.settings import Settings
from services.wire.models import Feedback, FeedbackKind


class PosFeedbackClient:
    """Feedback from one terminal of one store; `author` is the staff id signed in at the till. Every record names
    the till's store: a request id names a request only within its store, so feedback reaches only that store's
    request of the id (an approval releases only it)."""

    def __init__(self, author: str, store_id: str, settings: Settings | None = None) -> None:
        self.author, self.store_id = author, store_id
        self.publisher = FeedbackPublisher(settings)

    def rate(self, request_id: str, rating: int) -> Feedback:
        return self._send(self._feedback(request_id, FeedbackKind.RATING, rating=rating))

    def correct(self, request_id: str, corrected_text: str) -> Feedback:
        return self._send(self._feedback(request_id, FeedbackKind.CORRECTION, corrected_text=corrected_text))

    def reroute(self, request_id: str, intent: str) -> Feedback:
        return self._send(self._feedback(request_id, FeedbackKind.ROUTE_CORRECTION, corrected_intent=intent))

    def escalation_outcome(self, request_id: str, outcome: str) -> Feedback:
        return self._send(self._feedback(request_id, FeedbackKind.ESCALATION_OUTCOME, outcome=outcome))

    def _feedback(self, request_id: str, kind: FeedbackKind, **field: str | int) -> Feedback:
        return make_feedback(request_id, kind, store_id=self.store_id, author=self.author, **field)  # type: ignore[arg-type]

    def flush(self, timeout_s: float = 30.0) -> None:
        self.publisher.flush(timeout_s)

    def _send(self, feedback: Feedback) -> Feedback:
        self.publisher.publish(feedback)
        return feedback
