"""Customer history: the last few interactions of each loyalty customer, folded from the `audited` topic into
a bounded in-memory table, and turned into context only for customers who consented.

Why a Kafka-fed table and not a ClickHouse query: the stitcher sits on the request path, and a ClickHouse
round trip per request (plus the telemetry writer's batching delay before a row is visible) would add latency
and a hard dependency to every stitch, while `audited` already carries each finished interaction, redacted,
in order. The table is read like a reference table (every partition, from the beginning, no consumer group),
so every replica sees every customer; it keeps `per_customer` entries for at most `max_customers` customers,
the least recently active evicted first, so memory stays bounded however long the topic is. ClickHouse
remains the place for analysis over all history.

Feedback (the `feedback` topic, keyed by request id) is followed by a second table feeding the same history: a
staff correction, an escalation's outcome and a rating are attached to the interaction they are about (the same
store and request id: clients choose request ids, so another store's feedback on an id never reaches this
store's interaction, and feedback that names no store reaches none), so the
history says what the right answer turned out to be. The two topics are not ordered against each other, so
feedback on an interaction not (yet) held waits among at most `max_orphans` orphans, the oldest dropped first.
A correction replaces the model's answer in the item text: it is staff-written text about an answer that was
itself given to the tokenised request (the model never saw the customer's PII), and the stitcher runs no PII
analyser of its own (the governor's models live in the governor), so corrections are trusted like the answer.

Injection risk, scored once: in an item the untrusted text is what the customer (or staff) asked, and the governor
scored that request with its injection classifier when it governed it (Governance.request_injection_score, carried
on `audited`). The interaction keeps that score and the item carries it (ContextItem.injection_score), so the
governor does not embed the item again; it still runs its patterns over the whole item. The rest of the item is
the answer, model output written from the governed (injection-screened) prompt and checked by the answerer's
output guard, or a staff correction (trusted, above), plus the date and intent the stitcher writes. An interaction
from a record of a governor before the score carries none, and one scored by another classifier version carries a
score the governor ignores: the governor scores that item's text itself, as before.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from services.runtime.reference import TopicTable
from services.runtime.request_key import feedback_store, store_request_key
from services.stitcher.prep import normalise
from services.wire.codec import AvroCodec
from services.wire.models import ClassifierScore, ContextItem, Customer, DroppedContext

log = logging.getLogger("switchyard.stitcher.history")

PER_CUSTOMER: Final = 5
MAX_CUSTOMERS: Final = 200_000
LOOKBACK_DAYS: Final = 30  # history older than this is not read at start (bounds start-up on a long topic)
EXCERPT_CHARS: Final = 160
MAX_ORPHANS: Final = 50_000
CONSENT: Final = "consent"


@dataclass(frozen=True)
class Followup:
    """What feedback said about one interaction; empty fields mean nothing said yet."""

    corrected: str = ""  # the answer staff say it should have been
    escalation: str = ""  # approved / rejected
    rating: int | None = None

    def merged(self, newer: Followup) -> Followup:
        """This followup updated by a newer one: what the newer one says wins, what it leaves empty is kept."""
        return Followup(
            corrected=newer.corrected or self.corrected,
            escalation=newer.escalation or self.escalation,
            rating=newer.rating if newer.rating is not None else self.rating,
        )


@dataclass(frozen=True)
class Interaction:
    request_id: str
    at_ms: int
    intent: str
    asked: str
    answered: str
    outcome: str
    followup: Followup = field(default_factory=Followup)
    store_id: str = ""
    asked_injection: ClassifierScore | None = None  # the governor's injection score of the request, when governed

    @property
    def key(self) -> str:
        """What feedback on this interaction names: its store and request id."""
        return store_request_key(self.store_id, self.request_id)


def interaction_of(audited: dict[str, Any]) -> tuple[str, Interaction] | None:
    """(customer id, interaction) from a decoded Audited record; None for an anonymous request. Only the
    governor's redacted text is kept, never the raw request."""
    request = audited["request"]
    customer = request.get("customer_id")
    if not customer:
        return None
    governance, answer, route = audited["governance"], audited["answer"], audited["route"]
    verdict = governance["verdict"]
    return customer, Interaction(
        request_id=request["request_id"],
        at_ms=int(request["created_at"]),
        intent=str(route["intent"]),
        asked=_excerpt(governance.get("redacted_text") or ""),
        answered=_excerpt(answer.get("text") or ""),
        outcome=f"{verdict}, {answer.get('provider', '')}".strip(", "),
        store_id=str(request["store_id"]),
        asked_injection=_score_of(governance.get("request_injection_score")),
    )


