"""Feedback in the customer history, without a broker: a staff correction replaces the model's answer whether it is
read before or after the interaction, escalation outcomes and ratings are noted, orphans stay bounded, and consent
still decides whether any of it reaches the prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.learning.feedback import make_feedback
from services.runtime.request_key import store_request_key
from services.settings import REPO_ROOT
from services.stitcher.history import (
    CustomerFeedbackTable,
    CustomerHistory,
    Followup,
    Interaction,
    followup_of,
    history_context,
)
from services.wire.codec import AvroCodec
from services.wire.models import Customer, FeedbackKind
from services.wire.schema_registry import SchemaRegistry

CONSENTING = Customer(
    customer_id="C-7",
    tier="gold",
    preferences={},
    consent_history=True,
    consent_marketing=False,
    updated_at=1,
)


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SchemaRegistry.load(Path(REPO_ROOT / "schemas")))


STORE = "0417"


def interaction(request_id: str) -> Interaction:
    return Interaction(
        request_id, 1_700_000_000_000, "return_or_refund", "can I return it?", "no", "ALLOW, small", store_id=STORE
    )


def key(request_id: str) -> str:
    return store_request_key(STORE, request_id)


def texts(history: CustomerHistory, customer: Customer = CONSENTING) -> list[str]:
    items, _ = history_context(customer.customer_id, customer, history)
    return [i.text for i in items]


def test_a_correction_after_the_interaction_replaces_the_answer_and_says_so() -> None:
    history = CustomerHistory()
    history.add("C-7", interaction("r-1"))
    history.attach(key("r-1"), Followup(corrected="yes, within 30 days with the receipt"))
    [text] = texts(history)
    assert 'answered "yes, within 30 days with the receipt" (corrected by staff; ALLOW, small)' in text
    assert 'answered "no"' not in text and history.orphans == 0


def test_a_correction_read_before_its_interaction_waits_and_is_attached_when_it_arrives() -> None:
    history = CustomerHistory()
    history.attach(key("r-1"), Followup(corrected="yes"))
    assert history.orphans == 1 and texts(history) == []
    history.add("C-7", interaction("r-1"))
    [entry] = history.last("C-7")
    assert entry.followup.corrected == "yes" and history.orphans == 0
    assert 'answered "yes" (corrected by staff' in texts(history)[0]


def test_escalation_outcome_and_rating_are_noted_and_later_feedback_keeps_earlier() -> None:
    history = CustomerHistory()
    history.attach(key("r-1"), Followup(rating=2))  # before the interaction
    history.add("C-7", interaction("r-1"))
    history.attach(key("r-1"), Followup(escalation="approved"))
    history.attach(key("r-1"), Followup(corrected="yes"))
    history.attach(key("r-1"), Followup(rating=4))  # a newer rating wins
    [text] = texts(history)
    assert text.endswith('answered "yes" (corrected by staff; ALLOW, small; escalation approved; rated 4/5)')


def test_orphans_are_bounded_the_oldest_dropped_first() -> None:
    history = CustomerHistory(max_orphans=2)
    for n in range(3):
        history.attach(key(f"r-{n}"), Followup(corrected=f"fix {n}"))
    assert history.orphans == 2
    for n in range(3):
        history.add("C-7", interaction(f"r-{n}"))
    assert [e.followup.corrected for e in history.last("C-7")] == ["fix 2", "fix 1", ""]


def test_feedback_on_an_interaction_pushed_out_of_the_history_is_an_orphan() -> None:
    history = CustomerHistory(per_customer=1, max_customers=1)
    history.add("C-7", interaction("r-1"))
    history.add("C-7", interaction("r-2"))  # r-1 pushed out of C-7's history
    history.add("C-8", interaction("r-3"))  # C-7 evicted
    history.attach(key("r-1"), Followup(corrected="late"))
    history.attach(key("r-2"), Followup(corrected="late"))
    assert history.orphans == 2 and [e.request_id for e in history.last("C-8")] == ["r-3"]


def test_a_correction_is_withheld_like_the_rest_without_consent() -> None:
    history = CustomerHistory()
    history.add("C-7", interaction("r-1"))
    history.attach(key("r-1"), Followup(corrected="yes"))
    private = CONSENTING.model_copy(update={"consent_history": False})
    items, dropped = history_context("C-7", private, history)
    assert items == [] and [(d.source_id, d.reason) for d in dropped] == [("r-1", "consent")]


def test_feedback_records_map_to_followups_and_route_corrections_are_not_shown() -> None:
    def decoded(kind: FeedbackKind, **fields: object) -> dict[str, object]:
        return make_feedback("r-1", kind, store_id=STORE, author="staff-1", **fields).model_dump()  # type: ignore[arg-type]

    assert followup_of(decoded(FeedbackKind.CORRECTION, corrected_text="Yes,\n  within 30 days")) == (
        key("r-1"),
        Followup(corrected="Yes, within 30 days"),
    )
    assert followup_of(decoded(FeedbackKind.ESCALATION_OUTCOME, outcome="rejected")) == (
        key("r-1"),
        Followup(escalation="rejected"),
    )
    assert followup_of(decoded(FeedbackKind.RATING, rating=5)) == (key("r-1"), Followup(rating=5))
    assert followup_of(decoded(FeedbackKind.ROUTE_CORRECTION, corrected_intent="store_hours")) is None


def test_the_feedback_table_feeds_the_shared_history_and_skips_bad_records(codec: AvroCodec) -> None:
    history = CustomerHistory()
    table = CustomerFeedbackTable(bootstrap="unused:9092", topic="feedback", codec=codec, history=history)
    correction = make_feedback("r-1", FeedbackKind.CORRECTION, store_id=STORE, author="staff-1", corrected_text="yes")
    table.apply(b"r-1", codec.encode("Feedback", correction.model_dump()))
    table.apply(b"r-2", b"\x00not avro")
    table.apply(b"r-3", None)
    assert (len(table), table.rejected) == (1, 1)
    history.add("C-7", interaction("r-1"))
    assert [e.followup.corrected for e in history.last("C-7")] == ["yes"] and len(table) == 0


def test_another_stores_feedback_on_the_same_request_id_never_reaches_this_stores_interaction(
    codec: AvroCodec,
) -> None:
    """Clients choose request ids: store 0999 rating or correcting its own "r-1" must not touch 0417's "r-1", and
    feedback that names no store (from before feedback named one) reaches no interaction."""
    history = CustomerHistory()
    table = CustomerFeedbackTable(bootstrap="unused:9092", topic="feedback", codec=codec, history=history)
    history.add("C-7", interaction("r-1"))
    other = make_feedback("r-1", FeedbackKind.CORRECTION, store_id="0999", author="x", corrected_text="free TV")
    table.apply(b"r-1", codec.encode("Feedback", other.model_dump()))
    unscoped = {**other.model_dump(), "attributes": {}, "corrected_text": "also free"}
    assert followup_of(unscoped) is None
    table.apply(b"r-1", codec.encode("Feedback", unscoped))
    [entry] = history.last("C-7")
    assert entry.followup == Followup() and "free" not in texts(history)[0]
    own = make_feedback("r-1", FeedbackKind.CORRECTION, store_id=STORE, author="staff-1", corrected_text="yes")
    table.apply(b"r-1", codec.encode("Feedback", own.model_dump()))
    assert [e.followup.corrected for e in history.last("C-7")] == ["yes"]
