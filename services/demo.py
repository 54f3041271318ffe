"""`make demo` (foundation version): one POS request through Kafka into ClickHouse, narrated.

A POS terminal publishes a Request (validated by its pydantic model, Avro single-object encoded) to the
`requests` topic with confluent-kafka; a sink consumer (aiokafka, its own consumer group) reads it back,
decodes it against the current schema, writes it to ClickHouse over the HTTP interface, and commits its
offset only after the insert. The stage services of the next issue replace the sink with the full chain.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from confluent_kafka import Producer

from services.infra.clickhouse import get_client
from services.runtime.codec import AvroCodec
from services.runtime.models import Channel, Request
from services.runtime.schema_registry import SchemaRegistry
from services.settings import Settings, get_settings

REQUESTS_TOPIC = "requests"
SINK_GROUP = "switchyard-demo-sink"


def say(step: str, message: str) -> None:
    print(f"  {step:<9} {message}", flush=True)


def sample_request() -> Request:
    return Request(
        request_id=str(uuid.uuid4()),
        store_id="0417",
        terminal_id="pos-03",
        customer_id="C-100234",
        channel=Channel.POS,
        locale="en-US",
        text="Is the waxed field jacket in stock in size M at this store?",
        created_at=int(time.time() * 1000),
        attributes={"sku": "JKT-4471-OLV", "size": "M"},
    )


def publish(settings: Settings, codec: AvroCodec, request: Request) -> tuple[int, int]:
    """Produce with acks=all and idempotence, as a POS client does; returns (partition, offset)."""
    producer = Producer(
        {"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 0}
    )
    delivered: list[Any] = []
    producer.produce(
        REQUESTS_TOPIC,
        key=request.store_id.encode(),
        value=codec.encode("Request", request.model_dump()),
        on_delivery=lambda err, msg: delivered.append((err, msg)),
    )
    producer.flush(15)
    if not delivered or delivered[0][0] is not None:
        raise RuntimeError(f"produce to {REQUESTS_TOPIC} failed: {delivered[0][0] if delivered else 'timed out'}")
    message = delivered[0][1]
    return int(message.partition()), int(message.offset())


async def sink_one(settings: Settings, codec: AvroCodec, request_id: str, partition: int, offset: int) -> None:
    """Consume the record back, write it to ClickHouse, then commit the offset past it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=SINK_GROUP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tp = TopicPartition(REQUESTS_TOPIC, partition)
        consumer.assign([tp])
        consumer.seek(tp, offset)
        message = None
        deadline = time.monotonic() + 15
        while message is None and time.monotonic() < deadline:
            batch = await consumer.getmany(tp, timeout_ms=1000, max_records=1)
            message = next(iter(batch.get(tp, [])), None)
        if message is None:
            raise RuntimeError(f"record {REQUESTS_TOPIC}[{partition}]@{offset} did not come back within 15 s")
        writer, value = codec.decode(message.value, reader="Request")
        say("consumed", f"{REQUESTS_TOPIC}[{partition}]@{offset} by aiokafka, decoded as {writer}")
        if value["request_id"] != request_id:
            raise RuntimeError(f"expected request {request_id} at that offset, found {value['request_id']}")
        insert_request(settings, value, REQUESTS_TOPIC, partition, offset)
        await consumer.commit({tp: offset + 1})
        say("committed", f"group {SINK_GROUP} offset {offset + 1} on partition {partition}, after the insert")
    finally:
        await consumer.stop()


def insert_request(settings: Settings, value: dict[str, Any], topic: str, partition: int, offset: int) -> None:
    columns = ["request_id", "store_id", "terminal_id", "customer_id", "channel", "locale", "text"]
    row = [value[c] for c in columns] + [
        datetime.fromtimestamp(value["created_at"] / 1000, tz=UTC),
        value["attributes"],
        topic,
        partition,
        offset,
    ]
    client = get_client(settings)
    client.insert(
        "requests",
        [row],
        column_names=[*columns, "created_at", "attributes", "topic", "partition", "offset"],
        database=settings.clickhouse_database,
    )
    say("stored", f"1 row in {settings.clickhouse_database}.requests at {settings.clickhouse_url}")


def read_back(settings: Settings, request_id: str) -> dict[str, Any]:
    client = get_client(settings)
    result = client.query(
        "SELECT request_id, store_id, channel, text, partition, offset, created_at, ingested_at "
        "FROM switchyard.requests FINAL WHERE request_id = {rid:String}",
        parameters={"rid": request_id},
    )
    if result.row_count != 1:
        raise RuntimeError(f"expected exactly one row for {request_id} in ClickHouse, found {result.row_count}")
    return dict(zip(result.column_names, result.result_rows[0], strict=True))


def run(settings: Settings | None = None) -> dict[str, Any]:
    """The whole demo; returns the row read back from ClickHouse."""
    settings = settings or get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    request = sample_request()
    print(f"Switchyard demo: one POS request through Kafka ({settings.kafka_bootstrap}) into ClickHouse", flush=True)
    say("request", f"{request.request_id} from store {request.store_id}: {request.text!r}")
    started = time.perf_counter()
    partition, offset = publish(settings, codec, request)
    say("produced", f"{REQUESTS_TOPIC}[{partition}]@{offset} by confluent-kafka (acks=all, idempotent, key=store id)")
    asyncio.run(sink_one(settings, codec, request.request_id, partition, offset))
    row = read_back(settings, request.request_id)
    elapsed_ms = (time.perf_counter() - started) * 1000
    say("queried", ", ".join(f"{k}={v}" for k, v in row.items()))
    total = get_client(settings).command("SELECT count() FROM switchyard.requests FINAL")
    print(f"done in {elapsed_ms:.0f} ms; switchyard.requests now holds {total} request(s).", flush=True)
    print("Try: make query SQL='SELECT store_id, count() FROM switchyard.requests GROUP BY store_id'", flush=True)
    return row


def main() -> int:
    try:
        run()
    except Exception as exc:  # the demo reports any failure in one line, then exits non-zero
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