def _score_of(decoded: dict[str, Any] | None) -> ClassifierScore | None:
    return None if decoded is None else ClassifierScore(classifier=decoded["classifier"], score=decoded["score"])


def followup_of(feedback: dict[str, Any]) -> tuple[str, Followup] | None:
    """(the interaction's key, followup) from a decoded Feedback record; None for feedback the history does not
    show: a route correction (about the router, not about what the customer was told), or feedback that names no
    store (a request id alone may name another store's request)."""
    kind, store = str(feedback["kind"]), feedback_store(feedback.get("attributes") or {})
    if not store:
        return None
    key = store_request_key(store, feedback["request_id"])
    if kind == "CORRECTION" and feedback.get("corrected_text"):
        return key, Followup(corrected=_excerpt(feedback["corrected_text"]))
    if kind == "ESCALATION_OUTCOME" and feedback.get("outcome"):
        return key, Followup(escalation=str(feedback["outcome"]))
    if kind == "RATING" and feedback.get("rating") is not None:
        return key, Followup(rating=int(feedback["rating"]))
    return None


def _excerpt(text: str) -> str:
    text = normalise(text).replace("\n", " ")  # not clean(): governance tokens look like <PHONE_1> tags
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


class CustomerHistory:
    """customer id → their last `per_customer` interactions, newest last; at most `max_customers` customers."""

    def __init__(
        self, per_customer: int = PER_CUSTOMER, max_customers: int = MAX_CUSTOMERS, max_orphans: int = MAX_ORPHANS
    ) -> None:
        self.per_customer, self.max_customers, self.max_orphans = per_customer, max_customers, max_orphans
        self._by_customer: OrderedDict[str, deque[Interaction]] = OrderedDict()
        self._customer_of: dict[str, str] = {}  # request id → customer, for every interaction held
        self._orphans: OrderedDict[str, Followup] = OrderedDict()  # feedback on interactions not held (yet)

    def __len__(self) -> int:
        return len(self._by_customer)

    @property
    def orphans(self) -> int:
        return len(self._orphans)

    def add(self, customer_id: str, interaction: Interaction) -> None:
        entries = self._by_customer.get(customer_id)
        if entries is None:
            entries = self._by_customer[customer_id] = deque(maxlen=self.per_customer)
            if len(self._by_customer) > self.max_customers:
                _, evicted = self._by_customer.popitem(last=False)
                self._forget(evicted)
        elif any(e.key == interaction.key for e in entries):
            return  # a replayed record
        self._by_customer.move_to_end(customer_id)
        if len(entries) == entries.maxlen:
            self._forget([entries[0]])  # the append below pushes it out
        early = self._orphans.pop(interaction.key, None)
        if early is not None:  # its feedback was read before it
            interaction = dataclasses.replace(interaction, followup=interaction.followup.merged(early))
        entries.append(interaction)
        self._customer_of[interaction.key] = customer_id

    def attach(self, key: str, followup: Followup) -> None:
        """Feedback on one interaction (its `key`): attached to it when held, else kept (bounded) until it arrives."""
        customer_id = self._customer_of.get(key)
        if customer_id is None:
            # Feedback on an anonymous request, or on one older than the lookback, also lands here and is never
            # claimed; the bound keeps that from growing.
            self._orphans[key] = self._orphans.pop(key, Followup()).merged(followup)
            if len(self._orphans) > self.max_orphans:
                self._orphans.popitem(last=False)
            return
        entries = self._by_customer[customer_id]
        for index, entry in enumerate(entries):
            if entry.key == key:
                entries[index] = dataclasses.replace(entry, followup=entry.followup.merged(followup))
                return

    def _forget(self, entries: Iterable[Interaction]) -> None:
        for entry in entries:
            self._customer_of.pop(entry.key, None)

    def last(self, customer_id: str) -> list[Interaction]:
        """Newest first."""
        return list(reversed(self._by_customer.get(customer_id, ())))


