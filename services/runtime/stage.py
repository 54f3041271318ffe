"""What a stage is: a pure decision on one typed record, plus where its records come from and go.

A stage knows nothing of Kafka. It names its input and output topics and records, the section it adds to
the record, and implements `decide`. The runtime (services.runtime.worker) does everything else.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel

In = TypeVar("In", bound=BaseModel)
Section = TypeVar("Section", bound=BaseModel)


def now_us() -> int:
    """Wall-clock microseconds since the epoch: stage timings are compared across processes."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class SideRecord:
    """A record a stage emits beside its output: a topic named as in topics/ (the runtime adds the prefix), the
    Avro record name, the key and the value."""

    topic: str
    record: str
    key: str
    value: dict[str, Any]


class Stage(ABC, Generic[In, Section]):
    """One link of the chain: `decide(record) -> section`; the runtime builds the outgoing record as the
    incoming one plus that section plus this stage's timing."""

    name: ClassVar[str]
    input_topic: ClassVar[str]
    input_record: ClassVar[str]
    input_model: ClassVar[type[BaseModel]]
    output_topic: ClassVar[str]
    output_record: ClassVar[str]
    section: ClassVar[str]

    @property
    def dead_letter_topic(self) -> str:
        return f"dlq.{self.name}"

    @property
    def group_id(self) -> str:
        return f"switchyard-{self.name}"

    async def start(self) -> None:
        """Load state before the first record (reference tables, models). Default: nothing."""

    async def stop(self) -> None:
        """Release what start() took. Default: nothing."""

    async def on_assigned(self, partitions: list[int]) -> None:
        """Partitions of the input topic were assigned (the whole new assignment); runs before any of their
        records is decided, so a stage can load per-partition state. Default: nothing."""

    def side_records(self, record: In, section: Section) -> list[SideRecord]:
        """Records to produce beside this record's output, in the same Kafka transaction (e.g. the governor's
        encrypted PII vault entry); called right after `decide`. Default: none."""
        return []

    async def healthy(self) -> tuple[bool, str]:
        """Whether this stage's own dependencies answer; the runtime adds the consumer's assignment."""
        return True, "ok"

    @abstractmethod
    async def decide(self, record: In) -> Section:
        """The stage's whole job. Raise TransientError to be retried, RejectedRecord (or anything else) to
        have the record dead-lettered with the reason."""


def compose(incoming: dict[str, Any], section: str, value: dict[str, Any], timing: dict[str, Any]) -> dict[str, Any]:
    """The outgoing record: what came before, this stage's section, and the timings with this stage's added.
    The head of the chain (a bare Request) becomes the `request` field."""
    if "timings" in incoming:
        outgoing = dict(incoming)
        outgoing["timings"] = [*incoming["timings"], timing]
    else:
        outgoing = {"request": incoming, "timings": [timing]}
    outgoing[section] = value
    return outgoing


def stage_timing(stage_name: str, received_at: int, started_at: int, finished_at: int) -> dict[str, Any]:
    return {"stage": stage_name, "received_at": received_at, "started_at": started_at, "finished_at": finished_at}


def request_id_of(value: dict[str, Any]) -> str | None:
    """The request id of any chain record (a Request, or a stage record holding one)."""
    request = value.get("request", value)
    rid = request.get("request_id") if isinstance(request, dict) else None
    return rid if isinstance(rid, str) else None
