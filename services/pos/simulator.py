"""A retail POS simulator: a realistic mix of requests from many stores (store hours, stock checks,
discount requests, returns, product questions; some with a loyalty customer id), published at a steady
rate with confluent-kafka's producer, keyed by store id."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Iterator

from confluent_kafka import Producer

from services.runtime.kafka_clients import confluent_config
from services.runtime.request_key import STORE_PARTITIONER
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request

PRODUCTS = [
    ("waxed field jacket", ["S", "M", "L", "XL"]),
    ("trail running shoes", ["40", "41", "42", "43", "44"]),
    ("merino crew sweater", ["S", "M", "L"]),
    ("stainless steel blender", ["standard"]),
    ("kids rain boots", ["28", "30", "32"]),
]
MIX: list[tuple[float, Callable[[random.Random], str]]] = [
    (0.25, lambda r: r.choice(["What time do you close today?", "Are you open on Sunday?", "When do you open?"])),
    (
        0.25,
        lambda r: (lambda p: f"Is the {p[0]} in stock in size {r.choice(p[1])} at this store?")(r.choice(PRODUCTS)),
    ),
    (
        0.15,
        lambda r: f"Can I give this customer {r.choice([10, 15, 20, 25, 30])}% off the {r.choice(PRODUCTS)[0]}?",
    ),
    (
        0.15,
        lambda r: r.choice(
            [
                "Summarise this return: customer brought back the blender unused, no receipt.",
                "Customer wants a refund for shoes bought 40 days ago; what is the policy?",
                "Exchange request: jacket in M for L, customer email is sam.lee@example.com",
            ]
        ),
    ),
    (
        0.20,
        lambda r: r.choice(
            [
                f"Does the {r.choice(PRODUCTS)[0]} come with a warranty?",
                f"What is the {r.choice(PRODUCTS)[0]} made of?",
                "Customer asks whether we price match online retailers; call back on +1 415 555 0199",
            ]
        ),
    ),
]
CHANNELS = [Channel.POS, Channel.POS, Channel.POS, Channel.STORE_APP, Channel.KIOSK]


def request_mix(store_ids: list[str], seed: int = 417) -> Iterator[Request]:
    """An endless stream of requests; deterministic for a seed, stamped with the time it is drawn."""
    rng = random.Random(seed)
    weights = [w for w, _ in MIX]
    while True:
        _, text_for = rng.choices(MIX, weights=weights)[0]
        store = rng.choice(store_ids)
        yield Request(
            request_id=str(uuid.uuid4()),
            store_id=store,
            terminal_id=f"pos-{rng.randint(1, 12):02d}",
            customer_id=f"C-{rng.randint(100000, 999999)}" if rng.random() < 0.4 else None,
            channel=rng.choice(CHANNELS),
            locale="en-US",
            text=text_for(rng),
            created_at=int(time.time() * 1000),
            attributes={},
        )


class PosPublisher:
    """Publishes requests to the `requests` topic at a fixed rate; idempotent, acks=all."""

    def __init__(self, bootstrap: str, topic: str, codec: AvroCodec) -> None:
        self.topic, self.codec = topic, codec
        self.producer = Producer(
            confluent_config(
                {
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 1,
                    **STORE_PARTITIONER,
                }
            )
        )

    def publish(self, requests: Iterator[Request], count: int, rate_per_s: float) -> list[Request]:
        sent: list[Request] = []
        started = time.monotonic()
        for index in range(count):
            time.sleep(max(0.0, started + index / rate_per_s - time.monotonic()))
            request = next(requests).model_copy(update={"created_at": int(time.time() * 1000)})
            self.producer.produce(
                self.topic, key=request.store_id.encode(), value=self.codec.encode("Request", request.model_dump())
            )
            self.producer.poll(0)
            sent.append(request)
        remaining = self.producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} requests were not acknowledged by Kafka within 30 s")
        return sent