def history_context(
    customer_id: str | None,
    customer: Customer | None,
    history: CustomerHistory,
    count_tokens: Callable[[str], int] = lambda _: 0,
) -> tuple[list[ContextItem], list[DroppedContext]]:
    """History items for a customer who consented (newest first); for one who did not, or who is not in the
    customer reference data, nothing but the record of what was left out and why."""
    if not customer_id:
        return [], []
    items = [_item(e) for e in history.last(customer_id)]
    if customer is not None and customer.consent_history:
        return items, []
    return [], [
        DroppedContext(source=i.source, source_id=i.source_id, tokens=count_tokens(i.text), reason=CONSENT)
        for i in items
    ]


def _item(entry: Interaction) -> ContextItem:
    day = dt.datetime.fromtimestamp(entry.at_ms / 1000, dt.UTC).date().isoformat()
    return ContextItem(
        source="customer_history",
        source_id=entry.request_id,
        version=str(entry.at_ms),
        score=None,
        text=f'{day} {entry.intent}: asked "{entry.asked}"; {_answer(entry)}',
        injection_score=entry.asked_injection,
    )


def _answer(entry: Interaction) -> str:
    """The answer as it stands after feedback: a staff correction replaces the model's answer (the model's
    wrong answer would only mislead the next one), and the escalation's outcome and rating are noted."""
    followup = entry.followup
    notes = [entry.outcome] if entry.outcome else []
    if followup.corrected:
        notes.insert(0, "corrected by staff")
    if followup.escalation:
        notes.append(f"escalation {followup.escalation}")
    if followup.rating is not None:
        notes.append(f"rated {followup.rating}/5")
    text = followup.corrected or entry.answered
    return f'answered "{text}" ({"; ".join(notes)})' if notes else f'answered "{text}"'


class CustomerHistoryTable(TopicTable):
    """`audited` folded into a CustomerHistory, kept current like a reference table."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        codec: AvroCodec,
        history: CustomerHistory | None = None,
        lookback_days: float = LOOKBACK_DAYS,
    ) -> None:
        since_ms = int((time.time() - lookback_days * 86_400) * 1000)
        super().__init__(bootstrap=bootstrap, topic=topic, since_ms=since_ms)
        self.codec = codec
        self.history = history or CustomerHistory()

    def __len__(self) -> int:
        return len(self.history)

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            _, decoded = self.codec.decode(value, reader="Audited")
            found = interaction_of(decoded)
        except Exception as error:  # an unreadable record costs one customer one entry, never the stitcher
            self.rejected += 1
            log.warning("audited record skipped", extra={"topic": self.topic, "error": str(error)})
            return
        if found is not None:
            self.history.add(*found)


class CustomerFeedbackTable(TopicTable):
    """`feedback` folded into the same CustomerHistory as the `audited` table, kept current the same way."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        codec: AvroCodec,
        history: CustomerHistory,
        lookback_days: float = LOOKBACK_DAYS,
    ) -> None:
        since_ms = int((time.time() - lookback_days * 86_400) * 1000)
        super().__init__(bootstrap=bootstrap, topic=topic, since_ms=since_ms)
        self.codec = codec
        self.history = history

    def __len__(self) -> int:
        return self.history.orphans  # attached feedback lives in the history; rows here are what waits

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:
            return
        try:
            _, decoded = self.codec.decode(value, reader="Feedback")
            found = followup_of(decoded)
        except Exception as error:  # unreadable feedback costs one note in one history, never the stitcher
            self.rejected += 1
            log.warning("feedback record skipped", extra={"topic": self.topic, "error": str(error)})
            return
        if found is not None:
            self.history.attach(*found)
