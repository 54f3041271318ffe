"""Fixtures for tests against the real components that `make test` (or `make up`) started."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.infra.clickhouse import ping as clickhouse_ping
from services.infra.probe import http_ok, kafka_accepts_produce
from services.launcher import Launcher
from services.runtime.kafka_clients import confluent_config
from services.settings import Settings, get_settings
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran processes of the chain shows their states and their logs' warnings and errors:
    CI keeps the test output, not the logs."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    for value in getattr(item, "funcargs", {}).values():
        launcher = getattr(value, "launcher", value)
        if isinstance(launcher, Launcher) and launcher.processes:
            report.sections.append(("chain processes", launcher.report()))


@pytest.fixture(scope="session")
def settings() -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def kafka(settings: Settings) -> str:
    """The broker's bootstrap address, once it has accepted a produce."""
    if not kafka_accepts_produce(settings.kafka_bootstrap):
        pytest.fail(f"Kafka at {settings.kafka_bootstrap} does not accept a produce: run `make up` (or `make test`)")
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def clickhouse(settings: Settings) -> str:
    if not clickhouse_ping(settings):
        pytest.fail(f"ClickHouse at {settings.clickhouse_url} does not answer: run `make up` (or `make test`)")
    return settings.clickhouse_url


@pytest.fixture(scope="session")
def weaviate_url(settings: Settings) -> str:
    url = f"http://{settings.weaviate_host}:{settings.weaviate_http_port}"
    if not http_ok(f"{url}/v1/.well-known/ready"):
        pytest.fail(f"Weaviate at {url} is not ready: run `make up` (or `make test`)")
    return url


@pytest.fixture(scope="session")
def codec(settings: Settings) -> AvroCodec:
    return AvroCodec(SchemaRegistry.load(settings.schemas_dir))


@pytest.fixture(scope="session")
def admin(settings: Settings, kafka: str) -> AdminClient:
    return AdminClient(confluent_config(settings=settings))


@pytest.fixture
def new_topic(admin: AdminClient) -> Iterator[Callable[[int], str]]:
    """Creates uniquely named topics for one test and deletes them after it."""
    created: list[str] = []

    def create(partitions: int = 1) -> str:
        name = f"it.{uuid.uuid4().hex[:12]}"
        admin.create_topics([NewTopic(name, num_partitions=partitions, replication_factor=1)])[name].result(30)
        created.append(name)
        wait_for_topic(admin, name, partitions)
        return name

    yield create
    delete_topics(admin, created)


def wait_for_topic(admin: AdminClient, name: str, partitions: int = 1, timeout_s: float = 15.0) -> None:
    """Metadata reaches every listener a moment after CreateTopics returns, and each partition's leader a moment
    later: until then a client without a group (a reference table) may be assigned only some of the partitions
    (test_a_table_caught_up_holds_every_record_committed_before_the_call saw none of 200 records once)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        topic = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if (
            topic is not None
            and topic.error is None
            and len(topic.partitions) >= partitions
            and all(p.leader >= 0 and p.error is None for p in topic.partitions.values())
        ):
            return
        time.sleep(0.1)
    raise TimeoutError(f"topic {name} has no metadata after {timeout_s}s")


def delete_topics(admin: AdminClient, names: list[str]) -> None:
    if names:
        for future in admin.delete_topics(names, operation_timeout=30).values():
            future.result(30)
