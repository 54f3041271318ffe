"""The registry loads the contract once: current and historical schemas, by name and by fingerprint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
import pytest

from services.wire.errors import SchemaDefinitionError, UnknownFingerprintError, UnknownSchemaError
from services.wire.schema_registry import HISTORY_DIR, REPO_SCHEMAS_DIR, SchemaRegistry

REGISTRY = SchemaRegistry.load(REPO_SCHEMAS_DIR)
STAGE_RECORDS = ["Routed", "Stitched", "Governed", "Answered", "Audited"]


def _definitions(schema: Any) -> list[str]:
    if isinstance(schema, list):
        return [name for branch in schema for name in _definitions(branch)]
    if not isinstance(schema, dict):
        return []
    own = [schema["name"]] if schema["type"] in ("record", "enum") else []
    nested = [schema.get("items"), schema.get("values"), *(f["type"] for f in schema.get("fields", []))]
    return own + [name for child in nested for name in _definitions(child)]


def test_short_and_full_names_give_the_same_schema() -> None:
    assert REGISTRY.schema("Request") is REGISTRY.schema("switchyard.Request")


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownSchemaError, match=r"no schema named 'Reqest'.*switchyard\.Request"):
        REGISTRY.schema("Reqest")


def test_fingerprints_are_8_bytes_and_find_their_schema() -> None:
    for name in REGISTRY.names():
        fingerprint = REGISTRY.fingerprint(name)
        assert len(fingerprint) == 8
        assert REGISTRY.by_fingerprint(fingerprint).name == name


def test_fingerprints_agree_with_the_reference_avro_implementation() -> None:
    # avro-python keeps logical-type primitives as {"type": "long"} in its canonical form (Java and the spec
    # reduce them to "long"), so compare on a schema without logical types.
    entry = REGISTRY.entry("Finding")

    assert avro.schema.parse(json.dumps(entry.schema)).fingerprint("CRC-64-AVRO") == entry.fingerprint


def test_an_unknown_fingerprint_is_a_decode_error_naming_it() -> None:
    with pytest.raises(UnknownFingerprintError, match="ffffffffffffffff"):
        REGISTRY.by_fingerprint(b"\xff" * 8)


def test_request_v2_is_current_and_v1_is_history() -> None:
    assert REGISTRY.entry("Request").version == 2
    assert [version for version, _ in REGISTRY.history("Request")] == [1, 2]
    v1 = REGISTRY.versions("Request")[0]
    assert REGISTRY.by_fingerprint(v1.fingerprint) is v1
    assert {field["name"] for field in v1.schema["fields"]} == {
        field["name"] for field in REGISTRY.entry("Request").schema["fields"]
    } - {"locale", "attributes"}


def test_every_record_has_a_released_history() -> None:
    for name in REGISTRY.names():
        assert REGISTRY.versions(name), f"{name} has no schemas/{HISTORY_DIR}/{name}/v1.avsc"


def test_every_current_schema_is_released_so_later_changes_are_checked_against_it() -> None:
    for name in REGISTRY.names():
        released = [v.fingerprint for v in REGISTRY.versions(name)]
        assert REGISTRY.fingerprint(name) in released, f"run `make schema-release NAMES={name}`"
        assert REGISTRY.by_fingerprint(REGISTRY.fingerprint(name)).is_current


def test_release_saves_a_changed_schema_as_the_next_version_once(tmp_path: Path) -> None:
    import shutil

    from services.wire.schema_registry import release

    copy = tmp_path / "schemas"
    shutil.copytree(REPO_SCHEMAS_DIR, copy)
    path = copy / "switchyard.Feedback.avsc"
    schema = json.loads(path.read_text(encoding="utf-8"))
    schema["fields"].append({"name": "store_id", "type": ["null", "string"], "default": None, "doc": "Store."})
    path.write_text(json.dumps(schema), encoding="utf-8")
    written = release(copy, "Feedback")
    assert written is not None and written.name == "v2.avsc"
    assert release(copy, "Feedback") is None
    assert SchemaRegistry.load(copy).entry("Feedback").version == 2


def test_each_named_type_is_defined_in_exactly_one_schema_file() -> None:
    definitions = [
        name
        for path in REPO_SCHEMAS_DIR.glob("*.avsc")
        for name in _definitions(json.loads(path.read_text(encoding="utf-8")))
    ]

    assert sorted(definitions) == sorted(set(definitions))


def test_stage_records_reference_earlier_records_by_name() -> None:
    for stage in STAGE_RECORDS:
        schema = json.loads((REPO_SCHEMAS_DIR / f"switchyard.{stage}.avsc").read_text(encoding="utf-8"))
        for field in schema["fields"]:
            if field["name"] != "timings":  # a named type, or a union of names ("null" and one record)
                members = field["type"] if isinstance(field["type"], list) else [field["type"]]
                assert all(isinstance(member, str) for member in members), f"{stage}.{field['name']}"


def test_every_field_has_a_doc() -> None:
    for path in REPO_SCHEMAS_DIR.glob("*.avsc"):
        for field in json.loads(path.read_text(encoding="utf-8"))["fields"]:
            assert field.get("doc"), f"{path.name}: field {field['name']} has no doc"


def test_a_history_file_that_references_another_file_is_rejected(tmp_path: Path) -> None:
    history = tmp_path / HISTORY_DIR / "switchyard.Routed"
    history.mkdir(parents=True)
    for path in REPO_SCHEMAS_DIR.glob("*.avsc"):
        (tmp_path / path.name).write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    routed = REPO_SCHEMAS_DIR / "switchyard.Routed.avsc"
    (history / "v1.avsc").write_text(routed.read_text(encoding="utf-8"), encoding="utf-8")

    with pytest.raises(SchemaDefinitionError, match="self-contained"):
        SchemaRegistry.load(tmp_path)


def test_a_schema_file_named_after_another_record_is_rejected(tmp_path: Path) -> None:
    finding = (REPO_SCHEMAS_DIR / "switchyard.Finding.avsc").read_text(encoding="utf-8")
    (tmp_path / "switchyard.Verdict.avsc").write_text(finding, encoding="utf-8")

    with pytest.raises(SchemaDefinitionError, match="name the file after"):
        SchemaRegistry.load(tmp_path)
