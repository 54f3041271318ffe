"""The router stage (requests → routed): the trained intent classifier reads the request, the declarative route
table (routes/route_table.yaml, reloaded on change) picks its route and fallbacks.

Both reload without a restart: the route table on any change, the classifier when its card.json is replaced
(a promotion or a rollback by the learning loop writes the weights first and the card last). A candidate
classifier in shadow (`switchyard shadow start ROUTER_MODEL`) classifies every request from the same embedding and
is recorded, never obeyed."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from services.learning.router_shadow import RouterShadow
from services.learning.switch import default_registry_dir
from services.router.intents.classifier import IntentClassifier, IntentPrediction, ensure_trained
from services.runtime.batcher import DEFAULT_CONCURRENCY, DEFAULT_MAX_BATCH, DEFAULT_WINDOW_S, MicroBatcher
from services.runtime.cache import PENDING_EMBEDDING_BYTES, PENDING_EMBEDDINGS, BoundedCache
from services.runtime.reference import ReferenceTable
from services.runtime.stage import Stage, WorkLedger
from services.runtime.watched import WatchedConfig
from services.settings import Settings, get_settings
from services.shared.embedder import SentenceEmbedder
from services.shared.model_artifact import CARD_FILE, IntentArtifactError
from services.shared.route_table import (
    DEFAULT_CHECK_EVERY_S,
    NO_UNHEALTHY_PROVIDERS,
    RouteTable,
    RouteTableWatcher,
)
from services.wire.models import (
    ProviderHealth,
    ProviderState,
    Request,
    RouteDecision,
    RouteKind,
    TextEmbedding,
)

RECENT_PREDICTIONS = 10_000  # exact request texts whose intent and embedding are kept (about 27 MB)
# about 2.7 KB for a till-length text: the count binds first, unless the texts are long (1 MiB ones: 64 of them)
RECENT_PREDICTION_BYTES = 64 << 20
log = logging.getLogger("switchyard.router")


class RequestTooLong(ValueError):
    """A request text past `max_request_chars`: dead-lettered with its length, before any model reads it."""


@dataclass(frozen=True)
class Classified:
    """One text classified by the classifier in force (its version) and, when one is in shadow, by the candidate."""

    prediction: IntentPrediction
    version: str
    shadow: tuple[str, IntentPrediction] | None = None  # (candidate model id, its prediction)
    embedding: TextEmbedding | None = None  # passed on to the stitcher and the governor; None for a cut text
    decided_by: str = "minilm"  # "cheap" where the cascade's first model was sure (no embedding made then)


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
        registry_dir: Path | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.route_tables = RouteTableWatcher(route_table_path or settings.route_table, check_every_s=reload_every_s)
        self.intent_model_path = intent_model_path or intent_model_dir(settings)
        self.registry_dir = registry_dir or default_registry_dir()
        self.reload_every_s = reload_every_s
        self.max_request_chars = settings.max_request_chars
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch
        self.classify_concurrency = classify_concurrency
        # provider -> why it is unhealthy: fixed here, or read live from the model.health topic
        self.unhealthy_providers: Mapping[str, str] = NO_UNHEALTHY_PROVIDERS
        self.provider_health = provider_health
        self.classifier: IntentClassifier | None = None
        self.classifiers: WatchedConfig[IntentClassifier] | None = None
        self.shadow: RouterShadow | None = None
        self._shadow_candidate: tuple[str, IntentClassifier] | None = None
        self._recent: BoundedCache[str, Classified] = BoundedCache(RECENT_PREDICTIONS, RECENT_PREDICTION_BYTES)
        # decided, not yet composed: request id -> embedding. Bounded: a record that fails between its decision
        # and its output (dead-lettered) never collects its entry.
        self._embeddings: BoundedCache[str, TextEmbedding] = BoundedCache(PENDING_EMBEDDINGS, PENDING_EMBEDDING_BYTES)
        self._classify: MicroBatcher[str, Classified] | None = None
        self._embed: MicroBatcher[str, TextEmbedding | None] | None = None
        self.intent_deciders: Counter[str] = Counter()  # which model of the cascade decided, per request classified
        self._work = WorkLedger()

    async def start(self) -> None:
        """The route table first (a bad one fails fast), then the classifier: trained here on a fresh clone (~10 s),
        in a worker thread like every later classification."""
        await asyncio.to_thread(self.route_tables.load)
        if self.provider_health is not None:
            await self.provider_health.start()
            await self.provider_health.ready.wait()
        embedder = SentenceEmbedder()
        await asyncio.to_thread(ensure_trained, self.intent_model_path, embedder=embedder)
        self.classifiers = WatchedConfig(
            self.intent_model_path,
            lambda path: IntentClassifier.load(path, embedder=embedder),
            invalid=(IntentArtifactError, OSError, ValueError),
            what="intent classifier",
            version=lambda classifier: classifier.version,
            version_field="classifier_version",
            logger=log,
            files=lambda path: [path / CARD_FILE],
            check_every_s=self.reload_every_s,
        )
        self.classifier = await asyncio.to_thread(self.classifiers.load)
        self.shadow = RouterShadow(self.registry_dir, embedder)
        self._classify = MicroBatcher(
            self._classify_batch,
            window_s=self.batch_window_s,
            max_batch=self.max_batch,
            concurrency=self.classify_concurrency,
        )
        self._embed = MicroBatcher(
            self._embed_batch,
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
        if self._embed is not None:
            await self._embed.aclose()
            self._embed = None
        if self.shadow is not None:
            await self.shadow.aclose()

    async def healthy(self) -> tuple[bool, str]:
        if self.classifier is None or self._classify is None:
            return False, "router not started: no route table or intent classifier loaded"
        return True, f"route table {self.route_tables.table.version}; intent classifier {self.classifier.version}"

    @property
    def route_table(self) -> RouteTable:
        return self.route_tables.table

    async def decide(self, record: Request) -> RouteDecision:
        if self._classify is None or self.classifiers is None or self.shadow is None:
            raise RuntimeError("Router.start() has not run")
        if len(record.text) > self.max_request_chars:
            raise RequestTooLong(
                f"request {record.request_id}: the text is {len(record.text):,} characters, over the "
                f"{self.max_request_chars:,} the chain takes (SWITCHYARD_MAX_REQUEST_CHARS)"
            )
        self._refresh_classifier()
        candidate = self._shadow_candidate = self.shadow.candidate()
        classified = self._recent.get(record.text)
        if classified is None or (candidate is not None and (classified.shadow or ("",))[0] != candidate[0]):
            classified, classify_ms = await self._classify.submit_timed(record.text)
            self._work.add(record.request_id, "routing", classify_ms)
            self._remember(record.text, classified)
        if candidate is not None and classified.shadow is not None and classified.shadow[0] == candidate[0]:
            self.shadow.record(
                record.request_id, candidate, classified.shadow[1], classified.prediction, classified.version
            )
        with self._work.measure(record.request_id, "routing"):
            table = self.route_tables.current()
            decision = table.decide(
                record,
                classified.prediction,
                unhealthy_providers=self.current_unhealthy(),
                classifier_version=classified.version,
            )
        if classified.embedding is None and classified.decided_by == "cheap" and decision.kind != RouteKind.WORKFLOW:
            # a model route: the stitcher searches the knowledge base with MiniLM's vector of the text and the
            # governor scores it; made here once, passed on to both (a workflow needs neither)
            assert self._embed is not None
            embedding, embed_ms = await self._embed.submit_timed(record.text)
            self._work.add(record.request_id, "routing", embed_ms)
            if embedding is not None:
                classified = replace(classified, embedding=embedding)
                self._remember(record.text, classified)
        if classified.embedding is not None:
            self._embeddings.put(record.request_id, classified.embedding)
        return decision

    def passed_on(self, record: Request, section: RouteDecision) -> dict[str, Any]:
        """The request text's embedding, so the stitcher's search and the governor's classifiers do not embed
        the same text again (about 10 ms of CPU each for a short request on this box)."""
        embedding = self._embeddings.pop(record.request_id)
        return {"request_embedding": None if embedding is None else embedding.model_dump()}

    def _refresh_classifier(self) -> None:
        """A promoted or rolled-back classifier replaces the one in force; what was remembered was its work."""
        assert self.classifiers is not None
        current = self.classifiers.current()
        if current is not self.classifier:
            self.classifier = current
            self._recent.clear()

    def _classify_batch(self, texts: Sequence[str]) -> list[Classified]:
        """In a worker thread: one embedding per text, the classifier in force and the shadow candidate (if any)
        both applied to it. The references are read once, so a reload mid-batch cannot mix two versions."""
        classifier, candidate = self.classifier, self._shadow_candidate
        assert classifier is not None
        embedder = classifier.embedder
        if candidate is None:
            # the cascade: the cheap model's sure answers stand; MiniLM embeds and classifies the rest
            found: list[Classified | None] = [
                None if p is None else Classified(p, classifier.version, decided_by="cheap")
                for p in classifier.classify_cheaply(texts)
            ]
            unsure = [i for i, classified in enumerate(found) if classified is None]
            if unsure:
                embeddings, tokens = embedder.embed_whole([texts[i] for i in unsure])
                predictions = classifier.classify_embeddings(embeddings)
                for i, p, vector, count in zip(unsure, predictions, embeddings, tokens, strict=True):
                    found[i] = Classified(p, classifier.version, None, embedder.passed_on(vector, count))
            done = [classified for classified in found if classified is not None]
            self.intent_deciders.update(classified.decided_by for classified in done)
            return done
        # a candidate in shadow is compared on every text, from the same embedding as the classifier in force
        embeddings, tokens = embedder.embed_whole(texts)
        passed = [embedder.passed_on(vector, count) for vector, count in zip(embeddings, tokens, strict=True)]
        predictions = classifier.classify_embeddings(embeddings)
        self.intent_deciders["minilm"] += len(texts)
        shadowed = candidate[1].classify_embeddings(embeddings)
        return [
            Classified(p, classifier.version, (candidate[0], c), e)
            for p, c, e in zip(predictions, shadowed, passed, strict=True)
        ]

    def _embed_batch(self, texts: Sequence[str]) -> list[TextEmbedding | None]:
        """In a worker thread: MiniLM's vectors of texts the cheap model classified, for the later stages."""
        assert self.classifier is not None
        embedder = self.classifier.embedder
        embeddings, tokens = embedder.embed_whole(texts)
        return [embedder.passed_on(vector, count) for vector, count in zip(embeddings, tokens, strict=True)]

    def work(self, record: Request, section: RouteDecision, decide_ms: float) -> dict[str, float]:
        """Intent classification (this request's share of its batch) and the route-table decision."""
        return self._work.pop(record.request_id)

    def _remember(self, text: str, classified: Classified) -> None:
        """Store and counter staff ask the same few questions all day: an exact repeat reuses its intent
        instead of paying for another embedding (the classifier is deterministic, so nothing changes)."""
        self._recent.put(text, classified)

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
