"""The process registry: every process Switchyard runs, as data, in one place. What each reads and writes, its port,
its resources and how it scales are stated here once; the launcher, `switchyard run NAME`, telemetry's stage list and
lag sampling, the deployment manifests, the Prometheus scrape configuration and the Kafka ACLs derive from it.

Adding a stage: one `Process` entry below (and the stage's code, topics and schemas); nothing else lists processes.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final


class Kind(enum.StrEnum):
    # a link of the chain: its factory builds a Stage (services.runtime.stage) that the shared runtime runs
    STAGE = "stage"
    # consumes topics into a store outside Kafka (ClickHouse); its factory runs it in the foreground
    SINK = "sink"
    # anything else (an HTTP entry, a page, a faust app, a watchdog); its factory runs it in the foreground
    SERVICE = "service"


class Scaling(enum.StrEnum):
    LAG = "lag"  # on its consumer group's lag (KEDA), up to one replica per partition of its inputs
    CPU = "cpu"  # on CPU (a HorizontalPodAutoscaler), between `least` and `most` replicas
    FIXED = "fixed"  # `least` replicas, rolled one at a time
    SINGLETON = "singleton"  # one replica, never two at once, not even during a rollout (replaced by Recreate)


class Audience(enum.StrEnum):
    INTERNAL = "internal"  # /healthz and /metrics only: probed and scraped
    CLIENTS = "clients"  # tills and store apps call it: a Service in front
    PEOPLE = "people"  # people use its pages: a Service, and compose publishes it on the host's loopback only


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests (CPU, memory) and the memory limit."""

    cpu: str
    memory: str
    memory_limit: str


@dataclass(frozen=True)
class Replicas:
    scaling: Scaling = Scaling.LAG
    least: int = 1
    most: int | None = None  # None with LAG: the partitions of its inputs


@dataclass(frozen=True)
class Launch:
    """What `switchyard run NAME` hands a factory that runs its process: the replica id given (None: the process's
    own default), the HTTP port asked for (None: not asked) and the registry's."""

    replica: str | None
    asked_port: int | None
    registry_port: int | None

    @property
    def http_port(self) -> int:
        """The port asked for, else the registry's (0: a free one)."""
        return next((port for port in (self.asked_port, self.registry_port) if port is not None), 0)


@dataclass(frozen=True)
class Process:
    """One runnable process. Topic names are before the settings' prefix.

    `factory` is a callable or its import path "module:attribute", imported only when the process starts: for a
    STAGE, `(Settings) -> Stage`; for a SINK or SERVICE, `(Settings, Launch) -> None`, which runs until SIGTERM."""

    name: str
    kind: Kind
    factory: str | Callable[..., Any]
    resources: Resources
    # consumed by the consumer group its replicas share: what its lag is measured on and what it scales by
    inputs: tuple[str, ...] = ()
    # produced: a stage's output topic first, then side topics (its dead-letter topic is `dead_letter`)
    outputs: tuple[str, ...] = ()
    # read without the shared group: reference tables and state read whole, each replica's own reader
    also_reads: tuple[str, ...] = ()
    dead_letter: str | None = None
    # the telemetry sink: it consumes every other process's dead-letter topic as well as its inputs
    collects_dead_letters: bool = False
    group: str | None = None  # the shared consumer group, before the prefix
    http_port: int | None = None  # /healthz (and /metrics where `metrics`); None: no HTTP at all
    metrics: bool = True
    replicas: Replicas = field(default_factory=Replicas)
    audience: Audience = Audience.INTERNAL

    @property
    def scrape(self) -> bool:
        """Whether Prometheus scrapes it: it serves /metrics."""
        return self.metrics and self.http_port is not None


class RegistryError(ValueError):
    """The registry contradicts itself; the message names the process and the fact."""


def stage(
    name: str,
    *,
    input_topic: str,
    output_topic: str,
    factory: str | Callable[..., Any],
    http_port: int,
    resources: Resources,
    side_outputs: tuple[str, ...] = (),
    also_reads: tuple[str, ...] = (),
) -> Process:
    """A chain stage as the shared runtime runs it: group `switchyard-<name>`, dead letters to `dlq.<name>`
    (services.runtime.stage.Stage's defaults), scaled on lag."""
    return Process(
        name=name,
        kind=Kind.STAGE,
        factory=factory,
        resources=resources,
        inputs=(input_topic,),
        outputs=(output_topic, *side_outputs),
        also_reads=also_reads,
        dead_letter=f"dlq.{name}",
        group=f"switchyard-{name}",
        http_port=http_port,
    )


