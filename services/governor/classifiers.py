"""The governor's trained text classifiers (toxicity of a request, prompt injection in a request or passage):
the router's frozen MiniLM sentence embedder and a logistic regression over it, saved as plain arrays.

Reuses services.router.intents (embedder, LinearIntentModel, artifact.save/load_model): a binary logistic
regression is stored as the equivalent two-class softmax. `python -m services.governor.classifiers` retrains both
and prints their held-out precision and recall; the governor trains a missing or stale one at start-up (seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.settings import get_settings
from services.shared import model_artifact as artifact
from services.shared.embedder import DIMENSION, SentenceEmbedder
from services.shared.families import near_duplicate_families
from services.shared.model_artifact import LinearIntentModel

DATA_DIR: Final = Path(__file__).resolve().parent / "data"
FORMAT: Final = "switchyard.binary-text-classifier/1"
SEED: Final = 7
TEST_FRACTION: Final = 0.25
REGULARISATION_C: Final = 4.0
# One embedding call pads every text to its longest and costs about as much as 12 more word pieces on its own
# (the weights streamed through the cache, ~4 ms of CPU on 2 cores); past ~1,000 padded pieces a call gets slower
# per piece. Texts are embedded in bands of similar length within those bounds: with 16 to 64 requests in a batch
# this cut the CPU of the governor's embeddings by a third to a half, and a text's vector does not depend on its
# band (padding is masked: the vectors are the same to the bit).
CALL_COST_PIECES: Final = 12
MAX_CALL_PIECES: Final = 1024
CHARS_PER_PIECE: Final = 3.5  # an estimate of length before tokenising: it only decides the bands


class ClassifierDataError(ValueError):
    """A labelled line cannot be used; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class BinaryTask:
    """A labelled set with a positive and a negative label, and the probability from which a text is positive."""

    name: str
    data: Path
    positive: str
    negative: str
    threshold: float = 0.5

    def artifact_dir(self) -> Path:
        return get_settings().var_dir / "models" / self.name

    def load(self) -> tuple[list[str], NDArray[np.int_]]:
        texts: list[str] = []
        labels: list[int] = []
        for number, line in enumerate(self.data.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            if record.get("label") not in (self.positive, self.negative) or not str(record.get("text", "")).strip():
                raise ClassifierDataError(
                    f"{self.data}:{number}: expected {{'text': ..., 'label': '{self.positive}'|'{self.negative}'}}"
                )
            texts.append(record["text"])
            labels.append(int(record["label"] == self.positive))
        return texts, np.asarray(labels)

    def data_sha256(self) -> str:
        return hashlib.sha256(self.data.read_bytes()).hexdigest()


TOXICITY: Final = BinaryTask("toxicity", DATA_DIR / "toxicity.jsonl", "abusive", "clean")
INJECTION: Final = BinaryTask("injection", DATA_DIR / "injection.jsonl", "injection", "benign", threshold=0.7)


def fit(embeddings: NDArray[np.float32], labels: NDArray[np.int_], seed: int = SEED) -> LinearIntentModel:
    from sklearn.linear_model import LogisticRegression  # training only: inference is numpy

    estimator = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", max_iter=5000, random_state=seed)
    estimator.fit(embeddings, labels)
    return two_class_model(np.asarray(estimator.coef_, dtype=np.float64)[0], float(estimator.intercept_[0]))


def two_class_model(weights: NDArray[np.float64], bias: float) -> LinearIntentModel:
    """sigmoid(x @ weights + bias) in the two-class softmax form the intent artifact stores:
    softmax([-z/2, z/2]) == sigmoid(z)."""
    return LinearIntentModel(
        classes=("negative", "positive"),
        coef=np.vstack([-weights / 2, weights / 2]),
        intercept=np.array([-bias / 2, bias / 2]),
    )


def length_bands(texts: Sequence[str]) -> list[list[int]]:
    """Indices of `texts`, shortest first, cut into bands that each make one embedding call: a new band starts
    where padding the band so far to the next text would cost more than another call, or the call grows too big."""
    pieces = [2 + len(text) / CHARS_PER_PIECE for text in texts]  # [CLS] and [SEP]
    bands: list[list[int]] = []
    widest = 0.0
    for index in sorted(range(len(texts)), key=pieces.__getitem__):
        band = bands[-1] if bands else []
        padding = len(band) * (pieces[index] - widest)
        if not band or padding > CALL_COST_PIECES or (len(band) + 1) * pieces[index] > MAX_CALL_PIECES:
            bands.append([index])
        else:
            band.append(index)
        widest = pieces[index]
    return bands


def scores(model: LinearIntentModel, embeddings: NDArray[np.float32]) -> NDArray[np.float64]:
    return model.probabilities(embeddings)[:, 1]


def binary_metrics(expected: Sequence[int], predicted: Sequence[int]) -> dict[str, float | int]:
    pairs = list(zip(expected, predicted, strict=True))
    tp = sum(1 for e, p in pairs if e and p)
    fp = sum(1 for e, p in pairs if not e and p)
    fn = sum(1 for e, p in pairs if e and not p)
    tn = sum(1 for e, p in pairs if not e and not p)
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "false_positive_rate": round(fp / (fp + tn) if fp + tn else 0.0, 4),
        "positives": tp + fn,
        "negatives": fp + tn,
    }


