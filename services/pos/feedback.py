"""The POS side of feedback: a till or store app rates an answer, corrects it, or says how an escalation ended,
with one call each; published to the `feedback` topic by the learning loop's publisher."""

from __future__ import annotations

from services.learning.feedback import FeedbackPublisher, make_feedback
from services.runtime.models import Feedback, FeedbackKind
from services.settings import Settings


class PosFeedbackClient:
    """Feedback from one terminal; `author` is the staff id signed in at the till."""

    def __init__(self, author: str, settings: Settings | None = None) -> None:
        self.author = author
        self.publisher = FeedbackPublisher(settings)

    def rate(self, request_id: str, rating: int) -> Feedback:
        return self._send(make_feedback(request_id, FeedbackKind.RATING, author=self.author, rating=rating))

    def correct(self, request_id: str, corrected_text: str) -> Feedback:
        feedback = make_feedback(request_id, FeedbackKind.CORRECTION, author=self.author, corrected_text=corrected_text)
        return self._send(feedback)

    def reroute(self, request_id: str, intent: str) -> Feedback:
        feedback = make_feedback(request_id, FeedbackKind.ROUTE_CORRECTION, author=self.author, corrected_intent=intent)
        return self._send(feedback)

    def escalation_outcome(self, request_id: str, outcome: str, *, store_id: str) -> Feedback:
        """`store_id` is the till's store: an approval releases only that store's request of this id."""
        attributes = {"store_id": store_id}
        feedback = make_feedback(
            request_id, FeedbackKind.ESCALATION_OUTCOME, author=self.author, outcome=outcome, attributes=attributes
        )
        return self._send(feedback)

    def flush(self, timeout_s: float = 30.0) -> None:
        self.publisher.flush(timeout_s)

    def _send(self, feedback: Feedback) -> Feedback:
        self.publisher.publish(feedback)
        return feedback
