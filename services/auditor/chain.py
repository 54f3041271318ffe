"""Where each audit chain ends (its last seq and hash), recovered when the auditor is assigned partitions.

The chain of a store lives on one partition of `audited` (keyed by store), so the auditor owning that
partition of `answered` owns the store's chain. On assignment it recovers the heads in two steps:

1. ClickHouse (`audit_records`, kept seven years) gives each chain's last (seq, hash) and, per partition, the
   highest `audited` offset it has stored: a checkpoint. It is the only source for a chain whose last record
   is older than the topic's retention, and it keeps the scan below short.
2. The topic's tail after that checkpoint, read with read_committed up to the last stable offset, gives
   whatever the telemetry writer has not stored yet (its batch in flight, or everything while it was down).

Kafka is the truth for the newest records: an aborted transaction never reaches it, nor ClickHouse. When
ClickHouse is unavailable the whole partition is read instead (slower, and a chain whose last record has
aged out of the topic would restart), and a warning says so.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.infra.clickhouse import get_client
from services.runtime.kafka_clients import aiokafka_config
from services.runtime.reference import high_watermarks
from services.settings import Settings
from services.wire.codec import AvroCodec

log = logging.getLogger("switchyard.auditor")
# How long reading a partition's tail may take: past the transaction timeout (15 s), after which the broker aborts a
# transaction a fenced-off owner left open, and long enough for a tail since the last checkpoint
TAIL_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


@dataclass(frozen=True)
class Recovery:
    heads: dict[str, ChainHead]
    from_clickhouse: int
    from_topic: int


def newer(heads: dict[str, ChainHead], chain_key: str, head: ChainHead) -> None:
    current = heads.get(chain_key)
    if current is None or head.seq > current.seq:
        heads[chain_key] = head


class ChainHeadStore:
    """Recovers chain heads for a set of `audited` partitions from ClickHouse and the topic's tail."""

    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.settings = settings
        self.codec = codec
        self.topic = settings.topic("audited")

    async def recover(self, partitions: list[int]) -> Recovery:
        heads: dict[str, ChainHead] = {}
        checkpoints: dict[int, int] = {}
        try:
            rows = await asyncio.to_thread(self._stored_heads, partitions)
        except Exception as error:  # ClickHouse away: the topic alone, from the beginning
            log.warning("chain heads not in ClickHouse; reading all of audited", extra={"error": str(error)})
            rows = []
        for partition, chain_key, seq, digest, offset in rows:
            newer(heads, chain_key, ChainHead(int(seq), digest))
            checkpoints[partition] = max(checkpoints.get(partition, -1), int(offset))
        from_clickhouse = len(heads)
        from_topic = await self._read_tail(partitions, checkpoints, heads)
        return Recovery(heads, from_clickhouse, from_topic)

    def _stored_heads(self, partitions: list[int]) -> list[tuple[int, str, int, str, int]]:
        client = get_client(self.settings)
        try:
            result = client.query(
                "SELECT kafka_partition, chain_key, max(seq), argMax(hash, seq), max(kafka_offset) "
                "FROM audit_records "
                "WHERE kafka_topic = {topic:String} AND kafka_partition IN {partitions:Array(UInt32)} "
                "GROUP BY kafka_partition, chain_key",
                parameters={"topic": self.topic, "partitions": partitions},
            )
            return [(int(p), str(k), int(q), str(h), int(o)) for p, k, q, h, o in result.result_rows]
        finally:
            client.close()

    async def _read_tail(self, partitions: list[int], checkpoints: dict[int, int], heads: dict[str, ChainHead]) -> int:
        consumer = AIOKafkaConsumer(
            **aiokafka_config(
                self.settings, enable_auto_commit=False, isolation_level="read_committed", fetch_max_wait_ms=50
            )
        )
        await consumer.start()
        read = 0
        try:
            assigned = [TopicPartition(self.topic, p) for p in partitions]
            consumer.assign(assigned)
            # the high watermarks, not the last stable offsets: a chain head committed by the partition's last owner
            # just before it went is read even when its commit markers have not reached the partition yet
            ends = await asyncio.to_thread(high_watermarks, self.settings.kafka_bootstrap, assigned, TAIL_TIMEOUT_S)
            deadline = asyncio.get_running_loop().time() + TAIL_TIMEOUT_S
            for tp in assigned:
                after = checkpoints.get(tp.partition)
                if after is None:
                    await consumer.seek_to_beginning(tp)
                else:
                    consumer.seek(tp, after + 1)
            while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
                if asyncio.get_running_loop().time() > deadline:
                    raise TimeoutError(f"the tail of {self.topic} was not read within {TAIL_TIMEOUT_S} s")
                batch = await consumer.getmany(timeout_ms=200, max_records=2000)
                for messages in batch.values():
                    for message in messages:
                        read += self._apply(message.value, heads)
        finally:
            await consumer.stop()
        return read

    def _apply(self, raw: bytes | None, heads: dict[str, ChainHead]) -> int:
        try:
            _, value = self.codec.decode(raw or b"", reader="Audited")
        except Exception:  # not an audit record: not part of any chain
            return 0
        audit: dict[str, Any] = value["audit"]
        newer(heads, audit["chain_key"], ChainHead(int(audit["seq"]), audit["hash"]))
        return 1
