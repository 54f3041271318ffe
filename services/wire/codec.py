"""Avro single-object encoding of Switchyard records (marker C3 01, writer fingerprint, Avro binary), with
schema resolution from any known writer version to the reader's current schema; given a schema-id lookup it
also decodes the Confluent wire format (magic 0, 4-byte schema id), and given schema ids it writes it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import ValidationError, validate

from services.wire.errors import (
    BadMarkerError,
    CorruptBodyError,
    DecodeError,
    EncodeError,
    SchemaDefinitionError,
    UnknownFingerprintError,
    UnknownSchemaIdError,
    WrongRecordTypeError,
)
from services.wire.schema_registry import (
    RegisteredSchema,
    Schema,
    SchemaRegistry,
    full_name,
    parse,
    schema_fingerprint,
)

SINGLE_OBJECT_MARKER = b"\xc3\x01"
CONFLUENT_MAGIC = 0
_HEADER_SIZE = len(SINGLE_OBJECT_MARKER) + 8
_CONFLUENT_HEADER_SIZE = 5

SchemaIdLookup = Callable[[int], Schema | None]
"""Returns the writer schema (JSON data) registered under a Confluent schema id, or None if unknown."""

_ConfluentWriter = tuple[str, Schema, bool]
"""(writer full name, wire schema, whether it is the current schema of that name) behind a schema id."""


def confluent_header(schema_id: int) -> bytes:
    """The Confluent wire-format header: magic byte 0, then the schema id as 4 bytes big-endian."""
    return bytes([CONFLUENT_MAGIC]) + schema_id.to_bytes(4, "big")


def wire_schema(schema: Schema) -> Schema:
    """The schema parsed without logical types: timestamps stay int, as the generated models declare them,
    and decoding skips a datetime conversion per field."""
    return parse(_strip_logical_types(schema))


def _strip_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strip_logical_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    return {key: _strip_logical_types(value) for key, value in schema.items() if key != "logicalType"}


class AvroCodec:
    """Encodes records with their current schema and decodes bytes written with any known version.

    Records are written single-object encoded unless `schema_ids` is given (the Confluent schema id of every
    current record schema, as a registry assigned them at registration): then they are written in the Confluent
    wire format. Either way both formats are read, the Confluent one through `schema_id_lookup`."""

    def __init__(
        self,
        registry: SchemaRegistry,
        schema_id_lookup: SchemaIdLookup | None = None,
        *,
        schema_ids: Mapping[str, int] | None = None,
    ) -> None:
        self._registry = registry
        self._schema_id_lookup = schema_id_lookup
        # Parse every version once; the hot paths below only look things up.
        self._wire: dict[bytes, Schema] = {entry.fingerprint: wire_schema(entry.schema) for entry in registry}
        self._headers: dict[str, bytes] = {}
        self._current: dict[str, RegisteredSchema] = {}
        for name in registry.names():
            entry = registry.entry(name)
            self._current[name] = entry
            self._headers[name] = SINGLE_OBJECT_MARKER + entry.fingerprint
        self._by_schema_id: dict[int, _ConfluentWriter] = {}
        self._writes_confluent = schema_ids is not None
        self._reads_confluent = schema_id_lookup is not None or schema_ids is not None
        if schema_ids is not None:
            self._write_confluent(schema_ids)

    def _write_confluent(self, schema_ids: Mapping[str, int]) -> None:
        """Swap each record's header for its Confluent one, so encoding costs the same in either format."""
        ids = {full_name(name): schema_id for name, schema_id in schema_ids.items()}
        missing = sorted(set(self._current) - set(ids))
        if missing:
            raise SchemaDefinitionError(
                "schema_ids",
                f"no Confluent schema id for {', '.join(missing)}; register every current schema "
                "(RegistryClient.register_current) before writing the Confluent wire format",
            )
        for name, entry in self._current.items():
            self._headers[name] = confluent_header(ids[name])
            # Our own ids decode without asking the registry.
            self._by_schema_id[ids[name]] = (name, self._wire[entry.fingerprint], True)

    @property
    def wire_format(self) -> str:
        """`confluent` when records are written in the Confluent wire format, else `single_object`."""
        return "confluent" if self._writes_confluent else "single_object"

    def encode(self, name: str, record: Mapping[str, Any], *, validate: bool = True) -> bytes:
        """Encode `record` with the current schema of `name` (short or full name), single-object or in the
        Confluent wire format as this codec was built.

        `validate=False` is for records built from typed values (a decoded record plus a stage's pydantic
        section, as the runtime builds them): fastavro's writer still refuses a wrong type, a missing or an
        unknown field, and only then is the record validated, for an error that names the field."""
        entry = self._current_entry(name)
        schema = self._wire[entry.fingerprint]
        if validate:
            _validate(entry.name, schema, record)
        buffer = BytesIO()
        buffer.write(self._headers[entry.name])
        try:
            schemaless_writer(buffer, schema, record, strict_allow_default=True, disable_tuple_notation=True)
        except Exception as error:
            if not validate:
                _validate(entry.name, schema, record)
            # Validation passed, so what is left is structural: unknown fields, unencodable text.
            raise EncodeError(entry.name, "", str(error)) from error
        return buffer.getvalue()

    def decode(self, data: bytes, reader: str | None = None) -> tuple[str, dict[str, Any]]:
        """Decode single-object (or, given a schema-id lookup or schema ids, Confluent) bytes into (writer full
        name, record), resolved against the current schema of `reader` (default: the writer's record type)."""
        if data[:2] == SINGLE_OBJECT_MARKER:
            return self._decode_single_object(data, reader)
        if data[:1] == bytes([CONFLUENT_MAGIC]) and self._reads_confluent:
            return self._decode_confluent(data, reader)
        raise BadMarkerError(
            f"not Avro single-object encoded: starts with {bytes(data[:2]).hex() or 'nothing'}, expected "
            f"{SINGLE_OBJECT_MARKER.hex()}; check that the producer encodes with AvroCodec"
            + (
                ""
                if self._reads_confluent
                else " (reading the Confluent wire format needs a schema_id_lookup: set SWITCHYARD_SCHEMA_REGISTRY_URL)"
            )
        )

    def _decode_single_object(self, data: bytes, reader: str | None) -> tuple[str, dict[str, Any]]:
        if len(data) < _HEADER_SIZE:
            raise CorruptBodyError(
                f"truncated header: {len(data)} bytes, a single-object header takes {_HEADER_SIZE}; "
                "the message was cut short in transit or by the producer"
            )
        writer = self._registry.by_fingerprint(data[2:_HEADER_SIZE])
        reader_entry = self._reader_entry(writer.name, reader)
        reader_schema = None if writer.is_current else self._wire[reader_entry.fingerprint]
        record = _read(data, _HEADER_SIZE, writer.name, self._wire[writer.fingerprint], reader_schema)
        return writer.name, record

    def _decode_confluent(self, data: bytes, reader: str | None) -> tuple[str, dict[str, Any]]:
        if len(data) < _CONFLUENT_HEADER_SIZE:
            raise CorruptBodyError(f"truncated Confluent header: {len(data)} bytes, it takes {_CONFLUENT_HEADER_SIZE}")
        writer_name, writer_schema, is_current = self._confluent_writer(int.from_bytes(data[1:5], "big"))
        reader_entry = self._reader_entry(writer_name, reader)
        reader_schema = None if is_current else self._wire[reader_entry.fingerprint]
        return writer_name, _read(data, _CONFLUENT_HEADER_SIZE, writer_name, writer_schema, reader_schema)

    def _confluent_writer(self, schema_id: int) -> _ConfluentWriter:
        cached = self._by_schema_id.get(schema_id)
        if cached is not None:
            return cached
        schema = None if self._schema_id_lookup is None else self._schema_id_lookup(schema_id)
        if schema is None:
            raise UnknownSchemaIdError(schema_id)
        cached = self._known_writer(schema_id, schema)
        self._by_schema_id[schema_id] = cached
        return cached

    def _known_writer(self, schema_id: int, schema: Schema) -> _ConfluentWriter:
        """A registered schema that is one of ours, current or historical, by fingerprint; else parsed as given."""
        try:
            parsed = parse(schema)
        except Exception as error:
            raise DecodeError(
                f"Confluent schema id {schema_id} holds no Avro record schema ({error}); check what the producer "
                "registered"
            ) from error
        try:
            known = self._registry.by_fingerprint(schema_fingerprint(parsed))
        except UnknownFingerprintError:
            return str(parsed["name"]), wire_schema(schema), False
        return known.name, self._wire[known.fingerprint], known.is_current

    def _reader_entry(self, writer_name: str, reader: str | None) -> RegisteredSchema:
        if reader is None:
            return self._current_entry(writer_name)
        reader_entry = self._current_entry(reader)
        if reader_entry.name != writer_name:
            raise WrongRecordTypeError(writer_name, reader_entry.name)
        return reader_entry

    def field_names(self, name: str) -> frozenset[str]:
        """The top-level fields of the current schema of `name`."""
        return frozenset(field["name"] for field in self._current_entry(name).schema["fields"])

    def _current_entry(self, name: str) -> RegisteredSchema:
        entry = self._current.get(name) or self._current.get(full_name(name))
        return entry if entry is not None else self._registry.entry(name)


