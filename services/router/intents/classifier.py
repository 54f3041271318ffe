"""The router's intent classifier at run time: a cascade of the cheap model (static embedding and n-grams, tens of
microseconds; `cascade.py`) and, where it is unsure, MiniLM's sentence embedding and the trained linear layer.

Thread-safe once loaded (nothing is mutated after `load`); `classify` blocks for a few milliseconds of CPU, so an
async stage calls it through a thread pool.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from services.router.intents.cascade import CheapIntentModel, decided
from services.router.intents.dataset import DEFAULT_DATA_PATH, data_sha256
from services.shared import model_artifact as artifact
from services.shared.embedder import SentenceEmbedder
from services.shared.model_artifact import IntentArtifactError, LinearIntentModel, default_artifact_dir


@dataclass(frozen=True)
class IntentPrediction:
    intent: str
    confidence: float
    runner_up: str
    runner_up_confidence: float


def cascade_version(model: LinearIntentModel, embedder_version: str, cheap: CheapIntentModel | None) -> str:
    """What decides a request's intent: the MiniLM layer, and the cheap model with its threshold where there is one."""
    version = model.fingerprint(embedder_version)
    return version if cheap is None else f"{version}+{cheap.version}"


class IntentClassifier:
    def __init__(
        self,
        model: LinearIntentModel,
        embedder: SentenceEmbedder,
        card: dict[str, Any],
        cheap: CheapIntentModel | None = None,
    ) -> None:
        self._model = model
        self._embedder = embedder
        self.card = card
        self.cheap = cheap if cheap is not None and cheap.classes == model.classes else None
        self.version = cascade_version(model, embedder.version, self.cheap)

    @classmethod
    def load(cls, path: Path | None = None, *, embedder: SentenceEmbedder | None = None) -> IntentClassifier:
        """The artifact in `path` (default var/models/intent); refuses one trained on another embedding space."""
        path = path or default_artifact_dir()
        card = artifact.read_card(path)
        if card is None:
            raise IntentArtifactError(
                f"no trained intent model in {path}: run `python -m services.router.intents.train`"
            )
        model = artifact.load_model(path)
        embedder = embedder or SentenceEmbedder()
        if card.get("embedder") != embedder.version:
            raise IntentArtifactError(
                f"{path} was trained on embedder {card.get('embedder')!r}, this one is {embedder.version!r}: retrain"
            )
        cheap = None
        if "cascade" in card:
            from services.shared.static_embedder import ensure_built

            cheap = CheapIntentModel.load(path, ensure_built(embedder=embedder))
        classifier = cls(model, embedder, card, cheap)
        if card.get("version") != classifier.version:
            raise IntentArtifactError(f"{path}: weights do not match their card's version: retrain into {path}")
        return classifier

    @property
    def intents(self) -> tuple[str, ...]:
        """The column order of `probabilities`."""
        return self._model.classes

    @property
    def embedder(self) -> SentenceEmbedder:
        return self._embedder

    def probabilities(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text, one column per intent in `intents` order; rows sum to 1."""
        return self._model.probabilities(self._embedder.embed(texts))

    def classify(self, text: str) -> IntentPrediction:
        return self.classify_many([text])[0]

    def classify_many(self, texts: Sequence[str]) -> list[IntentPrediction]:
        """The cascade: the cheap model where it is sure, MiniLM for the rest."""
        found = self.classify_cheaply(texts)
        unsure = [i for i, prediction in enumerate(found) if prediction is None]
        if unsure:
            for i, prediction in zip(
                unsure, self.classify_embeddings(self._embedder.embed([texts[i] for i in unsure])), strict=True
            ):
                found[i] = prediction
        return [prediction for prediction in found if prediction is not None]

    def classify_cheaply(self, texts: Sequence[str]) -> list[IntentPrediction | None]:
        """The cheap model's prediction where its confidence reaches the card's threshold, else None (MiniLM
        decides those); all None for a classifier without a cascade."""
        if self.cheap is None or not texts:
            return [None] * len(texts)
        probabilities = self.cheap.probabilities(texts)
        sure = decided(probabilities, self.cheap.decide_at)
        return [self._prediction(row) if ok else None for row, ok in zip(probabilities, sure, strict=True)]

    def classify_embeddings(self, embeddings: NDArray[np.float32]) -> list[IntentPrediction]:
        """For texts already embedded by this classifier's embedder (a shadow candidate reuses the incumbent's
        embeddings: both must share the embedding space, which `load` checks against the embedder's version)."""
        return [self._prediction(row) for row in self._model.probabilities(embeddings)]

    def _prediction(self, row: NDArray[np.float64]) -> IntentPrediction:
        second, first = np.argsort(row, kind="stable")[-2:]
        return IntentPrediction(
            intent=self._model.classes[first],
            confidence=float(row[first]),
            runner_up=self._model.classes[second],
            runner_up_confidence=float(row[second]),
        )


def ensure_trained(
    path: Path | None = None,
    *,
    data_path: Path = DEFAULT_DATA_PATH,
    embedder: SentenceEmbedder | None = None,
) -> IntentClassifier:
    """The classifier in `path`, trained first when it is missing, or was trained on other data or embeddings,
    so a fresh clone routes without a manual step (training takes seconds)."""
    path = path or default_artifact_dir()
    embedder = embedder or SentenceEmbedder()
    try:
        card = artifact.read_card(path)
    except IntentArtifactError:
        card = None  # an unreadable or older-format card is replaced, not repaired
    stale = (
        card is None
        or card.get("data", {}).get("sha256") != data_sha256(data_path)
        or card.get("embedder") != embedder.version
        or "cascade" not in card
    )
    if stale:
        # imported here so that loading a current model never imports scikit-learn: inference is numpy only
        from services.router.intents.train import train

        train(data_path, path, embedder=embedder)
    return IntentClassifier.load(path, embedder=embedder)
