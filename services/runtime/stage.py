"""What a stage is: a pure decision on one typed record, plus where its records come from and go.

A stage knows nothing of Kafka. It names its input and output topics and records, the section it adds to
the record, and implements `decide`. The runtime (services.runtime.worker) does everything else.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from prometheus_client import CollectorRegistry
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


# orchestration-work categories a stage may report (the reference split, less monitoring: the telemetry writer's)
WORK_CATEGORIES = ("routing", "context_stitching", "data_prep", "governance", "policy", "audit")
# records whose decide failed never reach `work`; past this many the oldest entries are dropped
MAX_OPEN_WORK = 10_000


class WorkLedger:
    """Work time per record and category, in ms, accumulated while `decide` runs and popped by `Stage.work`.

    `decide` runs concurrently for many records, so time is kept per request id, measured around the work
    itself as the CPU time of the thread doing it (`time.thread_time`): time spent waiting (for a batch, a
    model, the GIL or a free core) is not added. Measure only blocks that do not await.
    """

    def __init__(self) -> None:
        self._open: OrderedDict[str, dict[str, float]] = OrderedDict()

    def add(self, request_id: str, category: str, ms: float) -> None:
        entry = self._open.get(request_id)
        if entry is None:
            entry = self._open[request_id] = {}
            if len(self._open) > MAX_OPEN_WORK:
                self._open.popitem(last=False)
        entry[category] = entry.get(category, 0.0) + ms

    @contextmanager
    def measure(self, request_id: str, category: str) -> Iterator[None]:
        """Adds the CPU time of the (synchronous) block to the record's category."""
        started = time.thread_time()
        try:
            yield
        finally:
            self.add(request_id, category, (time.thread_time() - started) * 1000)

    def pop(self, request_id: str) -> dict[str, float]:
        return self._open.pop(request_id, {})


def record_request_id(record: BaseModel) -> str:
    """The request id of a typed chain record: a Request, or a stage record holding one."""
    request = getattr(record, "request", record)
    return str(getattr(request, "request_id", ""))


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
    # the orchestration-work category of this stage's decide time, unless `work` measures its parts
    work_category: ClassVar[str] = ""

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

    def passed_on(self, record: In, section: Section) -> dict[str, Any]:
        """Top-level fields to add to the outgoing record beside the section (the router's request embedding);
        called right after `decide`. Fields of the incoming record that the output record also has are carried on
        without this. Default: none."""
        return {}

    def work(self, record: In, section: Section, decide_ms: float) -> dict[str, float]:
        """This record's work time by orchestration category, in ms, waiting excluded; called right after
        `decide` and stored in the stage's timing. Default: the whole decide time as `work_category` (nothing
        when the stage names none). Stages that wait inside decide (batched models, remote calls) measure their
        own parts, e.g. with a WorkLedger."""
        return {self.work_category: decide_ms} if self.work_category else {}

    def span_attributes(self, record: In, section: Section) -> dict[str, str | int | float | bool]:
        """Attributes for this record's span of this stage (the answerer's gen_ai.* on a model call); called after
        `decide`, and only when tracing is on (services.runtime.spans). Default: none."""
        return {}

    def register_metrics(self, registry: CollectorRegistry) -> None:
        """Add the stage's own Prometheus series to its process's /metrics (the answerer: its providers).
        Default: none."""

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


def stage_timing(
    stage_name: str, received_at: int, started_at: int, finished_at: int, work_ms: dict[str, float] | None = None
) -> dict[str, Any]:
    return {
        "stage": stage_name,
        "received_at": received_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "work_ms": dict(work_ms or {}),
    }


def request_id_of(value: dict[str, Any]) -> str | None:
    """The request id of any chain record (a Request, or a stage record holding one)."""
    request = value.get("request", value)
    rid = request.get("request_id") if isinstance(request, dict) else None
    return rid if isinstance(rid, str) else None
