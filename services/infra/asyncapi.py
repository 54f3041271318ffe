"""The AsyncAPI 3.0 document of Switchyard's topics and records, generated from topics/ and schemas/ (and the
chain stages' declared topics), for teams that produce or consume them in other languages.
usage: python -m services.infra.asyncapi [--out schemas/asyncapi.yaml] [--check]
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import inspect
import sys
import tomllib
from pathlib import Path
from typing import Any

import yaml

from services.infra.topic_specs import TopicSpec, load_topics
from services.settings import DATA_ROOT, IN_CHECKOUT, REPO_ROOT, Settings
from services.wire.schema_registry import SchemaRegistry, full_name

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
AVRO_SCHEMA_FORMAT = "application/vnd.apache.avro+json;version=1.9.0"
DEFAULT_OUT = DATA_ROOT / "schemas" / "asyncapi.yaml"
GENERATOR = "python -m services.infra.asyncapi"
HEADER = f"# Generated from topics/ and schemas/ by `{GENERATOR}`; edit those, not this file.\n"
DESCRIPTION = """\
Switchyard's Kafka topics and the Avro records on them. A record's value is Avro binary in one of two framings:
Avro single-object encoding (C3 01, then the writer schema's 8-byte CRC-64-AVRO fingerprint little-endian), the
default; or, with SWITCHYARD_WIRE_FORMAT=confluent, the Confluent wire format (byte 0, then the 4-byte big-endian
schema id that SWITCHYARD_SCHEMA_REGISTRY_URL assigned, under subject <topic>-value). Switchyard reads both.
Keys are the UTF-8 text of the field each channel's message names. Operations are the chain stages' declared
topics; the other processes (telemetry, health, approvals, learning, gateway) are not described yet."""


def build_document(
    topics: list[TopicSpec], registry: SchemaRegistry, stages: list[dict[str, str]], version: str
) -> dict[str, Any]:
    """The AsyncAPI document as data: one channel per topic, one message per current record schema, and each
    stage's receive, send and dead-letter operations."""
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {"title": "Switchyard", "version": version, "description": DESCRIPTION},
        "defaultContentType": "application/octet-stream",
        "servers": {
            "embedded": {
                "host": "127.0.0.1:9092",
                "protocol": "kafka",
                "description": "the single-node broker `make up` starts; any Kafka cluster at scale",
            }
        },
        "channels": {spec.name: _channel(spec, registry) for spec in topics},
        "operations": _operations(stages, {spec.name: spec for spec in topics}),
        "components": {
            "schemas": {name: _avro_schema(registry, name) for name in registry.names()},
            "messages": {_short(name): _message(registry, name) for name in registry.names()},
        },
    }


def _channel(spec: TopicSpec, registry: SchemaRegistry) -> dict[str, Any]:
    """A topic as a channel; its message is the record's message plus the key this topic is keyed by."""
    name = full_name(spec.value_schema)
    message = _message(registry, name)
    message["bindings"]["kafka"] = {
        "key": {"type": "string", "description": f"{spec.key} of the record, as UTF-8 text"},
        **message["bindings"]["kafka"],
    }
    channel: dict[str, Any] = {"address": spec.name, "title": spec.name}
    if spec.doc:
        channel["description"] = spec.doc
    channel["messages"] = {_short(name): message}
    channel["bindings"] = {"kafka": _channel_binding(spec)}
    return channel


def _channel_binding(spec: TopicSpec) -> dict[str, Any]:
    configuration: dict[str, Any] = {"cleanup.policy": spec.cleanup_policy.split(",")}
    if spec.cleanup_policy != "compact":
        configuration["retention.ms"] = spec.retention_ms
    configuration.update(sorted(spec.config.items()))
    return {
        "topic": spec.name,
        "partitions": spec.partitions,
        "replicas": spec.replication_factor,
        "topicConfiguration": configuration,
        "bindingVersion": KAFKA_BINDING_VERSION,
    }


def _avro_schema(registry: SchemaRegistry, name: str) -> dict[str, Any]:
    return {"schemaFormat": AVRO_SCHEMA_FORMAT, "schema": _split_names(registry.entry(name).schema)}


