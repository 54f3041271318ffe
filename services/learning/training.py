"""`switchyard train`: custom models from an exported data set, evaluated against the incumbent and registered.

answers (the answer memory, services/answerer/memory.py): why retrieval over MiniLM embeddings, not a small
sequence model or a fine-tuned GGUF: for narrow policy intents the right answer is one of a few dozen approved
texts, so returning the nearest approved or corrected answer cannot hallucinate, trains in a second on 2 cores,
needs no GPU, and answers in the time of one embedding (~5 ms) instead of a model call; where the nearest answer
is not close enough it declines and the large model answers. The threshold is learned on the training split:
held-out parts of the train split give (confidence, correct?) pairs (correct: the neighbour's answer states the
held-out answer's values, services/learning/metrics.py), and the threshold is the lowest confidence at which the
answers above it are at least `target_precision` correct. Two ways to pick the answer are measured on
those held-out parts and the one that answers more at the target precision ships: the nearest stored question
(cosine similarity), or a softmax layer over the distinct answers (its probability), which generalises better
to new phrasings. Measured by `make demo-learning`.

The evaluation's incumbent is what answers the intents now: the promoted custom model where one is (its answers,
the recorded ones where it declines), else the answers the configured route gave (PromotedIncumbent).

router: the intent classifier refitted on its seed set plus production labels
(services/router/intents/train.py: retrain_with_production).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.answerer.memory import KIND as MEMORY_KIND
from services.answerer.memory import AnswerMemory, question_of, shared_embedder
from services.learning.compare import compare
from services.learning.export import POSITIVE, load_examples
from services.learning.metrics import is_correct, normalise
from services.learning.registry import ModelRegistry
from services.learning.unseen import unseen_evaluation
from services.shared.embedder import SentenceEmbedder

NARROW_INTENTS: Final = ("return_or_refund", "loyalty_account")
DEFAULT_TARGET_PRECISION: Final = 0.9
MIN_SUPPORT: Final = 5
MIN_THRESHOLD: Final = 0.3
NEVER: Final = 1.01  # above any similarity or probability: the memory declines everything
METHODS: Final = ("nearest", "linear")
FOLDS: Final = 5
SEED: Final = 20
C: Final = 10.0
NEAR_TWIN: Final = 0.9  # cosine at which two training questions are one question in other words (greetings)


def threshold_for(
    scores: NDArray[np.float64], correct: NDArray[np.bool_], *, target_precision: float, min_support: int = MIN_SUPPORT
) -> float:
    """The lowest confidence at which the answers at or above it are at least `target_precision` correct, over at
    least `min_support` examples; NEVER when there is none."""
    order = np.argsort(-scores, kind="stable")
    counts = np.arange(1, len(order) + 1)
    precision = np.cumsum(correct[order]) / counts
    valid = np.flatnonzero((precision >= target_precision) & (counts >= min_support))
    return max(MIN_THRESHOLD, float(scores[order[valid[-1]]])) if len(valid) else NEVER


def learn_threshold(
    embeddings: NDArray[np.float32],
    answers: Sequence[str],
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    min_support: int = MIN_SUPPORT,
) -> float:
    """The nearest-neighbour threshold from leave-one-out (similarity, correct?) pairs on the training split."""
    scores, correct = held_out_scores("nearest", embeddings, answers)
    return threshold_for(scores, correct, target_precision=target_precision, min_support=min_support)


def held_out_scores(
    method: str, embeddings: NDArray[np.float32], answers: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Each training example answered by a memory that never saw it nor any near-twin of it (the same question
    with another greeting: NEAR_TWIN similarity, grouped transitively): leave-one-group-out for nearest, 5-fold by
    group for linear. With twins on both sides, the threshold learnt was for questions already seen, and the
    memory declined every new phrasing. Then each example again, answered by a memory never taught its answer
    (all wrong by construction): what a question about something untaught scores, so the threshold declines it."""
    if len(answers) < 2:
        return np.zeros(0), np.zeros(0, dtype=bool)
    phrased, phrased_correct = _new_phrasing_scores(method, embeddings, answers)
    untaught = _untaught_scores(method, embeddings, answers)
    return np.concatenate([phrased, untaught]), np.concatenate([phrased_correct, np.zeros(len(untaught), dtype=bool)])


