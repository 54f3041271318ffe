"""schemas/asyncapi.yaml is current with topics/ and schemas/, describes every topic and record, and every
reference in it resolves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from services.infra.asyncapi import AVRO_SCHEMA_FORMAT, DEFAULT_OUT, GENERATOR, chain_stages, render
from services.infra.topic_specs import load_topics
from services.settings import Settings
from services.wire.schema_registry import SchemaRegistry, parse, schema_fingerprint

SETTINGS = Settings()
REGISTRY = SchemaRegistry.load(SETTINGS.schemas_dir)
TOPICS = load_topics(SETTINGS.topics_dir, REGISTRY)


@pytest.fixture(scope="module")
def rendered() -> str:
    return render(SETTINGS)


@pytest.fixture(scope="module")
def document(rendered: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(rendered)
    return loaded


def test_the_document_in_the_repo_is_what_the_generator_makes_now(rendered: str) -> None:
    committed = DEFAULT_OUT.read_text(encoding="utf-8") if DEFAULT_OUT.exists() else ""

    assert committed == rendered, f"{DEFAULT_OUT} is out of date with topics/ and schemas/: run `{GENERATOR}`"


def test_the_document_is_asyncapi_3(document: dict[str, Any]) -> None:
    assert document["asyncapi"] == "3.0.0"
    assert document["servers"]["embedded"]["protocol"] == "kafka"


@pytest.mark.parametrize("spec", TOPICS, ids=lambda spec: spec.name)
def test_every_topic_is_a_channel_with_its_key_partitions_and_cleanup_policy(
    document: dict[str, Any], spec: Any
) -> None:
    channel = document["channels"][spec.name]
    binding = channel["bindings"]["kafka"]
    (message,) = channel["messages"].values()

    assert channel["address"] == spec.name
    assert binding["partitions"] == spec.partitions
    assert binding["replicas"] == spec.replication_factor
    assert binding["topicConfiguration"]["cleanup.policy"] == spec.cleanup_policy.split(",")
    assert message["payload"] == {"$ref": f"#/components/schemas/switchyard.{spec.value_schema}"}
    assert spec.key in message["bindings"]["kafka"]["key"]["description"]


def test_a_compacted_topic_declares_compaction_and_no_retention(document: dict[str, Any]) -> None:
    configuration = document["channels"]["ref.stores"]["bindings"]["kafka"]["topicConfiguration"]

    assert configuration["cleanup.policy"] == ["compact"]
    assert "retention.ms" not in configuration


@pytest.mark.parametrize("name", REGISTRY.names())
def test_every_current_schema_is_a_message_whose_payload_is_that_avro_schema(
    document: dict[str, Any], name: str
) -> None:
    message = document["components"]["messages"][name.removeprefix("switchyard.")]
    payload = _resolve(document, message["payload"]["$ref"])

    assert payload["schemaFormat"] == AVRO_SCHEMA_FORMAT
    assert schema_fingerprint(parse(payload["schema"])) == REGISTRY.entry(name).fingerprint


def test_each_chain_stage_receives_its_input_sends_its_output_and_dead_letters(document: dict[str, Any]) -> None:
    operations = document["operations"]

    for stage in chain_stages():
        name = stage["name"]
        assert operations[f"{name}.receive"]["channel"] == {"$ref": f"#/channels/{stage['input_topic']}"}
        assert operations[f"{name}.receive"]["action"] == "receive"
        assert operations[f"{name}.send"]["channel"] == {"$ref": f"#/channels/{stage['output_topic']}"}
        assert operations[f"{name}.dead_letter"]["channel"] == {"$ref": f"#/channels/dlq.{name}"}
    assert {stage["name"] for stage in chain_stages()} == {"router", "stitcher", "governor", "answerer", "auditor"}


def test_every_reference_in_the_document_resolves(document: dict[str, Any]) -> None:
    references = list(_references(document))

    assert references
    for reference in references:
        assert _resolve(document, reference) is not None, reference


def _references(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _resolve(document: dict[str, Any], reference: str) -> Any:
    assert reference.startswith("#/"), reference
    node: Any = document
    for part in reference[2:].split("/"):
        node = node.get(part.replace("~1", "/").replace("~0", "~")) if isinstance(node, dict) else None
    return node
