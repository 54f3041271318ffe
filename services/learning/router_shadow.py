"""Shadow mode for the router: a candidate intent classifier (a registered `router` model) classifies every live
request beside the incumbent, from the same embedding (one more matrix product, no second embedding), and never
routes anything. Both predictions go to switchyard.shadow_routes, where they are compared with the route
corrections and confirmations in switchyard.feedback (services/learning/compare.py).

Started and stopped with `switchyard shadow start|stop` (the registry's shadow.router.json); a running router
picks the change up within a second.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from services.learning.switch import ROUTER_KIND, ClickHouseSink, ShadowSwitch
from services.router.intents.classifier import IntentClassifier, IntentPrediction
from services.shared.embedder import SentenceEmbedder
from services.shared.model_artifact import IntentArtifactError

log = logging.getLogger("switchyard.learning")
SHADOW_ROUTES_TABLE: Final = "switchyard.shadow_routes"
SHADOW_ROUTE_COLUMNS: Final = [
    "request_id", "candidate", "candidate_version", "intent", "confidence",
    "incumbent_version", "incumbent_intent", "incumbent_confidence", "created_at",
]  # fmt: skip


class RouterShadow:
    """The candidate router in shadow now (loaded once per model id, in the incumbent's embedding space), and the
    sink its predictions go to."""

    def __init__(
        self,
        registry_dir: Path,
        embedder: SentenceEmbedder,
        *,
        switch: ShadowSwitch | None = None,
        sink: ClickHouseSink | None = None,
    ) -> None:
        self.registry_dir = registry_dir
        self.embedder = embedder
        self.switch = switch or ShadowSwitch(registry_dir, ROUTER_KIND)
        self.sink = sink or ClickHouseSink(SHADOW_ROUTES_TABLE, SHADOW_ROUTE_COLUMNS)
        self._loaded: dict[str, IntentClassifier | None] = {}

    def candidate(self) -> tuple[str, IntentClassifier] | None:
        """(model id, classifier) of the candidate in shadow, or None. A candidate that cannot be loaded (missing,
        or trained on another embedder) is logged once and shadows nothing."""
        config = self.switch.current()
        if config is None:
            return None
        model_id = str(config["candidate"])
        if model_id not in self._loaded:
            try:
                self._loaded[model_id] = IntentClassifier.load(
                    self.registry_dir / "models" / model_id, embedder=self.embedder
                )
                log.info("router shadow candidate loaded", extra={"candidate": model_id})
            except (IntentArtifactError, OSError, ValueError) as error:
                log.error("router shadow candidate not loaded", extra={"candidate": model_id, "error": repr(error)})
                self._loaded[model_id] = None
        classifier = self._loaded[model_id]
        return None if classifier is None else (model_id, classifier)

    def record(
        self,
        request_id: str,
        candidate: tuple[str, IntentClassifier],
        prediction: IntentPrediction,
        incumbent: IntentPrediction,
        incumbent_version: str,
    ) -> None:
        model_id, classifier = candidate
        self.sink.add(
            [
                request_id,
                model_id,
                classifier.version,
                prediction.intent,
                prediction.confidence,
                incumbent_version,
                incumbent.intent,
                incumbent.confidence,
                datetime.now(UTC),
            ]
        )

    async def aclose(self) -> None:
        await self.sink.aclose()
