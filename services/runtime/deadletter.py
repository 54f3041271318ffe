"""The dead-letter record: why a record could not be processed, with its original bytes and position, so an
operator can inspect it and replay it after a fix. The original bytes are sealed to the operator's dead-letter key
when a sealer is given (services/runtime/sealing.py): every process of the chain gives one."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from services.runtime.sealing import Opener, Sealer, SealingError
from services.runtime.stage import now_us

MAX_REASON_CHARS = 2000


def dead_letter_id_of(stage: str, topic: str, partition: int, offset: int) -> str:
    """A dead letter's id, from the stage that refused the record and the record's position."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:{stage}:{topic}:{partition}:{offset}"))


def dead_letter(
    *,
    stage: str,
    reason: str,
    error: BaseException,
    original: bytes,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    request_id: str | None,
    sealer: Sealer | None = None,
) -> dict[str, Any]:
    """A DeadLetter record (schemas/switchyard.DeadLetter.avsc) for one failed input record. The id is derived
    from the record's position, so dead-lettering the same record twice yields the same id; it is the sealed
    bytes' associated data, so they open only as this dead letter's."""
    dead_letter_id = dead_letter_id_of(stage, topic, partition, offset)
    return {
        "dead_letter_id": dead_letter_id,
        "stage": stage,
        "reason": reason[:MAX_REASON_CHARS],
        "error_type": type(error).__name__,
        "original": sealer.seal(original, dead_letter_id.encode()) if sealer is not None else original,
        "original_sealed_with": sealer.key_id if sealer is not None else "",
        "key": key,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "request_id": request_id,
        "failed_at": now_us(),
    }


class ConsumedRecord(Protocol):
    """What a dead letter needs of a consumed record: aiokafka's ConsumerRecord and the runtime's Consumed both fit."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


def dead_letter_for(
    message: ConsumedRecord,
    *,
    stage: str,
    reason: str,
    error: BaseException,
    request_id: str | None,
    sealer: Sealer | None = None,
) -> dict[str, Any]:
    """The DeadLetter record for a consumed Kafka record: its bytes, key and position come from the record."""
    return dead_letter(
        stage=stage,
        reason=reason,
        error=error,
        original=message.value or b"",
        key=message.key,
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        request_id=request_id,
        sealer=sealer,
    )


def opened_original(letter: Mapping[str, Any], opener: Opener) -> bytes:
    """A dead letter's original bytes in clear: opened with the operator's key where they were sealed."""
    sealed_with = letter.get("original_sealed_with") or ""
    original: bytes = letter["original"]
    if not sealed_with:
        return original
    if sealed_with != opener.key_id:
        raise SealingError(
            f"dead letter {letter['dead_letter_id']} was sealed to key {sealed_with}, not {opener.key_id}"
        )
    return opener.open(original, str(letter["dead_letter_id"]).encode())
