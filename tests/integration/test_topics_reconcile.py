"""`make topics` against the real broker: creates what is missing, is idempotent, applies config and
partition changes, and refuses what Kafka cannot do without applying any part of that plan."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType  # type: ignore[attr-defined]

from services.infra.topics import ReconcileRefused, reconcile
from tests.integration.conftest import delete_topics, wait_for_topic


def write_topics(directory: Path, prefix: str, partitions: int, retention: str) -> None:
    (directory / "test.yaml").write_text(
        f"""
defaults:
  replication_factor: 1
  key: store_id
  value_schema: Request
topics:
  - name: {prefix}.requests
    partitions: {partitions}
    retention: {retention}
  - name: {prefix}.ref
    partitions: 1
    cleanup_policy: compact
    config:
      min.cleanable.dirty.ratio: "0.2"
"""
    )


@pytest.fixture
def prefix(admin: AdminClient) -> Iterator[str]:
    name = f"it-{uuid.uuid4().hex[:10]}"
    yield name
    delete_topics(admin, [t for t in admin.list_topics(timeout=10).topics if t.startswith(name)])


def topic_config(admin: AdminClient, topic: str, key: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return str(admin.describe_configs([resource])[resource].result(15)[key].value)


def test_reconcile_creates_missing_topics_then_has_nothing_to_do(
    kafka: str, admin: AdminClient, prefix: str, tmp_path: Path
) -> None:
    write_topics(tmp_path, prefix, partitions=3, retention="7d")
    first = reconcile(tmp_path, kafka, out=io.StringIO())
    assert sorted(c.spec.name for c in first.changes if c.create) == [f"{prefix}.ref", f"{prefix}.requests"]
    wait_for_topic(admin, f"{prefix}.requests")
    assert len(admin.list_topics(timeout=10).topics[f"{prefix}.requests"].partitions) == 3
    assert topic_config(admin, f"{prefix}.ref", "cleanup.policy") == "compact"
    assert topic_config(admin, f"{prefix}.requests", "retention.ms") == str(7 * 86_400_000)

    second = reconcile(tmp_path, kafka, out=io.StringIO())
    assert second.empty
    assert sorted(second.unchanged) == [f"{prefix}.ref", f"{prefix}.requests"]


def test_reconcile_applies_a_retention_change_and_more_partitions(
    kafka: str, admin: AdminClient, prefix: str, tmp_path: Path
) -> None:
    write_topics(tmp_path, prefix, partitions=2, retention="7d")
    reconcile(tmp_path, kafka, out=io.StringIO())
    wait_for_topic(admin, f"{prefix}.requests")

    write_topics(tmp_path, prefix, partitions=4, retention="12h")
    printed = io.StringIO()
    changed = reconcile(tmp_path, kafka, out=printed)
    assert "partitions 2 -> 4" in printed.getvalue()
    assert f"retention.ms: {7 * 86_400_000} -> {12 * 3_600_000}" in printed.getvalue()
    assert [c.spec.name for c in changed.changes] == [f"{prefix}.requests"]
    assert topic_config(admin, f"{prefix}.requests", "retention.ms") == str(12 * 3_600_000)
    assert len(admin.list_topics(timeout=10).topics[f"{prefix}.requests"].partitions) == 4
    assert reconcile(tmp_path, kafka, out=io.StringIO()).empty


def test_reconcile_refuses_fewer_partitions_and_applies_nothing_of_that_plan(
    kafka: str, admin: AdminClient, prefix: str, tmp_path: Path
) -> None:
    write_topics(tmp_path, prefix, partitions=3, retention="7d")
    reconcile(tmp_path, kafka, out=io.StringIO())
    wait_for_topic(admin, f"{prefix}.requests")

    write_topics(tmp_path, prefix, partitions=1, retention="1d")
    with pytest.raises(ReconcileRefused, match="Kafka cannot remove partitions"):
        reconcile(tmp_path, kafka, out=io.StringIO())
    assert len(admin.list_topics(timeout=10).topics[f"{prefix}.requests"].partitions) == 3
    assert topic_config(admin, f"{prefix}.requests", "retention.ms") == str(7 * 86_400_000)


def test_the_repository_topics_are_all_present_and_unchanged_after_make_up(kafka: str, settings: object) -> None:
    planned = reconcile(Path(__file__).resolve().parents[2] / "topics", kafka, dry_run=True, out=io.StringIO())
    assert planned.empty, planned.render()
    assert {"requests", "routed", "stitched", "governed", "answered", "audited", "model.health"} <= set(
        planned.unchanged
    )
