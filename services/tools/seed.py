"""Seed the reference topics with a realistic chain: stores (`ref.stores`), a catalogue of several thousand SKUs
stocked per store (`ref.inventory`), loyalty customers (`ref.customers`) and the staff who may approve escalated
requests (`ref.staff`).

`python -m services.tools.seed --stores 1600` (or `make seed`). Deterministic (seeded), so tests and demos see
the same data; republishing is harmless (compacted topics, same keys).
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Producer

from services.approvals.staff import WILDCARD
from services.runtime.kafka_clients import confluent_config
from services.settings import get_settings
from services.wire.codec import AvroCodec
from services.wire.models import HoursException, OpeningHours, Staff, StaffRole, Store
from services.wire.schema_registry import SchemaRegistry

REGIONS = {
    "us-east": ["America/New_York", "America/Toronto"],
    "us-west": ["America/Los_Angeles", "America/Denver", "America/Phoenix"],
    "us-central": ["America/Chicago"],
    "eu-west": ["Europe/London", "Europe/Dublin"],
    "eu-central": ["Europe/Berlin", "Europe/Paris", "Europe/Amsterdam"],
}
TOWNS = ["Riverside", "Oakwood", "Harbor", "Maple", "Summit", "Lakeside", "Northgate", "Westfield", "Old Town", "Park"]


def make_store(number: int, rng: random.Random, updated_at: int) -> Store:
    region = rng.choice(sorted(REGIONS))
    weekday_open, weekday_close = rng.choice([("09:00", "21:00"), ("08:00", "20:00"), ("10:00", "22:00")])
    hours = [OpeningHours(weekday=d, opens=weekday_open, closes=weekday_close) for d in range(5)]
    hours.append(OpeningHours(weekday=5, opens="09:00", closes="20:00"))
    if rng.random() < 0.8:
        hours.append(OpeningHours(weekday=6, opens="11:00", closes="18:00"))
    return Store(
        store_id=f"{number:04d}",
        name=f"{rng.choice(TOWNS)} {rng.choice(['Plaza', 'Center', 'Mall', 'High Street'])} #{number:04d}",
        timezone=rng.choice(REGIONS[region]),
        region=region,
        opening_hours=hours,
        exceptions=[
            HoursException(date="2026-12-24", opens=weekday_open, closes="16:00", note="closes early on 24 December"),
            HoursException(date="2026-12-25", opens=None, closes=None, note="closed on Christmas Day"),
        ],
        manager_on_duty=f"M{rng.randint(1000, 9999)}",
        updated_at=updated_at,
    )


def stores(count: int, seed: int = 1600, updated_at: int | None = None) -> list[Store]:
    rng = random.Random(seed)
    stamp = updated_at if updated_at is not None else int(time.time() * 1000)
    return [make_store(n, rng, stamp) for n in range(1, count + 1)]


# -- catalogue ------------------------------------------------------------------------------------------------

SIZES = {
    "apparel": ["XS", "S", "M", "L", "XL", "XXL"],
    "shoes": [f"EU {n}" for n in range(36, 47)],
    "kids": ["age 4-5", "age 6-7", "age 8-9", "age 10-11", "age 12-14"],
    "jeans": [f"W{w} L{leg}" for w in range(28, 40, 2) for leg in (30, 32, 34)],
    "one": [""],
}

# the products the knowledge base describes: (name, price in dollars, size run, colours)
CORE_RANGE: list[tuple[str, int, str, list[str]]] = [
    ("Flex active legging", 55, "apparel", ["black", "navy"]),
    ("AirFry XL air fryer", 129, "one", ["black"]),
    ("Aurora noise-cancelling headphones", 249, "one", ["black", "silver"]),
    ("Brewmaster espresso machine", 449, "one", ["steel"]),
    ("City trench coat", 189, "apparel", ["stone", "navy"]),
    ("City Walker leather derby", 119, "shoes", ["black", "brown"]),
    ("Cloudstep knit sneaker", 89, "shoes", ["grey", "white"]),
    ("Cosy weighted blanket", 89, "one", ["grey", "sand"]),
    ("Court Classic tennis shoe", 79, "shoes", ["white"]),
    ("Cyclone cordless stick vacuum", 329, "one", ["purple"]),
    ("Straight-leg selvedge jean", 99, "jeans", ["indigo"]),
    ("Echo portable Bluetooth speaker", 99, "one", ["black", "blue", "red"]),
    ("Everyday stretch chino", 59, "jeans", ["khaki", "navy"]),
    ("Waxed field jacket", 229, "apparel", ["olive", "navy", "brown"]),
    ("Frostline fridge freezer", 899, "one", ["white", "steel"]),
    ("Kids insulated parka", 79, "kids", ["navy", "pink", "green"]),
    ("Puddle kids rain boot", 35, "kids", ["yellow", "blue"]),
    ("Linen summer dress", 69, "apparel", ["white", "sage"]),
    ("Lumen 11 tablet", 399, "one", ["128 GB", "256 GB"]),
    ("Merino crew-neck jumper", 79, "apparel", ["navy", "grey", "burgundy"]),
    ("Nimbus 14 laptop", 1099, "one", ["16 GB / 512 GB", "32 GB / 1 TB"]),
    ("Orbit smartwatch", 299, "one", ["41 mm", "45 mm"]),
    ("Classic oxford shirt", 49, "apparel", ["white", "blue"]),
    ("Featherlight packable down jacket", 149, "apparel", ["black", "red", "sage"]),
    ("Pulse true wireless earbuds", 129, "one", ["black", "white"]),
    ("PureWave air purifier", 219, "one", ["white"]),
    ("QuietWash 8 kg washing machine", 549, "one", ["white"]),
    ("Stormline three-layer rain shell", 199, "apparel", ["black", "cobalt", "orange"]),
    ("Snap mirrorless camera kit", 899, "one", ["black"]),
    ("SteamGlide steam iron", 59, "one", ["blue"]),
    ("Studio ballet flat", 59, "shoes", ["black", "nude"]),
    ("Summit mid hiking boot", 169, "shoes", ["brown"]),
    ("TrailRunner GTX trail running shoe", 139, "shoes", ["black", "orange"]),
    ("Vista 55-inch 4K QLED TV", 649, "one", [""]),
    ("Alpine shearling winter boot", 149, "shoes", ["chestnut", "black"]),
    ("Merino blend overcoat", 279, "apparel", ["charcoal", "camel"]),
]
LINES = ["Essential", "Heritage", "Coastal", "Urban", "Nordic", "Harbour", "Meadow", "Summit"]
EXTENDED_RANGE: list[tuple[str, int, str, list[str]]] = [
    *[(noun, price, "apparel", ["black", "navy", "grey"]) for noun, price in [
        ("t-shirt", 19), ("hoodie", 45), ("polo shirt", 29), ("cardigan", 55), ("puffer vest", 69),
        ("track pant", 39), ("fleece", 49), ("denim jacket", 79), ("swim short", 29), ("blouse", 39),
        ("skirt", 45), ("rain jacket", 89),
    ]],
    *[(noun, price, "shoes", ["black", "tan"]) for noun, price in [
        ("running shoe", 99), ("chelsea boot", 129), ("loafer", 89), ("sandal", 45), ("slip-on", 49),
        ("walking boot", 119),
    ]],
    *[(noun, price, "one", ["white", "black"]) for noun, price in [
        ("kettle", 39), ("toaster", 45), ("blender", 79), ("desk lamp", 35), ("power bank", 29),
        ("duvet", 69), ("towel set", 35), ("saucepan set", 99), ("knife block", 79), ("bluetooth speaker", 59),
    ]],
]  # fmt: skip


@dataclass(frozen=True)
class Sku:
    sku: str
    product: str
    variant: str
    price_cents: int


def catalogue() -> list[list[Sku]]:
    """Every product as its list of SKUs (size by colour); about 3,300 SKUs in all."""
    products = list(CORE_RANGE) + [
        (f"{line} {noun}", price, run, colours) for noun, price, run, colours in EXTENDED_RANGE for line in LINES
    ]
    return [
        [
            Sku(
                sku=f"SW{number:04d}-{variant_index:02d}",
                product=name,
                variant=" / ".join(part for part in (size, colour) if part),
                price_cents=price * 100 - 1 if price < 100 else price * 100,
            )
            for variant_index, (size, colour) in enumerate((s, c) for s in SIZES[run] for c in colours)
        ]
        for number, (name, price, run, colours) in enumerate(products, 1)
    ]


def currency_of(store: Store) -> str:
    if store.region.startswith("us-"):
        return "CAD" if store.timezone == "America/Toronto" else "USD"
    return "GBP" if store.timezone == "Europe/London" else "EUR"


def inventory_rows(
    store_list: Iterable[Store], seed: int = 1600, updated_at: int | None = None
) -> Iterator[dict[str, Any]]:
    """InventoryItem records (as dicts, to stay fast at a few hundred thousand rows): each store carries about
    half the core range and a few extended lines, most of their variants, some sold out."""
    rng = random.Random(seed)
    stamp = updated_at if updated_at is not None else int(time.time() * 1000)
    products = catalogue()
    core, extended = products[: len(CORE_RANGE)], products[len(CORE_RANGE) :]
    for store in store_list:
        currency = currency_of(store)
        assortment = [p for p in core if rng.random() < 0.5] + rng.sample(extended, 4)
        for product in assortment:
            for sku in product:
                if rng.random() < 0.15:
                    continue
                yield {
                    "store_id": store.store_id,
                    "sku": sku.sku,
                    "product": sku.product,
                    "variant": sku.variant,
                    "quantity": 0 if rng.random() < 0.12 else rng.randint(1, 24),
                    "price_cents": sku.price_cents,
                    "currency": currency,
                    "updated_at": stamp,
                }


TIERS = [("basic", 0.6), ("silver", 0.25), ("gold", 0.12), ("platinum", 0.03)]
LANGUAGES = {"us-east": "en", "us-west": "en", "us-central": "en", "eu-west": "en", "eu-central": "de"}


def customer_rows(
    count: int, store_list: list[Store], seed: int = 1600, updated_at: int | None = None
) -> Iterator[dict[str, Any]]:
    """Customer records `C-0` … `C-<count-1>` with a tier, a home store, a few preferences and consent flags
    (about three in four allow their history to be used)."""
    rng = random.Random(seed + 1)
    stamp = updated_at if updated_at is not None else int(time.time() * 1000)
    tiers, weights = zip(*TIERS, strict=True)
    for number in range(count):
        home = rng.choice(store_list)
        preferences = {"home_store": home.store_id, "language": LANGUAGES.get(home.region, "en")}
        if rng.random() < 0.5:
            preferences["shoe_size"] = f"EU {rng.randint(36, 46)}"
        if rng.random() < 0.5:
            preferences["clothing_size"] = rng.choice(SIZES["apparel"])
        if rng.random() < 0.3:
            preferences["contact"] = rng.choice(["email", "sms", "none"])
        yield {
            "customer_id": f"C-{number}",
            "tier": rng.choices(tiers, weights)[0],
            "preferences": preferences,
            "consent_history": rng.random() < 0.75,
            "consent_marketing": rng.random() < 0.5,
            "updated_at": stamp,
        }


# -- staff ------------------------------------------------------------------------------------------------

FIRST_NAMES = ["Ana", "Ben", "Chloe", "Dev", "Elif", "Farah", "Gus", "Hana", "Ivo", "Jade", "Kofi", "Lena", "Mats"]
LAST_NAMES = ["Adler", "Brooks", "Costa", "Diaz", "Evans", "Fischer", "Grant", "Hale", "Ito", "Jansen", "Khan"]


def staff_rows(store_list: Iterable[Store], seed: int = 1600, updated_at: int | None = None) -> list[Staff]:
    """Two managers (`mgr-<store>-1`, `-2`) and two clerks (`clerk-<store>-1`, `-2`) per store, a regional manager
    per region (`rm-<region>`, the region's stores by name) and one for every store (`rm-all`, the wildcard)."""
    rng = random.Random(seed + 2)
    stamp = updated_at if updated_at is not None else int(time.time() * 1000)

    def member(staff_id: str, role: StaffRole, store_ids: list[str]) -> Staff:
        name = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
        return Staff(staff_id=staff_id, name=name, role=role, stores=store_ids, active=True, updated_at=stamp)

    rows: list[Staff] = []
    regions: dict[str, list[str]] = {}
    for store in store_list:
        regions.setdefault(store.region, []).append(store.store_id)
        for number in (1, 2):
            rows.append(member(f"mgr-{store.store_id}-{number}", StaffRole.MANAGER, [store.store_id]))
            rows.append(member(f"clerk-{store.store_id}-{number}", StaffRole.CLERK, [store.store_id]))
    for region, store_ids in sorted(regions.items()):
        rows.append(member(f"rm-{region}", StaffRole.REGIONAL_MANAGER, store_ids))
    rows.append(member("rm-all", StaffRole.REGIONAL_MANAGER, [WILDCARD]))
    return rows


# -- publishing -----------------------------------------------------------------------------------------------


def publish(
    bootstrap: str, codec: AvroCodec, topic: str, record: str, rows: Iterable[tuple[str, dict[str, Any]]]
) -> int:
    """(key, record dict) pairs to a topic, acknowledged; the number published."""
    producer = Producer(
        confluent_config(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "linger.ms": 50,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 200_000,
            }
        )
    )
    count = 0
    for key, value in rows:
        while True:
            try:
                producer.produce(topic, key=key.encode(), value=codec.encode(record, value))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        count += 1
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"{remaining} {record} records were not acknowledged by {topic} within 60 s")
    return count


