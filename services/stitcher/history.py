"""Customer history: the last few interactions of each loyalty customer, folded from the `audited` topic into
a bounded in-memory table, and turned into context only for customers who consented.

Why a Kafka-fed table and not a ClickHouse query: the stitcher sits on the request path, and a ClickHouse
round trip per request (plus the telemetry writer's batching delay before a row is visible) would add latency
and a hard dependency to every stitch, while `audited` already carries each finished interaction, redacted,
in order. The table is read like a reference table (every partition, from the beginning, no consumer group),
so every replica sees every customer; it keeps `per_customer` entries for at most `max_customers` customers,
the least recently active evicted first, so memory stays bounded however long the topic is. ClickHouse
remains the place for analysis over all history.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from services.runtime.codec import AvroCodec
from services.runtime.models import ContextItem, Customer, DroppedContext
from services.runtime.reference import TopicTable
from services.stitcher.prep import normalise

log = logging.getLogger("switchyard.stitcher.history")

PER_CUSTOMER: Final = 5
MAX_CUSTOMERS: Final = 200_000
LOOKBACK_DAYS: Final = 30  # history older than this is not read at start (bounds start-up on a long topic)
EXCERPT_CHARS: Final = 160
CONSENT: Final = "consent"


@dataclass(frozen=True)
class Interaction:
    request_id: str
    at_ms: int
    intent: str
    asked: str
    answered: str
    outcome: str


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
    )


def _excerpt(text: str) -> str:
    text = normalise(text).replace("\n", " ")  # not clean(): governance tokens look like <PHONE_1> tags
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1].rstrip() + "…"


class CustomerHistory:
    """customer id → their last `per_customer` interactions, newest last; at most `max_customers` customers."""

    def __init__(self, per_customer: int = PER_CUSTOMER, max_customers: int = MAX_CUSTOMERS) -> None:
        self.per_customer, self.max_customers = per_customer, max_customers
        self._by_customer: OrderedDict[str, deque[Interaction]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_customer)

    def add(self, customer_id: str, interaction: Interaction) -> None:
        entries = self._by_customer.get(customer_id)
        if entries is None:
            entries = self._by_customer[customer_id] = deque(maxlen=self.per_customer)
            if len(self._by_customer) > self.max_customers:
                self._by_customer.popitem(last=False)
        elif any(e.request_id == interaction.request_id for e in entries):
            return  # a replayed record
        self._by_customer.move_to_end(customer_id)
        entries.append(interaction)

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
        text=f'{day} {entry.intent}: asked "{entry.asked}"; answered "{entry.answered}" ({entry.outcome})',
    )


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
