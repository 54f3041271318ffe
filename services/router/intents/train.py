"""Trains the router's intent classifier: `python -m services.router.intents.train [--data F] [--out DIR]`.

The texts are embedded once with the frozen sentence embedder and a multinomial logistic regression is fitted on
the vectors. Why that classifier: the embedder already does the language work, so a linear layer is enough (5-fold
cross-validated macro-F1 0.86; a linear SVM scored the same, and char-n-gram TF-IDF features beside the embeddings
added under 0.02 for a second feature pipeline to ship); its softmax gives the route table probabilities to
threshold on; it fits in under a second and ships as two plain arrays. C = 10 was picked by that cross-validation
on the training split (C from 1 to 30 all lie within 0.003 macro-F1; larger C gives more decisive probabilities).

The metrics on the card come from a stratified held-out split with a fixed seed (the model fitted for that run
never sees the held-out texts); the shipped weights are then refitted on the whole set with the same settings.
Same data, seed and embedder give the same metrics and weights.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from services.router.intents.cascade import train_cascade
from services.router.intents.classifier import cascade_version
from services.router.intents.dataset import DEFAULT_DATA_PATH, data_sha256, load_examples
from services.settings import REPO_ROOT
from services.shared import model_artifact as artifact
from services.shared.embedder import SentenceEmbedder
from services.shared.model_artifact import LinearIntentModel, default_artifact_dir
from services.shared.static_embedder import ensure_built

DEFAULT_SEED: Final = 20
DEFAULT_TEST_FRACTION: Final = 0.2
REGULARISATION_C: Final = 10.0
THROUGHPUT_BATCH: Final = 64


def fit(embeddings: NDArray[np.float32], intents: Sequence[str], seed: int = DEFAULT_SEED) -> LinearIntentModel:
    estimator = LogisticRegression(C=REGULARISATION_C, max_iter=5000, random_state=seed)
    estimator.fit(embeddings, np.asarray(intents))
    return LinearIntentModel(
        classes=tuple(str(name) for name in estimator.classes_),
        coef=np.asarray(estimator.coef_, dtype=np.float64),
        intercept=np.asarray(estimator.intercept_, dtype=np.float64),
    )


def evaluate_held_out(
    texts: Sequence[str],
    embeddings: NDArray[np.float32],
    intents: Sequence[str],
    *,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
) -> dict[str, Any]:
    """Fits on a stratified split and scores the held-out part; the card's `evaluation` section."""
    indices = np.arange(len(texts))
    train_rows, test_rows = train_test_split(
        indices, test_size=test_fraction, stratify=np.asarray(intents), random_state=seed
    )
    model = fit(embeddings[train_rows], [intents[i] for i in train_rows], seed)
    probabilities = model.probabilities(embeddings[test_rows])
    predicted = [model.classes[i] for i in probabilities.argmax(axis=1)]
    expected = [intents[i] for i in test_rows]
    per_intent = f1_score(expected, predicted, labels=list(model.classes), average=None, zero_division=0.0)
    return {
        "split": "stratified held-out",
        "seed": seed,
        "test_fraction": test_fraction,
        "train_examples": len(train_rows),
        "test_examples": len(test_rows),
        "accuracy": round(float(accuracy_score(expected, predicted)), 6),
        "macro_f1": round(float(f1_score(expected, predicted, average="macro", zero_division=0.0)), 6),
        "per_intent_f1": {name: round(float(score), 6) for name, score in zip(model.classes, per_intent, strict=True)},
        "errors": [
            {"text": texts[row], "intent": want, "predicted": got}
            for row, want, got in zip(test_rows, expected, predicted, strict=True)
            if want != got
        ],
    }


def measure_throughput(embedder: SentenceEmbedder, model: LinearIntentModel, texts: Sequence[str]) -> dict[str, Any]:
    """Classifications per second, embedding included: one text per call, and calls of 64 texts."""
    sample = list(texts[:64])
    started = time.perf_counter()
    for text in sample:
        model.probabilities(embedder.embed([text]))
    single = len(sample) / (time.perf_counter() - started)
    batches = [list(texts[i : i + THROUGHPUT_BATCH]) for i in range(0, len(texts), THROUGHPUT_BATCH)]
    batches = [batch for batch in batches if len(batch) == THROUGHPUT_BATCH][:3] or [list(texts)]
    started = time.perf_counter()
    for batch in batches:
        model.probabilities(embedder.embed(batch))
    batched = sum(len(batch) for batch in batches) / (time.perf_counter() - started)
    return {
        "single_per_s": round(single, 1),
        f"batch_{THROUGHPUT_BATCH}_per_s": round(batched, 1),
        "note": "this machine, at training time; embedding is nearly all of it",
    }


def train(
    data_path: Path = DEFAULT_DATA_PATH,
    out: Path | None = None,
    *,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    embedder: SentenceEmbedder | None = None,
) -> dict[str, Any]:
    """Evaluates on the held-out split, refits on everything, writes the artifact to `out`; returns its card."""
    started = time.perf_counter()
    out = out or default_artifact_dir()
    embedder = embedder or SentenceEmbedder()
    examples = load_examples(data_path)
    texts = [example.text for example in examples]
    intents = [example.intent for example in examples]
    embeddings = embedder.embed(texts)
    evaluation = evaluate_held_out(texts, embeddings, intents, seed=seed, test_fraction=test_fraction)
    model = fit(embeddings, intents, seed)
    cheap, cascade = train_cascade(
        texts, intents, embeddings, ensure_built(embedder=embedder), lambda x, y: fit(x, y, seed)
    )
    card: dict[str, Any] = {
        "format": artifact.FORMAT,
        "version": cascade_version(model, embedder.version, cheap),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "path": _display_path(data_path),
            "sha256": data_sha256(data_path),
            "examples": len(examples),
            "per_intent": dict(sorted(Counter(intents).items())),
        },
        "embedder": embedder.version,
        "classifier": {
            "kind": "multinomial logistic regression (scikit-learn), softmax over embeddings",
            "C": REGULARISATION_C,
            "seed": seed,
            "fitted_on": "the whole data set; `evaluation` is from the held-out run",
        },
        "evaluation": evaluation,
        "cascade": cascade,
        "throughput": measure_throughput(embedder, model, texts),
    }
    card["training_seconds"] = round(time.perf_counter() - started, 2)
    out.mkdir(parents=True, exist_ok=True)
    cheap.save(out)  # before the card, whose replacement is what a running router reloads on
    artifact.save(out, model, card)
    return card


