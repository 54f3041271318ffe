"""Starting a process of the registry (services/registry.py) by name: `switchyard run <name>` and
`python -m services.<name>` both start one here. The factories the registry names live below: each stage's
constructor with its dependencies, and the foreground runner of every other process."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from services.registry import REGISTRY, Kind, Launch, Registry, resolve
from services.runtime.observability import configure_logging
from services.runtime.stage import Stage
from services.runtime.worker import WorkerConfig, run_stage
from services.settings import Settings, get_settings
from services.wire.registry_client import codec_from_settings

CHAIN = REGISTRY.chain
PROCESSES = REGISTRY.names
# the stages in one process (`switchyard run chain`), in place of the stage processes: the same Stage classes, each
# record's outputs produced to their topics in one transaction; for a small box, where latency matters more than
# scaling stages apart. It consumes as the first stage's group: never run it beside the stages.
FUSED = "chain"
# processes without /healthz: the faust worker reports through its logs and model.health itself
NO_HTTP = {process.name for process in REGISTRY if process.http_port is None}


def build_stage(name: str, settings: Settings, registry: Registry = REGISTRY) -> Stage[Any, Any]:
    """The stage object for a name, from its registry factory; imports lazily so each process loads only what it
    runs."""
    process = registry[name]
    if process.kind is not Kind.STAGE:
        raise KeyError(f"{name} is a {process.kind}, not a stage")
    stage: Stage[Any, Any] = resolve(process.factory)(settings)
    return stage


def run_process(
    name: str, *, replica: str | None = None, http_port: int | None = None, registry: Registry = REGISTRY
) -> None:
    """Run one process in the foreground until SIGTERM; the entry point of every process."""
    if name not in registry and name != FUSED:
        raise SystemExit(f"unknown process {name!r}; choose one of {', '.join((*registry.names, FUSED))}")
    # each process is its own Kafka principal (ACLs: services/infra/acls.py) unless told otherwise
    os.environ.setdefault("SWITCHYARD_KAFKA_USERNAME", f"switchyard-{name}")
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings.log_level)
    process = registry[registry.chain[0] if name == FUSED else name]
    if process.kind is not Kind.STAGE:
        resolve(process.factory)(settings, Launch(replica, http_port, process.http_port))
        return
    # /healthz and /metrics listen on SWITCHYARD_HOST: the loopback here, 0.0.0.0 in a container (infra/deploy)
    port = http_port if http_port is not None else process.http_port
    overrides: dict[str, Any] = {"http_port": port, "http_host": settings.host}
    if replica is not None:
        overrides["replica"] = replica
    stages = [build_stage(stage, settings, registry) for stage in (registry.chain if name == FUSED else [name])]
    runner: Callable[[], Any] = lambda: run_stage(stages[0], WorkerConfig(**overrides), downstream=stages[1:])  # noqa: E731
    asyncio.run(runner())


# --- the stages' factories: (Settings) -> Stage ----------------------------------------------------------------


def build_router(settings: Settings) -> Stage[Any, Any]:
    from services.router.stage import Router
    from services.runtime.reference import ReferenceTable
    from services.wire.models import ProviderHealth

    health: ReferenceTable[ProviderHealth] = ReferenceTable(
        bootstrap=settings.kafka_bootstrap,
        topic=settings.topic("model.health"),
        record="ProviderHealth",
        model=ProviderHealth,
        codec=codec_from_settings(settings),
        key_of=lambda row: row.provider,
    )
    return Router(settings, provider_health=health)


def build_stitcher(settings: Settings) -> Stage[Any, Any]:
    from services.stitcher.stage import Stitcher

    return Stitcher(settings, codec_from_settings(settings))


def build_governor(settings: Settings) -> Stage[Any, Any]:
    from services.governor.stage import Governor

    return Governor(settings)


def build_answerer(settings: Settings) -> Stage[Any, Any]:
    from services.answerer.call_events import ModelCallPublisher
    from services.answerer.registry import answerer_registry
    from services.answerer.stage import Answerer
    from services.shared.vault import VaultCipher

    codec = codec_from_settings(settings)
    vault = VaultCipher.from_settings(settings)
    return Answerer(
        answerer_registry(settings),
        call_events=ModelCallPublisher(settings, codec),
        policies=settings.policies,
        vault=vault,
        output_toxicity=settings.output_toxicity,
        # the local default is a base model: knowledge questions are answered from the passages first
        grounded_first=settings.model_provider == "local_gguf",
        outage_deadline_s=settings.answer_outage_deadline_s,
        max_prompt_chars=settings.answer_max_prompt_chars,
    )


def build_auditor(settings: Settings) -> Stage[Any, Any]:
    from services.auditor.stage import Auditor

    return Auditor(settings)


# --- the other processes' runners: (Settings, Launch) -> None, until SIGTERM ------------------------------------


def run_telemetry(settings: Settings, launch: Launch) -> None:
    from services.telemetry.writer import WriterConfig, run_writer

    writer = WriterConfig(http_port=launch.http_port, http_host=settings.host, max_wait_s=settings.telemetry_flush_s)
    asyncio.run(run_writer(writer))


def run_health(settings: Settings, launch: Launch) -> None:
    import sys

    from services.health.app import main as run_health_app

    sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
    run_health_app()


def run_dashboard(settings: Settings, launch: Launch) -> None:
    from services.dashboard.app import serve

    # started on its own, the dashboard keeps the port people know (settings.dashboard_port)
    port = launch.asked_port if launch.asked_port is not None else settings.dashboard_port
    asyncio.run(serve(settings.host, port))


def run_approvals(settings: Settings, launch: Launch) -> None:
    from services.approvals.worker import ApprovalsConfig
    from services.approvals.worker import run_approvals as run_worker

    replica_id = launch.replica or settings.replica or "0"
    config = ApprovalsConfig(replica=replica_id, http_host=settings.host, http_port=launch.http_port)
    asyncio.run(run_worker(config, settings))


def run_learning(settings: Settings, launch: Launch) -> None:
    from services.learning.watchdog import WatchdogConfig, run_watchdog

    asyncio.run(run_watchdog(WatchdogConfig.from_settings(settings, http_port=launch.http_port), settings))


def run_gateway(settings: Settings, launch: Launch) -> None:
    from services.gateway.app import run

    run(port=launch.http_port, replica=launch.replica)
