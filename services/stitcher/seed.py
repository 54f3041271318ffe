"""Seed the stores reference topic with a realistic chain: `python -m services.stitcher.seed --stores 1600`.
Deterministic (seeded), so tests and demos see the same stores; republishing is harmless (compacted topic)."""

from __future__ import annotations

import argparse
import random
import time

from confluent_kafka import Producer

from services.runtime.codec import AvroCodec
from services.runtime.models import HoursException, OpeningHours, Store
from services.runtime.schema_registry import SchemaRegistry
from services.settings import get_settings

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


def publish_stores(bootstrap: str, codec: AvroCodec, rows: list[Store], topic: str = "ref.stores") -> int:
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 20})
    for store in rows:
        producer.produce(topic, key=store.store_id.encode(), value=codec.encode("Store", store.model_dump()))
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} store records were not acknowledged within 30 s")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard seed-stores", description=__doc__.splitlines()[0])
    parser.add_argument("--stores", type=int, default=1600)
    args = parser.parse_args(argv)
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    count = publish_stores(settings.kafka_bootstrap, codec, stores(args.stores), settings.topic("ref.stores"))
    print(f"published {count} stores to {settings.topic('ref.stores')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