@dataclass(frozen=True)
class Registry:
    processes: tuple[Process, ...]

    def __post_init__(self) -> None:
        _validate(self.processes)

    def __iter__(self) -> Iterator[Process]:
        return iter(self.processes)

    def __getitem__(self, name: str) -> Process:
        for process in self.processes:
            if process.name == name:
                return process
        raise KeyError(f"no process {name!r}; the registry holds {', '.join(self.names)}")

    def __contains__(self, name: object) -> bool:
        return any(process.name == name for process in self.processes)

    def with_process(self, process: Process) -> Registry:
        """This registry and one more process, last."""
        return Registry((*self.processes, process))

    @property
    def names(self) -> list[str]:
        return [process.name for process in self.processes]

    @property
    def chain(self) -> list[str]:
        """The stages, in chain order."""
        return [process.name for process in self.processes if process.kind is Kind.STAGE]

    def dead_letter_topics(self, collector: Process) -> list[str]:
        """The dead-letter topics a collector consumes: every other process's."""
        return [p.dead_letter for p in self.processes if p.dead_letter and p.name != collector.name]

    def inputs_of(self, name: str) -> tuple[str, ...]:
        """What the process's consumer group consumes."""
        process = self[name]
        extra = self.dead_letter_topics(process) if process.collects_dead_letters else []
        return _unique([*process.inputs, *extra])

    def topic_access(self) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
        """Per process, the topics it reads and the topics it writes, each sorted (before the prefix): the input
        of its Kafka ACLs. Its consumer group is `group`; a stage's transactional ids start with that group."""
        access: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        for process in self.processes:
            reads = {*self.inputs_of(process.name), *process.also_reads}
            writes = {*process.outputs, *([process.dead_letter] if process.dead_letter else [])}
            access[process.name] = (tuple(sorted(reads)), tuple(sorted(writes)))
        return access

    def lag_inputs(self) -> dict[str, list[str]]:
        """The input topics of each stage's and sink's consumer group, by process name: what lag sampling reads."""
        return {p.name: list(self.inputs_of(p.name)) for p in self.processes if p.kind in (Kind.STAGE, Kind.SINK)}

    def scrape_targets(self, host: str = "127.0.0.1") -> list[str]:
        """host:port of every process that serves /metrics, at its registry port."""
        return [f"{host}:{p.http_port}" for p in self.processes if p.scrape]


def _unique(topics: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(topics))


def _validate(processes: Sequence[Process]) -> None:
    names = [process.name for process in processes]
    if duplicated := sorted({name for name in names if names.count(name) > 1}):
        raise RegistryError(f"process names listed twice: {', '.join(duplicated)}")
    ports: dict[int, str] = {}
    for process in processes:
        if process.http_port is not None:
            if process.http_port in ports:
                raise RegistryError(
                    f"{process.name}: port {process.http_port} is {ports[process.http_port]}'s; give it another"
                )
            ports[process.http_port] = process.name
        if process.kind is Kind.STAGE and (len(process.inputs) != 1 or not process.outputs):
            raise RegistryError(f"{process.name}: a stage reads one input topic and writes an output topic")
        if process.replicas.scaling is Scaling.LAG and not (process.group and process.inputs):
            raise RegistryError(f"{process.name}: scaling on lag needs a consumer group and input topics")
        if process.replicas.scaling is Scaling.CPU and process.replicas.most is None:
            raise RegistryError(f"{process.name}: scaling on CPU needs `most` replicas")


def resolve(factory: str | Callable[..., Any]) -> Callable[..., Any]:
    """The factory itself: a callable as is, an import path "module:attribute" imported now."""
    if callable(factory):
        return factory
    module, _, attribute = factory.partition(":")
    resolved: Callable[..., Any] = getattr(importlib.import_module(module), attribute)
    return resolved


