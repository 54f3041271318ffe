"""The router's cheap first intent model and the cascade threshold that decides when it may decide alone.

The cheap model is a multinomial logistic regression over two feature sets that cost tens of microseconds a text: the
static embedding distilled from MiniLM (`static.py`) and the hashed character n-grams of the answer-toxicity cascade
(`services.governor.char_ngram.features`). Where its top probability reaches the card's `decide_at`, its intent
stands; every other text goes to the MiniLM classifier, exactly as before.

`decide_at` is chosen on validation template families only (the same family splits as the toxicity cascade: texts
sharing a 3-word run are one family, so no near-copy of a validation or test text is trained on): the lowest
threshold at which the cascade is at least as accurate as MiniLM alone on the validation families. The test families
then report MiniLM alone, the cheap model alone and the cascade, with the share escalated; a unit test holds those
figures as floors. The shipped cheap model is refitted on the whole set with the same settings; the threshold stays.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.governor.char_ngram import BUCKET_BITS, FEATURES, family_splits, features
from services.shared.embedder import DIMENSION
from services.shared.static_embedder import StaticEmbedder

CHEAP_FILE: Final = "cheap_model.npz"
CHEAP_C: Final = 30.0  # on template-family folds C=30 escalated 25% at equal accuracy, C=10 32%
SEED: Final = 20
INTENT_BITS: Final = 16  # the n-gram buckets folded to 2^16: a third of the training time, the same accuracy
SHIFT: Final = BUCKET_BITS - INTENT_BITS


@dataclass(frozen=True)
class CheapIntentModel:
    """P(intent) from the static embedding and hashed n-grams; `decide_at` is the cascade's threshold."""

    classes: tuple[str, ...]
    dense: NDArray[np.float32]  # classes x DIMENSION: the static-embedding weights
    sparse: NDArray[np.float32]  # (2^INTENT_BITS) x classes: one row per folded n-gram bucket
    intercept: NDArray[np.float64]
    decide_at: float
    static: StaticEmbedder

    @property
    def version(self) -> str:
        return _version(self.classes, self.dense, self.sparse, self.intercept, self.decide_at, self.static.version)

    def probabilities(self, texts: Sequence[str]) -> NDArray[np.float64]:
        """One row per text, columns in `classes` order."""
        vectors = self.static.embed(texts)
        logits = vectors.astype(np.float64) @ self.dense.T.astype(np.float64) + self.intercept
        for row, text in enumerate(texts):
            buckets, values = features(text)
            logits[row] += values @ self.sparse[buckets >> SHIFT].astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probabilities: NDArray[np.float64] = exp / exp.sum(axis=1, keepdims=True)
        return probabilities

    def save(self, directory: Path) -> None:
        np.savez(
            directory / CHEAP_FILE,
            classes=np.array(self.classes),
            dense=self.dense,
            sparse=self.sparse,
            intercept=self.intercept,
            decide_at=np.array(self.decide_at),
        )

    @classmethod
    def load(cls, directory: Path, static: StaticEmbedder) -> CheapIntentModel | None:
        """The saved model, or None where the directory has none (a classifier without a cascade)."""
        path = directory / CHEAP_FILE
        if not path.is_file():
            return None
        with np.load(path) as data:
            return cls(
                classes=tuple(str(name) for name in data["classes"]),
                dense=data["dense"],
                sparse=data["sparse"],
                intercept=data["intercept"],
                decide_at=float(data["decide_at"]),
                static=static,
            )


def _version(
    classes: Sequence[str],
    dense: NDArray[np.float32],
    sparse: NDArray[np.float32],
    intercept: NDArray[np.float64],
    decide_at: float,
    static_version: str,
) -> str:
    digest = hashlib.sha256()
    for part in (dense, sparse, intercept):
        digest.update(np.ascontiguousarray(part).tobytes())
    digest.update("|".join([*classes, static_version, FEATURES, f"decide_at={decide_at:.4f}"]).encode())
    return f"cheap-{digest.hexdigest()[:12]}"


def saved_version(directory: Path, static_version: str) -> str | None:
    """The version of the cheap model saved in `directory` (as `CheapIntentModel.version` computes it, without
    loading the static table), or None where there is none: what an import checks the card against."""
    path = directory / CHEAP_FILE
    if not path.is_file():
        return None
    with np.load(path) as data:
        return _version(
            tuple(str(name) for name in data["classes"]),
            data["dense"],
            data["sparse"],
            data["intercept"],
            float(data["decide_at"]),
            static_version,
        )


def matrix(texts: Sequence[str], static: StaticEmbedder) -> Any:
    """[static embedding | hashed n-grams] as one scipy CSR matrix, for training."""
    from scipy.sparse import csr_matrix, hstack  # training only

    rows = [features(text) for text in texts]
    indptr = np.cumsum([0, *(len(buckets) for buckets, _ in rows)])
    indices = np.concatenate([buckets for buckets, _ in rows]) >> SHIFT
    data = np.concatenate([values for _, values in rows])
    grams = csr_matrix((data, indices, indptr), shape=(len(texts), 1 << INTENT_BITS))
    grams.sum_duplicates()
    return hstack([csr_matrix(static.embed(texts)), grams]).tocsr()