def _untaught_scores(method: str, embeddings: NDArray[np.float32], answers: Sequence[str]) -> NDArray[np.float64]:
    """Per example, the confidence of a memory fitted without any example of its answer."""
    labels = np.array([normalise(answer) for answer in answers])
    scores = []
    for label in sorted(set(labels.tolist())):
        taught, untaught = np.flatnonzero(labels != label), np.flatnonzero(labels == label)
        if len(set(labels[taught].tolist())) < 2:
            continue
        if method == "nearest":
            scores.append((embeddings[untaught] @ embeddings[taught].T).max(axis=1).astype(np.float64))
        else:
            memory = _fit_linear(embeddings[taught], [answers[int(i)] for i in taught], threshold=0.0)
            scores.append(np.array([confidence for _, confidence, _ in memory.predict(embeddings[untaught])]))
    return np.concatenate(scores) if scores else np.zeros(0)


def _new_phrasing_scores(
    method: str, embeddings: NDArray[np.float32], answers: Sequence[str]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    similarities = embeddings @ embeddings.T
    groups = near_twin_groups(similarities)
    if method == "nearest":
        masked = np.where(groups[:, None] == groups[None, :], -np.inf, similarities)
        nearest = masked.argmax(axis=1)
        scores = masked[np.arange(len(answers)), nearest].astype(np.float64)
        found = np.isfinite(scores)
        scores[~found] = -1.0
        return scores, np.array([bool(found[i]) and is_correct(answers[j], answers[i]) for i, j in enumerate(nearest)])
    from sklearn.model_selection import GroupKFold

    scores, correct = np.zeros(len(answers)), np.zeros(len(answers), dtype=bool)
    folds = min(FOLDS, len(set(groups.tolist())))
    if folds < 2:
        return np.zeros(0), np.zeros(0, dtype=bool)
    for fit_rows, held_rows in GroupKFold(folds).split(embeddings, groups=groups):
        memory = _fit_linear(embeddings[fit_rows], [answers[i] for i in fit_rows], threshold=0.0)
        for row, (answer, confidence, _) in zip(held_rows, memory.predict(embeddings[held_rows]), strict=True):
            scores[row], correct[row] = confidence, is_correct(answer, answers[row])
    return scores, correct


def near_twin_groups(similarities: NDArray[np.float32]) -> NDArray[np.int64]:
    """A group number per question: questions at NEAR_TWIN similarity or more share one, transitively."""
    parent = list(range(len(similarities)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(np.triu(similarities >= NEAR_TWIN, k=1)), strict=True):
        parent[root(int(i))] = root(int(j))
    return np.array([root(i) for i in range(len(similarities))], dtype=np.int64)


def _fit_linear(
    embeddings: NDArray[np.float32], answers: Sequence[str], *, threshold: float, intents: Sequence[str] = ()
) -> AnswerMemory:
    """A softmax layer over the distinct answers (told apart after normalisation)."""
    from sklearn.linear_model import LogisticRegression

    spelling: dict[str, str] = {}
    labels = [spelling.setdefault(normalise(a), a) for a in answers]
    classes = tuple(dict.fromkeys(labels))
    if len(classes) == 1:  # one answer: a constant layer that always gives it
        coef, intercept = np.zeros((1, embeddings.shape[1])), np.zeros(1)
    else:
        estimator = LogisticRegression(C=C, max_iter=5000, random_state=SEED).fit(embeddings, labels)
        order = [list(estimator.classes_).index(c) for c in classes]
        coef = np.asarray(estimator.coef_, dtype=np.float64)
        intercept = np.asarray(estimator.intercept_, dtype=np.float64)
        if len(classes) == 2:  # scikit-learn fits one column for two classes: expand it to a softmax pair
            coef, intercept = np.vstack([-coef[0] / 2, coef[0] / 2]), np.array([-intercept[0] / 2, intercept[0] / 2])
        coef, intercept = coef[order], intercept[order]
    return AnswerMemory(
        embeddings=embeddings,
        questions=(),
        answers=tuple(labels),
        intents=tuple(intents) or ("",) * len(labels),
        threshold=threshold,
        embedder="",
        method="linear",
        classes=classes,
        coef=coef,
        intercept=intercept,
    )


def _pairs(rows: list[dict[str, Any]], intents: Sequence[str]) -> list[dict[str, Any]]:
    return [r for r in rows if r["intent"] in intents and r["outcome"] in POSITIVE]


def train_answer_memory(
    dataset_dir: Path,
    intents: Sequence[str] = NARROW_INTENTS,
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
    embedder: SentenceEmbedder | None = None,
    incumbent: PromotedIncumbent | None = None,
) -> tuple[AnswerMemory, dict[str, Any]]:
    """The memory fitted on the train split, its method and threshold chosen on held-out parts of the train split
    (the method that answers more of them at the target precision), its evaluation on the eval split against
    the incumbent (`incumbent`: the promoted custom model; None: the answers recorded), and on questions no export
    can hold: new phrasings of the taught answers and questions about answers never taught."""
    embedder = embedder or shared_embedder()
    train = _pairs(load_examples(dataset_dir, "train"), intents)
    started = time.perf_counter()
    memory, selection = fit_answer_memory(
        [question_of(r["messages"]) for r in train],
        [r["target"] for r in train],
        [r["intent"] for r in train],
        embedder,
        target_precision=target_precision,
    )
    fit_seconds = time.perf_counter() - started
    evaluation = evaluate_memory(memory, dataset_dir, intents, embedder, incumbent)
    evaluation |= {
        "method": memory.method,
        "method_selection": selection,
        "threshold": round(memory.threshold, 6),
        "target_precision": target_precision,
        "train_examples": len(train),
        "fit_seconds": round(fit_seconds, 3),
        "metric": "accuracy = states the reference's values, none conflicting, same polarity; exact match where the "
        "reference states none (services/learning/metrics.py)",
        "unseen": unseen_evaluation(memory, embedder),
    }
    return memory, evaluation


def fit_answer_memory(
    questions: Sequence[str],
    answers: Sequence[str],
    intents: Sequence[str],
    embedder: SentenceEmbedder,
    *,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> tuple[AnswerMemory, dict[str, dict[str, float]]]:
    """The memory over these question/answer pairs, the method and threshold picked on held-out parts of them."""
    embeddings = embedder.embed(list(questions)) if questions else np.zeros((0, 384), dtype=np.float32)
    selection: dict[str, dict[str, float]] = {}
    for method in METHODS:
        scores, correct = held_out_scores(method, embeddings, list(answers))
        threshold = threshold_for(scores, correct, target_precision=target_precision)
        selection[method] = {
            "threshold": round(threshold, 6),
            "train_coverage": round(float(np.mean(scores >= threshold)) if len(scores) else 0.0, 6),
        }
    method = max(METHODS, key=lambda m: (selection[m]["train_coverage"], m == "nearest"))
    threshold = selection[method]["threshold"]
    memory = AnswerMemory(
        embeddings=embeddings,
        questions=tuple(questions),
        answers=tuple(answers),
        intents=tuple(intents),
        threshold=threshold,
        embedder=embedder.version,
    )
    if method == "linear":
        head = _fit_linear(embeddings, list(answers), threshold=threshold)
        memory = dataclasses.replace(
            memory, method="linear", classes=head.classes, coef=head.coef, intercept=head.intercept
        )
    return memory, selection


@dataclasses.dataclass(frozen=True)
class PromotedIncumbent:
    """The custom model promoted for some intents (the deployed answer memory and the intents of its live
    promotion): the incumbent a candidate must beat there, as the chain answers them now. Where it declines, the
    answer the chain recorded stands (the configured route's)."""

    model_id: str
    memory: AnswerMemory
    intents: frozenset[str]

    @classmethod
    def of(cls, registry: ModelRegistry) -> PromotedIncumbent | None:
        """The promoted answer memory, or None where none is deployed (the configured model is the incumbent)."""
        model_id = registry.deployed().get(MEMORY_KIND)
        promotion = registry.live_promotion(MEMORY_KIND)
        if not model_id or promotion is None:
            return None
        memory = AnswerMemory.load(registry.model_dir(model_id))
        return cls(model_id, memory, frozenset(promotion.get("intents", [])))

    def answers(self, questions: Sequence[str], intents: Sequence[str], embedder: SentenceEmbedder) -> list[str | None]:
        """Per question: the promoted model's answer on its own intents above its threshold, else None."""
        if not questions:
            return []
        predicted = self.memory.predict(embedder.embed(list(questions)))
        return [
            answer if intent in self.intents and confidence >= self.memory.threshold else None
            for (answer, confidence, _), intent in zip(predicted, intents, strict=True)
        ]


def evaluate_memory(
    memory: AnswerMemory,
    dataset_dir: Path,
    intents: Sequence[str],
    embedder: SentenceEmbedder,
    incumbent: PromotedIncumbent | None = None,
) -> dict[str, Any]:
    """On the eval split's positive examples of `intents`: the reference is the correction (or the approved
    answer); the incumbent is the promoted custom model where there is one and it answers, else the answer the
    chain recorded (the configured route's); the candidate is the memory, deferring to the incumbent below its
    threshold. Latency is one embedding and prediction per question, measured here."""
    rows = _pairs(load_examples(dataset_dir, "eval"), intents)
    candidate: list[str | None] = []
    latencies: list[float] = []
    for row in rows:
        started = time.perf_counter()
        answer, confidence, _ = memory.predict(embedder.embed([question_of(row["messages"])]))[0]
        latencies.append((time.perf_counter() - started) * 1000)
        candidate.append(answer if confidence >= memory.threshold else None)
    recorded = [r["answer"] for r in rows]
    promoted = (
        incumbent.answers([question_of(r["messages"]) for r in rows], [r["intent"] for r in rows], embedder)
        if incumbent is not None
        else [None] * len(rows)
    )
    standing = [p if p is not None else a for p, a in zip(promoted, recorded, strict=True)]
    comparison = compare([r["target"] for r in rows], standing, candidate, latencies)
    per_intent = {}
    for intent in intents:
        picked = [i for i, r in enumerate(rows) if r["intent"] == intent]
        if picked:
            per_intent[intent] = compare(
                [rows[i]["target"] for i in picked], [standing[i] for i in picked], [candidate[i] for i in picked]
            ).as_dict()
    who = {
        "incumbent": incumbent.model_id if incumbent is not None else "the configured route (answers recorded)",
        "incumbent_custom_share": round(sum(p is not None for p in promoted) / len(rows), 6) if rows else 0.0,
    }
    return {**comparison.as_dict(), **who, "per_intent": per_intent, "split": "eval (latest by time)"}


def train_and_register(
    task: str,
    dataset_dir: Path,
    registry: ModelRegistry,
    *,
    intents: Sequence[str] = NARROW_INTENTS,
    target_precision: float = DEFAULT_TARGET_PRECISION,
) -> str:
    """Trains the task's model on the data set, registers it with its data-set version, evaluation and parent
    (the deployed model of its kind); returns the new model id."""
    import json

    dataset_card = json.loads((dataset_dir / "card.json").read_text(encoding="utf-8"))
    dataset = {
        "version": dataset_card["version"],
        "content_sha256": dataset_card["content_sha256"],
        "path": str(dataset_dir),
    }
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        if task == "answers":
            memory, evaluation = train_answer_memory(
                dataset_dir, intents, target_precision=target_precision, incumbent=PromotedIncumbent.of(registry)
            )
            memory.save(work)
            card = {"method": "retrieval answer memory over MiniLM embeddings", "intents": list(intents)}
            kind = MEMORY_KIND
        else:
            from services.router.intents.train import retrain_with_production

            def pairs(split: str) -> list[tuple[str, str]]:
                rows = load_examples(dataset_dir, split)
                return [(question_of(r["messages"]), r["intent"]) for r in rows if r["outcome"] in POSITIVE]

            intent_card = retrain_with_production(pairs("train"), pairs("eval"), work, dataset=dataset)
            evaluation = intent_card["evaluation"]
            card = {"method": "intent classifier refit: seed set + production labels", "intents": []}
            kind = "router"
        parent = registry.deployed().get(kind)
        return registry.register(kind, work, card, dataset=dataset, evaluation=evaluation, parent=parent)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task", choices=("router", "answers"), required=True, help="train an intent classifier or an answer memory"
    )
    parser.add_argument("--data", type=Path, required=True, help="a directory `switchyard export-training` wrote")
    parser.add_argument("--intents", default=",".join(NARROW_INTENTS), help="answers: the intents to cover")
    parser.add_argument(
        "--target-precision",
        type=float,
        default=DEFAULT_TARGET_PRECISION,
        help="the precision the model must reach (default %(default)s)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard train", description="train, evaluate and register a model")
    add_arguments(parser)
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    model_id = train_and_register(
        args.task,
        args.data,
        registry,
        intents=[i for i in args.intents.split(",") if i],
        target_precision=args.target_precision,
    )
    evaluation = registry.card(model_id)["evaluation"]
    print(f"registered {model_id}")
    print("evaluation: " + ", ".join(f"{k}={v}" for k, v in evaluation.items() if not isinstance(v, (dict, list))))
    return 0
