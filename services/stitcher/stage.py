"""First stitching logic: the store's hours, from the stores reference topic, as a context item. Inventory,
customer history and knowledge-base passages within a token budget come in the context-stitching issue."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar

from services.runtime.codec import AvroCodec
from services.runtime.models import Context, ContextItem, Routed, Store
from services.runtime.reference import ReferenceTable
from services.runtime.stage import Stage
from services.settings import Settings
from services.stitcher.store_hours import describe_hours

TOKEN_BUDGET = 1024


def estimate_tokens(text: str) -> int:
    """About 1.3 tokens per word for English retail text; the real tokenizer arrives with the model issue."""
    return max(1, round(len(text.split()) * 1.3))


def stitch(record: Routed, store: Store | None, now_utc: datetime) -> Context:
    if store is None:
        items = [
            ContextItem(
                source="store_hours",
                source_id=record.request.store_id,
                version="unknown",
                score=None,
                text=f"Store {record.request.store_id} is not in the store directory.",
            )
        ]
    else:
        items = [
            ContextItem(
                source="store_hours",
                source_id=store.store_id,
                version=str(store.updated_at),
                score=None,
                text=describe_hours(store, now_utc),
            )
        ]
    return Context(items=items, token_count=sum(estimate_tokens(i.text) for i in items), token_budget=TOKEN_BUDGET)


class Stitcher(Stage[Routed, Context]):
    name: ClassVar[str] = "stitcher"
    input_topic: ClassVar[str] = "routed"
    input_record: ClassVar[str] = "Routed"
    input_model = Routed
    output_topic: ClassVar[str] = "stitched"
    output_record: ClassVar[str] = "Stitched"
    section: ClassVar[str] = "context"

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.stores: ReferenceTable[Store] = ReferenceTable(
            bootstrap=settings.kafka_bootstrap,
            topic=settings.topic("ref.stores"),
            record="Store",
            model=Store,
            codec=codec,
            key_of=lambda store: store.store_id,
        )

    async def start(self) -> None:
        await self.stores.start()
        await self.stores.ready.wait()

    async def stop(self) -> None:
        await self.stores.stop()

    async def healthy(self) -> tuple[bool, str]:
        if not self.stores.ready.is_set():
            return False, "stores reference table still loading"
        return True, f"{len(self.stores)} stores loaded"

    async def decide(self, record: Routed) -> Context:
        return stitch(record, self.stores.get(record.request.store_id), datetime.now(UTC))
