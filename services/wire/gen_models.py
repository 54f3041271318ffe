"""Derives services/wire/models.py (pydantic v2) from the Avro schemas so every field is written once, in
schemas/; run `python -m services.wire.gen_models` after editing a schema (`--check` only compares)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.wire.schema_registry import REPO_SCHEMAS_DIR, Schema, SchemaRegistry

MODELS_PATH = Path(__file__).with_name("models.py")
GENERATOR = "python -m services.wire.gen_models"
LINE_LENGTH = 110

_PRIMITIVES = {
    "null": "None",
    "boolean": "bool",
    "int": "AvroInt",
    "long": "AvroLong",
    "float": "float",
    "double": "float",
    "bytes": "bytes",
    "string": "str",
}
_LOGICAL = {"timestamp-millis": "TimestampMillis", "timestamp-micros": "TimestampMicros"}

_HEADER = f'''"""Pydantic models of the Switchyard wire contract, one per Avro record, to validate input.

Generated from schemas/ by `{GENERATOR}`; do not edit.
Timestamps are int, as on the wire; the alias names the unit. model_dump() gives what AvroCodec.encode takes.
"""


from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

AvroInt = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
AvroLong = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
TimestampMillis = Annotated[
    int, Field(ge=-(2**63), le=2**63 - 1, description="milliseconds since the Unix epoch, UTC")
]
TimestampMicros = Annotated[
    int, Field(ge=-(2**63), le=2**63 - 1, description="microseconds since the Unix epoch, UTC")
]
'''


class UnsupportedSchemaError(ValueError):
    """A schema construct the generator cannot express yet; extend the generator, don't edit models.py."""


def render_models(registry: SchemaRegistry) -> str:
    """The full text of models.py for the registry's current schemas."""
    renderer = _Renderer()
    for name in registry.names():
        renderer.type_of(registry.entry(name).schema)
    index = "\n".join(f'    "{name}": {_short(name)},' for name in registry.names())
    records = f"\n\nRECORD_MODELS: dict[str, type[BaseModel]] = {{\n{index}\n}}\n"
    return _HEADER + "".join(f"\n\n{block}" for block in renderer.blocks) + records


class _Renderer:
    """Walks expanded schemas depth first, so every class is emitted after the classes it uses."""

    def __init__(self) -> None:
        self.blocks: list[str] = []
        self._emitted: set[str] = set()

    def type_of(self, schema: Any) -> str:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            return _PRIMITIVES.get(schema) or _short(schema)
        kind = schema["type"]
        if kind == "record":
            return self._record(schema)
        if kind == "enum":
            return self._enum(schema)
        if kind == "array":
            return f"list[{self.type_of(schema['items'])}]"
        if kind == "map":
            return f"dict[str, {self.type_of(schema['values'])}]"
        if kind in _PRIMITIVES:
            return _LOGICAL.get(schema.get("logicalType", ""), _PRIMITIVES[kind])
        raise UnsupportedSchemaError(f"no Python type for Avro type {kind!r}")

    def _union(self, branches: list[Any]) -> str:
        types = [self.type_of(branch) for branch in branches if branch != "null"]
        if "null" in branches:
            types.append("None")
        return " | ".join(types)

    def _enum(self, schema: Schema) -> str:
        name = _short(schema["name"])
        if name not in self._emitted:
            members = "\n".join(f'    {symbol} = "{symbol}"' for symbol in schema["symbols"])
            self._emit(name, f"class {name}(enum.StrEnum):\n{_docstring(schema)}\n{members}\n")
        return name

    def _record(self, schema: Schema) -> str:
        name = _short(schema["name"])
        if name in self._emitted:
            return name
        self._emitted.add(name)
        fields = "\n".join(self._field(field) for field in schema["fields"])
        config = '    model_config = ConfigDict(extra="forbid")\n'
        self.blocks.append(f"class {name}(BaseModel):\n{_docstring(schema)}\n{config}\n{fields}\n")
        return name

    def _field(self, field: Schema) -> str:
        annotation = self.type_of(field["type"])
        arguments = [*_default(field), f"description={json.dumps(field.get('doc', ''))}"]
        line = f"    {field['name']}: {annotation} = Field({', '.join(arguments)})"
        if len(line) <= LINE_LENGTH:
            return line
        exploded = "".join(f"        {argument},\n" for argument in arguments)
        return f"    {field['name']}: {annotation} = Field(\n{exploded}    )"

    def _emit(self, name: str, block: str) -> None:
        self._emitted.add(name)
        self.blocks.append(block)


def _default(field: Schema) -> list[str]:
    if "default" not in field:
        return []
    default = field["default"]
    if default == {}:
        return ["default_factory=dict"]
    if default == []:
        return ["default_factory=list"]
    field_type = field["type"]
    if isinstance(default, str) and isinstance(field_type, dict) and field_type.get("type") == "enum":
        return [f"default={field_type['name'].split('.')[-1]}.{default}"]
    if isinstance(default, str):
        return [f"default={json.dumps(default)}"]
    if default is None or isinstance(default, int | float | bool):
        return [f"default={default!r}"]
    raise UnsupportedSchemaError(f"field {field['name']!r}: cannot render default {default!r}")


def _short(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _docstring(schema: Schema) -> str:
    doc = str(schema.get("doc", "")).replace("\\", "\\\\").replace('"""', '\\"\\"\\"')
    return f'    """{doc}"""\n'


def main(argv: list[str]) -> int:
    rendered = render_models(SchemaRegistry.load(REPO_SCHEMAS_DIR))
    if "--check" in argv:
        current = MODELS_PATH.read_text(encoding="utf-8") if MODELS_PATH.exists() else ""
        if current == rendered:
            return 0
        sys.stderr.write(f"{MODELS_PATH} is out of date with schemas/; run `{GENERATOR}`\n")
        return 1
    MODELS_PATH.write_text(rendered, encoding="utf-8")
    sys.stdout.write(f"wrote {MODELS_PATH}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
