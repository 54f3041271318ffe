"""The wire contract in memory: every Avro schema under schemas/, current and historical, fully expanded,
by name and by CRC-64-AVRO fingerprint of its parsing canonical form."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro.schema import fingerprint as fastavro_fingerprint
from fastavro.schema import load_schema, parse_schema, to_parsing_canonical_form

from services.settings import DATA_ROOT
from services.wire.errors import SchemaDefinitionError, UnknownFingerprintError, UnknownSchemaError

NAMESPACE = "switchyard"
HISTORY_DIR = "history"
# The repository's schemas/, as in Settings.schemas_dir; CLIs take another directory as an argument.
REPO_SCHEMAS_DIR = DATA_ROOT / "schemas"
FINGERPRINT_ALGORITHM = "CRC-64-AVRO"

Schema = dict[str, Any]

_HISTORY_FILE = re.compile(r"v([1-9][0-9]*)\.avsc")


@dataclass(frozen=True, slots=True)
class RegisteredSchema:
    """One version of one record schema."""

    name: str
    """Full name, e.g. switchyard.Request."""
    version: int
    schema: Schema
    """Self-contained JSON form with docs, defaults and logical types; what history files hold."""
    parsed: Schema
    """The same schema parsed once by fastavro, ready for its readers and writers."""
    fingerprint: bytes
    """CRC-64-AVRO of the parsing canonical form, 8 bytes little-endian as in single-object encoding."""
    is_current: bool


def full_name(name: str) -> str:
    """`Request` and `switchyard.Request` both name switchyard.Request."""
    return name if "." in name else f"{NAMESPACE}.{name}"


def schema_fingerprint(schema: Schema) -> bytes:
    """CRC-64-AVRO (Rabin) fingerprint of the schema's parsing canonical form, little-endian bytes."""
    return bytes.fromhex(fastavro_fingerprint(to_parsing_canonical_form(schema), FINGERPRINT_ALGORITHM))


def parse(schema: Schema) -> Schema:
    """fastavro's parsed form of a record schema, leaving the caller's dict untouched."""
    parsed = parse_schema(copy.deepcopy(schema))
    if not isinstance(parsed, dict):
        raise SchemaDefinitionError(str(schema.get("name")), "a wire schema must be a record")
    return parsed


def expand(schema_file: Path) -> Schema:
    """Load one schema file with every referenced schema file inlined at its first use, as plain JSON data."""
    try:
        loaded = load_schema(str(schema_file), _write_hint=False)
    except Exception as error:
        raise SchemaDefinitionError(str(schema_file), f"cannot load: {error}") from error
    # Round-trip through JSON so callers never share fastavro's internal objects.
    expanded: Schema = json.loads(json.dumps(loaded))
    return expanded


class SchemaRegistry:
    """Current and historical schemas; build it once per process with `SchemaRegistry.load`."""

    def __init__(self, current: dict[str, RegisteredSchema], history: dict[str, list[RegisteredSchema]]) -> None:
        self._current = current
        self._history = history
        self._by_fingerprint: dict[bytes, RegisteredSchema] = {}
        for versions in history.values():
            for entry in versions:
                self._by_fingerprint[entry.fingerprint] = entry
        # A current schema identical to a history file wins, so decoders see it as current.
        for entry in current.values():
            self._by_fingerprint[entry.fingerprint] = entry

    @classmethod
    def load(cls, schemas_dir: Path) -> SchemaRegistry:
        """Load `<full name>.avsc` files and `history/<full name>/v<N>.avsc` files from `schemas_dir`."""
        schema_files = sorted(schemas_dir.glob("*.avsc"))
        if not schema_files:
            raise SchemaDefinitionError(str(schemas_dir), "no *.avsc files; point at the repo's schemas/")
        history_dir = schemas_dir / HISTORY_DIR
        history = {name: _load_history(history_dir / name) for name in _history_names(schemas_dir)}
        current: dict[str, RegisteredSchema] = {}
        for schema_file in schema_files:
            entry = _load_current(schema_file, history.get(schema_file.stem, []))
            current[entry.name] = entry
        orphans = sorted(set(history) - set(current))
        if orphans:
            raise SchemaDefinitionError(
                str(history_dir), f"history for schemas that no longer exist: {', '.join(orphans)}"
            )
        return cls(current, history)

    def names(self) -> list[str]:
        """Full names of every current record schema, sorted."""
        return sorted(self._current)

    def entry(self, name: str) -> RegisteredSchema:
        """The current version of a record schema, by short or full name."""
        try:
            return self._current[full_name(name)]
        except KeyError:
            raise UnknownSchemaError(name, self.names()) from None

    def schema(self, name: str) -> Schema:
        """The current fastavro-parsed schema, by short or full name."""
        return self.entry(name).parsed

    def fingerprint(self, name: str) -> bytes:
        """CRC-64-AVRO fingerprint of the current schema, 8 bytes little-endian."""
        return self.entry(name).fingerprint

    def by_fingerprint(self, fingerprint: bytes) -> RegisteredSchema:
        """The current or historical schema with this fingerprint."""
        try:
            return self._by_fingerprint[bytes(fingerprint)]
        except KeyError:
            raise UnknownFingerprintError(bytes(fingerprint)) from None

    def versions(self, name: str) -> list[RegisteredSchema]:
        """Historical versions of a record schema, oldest first; the current one is there once released."""
        return list(self._history.get(self.entry(name).name, []))

    def history(self, name: str) -> list[tuple[int, Schema]]:
        """(version, fastavro-parsed schema) for each historical version, oldest first."""
        return [(entry.version, entry.parsed) for entry in self.versions(name)]

    def __iter__(self) -> Iterator[RegisteredSchema]:
        """Every known version, current and historical, each once."""
        return iter(self._by_fingerprint.values())