def publish_stores(bootstrap: str, codec: AvroCodec, rows: list[Store], topic: str = "ref.stores") -> int:
    return publish(bootstrap, codec, topic, "Store", ((s.store_id, s.model_dump()) for s in rows))


def publish_inventory(bootstrap: str, codec: AvroCodec, rows: Iterable[dict[str, Any]], topic: str) -> int:
    return publish(bootstrap, codec, topic, "InventoryItem", ((f"{r['store_id']}:{r['sku']}", r) for r in rows))


def publish_customers(bootstrap: str, codec: AvroCodec, rows: Iterable[dict[str, Any]], topic: str) -> int:
    return publish(bootstrap, codec, topic, "Customer", ((r["customer_id"], r) for r in rows))


def publish_staff(bootstrap: str, codec: AvroCodec, rows: Iterable[Staff], topic: str = "ref.staff") -> int:
    return publish(bootstrap, codec, topic, "Staff", ((s.staff_id, s.model_dump()) for s in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard seed-stores", description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=1600, help="stores 0001 … (default %(default)s)")
    parser.add_argument("--customers", type=int, default=20_000, help="loyalty customers C-0 … (default %(default)s)")
    parser.add_argument("--no-inventory", action="store_true", help="publish stores and customers only")
    args = parser.parse_args(argv)
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    started = time.perf_counter()
    directory = stores(args.stores)
    count = publish_stores(settings.kafka_bootstrap, codec, directory, settings.topic("ref.stores"))
    print(f"published {count} stores to {settings.topic('ref.stores')}")
    count = publish_staff(settings.kafka_bootstrap, codec, staff_rows(directory), settings.topic("ref.staff"))
    print(f"published {count} staff to {settings.topic('ref.staff')}")
    count = publish_customers(
        settings.kafka_bootstrap, codec, customer_rows(args.customers, directory), settings.topic("ref.customers")
    )
    print(f"published {count} customers to {settings.topic('ref.customers')}")
    if not args.no_inventory:
        count = publish_inventory(
            settings.kafka_bootstrap, codec, inventory_rows(directory), settings.topic("ref.inventory")
        )
        skus = sum(len(product) for product in catalogue())
        print(f"published {count} stock rows ({skus} SKUs) to {settings.topic('ref.inventory')}")
    print(f"seeded in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
