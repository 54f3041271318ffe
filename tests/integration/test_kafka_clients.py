"""aiokafka and confluent-kafka against the real broker: records survive the round trip, Avro-encoded,
keyed by store so each store's requests stay in order, and a consumer group resumes where it committed."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer, TopicPartition

from services.infra.probe import PROBE_GROUP, PROBE_TOPIC, kafka_commits_transaction
from services.runtime.kafka_clients import aiokafka_config, confluent_config
from services.runtime.reference import TopicTable
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request

STORES = ["0001", "0417", "1600"]


def requests_for(stores: list[str], per_store: int) -> list[Request]:
    now = int(time.time() * 1000)
    return [
        Request(
            request_id=str(uuid.uuid4()),
            store_id=store,
            terminal_id=f"pos-{n:02d}",
            channel=Channel.POS,
            text=f"request {n} from store {store}: is the jacket in stock? ✓",
            created_at=now + n,
            attributes={"seq": str(n)},
        )
        for n in range(per_store)
        for store in stores
    ]


async def test_aiokafka_round_trip_keeps_each_stores_requests_in_order(
    kafka: str, codec: AvroCodec, new_topic: Callable[[int], str]
) -> None:
    topic = new_topic(3)
    sent = requests_for(STORES, per_store=20)
    producer = AIOKafkaProducer(**aiokafka_config(enable_idempotence=True, acks="all"))
    await producer.start()
    try:
        for request in sent:
            await producer.send(topic, codec.encode("Request", request.model_dump()), key=request.store_id.encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        **aiokafka_config(
            group_id=f"it-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest", enable_auto_commit=False
        ),
    )
    await consumer.start()
    received: list[tuple[int, dict[str, Any]]] = []
    try:
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for tp, messages in (await consumer.getmany(timeout_ms=1000)).items():
                received += [(tp.partition, codec.decode(m.value, reader="Request")[1]) for m in messages]
        await consumer.commit()
    finally:
        await consumer.stop()

    assert sorted(v["request_id"] for _, v in received) == sorted(r.request_id for r in sent)
    partitions_of_store: dict[str, set[int]] = defaultdict(set)
    order_of_store: dict[str, list[str]] = defaultdict(list)
    for partition, value in received:
        partitions_of_store[value["store_id"]].add(partition)
        order_of_store[value["store_id"]].append(value["attributes"]["seq"])
    assert all(len(p) == 1 for p in partitions_of_store.values()), partitions_of_store
    assert all(seqs == [str(n) for n in range(20)] for seqs in order_of_store.values())
    assert Request(**received[0][1]) in sent


def test_confluent_kafka_round_trip_and_group_resumes_after_its_commit(
    kafka: str, codec: AvroCodec, new_topic: Callable[[int], str]
) -> None:
    topic = new_topic(1)
    group = f"it-{uuid.uuid4().hex[:8]}"
    producer = Producer(confluent_config({"enable.idempotence": True}))
    sent = requests_for(["0417"], per_store=10)
    for request in sent:
        producer.produce(topic, codec.encode("Request", request.model_dump()), key=request.store_id.encode())
    assert producer.flush(15) == 0

    def consume(limit: int) -> list[str]:
        consumer = Consumer(
            confluent_config({"group.id": group, "auto.offset.reset": "earliest", "enable.auto.commit": False})
        )
        consumer.subscribe([topic])
        ids: list[str] = []
        deadline = time.monotonic() + 20
        try:
            while len(ids) < limit and time.monotonic() < deadline:
                message = consumer.poll(0.5)
                if message is None or message.error():
                    continue
                value = message.value()
                assert value is not None
                ids.append(codec.decode(value, reader="Request")[1]["request_id"])
                consumer.commit(message=message, asynchronous=False)
        finally:
            consumer.close()
        return ids

    first = consume(4)
    rest = consume(len(sent) - 4)
    assert first == [r.request_id for r in sent[:4]]
    assert rest == [r.request_id for r in sent[4:]]


def test_the_readiness_probe_commits_a_transaction_with_a_groups_offsets(kafka: str) -> None:
    """'Ready' for `make up` means what every stage does per batch worked: the transaction and group
    coordinators are loaded. The probe's commit is visible to a reader of committed records, and so are its
    group's offsets."""
    reader = Consumer(confluent_config({"group.id": PROBE_GROUP, "isolation.level": "read_committed"}))
    try:
        before = reader.get_watermark_offsets(TopicPartition(PROBE_TOPIC, 0), timeout=10)[1]
        assert kafka_commits_transaction(kafka)
        # the commit returns once the coordinator has decided; its marker reaches the partition a moment later, and
        # only then does the end offset a read_committed reader is told (the last stable offset) pass the record
        deadline = time.monotonic() + 10
        after = reader.get_watermark_offsets(TopicPartition(PROBE_TOPIC, 0), timeout=10)[1]
        while after < before + 2 and time.monotonic() < deadline:
            time.sleep(0.05)
            after = reader.get_watermark_offsets(TopicPartition(PROBE_TOPIC, 0), timeout=10)[1]
        assert after >= before + 2  # the record and the transaction's commit marker
        [committed] = reader.committed([TopicPartition(PROBE_TOPIC, 0)], timeout=10)
        assert committed.error is None and committed.offset == 0
    finally:
        reader.close()


class Counted(TopicTable):
    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(bootstrap=bootstrap, topic=topic)
        self.values: list[bytes] = []

    def apply(self, key: bytes | None, value: bytes | None) -> None:
        if value is not None:
            self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)


async def test_a_table_caught_up_holds_every_record_committed_before_the_call(
    kafka: str, new_topic: Callable[[int], str]
) -> None:
    """What a process taking over partitions (the approvals process at a rebalance) relies on: after
    `caught_up()`, everything committed to the table's topic before the call is in the table."""
    topic = new_topic(3)
    table = Counted(kafka, topic)
    await table.start()
    try:
        await table.caught_up()
        producer = Producer(confluent_config({"transactional.id": f"caught-up-{uuid.uuid4().hex[:8]}"}))
        producer.init_transactions(30)
        for round_ in range(3):
            producer.begin_transaction()
            for n in range(200):
                producer.produce(topic, key=f"k{n % 7}".encode(), value=f"{round_}-{n}".encode())
            producer.commit_transaction(30)
            await table.caught_up()
            assert len(table) == 200 * (round_ + 1)
    finally:
        await table.stop()


async def test_a_table_of_a_missing_topic_says_so_and_keeps_no_consumer(kafka: str) -> None:
    table = Counted(kafka, f"it.missing-{uuid.uuid4().hex[:8]}")
    with pytest.raises(RuntimeError, match="does not exist; run `make topics`"):
        await table.start()
    assert table._consumer is None  # stopped, not left open with its connections
    await table.stop()  # and stopping it after is harmless
