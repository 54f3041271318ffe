"""The dead-letter record: why a record could not be processed, with its original bytes and position, so an
operator can inspect it and replay it after a fix."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from services.runtime.stage import now_us

MAX_REASON_CHARS = 2000


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
) -> dict[str, Any]:
    """A DeadLetter record (schemas/switchyard.DeadLetter.avsc) for one failed input record. The id is derived
    from the record's position, so dead-lettering the same record twice yields the same id."""
    return {
        "dead_letter_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"switchyard:{stage}:{topic}:{partition}:{offset}")),
        "stage": stage,
        "reason": reason[:MAX_REASON_CHARS],
        "error_type": type(error).__name__,
        "original": original,
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
    message: ConsumedRecord, *, stage: str, reason: str, error: BaseException, request_id: str | None
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
    )