def _history_names(schemas_dir: Path) -> list[str]:
    history_dir = schemas_dir / HISTORY_DIR
    if not history_dir.is_dir():
        return []
    return sorted(path.name for path in history_dir.iterdir() if path.is_dir())


def _load_history(name_dir: Path) -> list[RegisteredSchema]:
    versions: list[RegisteredSchema] = []
    for path in sorted(name_dir.iterdir()):
        match = _HISTORY_FILE.fullmatch(path.name)
        if match is None:
            raise SchemaDefinitionError(str(path), "history files are named v<N>.avsc, e.g. v1.avsc")
        versions.append(_load_history_file(path, name_dir.name, int(match.group(1))))
    return sorted(versions, key=lambda entry: entry.version)


def _load_history_file(path: Path, name: str, version: int) -> RegisteredSchema:
    try:
        schema: Schema = json.loads(path.read_text(encoding="utf-8"))
        parsed = parse(schema)
    except Exception as error:
        raise SchemaDefinitionError(
            str(path), f"invalid or not self-contained ({error}); history files hold the expanded schema"
        ) from error
    if parsed.get("name") != name:
        raise SchemaDefinitionError(str(path), f"holds {parsed.get('name')!r}, but its folder says {name!r}")
    return RegisteredSchema(name, version, schema, parsed, schema_fingerprint(parsed), is_current=False)


def _load_current(schema_file: Path, history: list[RegisteredSchema]) -> RegisteredSchema:
    schema = expand(schema_file)
    if schema.get("type") != "record":
        raise SchemaDefinitionError(str(schema_file), "only record schemas get a file of their own")
    if schema["name"] != schema_file.stem:
        raise SchemaDefinitionError(
            str(schema_file), f"holds {schema['name']!r}; name the file after the full name it holds"
        )
    parsed = parse(schema)
    fingerprint = schema_fingerprint(parsed)
    released = [entry.version for entry in history if entry.fingerprint == fingerprint]
    # Unreleased changes are the version after the newest history file.
    version = released[-1] if released else max((entry.version for entry in history), default=0) + 1
    return RegisteredSchema(schema["name"], version, schema, parsed, fingerprint, is_current=True)


def release(schemas_dir: Path, name: str) -> Path | None:
    """Save the current schema of `name` as its next history version (self-contained), unless the newest
    history version already is it; returns the file written, or None."""
    registry = SchemaRegistry.load(schemas_dir)
    entry = registry.entry(name)
    if any(version.fingerprint == entry.fingerprint for version in registry.versions(name)):
        return None
    target = schemas_dir / HISTORY_DIR / entry.name / f"v{entry.version}.avsc"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(entry.schema, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return target


def main(argv: list[str] | None = None) -> int:
    """`python -m services.wire.schema_registry release NAME [...]`: keep the current schemas in history, so
    the compatibility check holds every later change against them."""
    import argparse

    parser = argparse.ArgumentParser(prog="schemas release", description=main.__doc__)
    parser.add_argument("action", choices=["release"])
    parser.add_argument("names", nargs="+", help="record names, short (Request) or full (switchyard.Request)")
    parser.add_argument("--dir", type=Path, default=REPO_SCHEMAS_DIR)
    args = parser.parse_args(argv)
    for name in args.names:
        written = release(args.dir, name)
        print(f"{name}: {'saved ' + str(written) if written else 'already released'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
