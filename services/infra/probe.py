"""Readiness probes for the infrastructure: exit 0 when a component really serves, 1 otherwise.

`make up` polls these; 'ready' means the component did real work (Kafka acknowledged a produce),
not merely that a port is open.
"""

from __future__ import annotations

import sys
import urllib.request
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

PROBE_TOPIC = "_switchyard.probe"


def kafka_accepts_produce(bootstrap: str, timeout_s: float = 5.0) -> bool:
    """Create the probe topic if needed and produce one record with acks=all."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000})
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
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)})
    producer.produce(PROBE_TOPIC, b"ping", on_delivery=lambda err, _msg: delivered.append(err))
    producer.flush(timeout_s)
    return delivered == [None]


def http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return 200 <= int(response.status) < 300
    except OSError:
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"kafka", "http"}:
        print("usage: python -m services.infra.probe kafka HOST:PORT | http URL", file=sys.stderr)
        return 2
    kind, target = argv
    ok = kafka_accepts_produce(target) if kind == "kafka" else http_ok(target)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
