"""Consumer lag by stage, sampled from Kafka: per partition of each stage's input topic, the stage's committed
offset against the last stable offset (the end a read_committed consumer can reach), with confluent-kafka's
AdminClient. The telemetry process inserts a sample every few seconds into `switchyard.consumer_lag`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from confluent_kafka import ConsumerGroupTopicPartitions, IsolationLevel, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from services.registry import REGISTRY, Registry
from services.runtime.kafka_clients import confluent_config
from services.settings import Settings

LAG_COLUMNS = ["sampled_at", "stage", "group_id", "topic", "partition", "committed", "end_offset", "lag"]
NO_OFFSET = -1001  # librdkafka's OFFSET_INVALID: the group has committed nothing on that partition


def stage_inputs(registry: Registry = REGISTRY) -> dict[str, list[str]]:
    """The input topics of each stage's and sink's consumer group, by process name (topic names before the
    prefix), from the process registry."""
    return registry.lag_inputs()


class LagSampler:
    def __init__(self, settings: Settings, inputs: dict[str, list[str]], timeout_s: float = 5.0) -> None:
        self.settings = settings
        self.inputs = inputs
        self.timeout_s = timeout_s
        self.admin = AdminClient(confluent_config(settings=settings))

    def sample(self) -> list[list[Any]]:
        """One row per (stage, partition) of every input topic that exists; blocking, run it in a thread."""
        sampled_at = datetime.now(tz=UTC)
        metadata = self.admin.list_topics(timeout=self.timeout_s).topics
        partitions: dict[str, list[TopicPartition]] = {}
        for stage, topics in self.inputs.items():
            names = [self.settings.topic(t) for t in topics]
            partitions[stage] = [
                TopicPartition(name, p) for name in names if name in metadata for p in metadata[name].partitions
            ]
        ends = self._end_offsets({tp for tps in partitions.values() for tp in tps})
        rows: list[list[Any]] = []
        for stage, tps in partitions.items():
            if not tps:
                continue
            group = self.settings.topic(f"switchyard-{stage}")
            committed = self._committed(group, tps)
            for tp in tps:
                end = ends.get((tp.topic, tp.partition), 0)
                position = committed.get((tp.topic, tp.partition), NO_OFFSET)
                lag = end - position if position >= 0 else end
                rows.append([sampled_at, stage, group, tp.topic, tp.partition, position, end, max(lag, 0)])
        return rows

    def _end_offsets(self, tps: set[TopicPartition]) -> dict[tuple[str, int], int]:
        if not tps:
            return {}
        futures = self.admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in tps},  # type: ignore[no-untyped-call]
            isolation_level=IsolationLevel.READ_COMMITTED,
            request_timeout=self.timeout_s,
        )
        return {(tp.topic, tp.partition): future.result().offset for tp, future in futures.items()}

    def _committed(self, group: str, tps: list[TopicPartition]) -> dict[tuple[str, int], int]:
        futures = self.admin.list_consumer_group_offsets(
            [ConsumerGroupTopicPartitions(group, tps)], request_timeout=self.timeout_s
        )
        result = futures[group].result()
        return {(tp.topic, tp.partition): tp.offset for tp in result.topic_partitions if tp.error is None}