def fit(
    texts: Sequence[str], intents: Sequence[str], static: StaticEmbedder, decide_at: float = 1.0
) -> CheapIntentModel:
    from sklearn.linear_model import LogisticRegression  # training only: inference is numpy

    estimator = LogisticRegression(C=CHEAP_C, max_iter=5000, random_state=SEED)
    estimator.fit(matrix(texts, static), np.asarray(intents))
    coef = np.asarray(estimator.coef_, dtype=np.float64)
    return CheapIntentModel(
        classes=tuple(str(name) for name in estimator.classes_),
        dense=coef[:, :DIMENSION].astype(np.float32),
        sparse=np.ascontiguousarray(coef[:, DIMENSION:].T).astype(np.float32),
        intercept=np.asarray(estimator.intercept_, dtype=np.float64),
        decide_at=decide_at,
        static=static,
    )


def choose_threshold(cheap: NDArray[np.float64], minilm: NDArray[np.float64], expected: NDArray[np.int_]) -> float:
    """The lowest confidence at which the cascade (cheap where its top probability reaches it, MiniLM elsewhere) is
    at least as accurate as MiniLM alone on these rows; 1.0 (never decide cheaply) where no threshold is."""
    target = float((minilm.argmax(axis=1) == expected).mean())
    confidence, cheap_right = cheap.max(axis=1), cheap.argmax(axis=1) == expected
    minilm_right = minilm.argmax(axis=1) == expected
    for threshold in sorted(set(np.round(confidence, 4).tolist())):
        decided = confidence >= threshold
        if float(np.where(decided, cheap_right, minilm_right).mean()) >= target:
            return float(threshold)
    return 1.0


def cascade_metrics(
    cheap: NDArray[np.float64], minilm: NDArray[np.float64], expected: NDArray[np.int_], decide_at: float
) -> dict[str, Any]:
    from sklearn.metrics import f1_score  # training only

    decided = cheap.max(axis=1) >= decide_at
    cascade = np.where(decided, cheap.argmax(axis=1), minilm.argmax(axis=1))
    result: dict[str, Any] = {"examples": len(expected), "escalated": round(float(1 - decided.mean()), 4)}
    for name, predicted in (("minilm", minilm.argmax(axis=1)), ("cheap", cheap.argmax(axis=1)), ("cascade", cascade)):
        result[f"{name}_accuracy"] = round(float((predicted == expected).mean()), 4)
        result[f"{name}_macro_f1"] = round(float(f1_score(expected, predicted, average="macro", zero_division=0.0)), 4)
    return result


def train_cascade(
    texts: Sequence[str],
    intents: Sequence[str],
    embeddings: NDArray[np.float32],
    static: StaticEmbedder,
    minilm_fit: Any,
) -> tuple[CheapIntentModel, dict[str, Any]]:
    """The cheap model refitted on every text with the threshold chosen on the validation families, and the card
    section: the split, the threshold and the test-family figures. `minilm_fit(embeddings, intents)` fits the
    MiniLM classifier the same way the router's own training does."""
    classes = sorted(set(intents))
    labels = np.array([classes.index(intent) for intent in intents])
    splits = family_splits(texts, labels)
    train_texts = [texts[i] for i in splits.train]
    train_intents = [intents[i] for i in splits.train]
    cheap = fit(train_texts, train_intents, static)
    minilm = minilm_fit(embeddings[splits.train], train_intents)
    assert list(cheap.classes) == classes and list(minilm.classes) == classes, "both models see every intent"

    def both(rows: NDArray[np.int_]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        return cheap.probabilities([texts[i] for i in rows]), minilm.probabilities(embeddings[rows])

    decide_at = choose_threshold(*both(splits.validation), labels[splits.validation])
    section = {
        "cheap_model": "multinomial logistic regression over the static embedding and hashed char n-grams",
        "C": CHEAP_C,
        "static_embedder": static.version,
        "features": FEATURES,
        "decide_at": decide_at,
        "split": "template families (texts sharing a 3-word run), StratifiedGroupKFold: one fold tests, one "
        "validates, eight train; the threshold is the lowest at which the cascade matches MiniLM's accuracy on "
        "the validation families",
        "validation": cascade_metrics(*both(splits.validation), labels[splits.validation], decide_at),
        "test": cascade_metrics(*both(splits.test), labels[splits.test], decide_at),
    }
    shipped = fit(texts, intents, static, decide_at=decide_at)
    return shipped, section


def decided(probabilities: NDArray[np.float64], decide_at: float) -> NDArray[np.bool_]:
    """Rows the cheap model decides alone."""
    confident: NDArray[np.bool_] = probabilities.max(axis=1) >= decide_at
    return confident