def _split_names(schema: Any) -> Any:
    """The same Avro schema with each full name written as name and namespace (AsyncAPI's Avro meta-schema takes
    only simple names), and keys in one order: fastavro's expansion does not keep theirs from run to run."""
    if isinstance(schema, list):
        return [_split_names(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    split = {key: _split_names(schema[key]) for key in sorted(schema, key=_key_order)}
    name = schema.get("name")
    if schema.get("type") in ("record", "enum", "fixed") and isinstance(name, str) and "." in name:
        split["namespace"], split["name"] = name.rsplit(".", 1)
        split = {key: split[key] for key in sorted(split, key=_key_order)}
    return split


_AVRO_KEYS = ["name", "namespace", "type", "doc", "logicalType", "symbols", "items", "values", "default", "fields"]


def _key_order(key: str) -> tuple[int, str]:
    return (_AVRO_KEYS.index(key) if key in _AVRO_KEYS else len(_AVRO_KEYS), key)


def _message(registry: SchemaRegistry, name: str) -> dict[str, Any]:
    entry = registry.entry(name)
    message: dict[str, Any] = {"name": _short(name), "title": name}
    if entry.schema.get("doc"):
        message["summary"] = entry.schema["doc"]
    message["payload"] = {"$ref": f"#/components/schemas/{name}"}
    message["bindings"] = {"kafka": {"schemaIdLocation": "payload", "bindingVersion": KAFKA_BINDING_VERSION}}
    return message


def _operations(stages: list[dict[str, str]], topics: dict[str, TopicSpec]) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    for stage in stages:
        flows = [
            ("receive", "receive", stage["input_topic"]),
            ("send", "send", stage["output_topic"]),
            ("dead_letter", "send", f"dlq.{stage['name']}"),
        ]
        for suffix, action, topic in flows:
            spec = topics.get(topic)
            if spec is None:
                continue
            record = _short(full_name(spec.value_schema))
            operations[f"{stage['name']}.{suffix}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{topic}"},
                "summary": f"the {stage['name']} stage {'reads' if action == 'receive' else 'writes'} {topic}",
                "messages": [{"$ref": f"#/channels/{topic}/messages/{record}"}],
            }
    return operations


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def chain_stages() -> list[dict[str, str]]:
    """Each chain stage's name and declared input and output topics, from its Stage class."""
    from services.runtime.stage import Stage
    from services.stages import CHAIN

    stages = []
    for name in CHAIN:
        module = importlib.import_module(f"services.{name}.stage")
        for value in vars(module).values():
            if inspect.isclass(value) and issubclass(value, Stage) and value.__dict__.get("name") == name:
                stages.append({"name": name, "input_topic": value.input_topic, "output_topic": value.output_topic})
    return stages


def project_version() -> str:
    if not IN_CHECKOUT:  # an installed wheel: its metadata carries pyproject's version
        return importlib.metadata.version("switchyard")
    with (REPO_ROOT / "pyproject.toml").open("rb") as pyproject:
        return str(tomllib.load(pyproject)["project"]["version"])


def render(settings: Settings | None = None) -> str:
    """The document as YAML, byte for byte what schemas/asyncapi.yaml holds when it is current."""
    settings = settings or Settings()
    registry = SchemaRegistry.load(settings.schemas_dir)
    topics = load_topics(settings.topics_dir, registry)
    document = build_document(topics, registry, chain_stages(), project_version())
    return HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


class _Dumper(yaml.SafeDumper):
    """Safe YAML with multi-line text as literal blocks, so the description reads as written."""


def _text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|" if "\n" in text else None)


_Dumper.add_representer(str, _text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchyard schemas asyncapi", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write it (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="exit 1 when --out is not what would be generated")
    args = parser.parse_args(argv)
    rendered = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current == rendered:
            return 0
        sys.stderr.write(f"{args.out} is out of date with topics/ and schemas/; run `{GENERATOR}`\n")
        return 1
    args.out.write_text(rendered, encoding="utf-8")
    sys.stdout.write(f"wrote {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
