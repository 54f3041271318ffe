"""Readiness probes for the infrastructure: exit 0 when a component really serves, 1 otherwise.

`make up` polls these; 'ready' means the component did real work, not merely that a port is open. For Kafka
that is a produce acknowledged by every in-sync replica and then a committed transaction that carries a
consumer group's offsets: the chain's stages do exactly that for every batch, and a fresh broker creates and
loads its transaction and group coordinators (`__transaction_state`, `__consumer_offsets`) only on their
first use. A stage started in that window can wait on "coordinator load in progress" past its transaction
timeout; after this probe the coordinators are loaded.
"""

from __future__ import annotations

import sys
import urllib.request
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.runtime.kafka_clients import confluent_config
from services.settings import Settings

PROBE_TOPIC = "_switchyard.probe"
PROBE_GROUP = "_switchyard.probe"
PROBE_TRANSACTIONAL_ID = "_switchyard.probe"


def kafka_reachable(bootstrap: str, timeout_s: float = 5.0, settings: Settings | None = None) -> bool:
    """Log in and read the cluster's metadata: what every principal may do, so a process's own liveness check
    (the probe topic and transaction of `kafka_accepts_produce` are the admin's)."""
    admin = AdminClient(confluent_config({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}, settings))
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def kafka_accepts_produce(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Create the probe topic if needed and produce one record with acks=all."""
    admin = AdminClient(confluent_config({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}))
    try:
        topics = admin.list_topics(timeout=timeout_s).topics
    except KafkaException:
        return False
    if PROBE_TOPIC not in topics:
        futures = admin.create_topics([NewTopic(PROBE_TOPIC, num_partitions=1, replication_factor=1)])
        try:
            futures[PROBE_TOPIC].result(timeout_s)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                return False
    delivered: list[Any] = []
    producer = Producer(
        confluent_config({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
    )
    producer.produce(PROBE_TOPIC, b"ping", on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(timeout_s)
    return delivered == [None] and kafka_commits_transaction(bootstrap, timeout_s)


def kafka_commits_transaction(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """One transaction with a record and a consumer group's offsets in it, committed."""
    producer = Producer(
        confluent_config(
            {
                "bootstrap.servers": bootstrap,
                "transactional.id": PROBE_TRANSACTIONAL_ID,
                "transaction.timeout.ms": 10_000,
                "socket.timeout.ms": int(timeout_s * 1000),
            }
        )
    )
    consumer = Consumer(
        confluent_config({"bootstrap.servers": bootstrap, "group.id": PROBE_GROUP, "enable.auto.commit": False})
    )
    try:
        producer.init_transactions(timeout_s)
        producer.begin_transaction()
        producer.produce(PROBE_TOPIC, b"transaction")
        offsets = [TopicPartition(PROBE_TOPIC, 0, 0)]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), timeout_s)
        producer.commit_transaction(timeout_s)
        return True
    except KafkaException:
        return False  # retried by the caller's poll; the next init_transactions aborts what this one left open
    finally:
        consumer.close()
        producer.flush(0)


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    checks = {"kafka": kafka_accepts_produce, "kafka-login": kafka_reachable, "http": http_ok}
    if len(argv) != 2 or argv[0] not in checks:
        print("usage: python -m services.infra.probe kafka|kafka-login HOST:PORT | http URL", file=sys.stderr)
        return 2
    kind, target = argv
    return 0 if checks[kind](target) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
