"""The broker's SASL_SSL listener with the ACLs of services/infra/acls.py: a till writes requests and feedback and
nothing else; a stage, run by the real runtime under its own principal, does its whole job (group, transaction,
output, offsets) and cannot step outside it. Each test applies the ACLs under a fresh topic prefix."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.infra import acls, probe
from services.runtime.kafka_clients import KafkaSecurityError, confluent_config
from services.runtime.worker import StageWorker, WorkerConfig
from services.settings import Settings
from services.tools.bench.runtime import Relay, routed_value
from services.wire.codec import AvroCodec

TOPICS = ["requests", "feedback", "routed", "stitched", "dlq.stitcher", "governed", "audited", "model.health"]
DENIED = KafkaError.TOPIC_AUTHORIZATION_FAILED


@pytest.fixture(scope="module")
def sasl_bootstrap(settings: Settings) -> str:
    """The SASL_SSL listener: the configured bootstrap when the tests run on it, else the dev broker's port."""
    if settings.kafka_security_protocol == "SASL_SSL":
        return settings.kafka_bootstrap
    return f"{settings.host}:{os.environ.get('SWITCHYARD_KAFKA_SASL_PORT', '9094')}"


def as_principal(settings: Settings, bootstrap: str, prefix: str, username: str | None) -> Settings:
    """Settings of one principal on the SASL_SSL listener (None: the admin); its password file is the dev broker's."""
    return settings.model_copy(
        update={
            "kafka_bootstrap": bootstrap,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_username": username,
            "kafka_password_file": None,
            "topic_prefix": prefix,
        }
    )


@pytest.fixture
def secured(settings: Settings, sasl_bootstrap: str) -> Iterator[Settings]:
    """The admin's settings under a fresh prefix whose topics exist and whose ACLs are applied; both removed after."""
    prefix = f"acl{uuid.uuid4().hex[:8]}."
    admin_settings = as_principal(settings, sasl_bootstrap, prefix, None)
    admin = AdminClient(confluent_config({"log_level": 3}, admin_settings))
    names = [admin_settings.topic(t) for t in TOPICS]
    for future in admin.create_topics([NewTopic(n, num_partitions=1, replication_factor=1) for n in names]).values():
        future.result(30)
    planned = acls.plan(admin, admin_settings)
    acls.apply(admin, admin_settings, planned)
    deadline = time.monotonic() + 30
    while acls.plan(admin, admin_settings).to_add:  # in force once the broker lists them (as acls.granted waits)
        assert time.monotonic() < deadline, "the ACLs under the test's prefix never came into force"
        time.sleep(0.1)
    try:
        yield admin_settings
    finally:
        acls.revoke(admin, admin_settings)
        groups = [g.group_id for g in admin.list_consumer_groups().result().valid if g.group_id.startswith(prefix)]
        if groups:
            for future in admin.delete_consumer_groups(groups, request_timeout=30).values():
                future.result()
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)


def produce(settings: Settings, topic: str, timeout_ms: int = 15_000) -> KafkaError | None:
    """One record to a topic (named as in topics/); the delivery error, None when the broker took it."""
    results: list[KafkaError | None] = []
    producer = Producer(confluent_config({"message.timeout.ms": timeout_ms, "log_level": 3}, settings))
    producer.produce(settings.topic(topic), b"x", b"0001", on_delivery=lambda err, _msg: results.append(err))
    producer.flush(20)
    assert results, f"no delivery report for {topic}"
    return results[0]


