"""Topic definitions as code: load topics/*.yaml into validated specs, with errors that name the file,
the topic and the key to fix. Pure: no broker is needed to load or validate."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from services.wire.schema_registry import SchemaRegistry

TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Configs set through dedicated keys, so that `config:` cannot contradict them.
DEDICATED_CONFIGS = {"retention.ms", "cleanup.policy"}


class TopicSpecError(ValueError):
    """A topics/ file is invalid; the message names the file, the topic and the fix."""


def parse_retention(value: str | int) -> int:
    """'7d', '12h', '30m', '45s', '500ms' or 'forever' (-1) to milliseconds."""
    if isinstance(value, int):
        return value
    if value in {"forever", "-1"}:
        return -1
    match = DURATION.match(value.strip())
    if not match:
        raise ValueError(f"retention {value!r} is not a duration: write e.g. 7d, 12h, 30m, 500ms or forever")
    return int(match.group(1)) * UNIT_MS[match.group(2)]


class TopicSpec(BaseModel):
    """One Kafka topic as the operator wants it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    partitions: int = Field(ge=1, le=10_000)
    replication_factor: int = Field(ge=1, le=32)
    cleanup_policy: Literal["delete", "compact", "compact,delete"] = "delete"
    retention_ms: int = -1
    key: str = Field(description="the record field the key is taken from, for producers and readers")
    value_schema: str = Field(description="Avro record name in schemas/")
    doc: str = ""
    config: dict[str, str] = Field(default_factory=dict)
    source: str = Field("", description="the file it came from, for messages")

    @field_validator("name")
    @classmethod
    def _valid_topic_name(cls, name: str) -> str:
        if not TOPIC_NAME.match(name) or name in {".", ".."}:
            raise ValueError(f"{name!r} is not a legal Kafka topic name (letters, digits, '.', '_', '-')")
        return name

    @field_validator("config")
    @classmethod
    def _no_dedicated_keys(cls, config: dict[str, str]) -> dict[str, str]:
        clash = DEDICATED_CONFIGS & config.keys()
        if clash:
            raise ValueError(f"set {sorted(clash)} with the retention/cleanup_policy keys, not under config")
        return config

    def kafka_configs(self) -> dict[str, str]:
        """Every topic config this spec manages, as Kafka names them."""
        configs = {"cleanup.policy": self.cleanup_policy, **self.config}
        if self.cleanup_policy != "compact":
            configs["retention.ms"] = str(self.retention_ms)
        return configs


def _spec_from(raw: dict[str, Any], defaults: dict[str, Any], source: str) -> TopicSpec:
    merged: dict[str, Any] = {**defaults, **raw}
    merged["config"] = {**defaults.get("config", {}), **raw.get("config", {})}
    merged["config"] = {str(k): str(v) for k, v in merged["config"].items()}
    retention = merged.pop("retention", None)
    if retention is not None:
        merged["retention_ms"] = parse_retention(retention)
    return TopicSpec(**merged, source=source)


def load_file(path: Path) -> list[TopicSpec]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise TopicSpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("topics"), list):
        raise TopicSpecError(f"{path}: expected a mapping with a 'topics:' list (and optional 'defaults:')")
    defaults = document.get("defaults") or {}
    specs = []
    for index, raw in enumerate(document["topics"]):
        label = raw.get("name", f"#{index + 1}") if isinstance(raw, dict) else f"#{index + 1}"
        try:
            if not isinstance(raw, dict):
                raise TopicSpecError("each entry under 'topics:' must be a mapping")
            specs.append(_spec_from(raw, defaults, path.name))
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'topic'}: {e['msg']}" for e in exc.errors())
            raise TopicSpecError(f"{path}: topic {label}: {problems}") from exc
        except (ValueError, TypeError) as exc:
            raise TopicSpecError(f"{path}: topic {label}: {exc}") from exc
    return specs


def load_topics(topics_dir: Path, registry: SchemaRegistry | None = None) -> list[TopicSpec]:
    """All topics in a directory; names must be unique and value schemas must exist."""
    files = sorted(topics_dir.glob("*.yaml"))
    if not files:
        raise TopicSpecError(f"{topics_dir}: no *.yaml topic definitions found")
    specs: list[TopicSpec] = []
    seen: dict[str, str] = {}
    for path in files:
        for spec in load_file(path):
            if spec.name in seen:
                raise TopicSpecError(f"{path}: topic {spec.name} is already defined in {seen[spec.name]}")
            seen[spec.name] = path.name
            specs.append(spec)
    if registry is not None:
        known = set(registry.names())
        for spec in specs:
            if f"switchyard.{spec.value_schema}" not in known and spec.value_schema not in known:
                raise TopicSpecError(
                    f"{spec.source}: topic {spec.name}: value_schema {spec.value_schema!r} is not in schemas/; "
                    f"known: {', '.join(sorted(n.removeprefix('switchyard.') for n in known))}"
                )
    return specs
