"""Every way the wire contract can be broken, as specific exception types that say what is wrong and what
to do; stages catch `DecodeError` to dead-letter a record and go on."""

from __future__ import annotations


class WireContractError(Exception):
    """Base of every error raised by the schema registry, the codec and the compatibility check."""


class SchemaDefinitionError(WireContractError):
    """A schema file under schemas/ cannot be loaded."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


class UnknownSchemaError(WireContractError, KeyError):
    """A record name that the registry does not hold."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        super().__init__(f"no schema named {name!r}; add schemas/{name}.avsc or use one of {', '.join(known)}")

    def __str__(self) -> str:
        # KeyError would repr() the message; show it as written.
        return str(self.args[0])


class EncodeError(WireContractError):
    """A record does not match its schema, so it was not encoded."""

    def __init__(self, record_name: str, field: str, reason: str) -> None:
        self.record_name = record_name
        self.field = field
        self.reason = reason
        what = f"field {field!r} {reason}" if field else reason
        super().__init__(
            f"cannot encode {record_name}: {what}; fix the value or the schema "
            f"(schemas/{record_name}.avsc) and regenerate the models"
        )


class DecodeError(WireContractError):
    """Bytes that cannot be decoded into a record; the stage should dead-letter them with this reason."""


class BadMarkerError(DecodeError):
    """The bytes do not start with the Avro single-object marker C3 01 (nor a known alternative)."""


class UnknownWriterSchemaError(DecodeError):
    """The writer's schema is not known to this process."""


class UnknownFingerprintError(UnknownWriterSchemaError):
    """The single-object header names a schema fingerprint that no current or historical schema has."""

    def __init__(self, fingerprint: bytes) -> None:
        self.fingerprint = fingerprint
        super().__init__(
            f"unknown writer schema fingerprint {fingerprint.hex()} (CRC-64-AVRO, little-endian); the "
            "producer uses a schema this process does not have: deploy the newer schemas/ here, or keep "
            "the producer's old version under schemas/history/"
        )


class UnknownSchemaIdError(UnknownWriterSchemaError):
    """A Confluent wire-format header names a schema id that the injected lookup does not know."""

    def __init__(self, schema_id: int) -> None:
        self.schema_id = schema_id
        super().__init__(
            f"unknown Confluent schema id {schema_id}; check that the schema registry the producer used "
            "is the one this codec's schema_id_lookup asks"
        )


class CorruptBodyError(DecodeError):
    """The header is valid but the Avro body is truncated, has trailing bytes or does not match the schema."""


class WrongRecordTypeError(DecodeError):
    """The bytes hold a different record type than the reader asked for, e.g. a Request on a routed topic."""

    def __init__(self, writer_name: str, reader_name: str) -> None:
        self.writer_name = writer_name
        self.reader_name = reader_name
        super().__init__(
            f"bytes hold a {writer_name} but the reader expects a {reader_name}; check which topic the "
            "consumer reads and what its producer writes"
        )