def read_first(settings: Settings, topic: str, timeout_s: float) -> bytes | None:
    """The first record of partition 0, read from the start without joining the group; None if none came."""
    consumer = Consumer(confluent_config({"group.id": settings.topic("acl-read"), "log_level": 0}, settings))
    try:
        consumer.assign([TopicPartition(settings.topic(topic), 0, 0)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                return message.value() or b""
        return None
    finally:
        consumer.close()


def metadata_refusal(settings: Settings, topic: str) -> int | None:
    """The error code the broker gives for the topic's metadata (what any read starts with); None when it gives it."""
    consumer = Consumer(confluent_config({"group.id": settings.topic("acl-read"), "log_level": 0}, settings))
    try:
        error = consumer.list_topics(settings.topic(topic), timeout=10).topics[settings.topic(topic)].error
        return None if error is None else int(error.code())
    finally:
        consumer.close()


def test_a_till_writes_requests_and_feedback(secured: Settings) -> None:
    till = secured.model_copy(update={"kafka_username": acls.principal(acls.TILL)})
    assert produce(till, "requests") is None
    assert produce(till, "feedback") is None


def test_a_till_cannot_write_governed_nor_model_health(secured: Settings) -> None:
    till = secured.model_copy(update={"kafka_username": acls.principal(acls.TILL)})
    for topic in ("governed", "model.health"):
        error = produce(till, topic)
        assert error is not None and error.code() == DENIED, (topic, error)


def test_a_till_cannot_read_audited(secured: Settings) -> None:
    assert produce(secured, "audited") is None
    # there is a record to read: the admin reads it
    assert metadata_refusal(secured, "audited") is None
    assert read_first(secured, "audited", timeout_s=15) == b"x"
    till = secured.model_copy(update={"kafka_username": acls.principal(acls.TILL)})
    assert metadata_refusal(till, "audited") == DENIED
    assert read_first(till, "audited", timeout_s=5) is None


def test_a_wrong_password_is_refused(secured: Settings, tmp_path: Any) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    till = secured.model_copy(update={"kafka_username": acls.principal(acls.TILL), "kafka_password_file": wrong})
    error = produce(till, "requests", timeout_ms=5_000)
    assert error is not None


def test_a_process_liveness_check_logs_in_as_itself_and_a_wrong_password_fails_it(
    secured: Settings, tmp_path: Any
) -> None:
    """The faust worker's Kubernetes probe (`probe kafka-login`): metadata only, which any principal may read."""
    till = secured.model_copy(update={"kafka_username": acls.principal(acls.TILL)})
    assert probe.kafka_reachable(till.kafka_bootstrap, settings=till)
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password")
    refused = till.model_copy(update={"kafka_password_file": wrong})
    assert not probe.kafka_reachable(refused.kafka_bootstrap, timeout_s=3.0, settings=refused)


def test_a_missing_password_file_names_the_file_and_the_fix(secured: Settings, tmp_path: Any) -> None:
    missing = tmp_path / "absent.password"
    with pytest.raises(KafkaSecurityError, match=r"absent\.password"):
        confluent_config(settings=secured.model_copy(update={"kafka_password_file": missing}))


class StitcherRelay(Relay):
    """The stitcher's topics and group with the bench relay's decision: the runtime's whole Kafka job."""

    name: ClassVar[str] = "stitcher"
    input_topic: ClassVar[str] = "routed"
    output_topic: ClassVar[str] = "stitched"


def test_a_stage_principal_consumes_its_input_and_commits_its_output_in_a_transaction(
    secured: Settings, codec: AvroCodec
) -> None:
    run, count = uuid.uuid4().hex[:8], 20
    admin_producer = Producer(confluent_config({"log_level": 3}, secured))
    for index in range(count):
        admin_producer.produce(secured.topic("routed"), codec.encode("Routed", routed_value(index, run)), b"0001")
    assert admin_producer.flush(30) == 0
    stitcher = secured.model_copy(update={"kafka_username": acls.principal("stitcher")})
    config = WorkerConfig(replica="acl-0", commit_linger_ms=50, transaction_timeout_ms=10_000)
    worker = StageWorker(StitcherRelay(0), config=config, settings=stitcher, codec=codec)

    async def run_until_relayed() -> None:
        task = asyncio.create_task(worker.run())
        try:
            deadline = time.monotonic() + 60
            while committed_offset(secured) < count and time.monotonic() < deadline and not task.done():
                await asyncio.wait({task}, timeout=0.3)
        finally:
            worker.stop()
            await task

    asyncio.run(run_until_relayed())
    assert committed_offset(secured) == count
    assert len(read_committed(secured, "stitched", count)) == count
    # and nothing beyond its job: the stage's principal cannot write the governor's output
    error = produce(stitcher, "governed")
    assert error is not None and error.code() == DENIED


def committed_offset(settings: Settings) -> int:
    consumer = Consumer(confluent_config({"group.id": settings.topic("switchyard-stitcher"), "log_level": 3}, settings))
    try:
        [partition] = consumer.committed([TopicPartition(settings.topic("routed"), 0)], timeout=10)
        return max(int(partition.offset), 0)
    finally:
        consumer.close()


def read_committed(settings: Settings, topic: str, until: int, timeout_s: float = 20.0) -> list[bytes]:
    consumer = Consumer(
        confluent_config(
            {"group.id": settings.topic("acl-check"), "isolation.level": "read_committed", "log_level": 3},
            settings,
        )
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition(settings.topic(topic), 0, 0)])
        deadline = time.monotonic() + timeout_s
        while len(values) < until and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and message.error() is None:
                values.append(message.value() or b"")
        return values
    finally:
        consumer.close()
