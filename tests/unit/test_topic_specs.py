"""Loading topics/: the repository's definitions are valid, and a bad file gets an error that names the
file, the topic and what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.infra.topic_specs import TopicSpecError, load_topics, parse_retention
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry

REPO_TOPICS = Path(__file__).resolve().parents[2] / "topics"
STAGES = ["router", "stitcher", "governor", "answerer", "auditor"]


@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.load(REPO_SCHEMAS_DIR)


def test_repository_topics_cover_the_chain_side_topics_and_a_dead_letter_topic_per_stage(
    registry: SchemaRegistry,
) -> None:
    specs = {s.name: s for s in load_topics(REPO_TOPICS, registry)}
    chain = ["requests", "routed", "stitched", "governed", "answered", "audited"]
    assert set(chain) <= specs.keys()
    assert {f"dlq.{stage}" for stage in STAGES} <= specs.keys()
    assert all(specs[name].cleanup_policy == "compact" for name in specs if name.startswith("ref."))
    assert specs["model.health"].cleanup_policy == "compact"
    assert all(specs[name].key == "store_id" for name in chain)
    assert "retention.ms" not in specs["ref.stores"].kafka_configs()


@pytest.mark.parametrize(
    ("text", "millis"),
    [("7d", 604_800_000), ("12h", 43_200_000), ("30m", 1_800_000), ("45s", 45_000), ("500ms", 500), ("forever", -1)],
)
def test_retention_durations_are_read_as_kafka_milliseconds(text: str, millis: int) -> None:
    assert parse_retention(text) == millis


def write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "bad.yaml").write_text(body)
    return tmp_path


def test_an_unknown_key_is_refused_with_the_file_and_topic_named(tmp_path: Path) -> None:
    body = (
        "topics:\n  - {name: t1, partitions: 1, replication_factor: 1, key: k, value_schema: Request, partitons: 3}\n"
    )
    with pytest.raises(TopicSpecError, match=r"bad\.yaml: topic t1: partitons: Extra inputs"):
        load_topics(write(tmp_path, body))


def test_zero_partitions_is_refused(tmp_path: Path) -> None:
    body = "topics:\n  - {name: t1, partitions: 0, replication_factor: 1, key: k, value_schema: Request}\n"
    with pytest.raises(TopicSpecError, match="topic t1: partitions"):
        load_topics(write(tmp_path, body))


def test_a_bad_retention_says_how_to_write_one(tmp_path: Path) -> None:
    body = (
        "topics:\n  - {name: t1, partitions: 1, replication_factor: 1, key: k, value_schema: Request,"
        " retention: 7 days}\n"
    )
    with pytest.raises(TopicSpecError, match=r"write e\.g\. 7d"):
        load_topics(write(tmp_path, body))


def test_an_illegal_topic_name_is_refused(tmp_path: Path) -> None:
    body = "topics:\n  - {name: 'bad name!', partitions: 1, replication_factor: 1, key: k, value_schema: Request}\n"
    with pytest.raises(TopicSpecError, match="not a legal Kafka topic name"):
        load_topics(write(tmp_path, body))


def test_an_unknown_value_schema_is_refused_with_the_known_ones_listed(
    tmp_path: Path, registry: SchemaRegistry
) -> None:
    body = "topics:\n  - {name: t1, partitions: 1, replication_factor: 1, key: k, value_schema: Reqest}\n"
    with pytest.raises(TopicSpecError, match=r"'Reqest' is not in schemas/; known: .*Request"):
        load_topics(write(tmp_path, body), registry)


def test_the_same_topic_in_two_files_is_refused(tmp_path: Path) -> None:
    entry = "topics:\n  - {name: t1, partitions: 1, replication_factor: 1, key: k, value_schema: Request}\n"
    (tmp_path / "a.yaml").write_text(entry)
    (tmp_path / "b.yaml").write_text(entry)
    with pytest.raises(TopicSpecError, match=r"t1 is already defined in a\.yaml"):
        load_topics(tmp_path)


def test_retention_cannot_be_set_twice_through_config(tmp_path: Path) -> None:
    body = (
        "topics:\n  - name: t1\n    partitions: 1\n    replication_factor: 1\n    key: k\n    value_schema: Request\n"
        "    config: {retention.ms: '1000'}\n"
    )
    with pytest.raises(TopicSpecError, match="with the retention/cleanup_policy keys"):
        load_topics(write(tmp_path, body))


def test_a_file_without_a_topics_list_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TopicSpecError, match="expected a mapping with a 'topics:' list"):
        load_topics(write(tmp_path, "- just a list\n"))
