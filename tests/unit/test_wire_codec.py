"""Single-object encoding round trips every record, resolves old writers and fails only with DecodeError."""

from __future__ import annotations

import contextlib
from io import BytesIO
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.wire.codec import SINGLE_OBJECT_MARKER, AvroCodec, wire_schema
from services.wire.errors import (
    BadMarkerError,
    CorruptBodyError,
    DecodeError,
    EncodeError,
    UnknownFingerprintError,
    UnknownSchemaIdError,
    WrongRecordTypeError,
)
from services.wire.schema_registry import REPO_SCHEMAS_DIR, SchemaRegistry
from tests.unit.wire_values import REQUEST, values_of, with_defaults

REGISTRY = SchemaRegistry.load(REPO_SCHEMAS_DIR)
CODEC = AvroCodec(REGISTRY)


def _body(data: bytes) -> bytes:
    return data[len(SINGLE_OBJECT_MARKER) + 8 :]


def _written_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    buffer = BytesIO()
    schemaless_writer(buffer, wire_schema(schema), record)
    return buffer.getvalue()


@pytest.mark.parametrize("name", REGISTRY.names())
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_record_type_round_trips_with_defaults_filled(name: str, data: st.DataObject) -> None:
    schema = REGISTRY.entry(name).schema
    record = data.draw(values_of(schema))

    writer_name, decoded = CODEC.decode(CODEC.encode(name, record))

    assert writer_name == name
    assert decoded == with_defaults(record, schema)


@settings(max_examples=5, deadline=None)
@given(character=st.characters(codec="utf-8"))
def test_megabyte_strings_round_trip(character: str) -> None:
    request = {**REQUEST, "text": character * 1_000_000, "attributes": {character: character * 1000}}

    _, decoded = CODEC.decode(CODEC.encode("Request", request), reader="Request")

    assert decoded == {**request, "customer_id": None, "locale": "en-US"}


def test_empty_strings_and_astral_characters_round_trip() -> None:
    request = {**REQUEST, "store_id": "", "text": "🛒𝄞 \U0010ffff", "customer_id": ""}

    _, decoded = CODEC.decode(CODEC.encode("switchyard.Request", request))

    assert decoded["store_id"] == ""
    assert decoded["text"] == "🛒𝄞 \U0010ffff"
    assert decoded["customer_id"] == ""


def test_encoding_starts_with_the_marker_and_the_writer_fingerprint() -> None:
    data = CODEC.encode("Request", REQUEST)

    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == REGISTRY.fingerprint("Request")


def test_a_request_written_with_v1_reads_with_default_locale_and_attributes() -> None:
    version, _ = REGISTRY.history("Request")[0]
    v1 = REGISTRY.versions("Request")[0]
    data = SINGLE_OBJECT_MARKER + v1.fingerprint + _written_with(v1.schema, REQUEST)

    writer_name, decoded = CODEC.decode(data, reader="Request")

    assert version == 1
    assert writer_name == "switchyard.Request"
    assert decoded == {**REQUEST, "customer_id": None, "locale": "en-US", "attributes": {}}


def test_a_request_written_with_the_current_schema_reads_with_the_v1_reader() -> None:
    v1 = REGISTRY.versions("Request")[0]
    data = CODEC.encode("Request", {**REQUEST, "locale": "de-DE", "attributes": {"app": "7.1"}})

    decoded = schemaless_reader(
        BytesIO(_body(data)), wire_schema(REGISTRY.entry("Request").schema), wire_schema(v1.schema)
    )

    assert decoded == {**REQUEST, "customer_id": None}


def test_a_record_with_a_wrong_type_names_the_field() -> None:
    with pytest.raises(EncodeError, match="'store_id'"):
        CODEC.encode("Request", {**REQUEST, "store_id": 42})


@pytest.mark.parametrize(
    ("change", "field"),
    [({"store_id": 42}, "'store_id'"), ({"text": None}, "'text' is missing"), ({"custmer_id": "c"}, "custmer_id")],
)
def test_a_typed_record_encoded_without_validation_still_fails_naming_the_field(
    change: dict[str, object], field: str
) -> None:
    assert CODEC.encode("Request", REQUEST, validate=False) == CODEC.encode("Request", REQUEST)
    with pytest.raises(EncodeError, match=field):
        CODEC.encode("Request", {**REQUEST, **change}, validate=False)


