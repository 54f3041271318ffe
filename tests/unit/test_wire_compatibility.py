"""The evolution check passes the repo's schemas and rejects breaking changes in the direction they break."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from services.wire.compatibility import Direction, check_candidate, check_compatibility, main
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry

REGISTRY = SchemaRegistry.load(REPO_SCHEMAS_DIR)


def _candidate(name: str) -> dict[str, Any]:
    candidate: dict[str, Any] = copy.deepcopy(REGISTRY.entry(name).schema)
    return candidate


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = next(field for field in schema["fields"] if field["name"] == name)
    return field


def test_the_repository_schemas_are_compatible_with_their_history() -> None:
    assert check_compatibility(REGISTRY) == []


def test_an_unchanged_schema_is_a_compatible_candidate() -> None:
    assert check_candidate(REGISTRY, _candidate("Routed")) == []


def test_a_new_field_without_default_breaks_backward_only_and_names_the_field() -> None:
    candidate = _candidate("Request")
    candidate["fields"].append({"name": "lane", "type": "string"})

    found = check_candidate(REGISTRY, candidate)

    assert found
    assert {incompatibility.direction for incompatibility in found} == {Direction.BACKWARD}
    assert all("'lane'" in str(incompatibility) for incompatibility in found)
    assert all("default" in str(incompatibility) for incompatibility in found)


def test_a_new_field_with_default_is_compatible() -> None:
    candidate = _candidate("Request")
    candidate["fields"].append({"name": "lane", "type": "string", "default": ""})

    assert check_candidate(REGISTRY, candidate) == []


def test_changing_a_nested_string_to_int_breaks_both_directions_and_names_the_path() -> None:
    candidate = _candidate("Routed")
    _field(_field(candidate, "request")["type"], "store_id")["type"] = "int"

    found = check_candidate(REGISTRY, candidate)

    assert {incompatibility.direction for incompatibility in found} == {Direction.BACKWARD, Direction.FORWARD}
    assert all(incompatibility.field == "request.store_id" for incompatibility in found)
    assert "type_mismatch" in str(found[0])


def test_removing_a_symbol_from_an_enum_without_default_breaks_backward() -> None:
    candidate = _candidate("Feedback")
    _field(candidate, "kind")["type"]["symbols"].remove("ROUTE_CORRECTION")

    found = check_candidate(REGISTRY, candidate)

    assert [incompatibility.direction for incompatibility in found] == [Direction.BACKWARD]
    assert found[0].field == "kind"
    assert "ROUTE_CORRECTION" in str(found[0])


def test_adding_a_channel_stays_compatible_because_the_enum_has_a_default() -> None:
    candidate = _candidate("Request")
    _field(candidate, "channel")["type"]["symbols"].append("VOICE_ASSISTANT")

    assert check_candidate(REGISTRY, candidate) == []


def test_adding_a_symbol_to_an_enum_without_default_breaks_forward() -> None:
    candidate = _candidate("Feedback")
    _field(candidate, "kind")["type"]["symbols"].append("COMPLAINT")

    found = check_candidate(REGISTRY, candidate)

    assert [incompatibility.direction for incompatibility in found] == [Direction.FORWARD]


def test_the_cli_reports_compatible_repository_schemas_with_exit_status_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main([str(REPO_SCHEMAS_DIR)]) == 0
    assert "compatible" in capsys.readouterr().out


def test_the_cli_reports_a_break_with_exit_status_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    schemas_dir = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS_DIR, schemas_dir)
    request_file = schemas_dir / "switchyard.Request.avsc"
    request = json.loads(request_file.read_text())
    request["fields"].append({"name": "lane", "type": "string", "doc": "Checkout lane."})
    request_file.write_text(json.dumps(request))

    assert main([str(schemas_dir)]) == 1
    out = capsys.readouterr().out
    assert "BREAK switchyard.Request backward" in out
    assert "'lane'" in out
