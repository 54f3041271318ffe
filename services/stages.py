"""The registry of runnable processes: each chain stage and the telemetry writer, by name, with the port of
its /healthz and /metrics. `switchyard run <name>` and `python -m services.<name>` both start one here."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from services.runtime.observability import configure_logging
from services.runtime.registry_client import codec_from_settings
from services.runtime.stage import Stage
from services.runtime.worker import WorkerConfig, run_stage
from services.settings import Settings, get_settings

CHAIN = ["router", "stitcher", "governor", "answerer", "auditor"]
PROCESSES = [*CHAIN, "telemetry", "health", "dashboard", "approvals", "learning", "gateway"]
# the five stages in one process (`switchyard run chain`), in place of the five stage processes: the same Stage
# classes, each record's five outputs produced to their topics in one transaction; for a small box, where latency
# matters more than scaling stages apart. It consumes as the router's group: never run it beside the stages.
FUSED = "chain"
# processes without /healthz: the faust worker reports through its logs and model.health itself
NO_HTTP = {"health"}
# 9101 up, leaving out 9110: the dashboard's pages (settings.dashboard_port)
DEFAULT_HTTP_PORTS = {name: 9101 + index + (index >= 9) for index, name in enumerate(PROCESSES)}
DEFAULT_HTTP_PORTS[FUSED] = DEFAULT_HTTP_PORTS[CHAIN[0]]


def build_stage(name: str, settings: Settings) -> Stage[Any, Any]:
    """The stage object for a name; imports lazily so each process loads only what it runs."""
    if name == "router":
        from services.router.stage import Router
        from services.runtime.models import ProviderHealth
        from services.runtime.reference import ReferenceTable

        health: ReferenceTable[ProviderHealth] = ReferenceTable(
            bootstrap=settings.kafka_bootstrap,
            topic=settings.topic("model.health"),
            record="ProviderHealth",
            model=ProviderHealth,
            codec=codec_from_settings(settings),
            key_of=lambda row: row.provider,
        )
        return Router(settings, provider_health=health)
    if name == "stitcher":
        from services.stitcher.stage import Stitcher

        return Stitcher(settings, codec_from_settings(settings))
    if name == "governor":
        from services.governor.stage import Governor

        return Governor(settings)
    if name == "answerer":
        from services.answerer.call_events import ModelCallPublisher
        from services.answerer.registry import answerer_registry
        from services.answerer.stage import Answerer
        from services.governor.vault import VaultCipher

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
    if name == "auditor":
        from services.auditor.stage import Auditor

        return Auditor(settings)
    raise KeyError(name)


def run_process(name: str, *, replica: str | None = None, http_port: int | None = None) -> None:
    """Run one process in the foreground until SIGTERM; the entry point of every stage."""
    if name not in (*PROCESSES, FUSED):
        raise SystemExit(f"unknown process {name!r}; choose one of {', '.join((*PROCESSES, FUSED))}")
    configure_logging(os.environ.get("SWITCHYARD_LOG_LEVEL", "INFO"))
    settings = get_settings()
    port = http_port if http_port is not None else DEFAULT_HTTP_PORTS[name]
    if name == "health":
        import sys

        from services.health.app import main as run_health

        sys.argv = [sys.argv[0], "worker", "--loglevel", "warn", "--without-web"]
        run_health()
        return
    if name == "dashboard":
        from services.dashboard.app import serve

        asyncio.run(serve(settings.host, http_port if http_port is not None else settings.dashboard_port))
        return
    if name == "approvals":
        from services.approvals.worker import ApprovalsConfig, run_approvals

        replica_id = replica or os.environ.get("SWITCHYARD_REPLICA", "0")
        config = ApprovalsConfig(replica=replica_id, http_host=settings.host, http_port=port)
        asyncio.run(run_approvals(config, settings))
        return
    if name == "learning":
        from services.learning.watchdog import WatchdogConfig, run_watchdog

        asyncio.run(run_watchdog(WatchdogConfig.from_settings(settings, http_port=port), settings))
        return
    if name == "gateway":
        from services.gateway.app import run as run_gateway

        run_gateway(port=port, replica=replica)
        return
    if name == "telemetry":
        from services.telemetry.writer import WriterConfig, run_writer

        writer = WriterConfig(http_port=port, http_host=settings.host, max_wait_s=settings.telemetry_flush_s)
        asyncio.run(run_writer(writer))
        return
    # /healthz and /metrics listen on SWITCHYARD_HOST: the loopback here, 0.0.0.0 in a container (infra/deploy)
    overrides: dict[str, Any] = {"http_port": port, "http_host": settings.host}
    if replica is not None:
        overrides["replica"] = replica
    stages = [build_stage(stage, settings) for stage in (CHAIN if name == FUSED else [name])]
    runner: Callable[[], Any] = lambda: run_stage(stages[0], WorkerConfig(**overrides), downstream=stages[1:])  # noqa: E731
    asyncio.run(runner())