def retrain_with_production(
    production_train: Sequence[tuple[str, str]],
    production_eval: Sequence[tuple[str, str]],
    out: Path,
    *,
    incumbent: Path | None = None,
    data_path: Path = DEFAULT_DATA_PATH,
    seed: int = DEFAULT_SEED,
    embedder: SentenceEmbedder | None = None,
    dataset: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The classifier refitted on the seed set plus production labels (route corrections and confirmed intents,
    `(text, intent)` pairs from `switchyard export-training --task router`), where a production label replaces the
    seed's for the same text; evaluated on the held-out production split against the incumbent (the model in
    `incumbent`, default var/models/intent). Writes the artifact to `out` and returns its card, whose
    data.sha256 stays the seed set's, so the router's start-up check accepts it once deployed."""
    from services.router.intents.classifier import IntentClassifier  # numpy-only inference, no circular import

    embedder = embedder or SentenceEmbedder()
    labels = {" ".join(e.text.lower().split()): (e.text, e.intent) for e in load_examples(data_path)}
    seed_count = len(labels)
    for text, intent in production_train:
        labels[" ".join(text.lower().split())] = (text, intent)
    texts = [text for text, _ in labels.values()]
    intents = [intent for _, intent in labels.values()]
    model = fit(embedder.embed(texts), intents, seed)
    eval_texts = [text for text, _ in production_eval]
    expected = [intent for _, intent in production_eval]
    evaluation: dict[str, Any] = {"split": "production eval (by time)", "test_examples": len(eval_texts)}
    if eval_texts:
        eval_vectors = embedder.embed(eval_texts)
        predicted = [model.classes[i] for i in model.probabilities(eval_vectors).argmax(axis=1)]
        current = IntentClassifier.load(incumbent, embedder=embedder)
        before = [p.intent for p in current.classify_many(eval_texts)]
        evaluation |= {
            "candidate_accuracy": round(float(accuracy_score(expected, predicted)), 6),
            "incumbent_accuracy": round(float(accuracy_score(expected, before)), 6),
            "candidate_macro_f1": round(float(f1_score(expected, predicted, average="macro", zero_division=0.0)), 6),
            "incumbent_macro_f1": round(float(f1_score(expected, before, average="macro", zero_division=0.0)), 6),
            "incumbent_version": current.version,
        }
    card: dict[str, Any] = {
        "format": artifact.FORMAT,
        "version": model.fingerprint(embedder.version),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {
            "path": _display_path(data_path),
            "sha256": data_sha256(data_path),
            "examples": len(texts),
            "per_intent": dict(sorted(Counter(intents).items())),
            "seed_examples": seed_count,
            "production_examples": len(production_train),
            "production_dataset": dataset or {},
        },
        "embedder": embedder.version,
        "classifier": {"kind": "multinomial logistic regression over embeddings", "C": REGULARISATION_C, "seed": seed},
        "evaluation": evaluation,
    }
    artifact.save(out, model, card)
    return card


def _display_path(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else str(resolved)


def _report(card: dict[str, Any], out: Path) -> str:
    evaluation, cascade = card["evaluation"], card["cascade"]
    lines = [
        f"intent classifier {card['version']} -> {out}",
        f"data: {card['data']['examples']} examples, sha256 {card['data']['sha256'][:12]}; embedder {card['embedder']}",
        f"held-out ({evaluation['test_examples']} of {card['data']['examples']}, seed {evaluation['seed']}): "
        f"accuracy {evaluation['accuracy']:.3f}, macro-F1 {evaluation['macro_f1']:.3f}",
        *(f"  {name:<18} F1 {score:.3f}" for name, score in evaluation["per_intent_f1"].items()),
        f"cascade: the cheap model decides at confidence >= {cascade['decide_at']:.3f}; test families "
        f"({cascade['test']['examples']} texts): MiniLM {cascade['test']['minilm_accuracy']:.3f}, cheap alone "
        f"{cascade['test']['cheap_accuracy']:.3f}, cascade {cascade['test']['cascade_accuracy']:.3f} "
        f"(macro-F1 {cascade['test']['minilm_macro_f1']:.3f} / {cascade['test']['cascade_macro_f1']:.3f}), "
        f"{cascade['test']['escalated']:.1%} escalated to MiniLM",
        "classifications/s: "
        + ", ".join(f"{key} {value}" for key, value in card["throughput"].items() if key.endswith("_per_s")),
        f"trained in {card['training_seconds']} s (shipped weights refitted on all examples)",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.router.intents.train", description=(__doc__ or "").splitlines()[0]
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA_PATH, help="labelled JSONL (text, intent)")
    parser.add_argument("--out", type=Path, default=None, help="artifact directory (default var/models/intent)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed of the held-out split")
    parser.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION, help="held-out share")
    args = parser.parse_args(argv)
    out = args.out or default_artifact_dir()
    card = train(args.data, out, seed=args.seed, test_fraction=args.test_fraction)
    print(_report(card, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
