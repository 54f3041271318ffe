"""Schema evolution check: every current schema against every historical version, in both directions, with
the reference `avro` checker; run `python -m services.wire.compatibility [schemas_dir]` before merging."""

from __future__ import annotations

import enum
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from services.wire.schema_registry import (
    REPO_SCHEMAS_DIR,
    RegisteredSchema,
    Schema,
    SchemaRegistry,
    full_name,
)


class Direction(enum.StrEnum):
    """Which side of an evolution step must still work."""

    BACKWARD = "backward"
    """The current schema, as reader, reads records an older version wrote."""
    FORWARD = "forward"
    """An older version, as reader, reads records the current schema writes."""


_CONSEQUENCE = {
    Direction.BACKWARD: "consumers on the current schema cannot read records written with v{version}",
    Direction.FORWARD: "consumers still on v{version} cannot read records written with the current schema",
}

_FIX = {
    "reader_field_missing_default_value": "give the new field a default",
    "type_mismatch": "keep the old type (or a promotable one) and add a new field for the new type",
    "missing_enum_symbols": "keep the enum symbols, or give the enum a default symbol",
    "missing_union_branch": "keep the union branch",
    "name_mismatch": "keep the name, or add the old full name to aliases",
    "fixed_size_mismatch": "keep the fixed size",
}


@dataclass(frozen=True, slots=True)
class Incompatibility:
    """One reason a schema change breaks readers or writers of another version."""

    name: str
    direction: Direction
    version: int
    kind: str
    field: str
    detail: str

    def __str__(self) -> str:
        consequence = _CONSEQUENCE[self.direction].format(version=self.version)
        where = f"field {self.field!r}" if self.field else "record"
        fix = _FIX.get(self.kind, "revert the change")
        return f"{self.name} {self.direction} break: {consequence}: {where}: {self.kind} ({self.detail}), {fix}"


def check_compatibility(registry: SchemaRegistry) -> list[Incompatibility]:
    """Every incompatibility between each current schema and its historical versions."""
    found: list[Incompatibility] = []
    for name in registry.names():
        found.extend(_check_against_history(registry.entry(name).schema, registry.versions(name)))
    return found


def check_candidate(registry: SchemaRegistry, candidate: Schema) -> list[Incompatibility]:
    """Every incompatibility between a proposed, self-contained schema and the registry's current and
    historical versions of the record it names."""
    current = registry.entry(_qualified(candidate))
    versions = registry.versions(current.name)
    if all(entry.fingerprint != current.fingerprint for entry in versions):
        versions = [*versions, current]
    return _check_against_history(candidate, versions)


def _qualified(schema: Schema) -> str:
    name, namespace = str(schema["name"]), schema.get("namespace")
    return f"{namespace}.{name}" if namespace and "." not in name else full_name(name)


def _check_against_history(schema: Schema, versions: list[RegisteredSchema]) -> list[Incompatibility]:
    new = _avro(schema)
    found: list[Incompatibility] = []
    for entry in versions:
        old = _avro(entry.schema)
        found.extend(_check(entry.name, Direction.BACKWARD, entry.version, reader=new, writer=old))
        found.extend(_check(entry.name, Direction.FORWARD, entry.version, reader=old, writer=new))
    return found


def _avro(schema: Schema) -> Any:
    return avro.schema.parse(json.dumps(schema))


def _check(name: str, direction: Direction, version: int, reader: Any, writer: Any) -> list[Incompatibility]:
    # avro ships py.typed but leaves the checker's constructor unannotated.
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    result = checker.get_compatibility(reader, writer)
    if result.compatibility is not SchemaCompatibilityType.incompatible:
        return []
    # The checker merges all findings into sets that no longer pair a message with its location, so each
    # location is reported with every message.
    kind = ", ".join(sorted({incompatibility.value for incompatibility in result.incompatibilities}))
    detail = "; ".join(sorted(result.messages))
    return [
        Incompatibility(name, direction, version, kind, _field_path(reader, location), detail)
        # "/" is the checker's starting point, not a finding of its own.
        for location in sorted(result.locations - {"/"}) or ["/"]
    ]


def _field_path(reader: Any, location: str) -> str:
    """Turn the checker's JSON-pointer-like location (/fields/2/type/fields/0) into `request.store_id`."""
    fields: list[str] = []
    node = reader
    tokens = [token for token in location.split("/") if token]
    for token, following in itertools.pairwise(tokens):
        if token == "fields" and following.isdigit():
            field = node.fields[int(following)]
            fields.append(field.name)
            node = field.type
        elif token == "items":
            node = node.items
        elif token == "values":
            node = node.values
    return ".".join(fields)


def main(argv: list[str]) -> int:
    schemas_dir = Path(argv[0]) if argv else REPO_SCHEMAS_DIR
    registry = SchemaRegistry.load(schemas_dir)
    found = check_compatibility(registry)
    checked = sum(len(registry.versions(name)) for name in registry.names())
    for incompatibility in found:
        sys.stdout.write(f"BREAK {incompatibility}\n")
    verdict = f"{len(found)} incompatibilities" if found else "compatible"
    sys.stdout.write(
        f"{verdict}: {len(registry.names())} schemas against {checked} historical versions in {schemas_dir}, "
        "backward and forward\n"
    )
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
