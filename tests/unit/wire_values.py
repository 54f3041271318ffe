"""Hypothesis strategies for any Avro record schema, and the defaults a reader fills in."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import strategies as st

# Any Unicode scalar value, astral planes included, but no lone surrogates: UTF-8 (so Avro) cannot carry them.
avro_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)

# A valid current Request with every defaulted field left out.
REQUEST: dict[str, Any] = {
    "request_id": "0b7c5a8e-5d8f-4a47-9d3c-2f1f6f0a9c11",
    "store_id": "store-0042",
    "terminal_id": "till-3",
    "channel": "KIOSK",
    "text": "Is the store open on Sunday?",
    "created_at": 1_764_000_000_000,
}

_PRIMITIVES: dict[str, st.SearchStrategy[Any]] = {
    "null": st.none(),
    "boolean": st.booleans(),
    "int": st.integers(-(2**31), 2**31 - 1),
    "long": st.integers(-(2**63), 2**63 - 1),
    "float": st.floats(width=32, allow_nan=False),
    "double": st.floats(allow_nan=False),
    "bytes": st.binary(max_size=40),
    "string": avro_text,
}


def values_of(schema: Any, named: dict[str, st.SearchStrategy[Any]] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for an expanded schema; record fields with a default are sometimes left out."""
    named = {} if named is None else named
    if isinstance(schema, str):
        return _PRIMITIVES[schema] if schema in _PRIMITIVES else named[schema]
    if isinstance(schema, list):
        return st.one_of([values_of(branch, named) for branch in schema])
    kind = schema["type"]
    if kind == "record":
        required = {f["name"]: values_of(f["type"], named) for f in schema["fields"] if "default" not in f}
        optional = {f["name"]: values_of(f["type"], named) for f in schema["fields"] if "default" in f}
        named[schema["name"]] = st.fixed_dictionaries(required, optional=optional)
    elif kind == "enum":
        named[schema["name"]] = st.sampled_from(schema["symbols"])
    elif kind == "array":
        return st.lists(values_of(schema["items"], named), max_size=3)
    elif kind == "map":
        return st.dictionaries(avro_text, values_of(schema["values"], named), max_size=3)
    else:
        return _PRIMITIVES[kind]
    return named[schema["name"]]


def with_defaults(value: Any, schema: Any, named: dict[str, Any] | None = None) -> Any:
    """`value` as a reader returns it: every missing field with a default filled in."""
    if named is None:
        # Register every named type first: its definition may sit in a field this value leaves out.
        named = {}
        _register_all(schema, named)
    if isinstance(schema, str):
        schema = named.get(schema, schema)
    if isinstance(schema, list):
        for branch in schema:
            _register(branch, named)
        branches = [branch for branch in schema if branch != "null"]
        return None if value is None else with_defaults(value, branches[0], named)
    if not isinstance(schema, dict):
        return value
    _register(schema, named)
    kind = schema["type"]
    if kind == "record":
        return {
            field["name"]: with_defaults(value[field["name"]], field["type"], named)
            if field["name"] in value
            else copy.deepcopy(field["default"])
            for field in schema["fields"]
        }
    if kind == "array":
        return [with_defaults(item, schema["items"], named) for item in value]
    if kind == "map":
        return {key: with_defaults(item, schema["values"], named) for key, item in value.items()}
    return value


def _register(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, dict) and schema["type"] in ("record", "enum"):
        named.setdefault(schema["name"], schema)


def _register_all(schema: Any, named: dict[str, Any]) -> None:
    if isinstance(schema, list):
        for branch in schema:
            _register_all(branch, named)
    if not isinstance(schema, dict):
        return
    _register(schema, named)
    for field in schema.get("fields", []):
        _register_all(field["type"], named)
    for key in ("items", "values"):
        if key in schema:
            _register_all(schema[key], named)
