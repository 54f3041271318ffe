"""Feedback onto the `feedback` topic: ratings, corrected answers, escalation outcomes and route corrections,
from the POS side (services.pos.feedback), the CLI (`switchyard feedback ...`) and the dashboard alike.

A confluent-kafka producer, idempotent with acks=all and keyed by request id, so every piece of feedback on one
request lands in one partition in order; the telemetry writer puts it in switchyard.feedback, joined to its
request on the store and the request id: every record names the store of the request it is about (the attribute
`store_id`), since clients choose request ids and two stores may use the same one.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence

from confluent_kafka import KafkaException, Producer

from services.runtime.kafka_clients import confluent_config
from services.runtime.request_key import FEEDBACK_STORE_ATTRIBUTE
from services.settings import Settings, get_settings
from services.shared.intents import INTENTS
from services.wire.codec import AvroCodec
from services.wire.models import Feedback, FeedbackKind
from services.wire.schema_registry import SchemaRegistry

ESCALATION_OUTCOMES = ("approved", "rejected")


class FeedbackError(ValueError):
    """Feedback that cannot be sent; the message says which field to fix."""


def make_feedback(
    request_id: str,
    kind: FeedbackKind,
    *,
    store_id: str,
    author: str,
    rating: int | None = None,
    corrected_text: str | None = None,
    corrected_intent: str | None = None,
    outcome: str | None = None,
    attributes: dict[str, str] | None = None,
    created_at_ms: int | None = None,
) -> Feedback:
    """A validated Feedback record about one store's request: the field its kind needs is set, and only that one."""
    if not store_id.strip():
        raise FeedbackError(f"request {request_id}: feedback must name the store of the request (--store)")
    needed = {
        FeedbackKind.RATING: ("rating", rating),
        FeedbackKind.CORRECTION: ("corrected_text", corrected_text),
        FeedbackKind.ROUTE_CORRECTION: ("corrected_intent", corrected_intent),
        FeedbackKind.ESCALATION_OUTCOME: ("outcome", outcome),
    }[kind]
    if needed[1] is None or (isinstance(needed[1], str) and not needed[1].strip()):
        raise FeedbackError(f"request {request_id}: {kind.value} feedback needs {needed[0]}")
    if rating is not None and not 1 <= rating <= 5:
        raise FeedbackError(f"request {request_id}: rating must be 1 to 5, got {rating}")
    if corrected_intent is not None and corrected_intent not in INTENTS:
        raise FeedbackError(f"request {request_id}: unknown intent {corrected_intent!r}: use one of {INTENTS}")
    if outcome is not None and outcome not in ESCALATION_OUTCOMES:
        raise FeedbackError(f"request {request_id}: outcome must be one of {ESCALATION_OUTCOMES}, got {outcome!r}")
    return Feedback(
        feedback_id=str(uuid.uuid4()),
        request_id=request_id,
        kind=kind,
        rating=rating,
        corrected_text=corrected_text,
        corrected_intent=corrected_intent,
        outcome=outcome,
        author=author,
        created_at=created_at_ms if created_at_ms is not None else int(time.time() * 1000),
        attributes={**(attributes or {}), FEEDBACK_STORE_ATTRIBUTE: store_id.strip()},
    )


class FeedbackPublisher:
    """Publishes Feedback records to `feedback` (with the settings' topic prefix)."""

    def __init__(self, settings: Settings | None = None, codec: AvroCodec | None = None) -> None:
        self.settings = settings or get_settings()
        self.topic = self.settings.topic("feedback")
        self.codec = codec or AvroCodec(SchemaRegistry.load(self.settings.schemas_dir))
        self.producer = Producer(
            confluent_config(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                },
                self.settings,
            )
        )

    def publish(self, feedback: Feedback) -> None:
        value = self.codec.encode("Feedback", feedback.model_dump())
        self.producer.produce(self.topic, key=feedback.request_id.encode(), value=value)
        self.producer.poll(0)

    def flush(self, timeout_s: float = 30.0) -> None:
        remaining = self.producer.flush(timeout_s)
        if remaining:
            raise KafkaException(f"{remaining} feedback records not acknowledged by Kafka within {timeout_s} s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True)
    rate = kinds.add_parser("rate", help="rate an answer 1 (bad) to 5 (good)")
    rate.add_argument("request_id", help="the request the feedback is about")
    rate.add_argument("rating", type=int, help="1 (bad) to 5 (good)")
    correct = kinds.add_parser("correct", help="give the answer it should have been")
    correct.add_argument("request_id", help="the request the feedback is about")
    correct.add_argument("text", help="the answer it should have been")
    route = kinds.add_parser("route", help="give the intent it should have been routed as")
    route.add_argument("request_id", help="the request the feedback is about")
    route.add_argument("intent", choices=INTENTS, help="the intent it should have been routed as")
    escalation = kinds.add_parser("escalation", help="record how an escalated request ended")
    escalation.add_argument("request_id", help="the request the feedback is about")
    escalation.add_argument("outcome", choices=ESCALATION_OUTCOMES, help="how it ended")
    for sub in (rate, correct, route, escalation):
        sub.add_argument("--store", required=True, help="the store the request came from (ids are per store)")
        sub.add_argument("--author", default="cli", help="staff id, or 'customer' (default: cli)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard feedback", description="send feedback on one answer")
    add_arguments(parser)
    args = parser.parse_args(argv)
    kind = {
        "rate": FeedbackKind.RATING,
        "correct": FeedbackKind.CORRECTION,
        "route": FeedbackKind.ROUTE_CORRECTION,
        "escalation": FeedbackKind.ESCALATION_OUTCOME,
    }[args.kind]
    try:
        feedback = make_feedback(
            args.request_id,
            kind,
            store_id=args.store,
            author=args.author,
            rating=getattr(args, "rating", None),
            corrected_text=getattr(args, "text", None),
            corrected_intent=getattr(args, "intent", None),
            outcome=getattr(args, "outcome", None),
        )
    except FeedbackError as error:
        parser.error(str(error))
    publisher = FeedbackPublisher()
    publisher.publish(feedback)
    publisher.flush()
    print(f"feedback {feedback.feedback_id} ({kind.value}) on request {feedback.request_id} sent to {publisher.topic}")
    return 0