def held_out_rows(
    texts: Sequence[str], labels: NDArray[np.int_], *, by: str = "family"
) -> tuple[NDArray[np.int_], NDArray[np.int_], str]:
    """(train rows, test rows, how they were split): about TEST_FRACTION of the set held out, stratified by label;
    by="family" keeps each family of near-duplicates (services.shared.families) whole on one side."""
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    rows = np.arange(len(texts))
    if by == "row":
        train_rows, test_rows = train_test_split(rows, test_size=TEST_FRACTION, stratify=labels, random_state=SEED)
        return train_rows, test_rows, f"stratified row split, {TEST_FRACTION:.0%} of the set held out, seed {SEED}"
    if by != "family":
        raise ValueError(f"held_out_rows(by={by!r}): use 'family' or 'row'")
    groups = near_duplicate_families(texts)
    folds = StratifiedGroupKFold(n_splits=round(1 / TEST_FRACTION), shuffle=True, random_state=SEED)
    train_rows, test_rows = next(folds.split(rows, labels, groups))
    held = len(set(groups[test_rows].tolist()))
    return (
        train_rows,
        test_rows,
        f"family split: {held} of {len(set(groups.tolist()))} families of near-duplicates held out "
        f"(about {TEST_FRACTION:.0%} of the set, stratified by label), seed {SEED}",
    )


def evaluate_held_out(
    task: BinaryTask,
    texts: Sequence[str],
    embeddings: NDArray[np.float32],
    labels: NDArray[np.int_],
    *,
    by: str = "family",
) -> dict[str, Any]:
    """Fits on about 75% of the set and scores the rest. `by="family"` (the default) holds out whole families of
    near-duplicates (services.shared.families), stratified by label, so no text is scored while its twin was
    trained on; `by="row"` is the older stratified row split, kept to show how much it flattered the figures."""
    train_rows, test_rows, split = held_out_rows(texts, labels, by=by)
    model = fit(embeddings[train_rows], labels[train_rows])
    predicted = (scores(model, embeddings[test_rows]) >= task.threshold).astype(int)
    expected = labels[test_rows]
    return {
        "split": split,
        "train_examples": len(train_rows),
        "test_examples": len(test_rows),
        **binary_metrics(expected.tolist(), predicted.tolist()),
        "errors": [
            {"text": texts[row], "expected": int(want), "predicted": int(got)}
            for row, want, got in zip(test_rows, expected, predicted, strict=True)
            if want != got
        ],
    }


def train(task: BinaryTask, out: Path | None = None, *, embedder: SentenceEmbedder | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    out = out or task.artifact_dir()
    embedder = embedder or SentenceEmbedder()
    texts, labels = task.load()
    embeddings = embedder.embed(texts)
    evaluation = evaluate_held_out(task, texts, embeddings, labels)
    model = fit(embeddings, labels)
    card = {
        "format": FORMAT,
        "task": task.name,
        "version": model.fingerprint(embedder.version),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": task.data.name, "sha256": task.data_sha256(), "examples": len(texts)},
        "labels": {"positive": task.positive, "negative": task.negative},
        "threshold": task.threshold,
        "embedder": embedder.version,
        "classifier": "logistic regression (scikit-learn, balanced class weights) over MiniLM embeddings",
        "evaluation": evaluation,
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    artifact.save(out, model, card)
    return card


class BinaryClassifier:
    """P(positive) for texts; thread-safe once loaded, a few ms of CPU per call, so called off the event loop."""

    def __init__(self, task: BinaryTask, model: LinearIntentModel, embedder: SentenceEmbedder, card: dict[str, Any]):
        self.task, self._model, self._embedder, self.card = task, model, embedder, card
        self.version = model.fingerprint(embedder.version)

    @property
    def embedder(self) -> SentenceEmbedder:
        return self._embedder

    def probabilities(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return self.probabilities_of(self.embed(texts))

    def probabilities_of(self, embeddings: NDArray[np.float32]) -> list[float]:
        """The same for texts already embedded (by the same embedder): one embedding serves several classifiers."""
        return [float(p) for p in scores(self._model, embeddings)] if len(embeddings) else []

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """The embedder's vectors, one call per band of similar lengths (length_bands)."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts; wrap a single text in a list")
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        for band in length_bands(texts):
            vectors[band] = self._embedder.embed([texts[i] for i in band])
        return vectors


def ensure_trained(task: BinaryTask, *, embedder: SentenceEmbedder, out: Path | None = None) -> BinaryClassifier:
    """The task's classifier, trained first when missing or trained on other data or embeddings."""
    out = out or task.artifact_dir()
    card_path = out / artifact.CARD_FILE
    card: dict[str, Any] | None = None
    if card_path.is_file() and (out / artifact.WEIGHTS_FILE).is_file():
        try:
            card = json.loads(card_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            card = None
    stale = (
        card is None
        or card.get("format") != FORMAT
        or card.get("data", {}).get("sha256") != task.data_sha256()
        or card.get("embedder") != embedder.version
    )
    if stale:
        card = train(task, out, embedder=embedder)
    assert card is not None
    model = artifact.load_model(out)
    classifier = BinaryClassifier(task, model, embedder, card)
    if card.get("version") != classifier.version:
        card = train(task, out, embedder=embedder)
        classifier = BinaryClassifier(task, artifact.load_model(out), embedder, card)
    return classifier


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.governor.classifiers", description=__doc__)
    parser.parse_args(argv)
    embedder = SentenceEmbedder()
    for task in (TOXICITY, INJECTION):
        card = train(task, embedder=embedder)
        e = card["evaluation"]
        print(
            f"{task.name}: {card['data']['examples']} examples; held-out {e['test_examples']} "
            f"({e['split']}): precision {e['precision']:.3f}, recall {e['recall']:.3f}, "
            f"false-positive rate {e['false_positive_rate']:.3f} -> {task.artifact_dir()}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
