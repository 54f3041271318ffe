"""The trained intent model on disk: a linear layer over sentence embeddings (numpy .npz) and its card.json.

Plain arrays rather than a pickled estimator, so loading runs no code and inference needs numpy only.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.settings import get_settings

FORMAT: Final = "switchyard.intent-classifier/1"
WEIGHTS_FILE: Final = "intent_model.npz"
CARD_FILE: Final = "card.json"


class IntentArtifactError(RuntimeError):
    """The artifact directory is missing a file or its files disagree; retrain with `python -m
    services.router.intents.train --out DIR`."""


@dataclass(frozen=True)
class LinearIntentModel:
    """Multinomial logistic regression, frozen: softmax(embeddings @ coef.T + intercept)."""

    classes: tuple[str, ...]
    coef: NDArray[np.float64]
    intercept: NDArray[np.float64]

    def probabilities(self, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
        """One row per embedding, one column per class in `classes` order; rows sum to 1."""
        logits = embeddings.astype(np.float64) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def fingerprint(self, embedder_version: str) -> str:
        """The artifact's version: a hash of the weights, the class order and the embedding space they apply to."""
        digest = hashlib.sha256()
        digest.update(embedder_version.encode())
        digest.update("\n".join(self.classes).encode())
        digest.update(np.ascontiguousarray(self.coef, dtype="<f8").tobytes())
        digest.update(np.ascontiguousarray(self.intercept, dtype="<f8").tobytes())
        return digest.hexdigest()[:16]


def default_artifact_dir() -> Path:
    """Where the router looks for its model: var/models/intent (git-ignored run-time state)."""
    return get_settings().var_dir / "models" / "intent"


def save(directory: Path, model: LinearIntentModel, card: dict[str, Any]) -> None:
    """Weights first, card last and each by atomic rename: a card on disk always describes complete weights."""
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / WEIGHTS_FILE
    partial = directory / f".{WEIGHTS_FILE}.{os.getpid()}.tmp"
    with partial.open("wb") as file:
        np.savez(file, classes=np.array(model.classes), coef=model.coef, intercept=model.intercept)
    os.replace(partial, weights)
    card_partial = directory / f".{CARD_FILE}.{os.getpid()}.tmp"
    card_partial.write_text(json.dumps(card, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(card_partial, directory / CARD_FILE)


def read_card(directory: Path) -> dict[str, Any] | None:
    """The card, or None where no complete artifact is there yet."""
    path = directory / CARD_FILE
    if not path.is_file() or not (directory / WEIGHTS_FILE).is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise IntentArtifactError(f"{path}: not JSON ({error.msg}): retrain into this directory") from error
    if not isinstance(card, dict) or card.get("format") != FORMAT:
        raise IntentArtifactError(f"{path}: not a {FORMAT} card: retrain into this directory")
    return card


def load_model(directory: Path) -> LinearIntentModel:
    path = directory / WEIGHTS_FILE
    if not path.is_file():
        raise IntentArtifactError(f"{path} is missing: train with `python -m services.router.intents.train`")
    with np.load(path, allow_pickle=False) as arrays:
        return LinearIntentModel(
            classes=tuple(str(name) for name in arrays["classes"]),
            coef=np.asarray(arrays["coef"], dtype=np.float64),
            intercept=np.asarray(arrays["intercept"], dtype=np.float64),
        )
