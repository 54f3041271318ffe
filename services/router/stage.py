"""The router stage (requests → routed): the trained intent classifier reads the request, the declarative route
table (routes/route_table.yaml, reloaded on change) picks its route and fallbacks."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from services.router.intents.classifier import IntentClassifier, IntentPrediction, ensure_trained
from services.router.route_table import (
    DEFAULT_CHECK_EVERY_S,
    NO_UNHEALTHY_PROVIDERS,
    RouteTable,
    RouteTableWatcher,
)
from services.runtime.batcher import DEFAULT_CONCURRENCY, DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, MicroBatcher
from services.runtime.models import ProviderHealth, ProviderState, Request, RouteDecision
from services.runtime.reference import ReferenceTable
from services.runtime.stage import Stage, WorkLedger
from services.settings import Settings, get_settings

RECENT_PREDICTIONS = 10_000  # exact request texts whose intent is kept (a few MB)


def intent_model_dir(settings: Settings) -> Path:
    """Where the router keeps its trained intent classifier (git-ignored run-time state)."""
    return settings.var_dir / "models" / "intent"


class Router(Stage[Request, RouteDecision]):
    name: ClassVar[str] = "router"
    input_topic: ClassVar[str] = "requests"
    input_record: ClassVar[str] = "Request"
    input_model = Request
    output_topic: ClassVar[str] = "routed"
    output_record: ClassVar[str] = "Routed"
    section: ClassVar[str] = "route"

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        route_table_path: Path | None = None,
        intent_model_path: Path | None = None,
        reload_every_s: float = DEFAULT_CHECK_EVERY_S,
        batch_window_s: float = DEFAULT_WINDOW_S,
        max_batch: int = DEFAULT_MAX_BATCH,
        classify_concurrency: int = DEFAULT_CONCURRENCY,
        provider_health: ReferenceTable[ProviderHealth] | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.route_tables = RouteTableWatcher(route_table_path or settings.route_table, check_every_s=reload_every_s)
        self.intent_model_path = intent_model_path or intent_model_dir(settings)
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.classify_concurrency = classify_concurrency
        # provider -> why it is unhealthy: fixed here, or read live from the model.health topic
        self.unhealthy_providers: Mapping[str, str] = NO_UNHEALTHY_PROVIDERS
        self.provider_health = provider_health
        self.classifier: IntentClassifier | None = None
        self._recent: OrderedDict[str, IntentPrediction] = OrderedDict()
        self._classify: MicroBatcher[str, IntentPrediction] | None = None
        self._work = WorkLedger()

    async def start(self) -> None:
        """The route table first (a bad one fails fast), then the classifier: trained here on a fresh clone (~10 s),
        in a worker thread like every later classification."""
        await asyncio.to_thread(self.route_tables.load)
        if self.provider_health is not None:
            await self.provider_health.start()
            await self.provider_health.ready.wait()
        self.classifier = await asyncio.to_thread(ensure_trained, self.intent_model_path)
        self._classify = MicroBatcher(
            self.classifier.classify_many,
            window_s=self.batch_window_s,
            max_batch=self.max_batch,
            concurrency=self.classify_concurrency,
        )

    async def stop(self) -> None:
        if self.provider_health is not None:
            await self.provider_health.stop()
        if self._classify is not None:
            await self._classify.aclose()
            self._classify = None

    async def healthy(self) -> tuple[bool, str]:
        if self.classifier is None or self._classify is None:
            return False, "router not started: no route table or intent classifier loaded"
        return True, f"route table {self.route_tables.table.version}; intent classifier {self.classifier.version}"

    @property
    def route_table(self) -> RouteTable:
        return self.route_tables.table

    async def decide(self, record: Request) -> RouteDecision:
        if self._classify is None:
            raise RuntimeError("Router.start() has not run")
        prediction = self._recent.get(record.text)
        if prediction is None:
            prediction, classify_ms = await self._classify.submit_timed(record.text)
            self._work.add(record.request_id, "routing", classify_ms)
            self._remember(record.text, prediction)
        else:
            self._recent.move_to_end(record.text)
        with self._work.measure(record.request_id, "routing"):
            table = self.route_tables.current()
            return table.decide(record, prediction, unhealthy_providers=self.current_unhealthy())

    def work(self, record: Request, section: RouteDecision, decide_ms: float) -> dict[str, float]:
        """Intent classification (this request's share of its batch) and the route-table decision."""
        return self._work.pop(record.request_id)

    def _remember(self, text: str, prediction: IntentPrediction) -> None:
        """Store and counter staff ask the same few questions all day: an exact repeat reuses its intent
        instead of paying for another embedding (the classifier is deterministic, so nothing changes)."""
        self._recent[text] = prediction
        if len(self._recent) > RECENT_PREDICTIONS:
            self._recent.popitem(last=False)

    def current_unhealthy(self) -> Mapping[str, str]:
        """Providers the health app has marked DOWN, with its reason; else the fixed mapping."""
        if self.provider_health is None:
            return self.unhealthy_providers
        down = {
            name: health.reason
            for name, health in self.provider_health.rows.items()
            if health.state == ProviderState.DOWN
        }
        return down or NO_UNHEALTHY_PROVIDERS