# Ports: 9101 up, leaving out 9110, the dashboard's pages when started on its own (settings.dashboard_port).
# Resources: the router embeds text (MiniLM) and the answerer may host the local GGUF model; the others move records.
REGISTRY: Final = Registry(
    (
        stage(
            "router",
            input_topic="requests",
            output_topic="routed",
            also_reads=("model.health",),
            factory="services.stages:build_router",
            http_port=9101,
            resources=Resources("500m", "768Mi", "1536Mi"),
        ),
        stage(
            "stitcher",
            input_topic="routed",
            output_topic="stitched",
            # stores, stock and customers as tables; each customer's history folded from audited and feedback
            also_reads=("ref.stores", "ref.inventory", "ref.customers", "audited", "feedback"),
            factory="services.stages:build_stitcher",
            http_port=9102,
            resources=Resources("250m", "384Mi", "768Mi"),
        ),
        stage(
            "governor",
            input_topic="stitched",
            output_topic="governed",
            side_outputs=("pii.vault",),
            factory="services.stages:build_governor",
            http_port=9103,
            resources=Resources("250m", "256Mi", "512Mi"),
        ),
        stage(
            "answerer",
            input_topic="governed",
            output_topic="answered",
            side_outputs=("model.calls",),
            factory="services.stages:build_answerer",
            http_port=9104,
            resources=Resources("1000m", "1Gi", "2Gi"),
        ),
        stage(
            "auditor",
            input_topic="answered",
            output_topic="audited",
            side_outputs=("audit.checkpoints",),
            # its last checkpoint, and the tail of audited after it, to recover its chain heads
            also_reads=("audited", "audit.checkpoints"),
            factory="services.stages:build_auditor",
            http_port=9105,
            resources=Resources("100m", "256Mi", "512Mi"),
        ),
        Process(
            "telemetry",
            Kind.SINK,
            factory="services.stages:run_telemetry",
            inputs=("audited", "feedback", "model.calls"),
            collects_dead_letters=True,
            dead_letter="dlq.telemetry",
            group="switchyard-telemetry",
            http_port=9106,
            resources=Resources("100m", "256Mi", "512Mi"),
        ),
        Process(
            "health",
            Kind.SERVICE,
            factory="services.stages:run_health",
            inputs=("model.calls",),
            # it probes a provider that is down through the provider layer, which reports the probe to model.calls
            # like any call: the probes are what bring a provider back
            outputs=("model.health", "model.calls"),
            group="switchyard-health",  # the faust app id; faust adds its own changelog topics under it
            http_port=None,  # the faust worker reports through its logs and model.health itself
            resources=Resources("100m", "256Mi", "512Mi"),
        ),
        Process(
            "dashboard",
            Kind.SERVICE,
            factory="services.stages:run_dashboard",
            http_port=9108,
            metrics=False,
            replicas=Replicas(Scaling.FIXED),
            audience=Audience.PEOPLE,
            resources=Resources("100m", "128Mi", "256Mi"),
        ),
        Process(
            "approvals",
            Kind.SERVICE,
            factory="services.stages:run_approvals",
            inputs=("feedback",),
            outputs=("approvals.state", "requests"),
            also_reads=("approvals.state", "ref.staff", "pii.vault"),
            dead_letter="dlq.approvals",
            group="switchyard-approvals",
            http_port=9109,
            resources=Resources("100m", "128Mi", "256Mi"),
        ),
        Process(
            "learning",
            Kind.SERVICE,
            factory="services.stages:run_learning",
            outputs=("feedback",),  # staff corrections published with `python -m services.learning feedback`
            http_port=9111,
            replicas=Replicas(Scaling.SINGLETON),
            resources=Resources("100m", "256Mi", "512Mi"),
        ),
        Process(
            "gateway",
            Kind.SERVICE,
            factory="services.stages:run_gateway",
            outputs=("requests", "feedback"),
            # its API keys, the answers from audited with a group of each replica's own, and the PII vault to
            # restore the tokens in an answer for the till that asked
            also_reads=("gateway.keys", "audited", "pii.vault"),
            http_port=9112,
            replicas=Replicas(Scaling.CPU, least=2, most=10),
            audience=Audience.CLIENTS,
            resources=Resources("250m", "256Mi", "512Mi"),
        ),
    )
)


def topic_access(registry: Registry = REGISTRY) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """{process: (topics it reads, topics it writes)}, sorted, before the prefix; see Registry.topic_access."""
    return registry.topic_access()
