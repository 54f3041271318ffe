"""The stitcher's tables fed record by record, as from their topics (no broker): inventory by store with updates
and tombstones, customer history bounded and fed from audited records, and stock matched to a request."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.reference import ReferenceTable
from services.settings import REPO_ROOT
from services.stitcher.history import CustomerHistory, CustomerHistoryTable, Interaction
from services.stitcher.inventory import InventoryTable, relevant_rows, sizes_in
from services.tools.seed import catalogue, customer_rows, inventory_rows, stores
from services.wire.codec import AvroCodec
from services.wire.models import Audited, AuditInfo, Customer, InventoryItem
from services.wire.schema_registry import SchemaRegistry
from tests.unit.chain_records import answered


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SchemaRegistry.load(Path(REPO_ROOT / "schemas")))


def stock(store_id: str, sku: str, product: str, variant: str, quantity: int, updated_at: int = 1) -> InventoryItem:
    return InventoryItem(
        store_id=store_id,
        sku=sku,
        product=product,
        variant=variant,
        quantity=quantity,
        price_cents=22900,
        updated_at=updated_at,
    )


def inventory_table(codec: AvroCodec) -> InventoryTable:
    return InventoryTable(bootstrap="unused:9092", topic="ref.inventory", codec=codec)


def feed(table: InventoryTable, codec: AvroCodec, row: InventoryItem | None, key: str) -> None:
    table.apply(key.encode(), None if row is None else codec.encode("InventoryItem", row.model_dump()))


def test_inventory_is_indexed_by_store_and_an_update_replaces_the_row(codec: AvroCodec) -> None:
    table = inventory_table(codec)
    feed(table, codec, stock("0001", "SW0014-06", "Waxed field jacket", "M / olive", 3), "0001:SW0014-06")
    feed(table, codec, stock("0002", "SW0014-06", "Waxed field jacket", "M / olive", 9), "0002:SW0014-06")
    assert len(table) == 2 and set(table.group("0001")) == {"0001:SW0014-06"}
    [before] = table.items_for("0001", "waxed field jacket in M?")
    feed(table, codec, stock("0001", "SW0014-06", "Waxed field jacket", "M / olive", 0, 2), "0001:SW0014-06")
    [after] = table.items_for("0001", "waxed field jacket in M?")
    assert (before.version, after.version) == ("1", "2")
    assert "| 3 |" in before.text and "0 (sold out)" in after.text
    assert len(table) == 2


def test_a_tombstone_deletes_the_row_and_an_empty_store(codec: AvroCodec) -> None:
    table = inventory_table(codec)
    feed(table, codec, stock("0001", "SW0014-06", "Waxed field jacket", "M / olive", 3), "0001:SW0014-06")
    feed(table, codec, None, "0001:SW0014-06")
    feed(table, codec, None, "0009:SW0000-00")
    assert len(table) == 0 and table.groups == {} and table.get("0001:SW0014-06") is None


def test_a_bad_reference_row_is_skipped_and_counted(codec: AvroCodec) -> None:
    table = inventory_table(codec)
    table.apply(b"0001:x", b"\x00not avro")
    assert (len(table), table.rejected) == (0, 1)


def test_customers_are_looked_up_by_id(codec: AvroCodec) -> None:
    table: ReferenceTable[Customer] = ReferenceTable(
        bootstrap="unused:9092",
        topic="ref.customers",
        record="Customer",
        model=Customer,
        codec=codec,
        key_of=lambda c: c.customer_id,
    )
    for row in customer_rows(50, stores(3, updated_at=0), updated_at=0):
        table.apply(row["customer_id"].encode(), codec.encode("Customer", row))
    c7 = table.get("C-7")
    assert len(table) == 50 and c7 is not None and c7.tier in {"basic", "silver", "gold", "platinum"}


def test_the_seed_has_thousands_of_skus_and_a_few_hundred_per_store() -> None:
    assert sum(len(product) for product in catalogue()) >= 3000
    rows = list(inventory_rows(stores(20, updated_at=0), updated_at=0))
    per_store = len(rows) / 20
    assert 100 <= per_store <= 400
    assert len({(r["store_id"], r["sku"]) for r in rows}) == len(rows)
    assert rows == list(inventory_rows(stores(20, updated_at=0), updated_at=0)), "deterministic"


def test_customers_carry_tiers_preferences_and_both_consent_answers() -> None:
    rows = list(customer_rows(400, stores(5, updated_at=0), updated_at=0))
    assert {r["tier"] for r in rows} == {"basic", "silver", "gold", "platinum"}
    assert {r["consent_history"] for r in rows} == {True, False}
    assert all("home_store" in r["preferences"] for r in rows)


@pytest.mark.parametrize(
    ("text", "sizes"),
    [
        ("Is the jacket in stock in size M?", {"M"}),
        ("do you have it in size 42", {"EU 42"}),
        ("medium or large please", {"M", "L"}),
        ("jeans W32", {"W32"}),
        ("I need a jacket", set()),
    ],
)
def test_sizes_are_read_from_the_request(text: str, sizes: set[str]) -> None:
    assert sizes_in(text) == sizes


def test_stock_rows_match_the_product_and_size_asked_for(codec: AvroCodec) -> None:
    table = inventory_table(codec)
    rows = [
        stock("0001", "SW0014-06", "Waxed field jacket", "M / olive", 3),
        stock("0001", "SW0014-07", "Waxed field jacket", "M / navy", 1),
        stock("0001", "SW0014-09", "Waxed field jacket", "L / olive", 2),
        stock("0001", "SW0024-03", "Featherlight packable down gilet", "M / black", 5),
        stock("0001", "SW0017-00", "Puddle kids rain boot", "age 4-5 / yellow", 5),
    ]
    for row in rows:
        feed(table, codec, row, f"{row.store_id}:{row.sku}")
    rows_of = table.group("0001").values()
    assert [r.sku for r, _ in relevant_rows("waxed field jacket in M?", rows_of)] == ["SW0014-06", "SW0014-07"]
    assert [r.sku for r, _ in relevant_rows("waxed jacket in navy M", rows_of)] == ["SW0014-07"]
    assert [r.sku for r, _ in relevant_rows("stock of sw0024-03", rows_of)] == ["SW0024-03"]
    assert relevant_rows("When do you close today?", rows_of) == []
    assert relevant_rows("any winter boots?", rows_of, table.vocabulary | {"winter"}) == []


def test_history_keeps_the_last_n_per_customer_and_evicts_the_least_recent_customer() -> None:
    history = CustomerHistory(per_customer=2, max_customers=2)
    for n in range(3):
        history.add("C-1", Interaction(f"a-{n}", n, "x", "q", "a", "ALLOW"))
    history.add("C-2", Interaction("b-0", 0, "x", "q", "a", "ALLOW"))
    history.add("C-1", Interaction("a-2", 2, "x", "q", "a", "ALLOW"))  # a replay changes nothing
    assert [e.request_id for e in history.last("C-1")] == ["a-2", "a-1"]
    history.add("C-1", Interaction("a-3", 3, "x", "q", "a", "ALLOW"))
    history.add("C-3", Interaction("c-0", 0, "x", "q", "a", "ALLOW"))
    assert [e.request_id for e in history.last("C-1")] == ["a-3", "a-2"]
    assert history.last("C-2") == [] and len(history) == 2


def test_history_is_fed_from_audited_records_with_the_redacted_text_only(codec: AvroCodec) -> None:
    table = CustomerHistoryTable(bootstrap="unused:9092", topic="audited", codec=codec)
    record = answered("r-1")
    record.request.customer_id = "C-9"
    record.request.text = "call me on +1 415 555 0142"
    record.governance.redacted_text = "call me on <PHONE_1>"
    audited = Audited(
        **record.model_dump(),
        audit=AuditInfo(audit_id="a", chain_key="0417", prev_hash="", hash="h", recorded_at=1, seq=1),
    )
    table.apply(b"0417", codec.encode("Audited", audited.model_dump()))
    anonymous = answered("r-2")
    table.apply(b"0417", codec.encode("Audited", Audited(**anonymous.model_dump(), audit=audited.audit).model_dump()))
    [entry] = table.history.last("C-9")
    assert (entry.request_id, entry.intent, entry.answered) == ("r-1", "other", "hello")
    assert entry.asked == "call me on <PHONE_1>"
    assert "555" not in entry.asked and len(table) == 1
