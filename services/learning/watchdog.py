"""The `learning` process (`switchyard run learning`): the learning loop's own service, one replica.

Every `learning_check_every_s` it
- rolls back a promoted model whose live metrics degraded: for the answer memory, the share of its reviewed live
  answers that staff corrected or rated 2 or less; for a router model, the share of reviewed requests whose
  route staff corrected; above `learning_max_bad_rate` once `learning_min_reviewed` are reviewed
  (promotion.check_live);
- with `learning_auto_promote`, promotes a candidate in shadow once it beats the incumbent by `learning_margin`
  on its evaluation split and in shadow (promotion.decide), and so ends its shadow.

Each check is made under the registry's lock, so it never races `switchyard promote` or `switchyard rollback`.
/healthz is ready while checks succeed; /metrics counts checks, rollbacks, promotions and failures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import Counter, Gauge

from services.learning.compare import Comparison, RouteComparison, route_shadow_comparison, shadow_comparison
from services.learning.promotion import PromotionPolicy, check_live, promote
from services.learning.registry import ModelRegistry
from services.learning.switch import ANSWER_KIND, ROUTER_KIND
from services.runtime.observability import StageMetrics, serve_http
from services.settings import Settings, get_settings

log = logging.getLogger("switchyard.learning")
NAME = "learning"
KINDS = (ANSWER_KIND, ROUTER_KIND)


@dataclass(frozen=True)
class WatchdogConfig:
    check_every_s: float = 30.0
    max_bad_rate: float = 0.2
    min_reviewed: int = 10
    auto_promote: bool = False
    margin: float = 0.05
    http_host: str = "127.0.0.1"
    http_port: int = 0

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> WatchdogConfig:
        values: dict[str, object] = {
            "check_every_s": settings.learning_check_every_s,
            "max_bad_rate": settings.learning_max_bad_rate,
            "min_reviewed": settings.learning_min_reviewed,
            "auto_promote": settings.learning_auto_promote,
            "margin": settings.learning_margin,
            "http_host": settings.host,
        }
        return cls(**{**values, **overrides})  # type: ignore[arg-type]


class Watchdog:
    def __init__(self, config: WatchdogConfig, registry: ModelRegistry, route_table: Path) -> None:
        self.config = config
        self.registry = registry
        self.route_table = route_table
        self.stopping = asyncio.Event()
        self.metrics = StageMetrics(NAME)
        self.checks = Counter(
            "switchyard_learning_checks", "Checks of promoted models and shadows", registry=self.metrics.registry
        )
        self.actions = Counter(
            "switchyard_learning_actions",
            "Automatic rollbacks and promotions, by kind of model",
            labelnames=["action", "kind"],
            registry=self.metrics.registry,
        )
        self.last_check = Gauge(
            "switchyard_learning_last_check_seconds",
            "Unix time of the last successful check",
            registry=self.metrics.registry,
        )
        self._last_ok: float | None = None
        self._last_error = ""

    def check(self) -> list[str]:
        """One pass (blocking: ClickHouse queries and file writes); returns what it did, a line per action."""
        done = []
        for kind in KINDS:
            rolled = check_live(
                self.route_table,
                self.registry,
                kind=kind,
                max_bad_rate=self.config.max_bad_rate,
                min_reviewed=self.config.min_reviewed,
            )
            if rolled is not None:
                self.actions.labels(action="rolled_back", kind=kind).inc()
                log.warning("promotion rolled back: live metrics degraded", extra={"kind": kind, "result": rolled})
                done.append(f"{kind}: rolled back ({rolled})")
        if self.config.auto_promote:
            done += self._promote_shadows()
        self.checks.inc()
        return done

    def _promote_shadows(self) -> list[str]:
        done = []
        policy = PromotionPolicy(margin=self.config.margin)
        for kind in KINDS:
            config = self.registry.shadow(kind)
            if config is None:
                continue
            model_id = str(config["candidate"])
            card = self.registry.card(model_id)
            intents = list(card.get("intents", []))
            shadow: Comparison | RouteComparison = (
                route_shadow_comparison(model_id) if kind == ROUTER_KIND else shadow_comparison(model_id, intents)
            )
            decision = promote(model_id, intents, self.route_table, self.registry, shadow=shadow, policy=policy)
            if decision.promote:
                self.actions.labels(action="promoted", kind=kind).inc()
                log.info("candidate promoted from shadow", extra={"model_id": model_id, "reasons": decision.reasons})
                done.append(f"{kind}: promoted {model_id}")
        return done

    async def health(self) -> tuple[bool, str]:
        if self._last_ok is None:
            return False, f"no successful check yet{': ' + self._last_error if self._last_error else ''}"
        age = time.time() - self._last_ok
        if age > 3 * self.config.check_every_s + 30:
            return False, f"last successful check {age:.0f} s ago: {self._last_error}"
        return True, f"last check {age:.0f} s ago; checks every {self.config.check_every_s:g} s"

    async def run(self) -> None:
        runner = await serve_http(self.config.http_host, self.config.http_port, self.metrics, self.health)
        log.info("stage started", extra={"stage": NAME})
        try:
            while not self.stopping.is_set():
                try:
                    await asyncio.to_thread(self.check)
                    self._last_ok, self._last_error = time.time(), ""
                    self.last_check.set(self._last_ok)
                except Exception as error:  # ClickHouse down, a broken registry file: log, count, try again
                    self._last_error = repr(error)
                    self.metrics.errors.labels(stage=NAME, kind=type(error).__name__).inc()
                    log.exception("learning check failed")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), timeout=self.config.check_every_s)
        finally:
            await runner.cleanup()
            log.info("stage stopped", extra={"stage": NAME})


async def run_watchdog(config: WatchdogConfig, settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    watchdog = Watchdog(config, ModelRegistry(), settings.route_table)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, watchdog.stopping.set)
    await watchdog.run()
