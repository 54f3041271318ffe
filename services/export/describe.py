"""The versions a bundle declares, read from a Switchyard tree: schema fingerprints, topics, trained models, the route
table, the policy rules, the providers (as references) and the prompt templates. The exporter writes them into the
manifest; the importer reads them again from the files it received and compares."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Final

import yaml

from services.wire.schema_registry import SchemaRegistry

MODEL_CARDS: Final = ("card.json", "registry_card.json", "model_card.json")
# the learning loop's registry names the deployed model per kind: {"answer_memory": "<model_id>", ...}
DEPLOYED_FILE: Final = "registry/deployed.json"


def describe(tree: Path) -> dict[str, Any]:
    return {
        "schemas": schema_versions(tree / "schemas"),
        "topics": topic_versions(tree / "topics", tree / "schemas"),
        "models": model_versions(tree / "var" / "models"),
        "deployed_models": deployed_models(tree / "var" / "models"),
        "route_table": route_table_version(tree / "routes" / "route_table.yaml"),
        "policies": policy_version(tree / "policies"),
        "providers": provider_references(tree / "providers" / "providers.yaml"),
        "prompt_templates": template_versions(tree / "services" / "stitcher" / "templates"),
    }


def schema_versions(schemas_dir: Path) -> dict[str, dict[str, Any]]:
    """Record name -> CRC-64-AVRO fingerprint of the current schema and the released versions it keeps."""
    registry = SchemaRegistry.load(schemas_dir)
    return {
        name: {
            "fingerprint": registry.fingerprint(name).hex(),
            "versions": [entry.version for entry in registry.versions(name)],
        }
        for name in registry.names()
    }


def topic_versions(topics_dir: Path, schemas_dir: Path) -> dict[str, dict[str, Any]]:
    from services.infra.topic_specs import load_topics

    specs = load_topics(topics_dir, SchemaRegistry.load(schemas_dir))
    return {
        spec.name: {
            "value_schema": spec.value_schema,
            "partitions": spec.partitions,
            "cleanup_policy": spec.cleanup_policy,
            "key": spec.key,
        }
        for spec in specs
    }


def model_versions(models_dir: Path) -> dict[str, dict[str, Any]]:
    """Every model of the registry: a directory under var/models holding a card. Its id is the directory's path,
    its version the card's `version` or `model_id` (or the hash of its files when the card names neither)."""
    models: dict[str, dict[str, Any]] = {}
    if not models_dir.is_dir():
        return models
    for card in sorted(path for name in MODEL_CARDS for path in models_dir.rglob(name)):
        directory = card.parent
        model_id = directory.relative_to(models_dir).as_posix()
        if model_id in models or any(model_id.startswith(f"{known}/") for known in models):
            continue
        files = sorted(
            path.relative_to(models_dir.parent.parent).as_posix()
            for path in directory.rglob("*")
            if path.is_file() and not path.name.startswith(".")
        )
        content = json.loads(card.read_text(encoding="utf-8"))
        digest = hashlib.sha256(b"".join((models_dir.parent.parent / name).read_bytes() for name in files))
        models[model_id] = {
            "card": card.relative_to(models_dir.parent.parent).as_posix(),
            "format": content.get("format", ""),
            "version": str(content.get("version") or content.get("model_id") or digest.hexdigest()[:16]),
            "evaluation": _evaluation_summary(content),
            "dataset": content.get("dataset", {}).get("version") if isinstance(content.get("dataset"), dict) else None,
            "files": files,
        }
    return models


def deployed_models(models_dir: Path) -> dict[str, str]:
    """Kind -> model id the registry has deployed; each must travel with the bundle."""
    path = models_dir / DEPLOYED_FILE
    if not path.is_file():
        return {}
    deployed = json.loads(path.read_text(encoding="utf-8"))
    return {str(kind): str(model_id) for kind, model_id in deployed.items()} if isinstance(deployed, dict) else {}


def _evaluation_summary(card: dict[str, Any]) -> dict[str, Any]:
    evaluation = card.get("evaluation")
    if not isinstance(evaluation, dict):
        return {}
    return {key: value for key, value in evaluation.items() if isinstance(value, int | float | str)}


def route_table_version(path: Path) -> str | None:
    if not path.is_file():
        return None
    from services.shared.route_table import load_route_table

    return load_route_table(path).version


def policy_version(policies_dir: Path) -> str | None:
    """The policy engine's version of the rule files, when there are any."""
    if not any(policies_dir.glob("*.yaml")) and not any(policies_dir.glob("*.yml")):
        return None
    from services.policy.engine import PolicyEngine

    return PolicyEngine.from_file(policies_dir).version


def provider_references(path: Path) -> dict[str, dict[str, Any]]:
    """Per provider: its kind, its endpoint (an ${ENV} reference with its default) and the env var of its key."""
    if not path.is_file():
        return {}
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    providers: dict[str, dict[str, Any]] = {}
    for name, provider in (config.get("providers") or {}).items():
        entry: dict[str, Any] = {"kind": provider.get("kind"), "model": provider.get("model")}
        if provider.get("base_url"):
            variable = provider.get("base_url_env")
            entry["endpoint"] = f"${{{variable}:-{provider['base_url']}}}" if variable else provider["base_url"]
        if provider.get("api_key_env"):
            entry["api_key"] = f"${{{provider['api_key_env']}}}"
        providers[str(name)] = entry
    return providers


def template_versions(templates_dir: Path) -> dict[str, str]:
    """Template file -> sha256 prefix; the stitcher records its own template versions on every Context."""
    if not templates_dir.is_dir():
        return {}
    return {
        path.relative_to(templates_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        for path in sorted(templates_dir.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }
