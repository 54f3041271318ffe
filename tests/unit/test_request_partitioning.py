"""A store's requests land on one partition whichever client produced them (the gateway, POS clients and the
approvals service), so one auditor owns the store's hash chain and two replicas never fork it."""

from __future__ import annotations

from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from confluent_kafka import Producer

from services.runtime.request_key import STORE_PARTITIONER

STORES = [f"{n:04d}" for n in range(1, 101)]


def librdkafka_partitions(config: dict[str, Any]) -> tuple[dict[str, int], int]:
    """Where librdkafka puts each store's key on an in-process mock cluster (no broker), and the partition count."""
    producer = Producer({"test.mock.num.brokers": 1, "log_level": 3, **config})
    placed: dict[str, int] = {}
    for store in STORES:
        producer.produce("requests", key=store.encode(), value=b"r", on_delivery=_record(placed, store))
    assert producer.flush(10) == 0
    partitions = len(producer.list_topics("requests", timeout=10).topics["requests"].partitions)
    return placed, partitions


def _record(placed: dict[str, int], store: str) -> Any:
    def delivered(error: Any, message: Any) -> None:
        assert error is None, error
        placed[store] = message.partition()

    return delivered


def aiokafka_partition(store: str, partitions: int) -> int:
    """The approvals service's producer (aiokafka) and Java clients: murmur2 of the key."""
    every = list(range(partitions))
    return int(DefaultPartitioner()(store.encode(), every, every))


def test_librdkafka_producers_of_requests_place_a_store_where_aiokafka_does() -> None:
    placed, partitions = librdkafka_partitions(STORE_PARTITIONER)
    assert partitions > 1
    assert placed == {store: aiokafka_partition(store, partitions) for store in STORES}


def test_librdkafkas_default_partitioner_would_send_a_store_to_another_auditor() -> None:
    placed, partitions = librdkafka_partitions({})
    assert any(placed[store] != aiokafka_partition(store, partitions) for store in STORES)