def _validate(name: str, schema: Schema, record: Mapping[str, Any]) -> None:
    try:
        validate(record, schema, raise_errors=True)
    except ValidationError as error:
        first = error.errors[0] if error.errors else None
        field = str(first.field) if first is not None else ""
        reason = "is invalid" if first is None else _reason(first.datum)
        raise EncodeError(name, field.removeprefix(f"{name}."), reason) from error


def _reason(value: Any) -> str:
    if value is None:
        return "is missing or null, but the schema requires a value and gives no default"
    text = repr(value)
    return f"has invalid value {text if len(text) <= 80 else text[:77] + '...'} for its schema type"


def _read(
    data: bytes, offset: int, writer_name: str, writer_schema: Schema, reader_schema: Schema | None
) -> dict[str, Any]:
    buffer = BytesIO(data)
    buffer.seek(offset)
    try:
        record = schemaless_reader(buffer, writer_schema, reader_schema)
    except Exception as error:
        # The body is untrusted bytes: whatever fastavro trips over, the stage needs one type to dead-letter.
        raise CorruptBodyError(
            f"corrupt or truncated {writer_name} body ({type(error).__name__}: {error}); "
            "dead-letter the record and check its producer"
        ) from error
    if buffer.tell() != len(data):
        raise CorruptBodyError(
            f"{len(data) - buffer.tell()} trailing bytes after a {writer_name} body; "
            "the record was written with a different schema than its fingerprint says"
        )
    if not isinstance(record, dict):
        raise CorruptBodyError(f"{writer_name} body decoded to {type(record).__name__}, not a record")
    return record
