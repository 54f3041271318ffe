"""The seed's stores, stock and customers held in memory (`make seed` publishes the same rows to Kafka), for what
decides without a broker: the export's replay and `make eval-answers`."""

from __future__ import annotations

from datetime import datetime

from services.policy.engine import PolicyEngine
from services.stitcher.inventory import StockRow, words_of
from services.stitcher.workflows import WorkflowData, stocked_elsewhere, workflow_facts
from services.tools.seed import customer_rows, inventory_rows, stores
from services.wire.models import Customer, Request, Store

EMPTY: dict[str, StockRow] = {}


class SeededReference:
    """Reference data as the stitcher's tables hold it after `make seed` (updated_at 0, so versions are fixed)."""

    def __init__(self, store_count: int = 1600, customer_count: int = 20_000) -> None:
        directory = stores(store_count, updated_at=0)
        self.stores: dict[str, Store] = {store.store_id: store for store in directory}
        self.groups: dict[str, dict[str, StockRow]] = {}
        self.catalogue: dict[str, StockRow] = {}
        self.vocabulary: set[str] = set()
        for raw in inventory_rows(directory, updated_at=0):
            row = StockRow(**raw)
            self.groups.setdefault(row.store_id, {})[row.key] = row
            if row.sku not in self.catalogue:
                self.catalogue[row.sku] = row
                self.vocabulary |= words_of(row.product)
        self.customers: dict[str, Customer] = {
            row["customer_id"]: Customer.model_validate(row)
            for row in customer_rows(customer_count, directory, updated_at=0)
        }

    def group(self, store_id: str) -> dict[str, StockRow]:
        return self.groups.get(store_id, EMPTY)

    def workflow_data(self, request: Request, intent: str, policy: PolicyEngine, now_utc: datetime) -> WorkflowData:
        store = self.stores.get(request.store_id)
        customer = self.customers.get(request.customer_id) if request.customer_id else None
        sourced = workflow_facts(request, intent, customer)
        return WorkflowData(
            request=request,
            store=store,
            now_utc=now_utc,
            facts=sourced.facts,
            fact_variants=sourced.variants,
            policy=policy,
            rows=list(self.group(request.store_id).values()),
            catalogue=list(self.catalogue.values()),
            vocabulary=self.vocabulary,
            elsewhere=lambda here, skus: stocked_elsewhere(self.stores, self.group, here, skus),
            customer=customer,
        )