def test_a_record_missing_a_required_field_names_the_field() -> None:
    request = {key: value for key, value in REQUEST.items() if key != "text"}

    with pytest.raises(EncodeError, match="'text' is missing"):
        CODEC.encode("Request", request)


def test_a_record_with_an_unknown_field_is_not_encoded() -> None:
    with pytest.raises(EncodeError, match="custmer_id"):
        CODEC.encode("Request", {**REQUEST, "custmer_id": "c-1"})


def test_an_int_out_of_range_is_not_encoded() -> None:
    with pytest.raises(EncodeError, match="'partition'"):
        CODEC.encode(
            "DeadLetter",
            {
                "dead_letter_id": "d",
                "stage": "router",
                "reason": "r",
                "error_type": "E",
                "original": b"",
                "topic": "requests",
                "partition": 2**31,
                "offset": 0,
                "failed_at": 0,
            },
        )


def test_bytes_without_the_marker_are_rejected_as_bad_marker() -> None:
    with pytest.raises(BadMarkerError, match="c301"):
        CODEC.decode(b"\x00\x01" + _body(CODEC.encode("Request", REQUEST)))


def test_empty_bytes_are_rejected_as_bad_marker() -> None:
    with pytest.raises(BadMarkerError):
        CODEC.decode(b"")


def test_an_unknown_fingerprint_is_rejected_and_named() -> None:
    data = SINGLE_OBJECT_MARKER + bytes(8) + _body(CODEC.encode("Request", REQUEST))

    with pytest.raises(UnknownFingerprintError, match="0000000000000000"):
        CODEC.decode(data)


def test_every_truncation_of_a_record_is_rejected_as_corrupt() -> None:
    data = CODEC.encode("Request", REQUEST)

    for length in range(2, len(data)):
        with pytest.raises(CorruptBodyError):
            CODEC.decode(data[:length])


def test_trailing_bytes_are_rejected_as_corrupt() -> None:
    with pytest.raises(CorruptBodyError, match="trailing"):
        CODEC.decode(CODEC.encode("Request", REQUEST) + b"\x00")


def test_a_request_read_as_a_routed_record_is_the_wrong_record_type() -> None:
    with pytest.raises(WrongRecordTypeError, match=r"switchyard\.Request.*switchyard\.Routed"):
        CODEC.decode(CODEC.encode("Request", REQUEST), reader="Routed")


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_random_bytes_fail_only_with_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CODEC.decode(data)


@settings(max_examples=300, deadline=None)
@given(
    fingerprint=st.sampled_from([entry.fingerprint for entry in REGISTRY]),
    body=st.binary(max_size=200),
)
def test_random_bodies_behind_a_known_fingerprint_fail_only_with_decode_errors(fingerprint: bytes, body: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CODEC.decode(SINGLE_OBJECT_MARKER + fingerprint + body)


def test_confluent_wire_format_decodes_through_the_injected_schema_id_lookup() -> None:
    schemas = {7: REGISTRY.entry("Request").schema}
    codec = AvroCodec(REGISTRY, schema_id_lookup=schemas.get)
    data = b"\x00" + (7).to_bytes(4, "big") + _body(CODEC.encode("Request", REQUEST))

    assert codec.decode(data) == (
        "switchyard.Request",
        {**REQUEST, "customer_id": None, "locale": "en-US", "attributes": {}},
    )


def test_an_unknown_confluent_schema_id_is_rejected_and_named() -> None:
    schemas: dict[int, dict[str, Any]] = {}
    codec = AvroCodec(REGISTRY, schema_id_lookup=schemas.get)

    with pytest.raises(UnknownSchemaIdError, match="schema id 9"):
        codec.decode(b"\x00" + (9).to_bytes(4, "big") + b"\x02")


def test_confluent_bytes_without_a_lookup_are_rejected_as_bad_marker() -> None:
    with pytest.raises(BadMarkerError, match="schema_id_lookup"):
        CODEC.decode(b"\x00" + (7).to_bytes(4, "big") + b"\x02")
