"""The cheap first models of the toxicity and injection cascades: hashed character n-grams (3 to 5, within words)
and words, a logistic regression over them, saved as plain arrays with a card. Tens of microseconds of CPU a text.

Each only ever says "clean" (benign): a text scoring below the card's `sure_clean_below` is decided without MiniLM,
and every other text goes to MiniLM (classifiers.py). That threshold is chosen on validation families only, below
every positive validation text with a margin, and checked on test families no model was trained or tuned on. The
toxicity model serves the answerer's output guard and the governor's check of a request; the injection model serves
the governor's check of a request, and decides a text benign only where the injection patterns found nothing too
(`RequestCascade`). `python -m services.governor.char_ngram [--task injection]` retrains one; `--against-minilm`
prints its cascade against MiniLM alone.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.governor.classifiers import INJECTION, TOXICITY, BinaryTask, binary_metrics, two_class_model
from services.governor.injection import injection_signals
from services.settings import DATA_ROOT
from services.shared import model_artifact as artifact
from services.shared.model_artifact import LinearIntentModel

FORMAT: Final = "switchyard.char-ngram-classifier/1"
SEED: Final = 7
BUCKET_BITS: Final = 18
CHAR_NGRAMS: Final = (3, 5)
REGULARISATION_C: Final = 3.0
MAX_CHARS: Final = 2048  # longer texts are cut: the answerer scores an answer's first 48 words
# Below the lowest-scoring abusive validation text by this much log-odds. Chosen without the test fold: rotating test
# and validation over the other nine folds, 0.93 was the least margin that decided no abusive text clean that
# MiniLM caught; 1.0 is the next half step. The card's test evaluation and a unit test hold it as a floor.
MARGIN_LOGIT: Final = 1.0
# a text shares a family with any text it shares a run of this many words with (digits read as 0)
FAMILY_SHINGLE: Final = 3
SPLIT_FOLDS: Final = 10  # folds of families: one tests, one validates, eight train
# Answers are retail prose, which the labelled set (requests) hardly has: sentences of the knowledge base the
# answers draw on train as clean too, except those of every HELD_OUT_EVERY-th file, which measure escalation.
KNOWLEDGE_DIR: Final = DATA_ROOT / "knowledge"
# The injection set has few injection families (12): its cheap model also trains on the router's labelled retail
# requests as benign, so that ordinary till questions ("can I give this customer 15% off") score low. Measured on the
# validation and test families (2026-12-05): the test injections decided benign stay 0, benign test texts escalated
# fall from 34% to 32%, and the POS mix's requests decided without MiniLM rise from 38% to 46%.
BENIGN_REQUESTS: Final = Path(__file__).resolve().parents[1] / "router" / "intents" / "data" / "intents.jsonl"
HELD_OUT_EVERY: Final = 4
SENTENCES_PER_EXAMPLE: Final = 2
# Features and C chosen by the same nine-fold rotation (fewest clean answers escalated at a margin losing nothing):
# 3-5 grams at C=3 escalated 15% of held-out knowledge-base sentences, 2-5 grams at C=10 31%.
# what makes two artifacts compute the same features: bump on any change to features()
FEATURES: Final = f"char-wb {CHAR_NGRAMS[0]}-{CHAR_NGRAMS[1]} + words; hashed to 2^{BUCKET_BITS}; l2; v1"

_NOT_WORD: Final = re.compile(r"[^\w*']+")  # asterisks and apostrophes stay: "f***", "you're"
_DIGIT: Final = re.compile(r"\d")
_SENTENCE_END: Final = re.compile(r"(?<=[.!?])\s+")
_PRIME: Final = 0x100000001B3  # odd, so it has an inverse modulo 2^64
_WORD_SALT: Final = np.uint64(0x9E3779B97F4A7C15)


class CheapModelDataError(ValueError):
    """A split was left without one of the labels; the message names the split and the fix."""


def _powers(base: int) -> NDArray[np.uint64]:
    """base^0, base^1, ... modulo 2^64, one for each character a normalised text may have."""
    powers = np.ones(MAX_CHARS + 3, dtype=np.uint64)
    np.cumprod(np.full(MAX_CHARS + 2, base, dtype=np.uint64), out=powers[1:])
    return powers


_POWERS: Final = _powers(_PRIME)
_INVERSES: Final = _powers(pow(_PRIME, -1, 1 << 64))  # x * P^i * P^-i == x: a substring's hash from its start


def normalise(text: str) -> str:
    """Lowercase, digits as 0, anything but letters, digits, * and ' as one space; padded with a space each side."""
    return " " + _NOT_WORD.sub(" ", _DIGIT.sub("0", text[:MAX_CHARS].lower())).strip() + " "


def features(text: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """The text's hashed features: sorted bucket indices and their l2-normalised counts.

    Every substring hash comes from one prefix sum (a polynomial hash modulo 2^64, in numpy), so a text costs a
    fixed number of array operations rather than a Python call per n-gram."""
    codes = np.frombuffer(normalise(text).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    size = len(codes)
    prefix = np.zeros(size + 1, dtype=np.uint64)
    np.cumsum(codes * _POWERS[:size], out=prefix[1:])
    spaces = np.zeros(size + 1, dtype=np.int64)
    np.cumsum(codes == 32, out=spaces[1:])
    hashes = []
    for n in range(CHAR_NGRAMS[0], min(CHAR_NGRAMS[1], size) + 1):
        starts = np.arange(size - n + 1)
        starts = starts[spaces[starts + n - 1] == spaces[starts + 1]]  # a space at the ends only: within a word
        hashes.append(((prefix[starts + n] - prefix[starts]) * _INVERSES[starts]) ^ np.uint64(n))
    bounds = np.flatnonzero(codes == 32)
    begin, end = bounds[:-1] + 1, bounds[1:]
    hashes.append(((prefix[end] - prefix[begin]) * _INVERSES[begin]) ^ _WORD_SALT)
    buckets, counts = np.unique(_mix(np.concatenate(hashes)) >> np.uint64(64 - BUCKET_BITS), return_counts=True)
    values = counts.astype(np.float64)
    return buckets.astype(np.int64), values / np.sqrt(values @ values)


def _mix(hashes: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """splitmix64's finaliser: every input bit reaches the top bits that pick the bucket."""
    hashes = (hashes ^ (hashes >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    hashes = (hashes ^ (hashes >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return hashes ^ (hashes >> np.uint64(31))


@dataclass(frozen=True)
class CheapToxicity:
    """P(abusive) from hashed n-grams, and the score below which a text is decided clean without MiniLM."""

    weights: NDArray[np.float64]
    bias: float
    sure_clean_below: float
    version: str

    @classmethod
    def from_model(cls, model: LinearIntentModel, sure_clean_below: float) -> CheapToxicity:
        weights = model.coef[1] - model.coef[0]
        bias = float(model.intercept[1] - model.intercept[0])
        return cls(weights, bias, sure_clean_below, model.fingerprint(FEATURES))

    def score(self, text: str) -> float:
        buckets, values = features(text)
        logit = float(self.weights[buckets] @ values) + self.bias
        return 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0

    def sure_clean(self, score: float) -> bool:
        return score < self.sure_clean_below


@dataclass(frozen=True)
class RequestCascade:
    """The governor's check of a request text, cheap first: decided without MiniLM where the toxicity model is sure
    it is clean, the injection patterns find nothing and the injection model is sure it is benign; every other text
    goes to MiniLM's two classifiers. Both thresholds come from validation families (each model's card)."""

    toxicity: CheapToxicity
    injection: CheapToxicity

    @property
    def version(self) -> str:
        return hashlib.sha256(f"{self.toxicity.version};{self.injection.version}".encode()).hexdigest()[:16]

    def sure(self, text: str) -> tuple[float, float] | None:
        """(toxicity, injection) scores of a text decided here, both under their MiniLM thresholds; None: escalate."""
        toxicity = self.toxicity.score(text)
        if not self.toxicity.sure_clean(toxicity) or injection_signals(text):
            return None
        injection = self.injection.score(text)
        return (toxicity, injection) if self.injection.sure_clean(injection) else None


def request_cascade() -> RequestCascade:
    """Both cheap models, each trained first (about a second) where missing or stale."""
    return RequestCascade(ensure_trained(TOXICITY), ensure_trained(INJECTION))


def matrix(texts: Sequence[str]) -> Any:
    """The texts' features as a scipy CSR matrix, for training."""
    from scipy.sparse import csr_matrix  # training only

    rows = [features(text) for text in texts]
    indptr = np.cumsum([0, *(len(buckets) for buckets, _ in rows)])
    indices = np.concatenate([buckets for buckets, _ in rows])
    data = np.concatenate([values for _, values in rows])
    return csr_matrix((data, indices, indptr), shape=(len(texts), 1 << BUCKET_BITS))


def fit(texts: Sequence[str], labels: NDArray[np.int_]) -> LinearIntentModel:
    from sklearn.linear_model import LogisticRegression  # training only: inference is numpy

    # liblinear: a few tenths of a second on 2^18 sparse columns, where lbfgs takes seconds
    estimator = LogisticRegression(C=REGULARISATION_C, class_weight="balanced", solver="liblinear", random_state=SEED)
    estimator.fit(matrix(texts), labels)
    return two_class_model(np.asarray(estimator.coef_, dtype=np.float64)[0], float(estimator.intercept_[0]))


def families(texts: Sequence[str]) -> NDArray[np.int_]:
    """A family id per text: texts sharing a run of FAMILY_SHINGLE words (lowercased, digits as 0) are one family,
    and so is everything they chain to. The set has no template field; this groups the slot-filled templates
    ("do your job you <insult>", with "listen, " or "oi, " in front), their upper-case copies and reworded pairs,
    so that no split holds a near-copy of a text another split trained on."""
    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[tuple[str, ...], int] = {}
    for i, text in enumerate(texts):
        words = normalise(text).split()
        runs = [tuple(words[k : k + FAMILY_SHINGLE]) for k in range(len(words) - FAMILY_SHINGLE + 1)]
        for run in runs or [tuple(words)]:
            parent[root(i)] = root(first_seen.setdefault(run, i))
    first_member: dict[int, int] = {}  # a family's id is its first row, whatever order the unions ran in
    return np.array([first_member.setdefault(root(i), i) for i in range(len(texts))])


@dataclass(frozen=True)
class Splits:
    train: NDArray[np.int_]
    validation: NDArray[np.int_]
    test: NDArray[np.int_]


def family_splits(texts: Sequence[str], labels: NDArray[np.int_]) -> Splits:
    """Row indices of train, validation and test: whole families each, stratified by label (StratifiedGroupKFold,
    seeded): the first fold tests, the second validates, the others train."""
    from sklearn.model_selection import StratifiedGroupKFold

    folds = StratifiedGroupKFold(n_splits=SPLIT_FOLDS, shuffle=True, random_state=SEED)
    held = [rows for _, rows in folds.split(np.zeros(len(texts)), labels, families(texts))]
    test, validation = np.sort(held[0]), np.sort(held[1])
    train = np.setdiff1d(np.arange(len(texts)), np.concatenate([test, validation]))
    for name, rows in (("train", train), ("validation", validation), ("test", test)):
        if len(set(labels[rows].tolist())) < 2:
            raise CheapModelDataError(f"the {name} split has one label only: label more texts of the other")
    return Splits(train, validation, test)


def answer_like_texts(directory: Path = KNOWLEDGE_DIR) -> tuple[list[str], list[str]]:
    """Clean answer-like texts (SENTENCES_PER_EXAMPLE sentences of a knowledge passage each): those to train on,
    and those of every HELD_OUT_EVERY-th source file, held out. None where the knowledge base is not there."""
    if not directory.is_dir():
        return [], []
    from services.stitcher.knowledge import load_chunks  # training only: the stitcher's own reading of the sources

    _, chunks = load_chunks(directory)
    held_out = set(sorted({chunk.source for chunk in chunks})[::HELD_OUT_EVERY])
    train: list[str] = []
    held: list[str] = []
    for chunk in chunks:
        sentences = _SENTENCE_END.split(chunk.text)
        spans = [
            " ".join(sentences[i : i + SENTENCES_PER_EXAMPLE]) for i in range(0, len(sentences), SENTENCES_PER_EXAMPLE)
        ]
        (held if chunk.source in held_out else train).extend(spans)
    return train, held


def benign_requests(task: BinaryTask) -> list[str]:
    """Retail requests that train as negatives beside the task's own (the injection model's only, BENIGN_REQUESTS)."""
    if task.name != INJECTION.name:
        return []
    lines = BENIGN_REQUESTS.read_text(encoding="utf-8").splitlines()
    return [str(json.loads(line)["text"]) for line in lines if line.strip()]


def benign_requests_sha256(task: BinaryTask) -> str:
    return hashlib.sha256(BENIGN_REQUESTS.read_bytes()).hexdigest() if task.name == INJECTION.name else ""


def knowledge_sha256(directory: Path = KNOWLEDGE_DIR) -> str:
    digest = hashlib.sha256()
    for path in sorted(directory.rglob("*.md")) if directory.is_dir() else []:
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def sure_clean_threshold(scores: NDArray[np.float64], labels: NDArray[np.int_], ceiling: float) -> float:
    """MARGIN_LOGIT below the lowest score of an abusive text, and never above `ceiling` (the toxicity threshold:
    a text decided clean must not read as abusive to the guard)."""
    lowest = min(max(float(scores[labels == 1].min()), 1e-300), 1 - 1e-16)
    return min(1 / (1 + math.exp(MARGIN_LOGIT - math.log(lowest / (1 - lowest)))), ceiling)


def escalation(scores: NDArray[np.float64], labels: NDArray[np.int_], threshold: float) -> dict[str, Any]:
    """Of the clean and the abusive texts, the share that still goes to MiniLM, and the abusive ones that do not."""
    escalated = scores >= threshold
    return {
        "escalated_clean": round(float(escalated[labels == 0].mean()), 4),
        "escalated_abusive": round(float(escalated[labels == 1].mean()), 4),
        "abusive_decided_clean": int((~escalated & (labels == 1)).sum()),
    }


def train(task: BinaryTask = TOXICITY, out: Path | None = None, knowledge: Path = KNOWLEDGE_DIR) -> dict[str, Any]:
    """Fits on the train families and the answer-like texts, picks the threshold on the validation families and
    evaluates on the test ones; about a second."""
    started = time.perf_counter()
    out = out or artifact_dir(task)
    texts, labels = task.load()
    splits = family_splits(texts, labels)
    answer_like, answer_like_held = answer_like_texts(knowledge)
    benign = benign_requests(task)
    train_texts = [texts[i] for i in splits.train] + answer_like + benign
    negatives = len(answer_like) + len(benign)
    model = fit(train_texts, np.concatenate([labels[splits.train], np.zeros(negatives, dtype=int)]))
    scorer = CheapToxicity.from_model(model, sure_clean_below=1.0)
    scores = np.array([scorer.score(text) for text in texts])
    threshold = sure_clean_threshold(scores[splits.validation], labels[splits.validation], task.threshold)
    held_scores = np.array([scorer.score(text) for text in answer_like_held])
    card = {
        "format": FORMAT,
        "task": task.name,
        "version": scorer.version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": {"path": task.data.name, "sha256": task.data_sha256(), "examples": len(texts)},
        "answer_like": {
            "path": knowledge.name,
            "sha256": knowledge_sha256(knowledge),
            "trained_on": len(answer_like),
            "held_out": len(answer_like_held),
        },
        "benign_requests": {
            "path": BENIGN_REQUESTS.name if benign else "",
            "sha256": benign_requests_sha256(task),
            "trained_on": len(benign),
        },
        "labels": {"positive": task.positive, "negative": task.negative},
        "features": FEATURES,
        "classifier": "logistic regression (scikit-learn liblinear, balanced class weights) over hashed n-grams",
        "split": {
            "method": f"families of texts sharing a {FAMILY_SHINGLE}-word run; StratifiedGroupKFold "
            f"({SPLIT_FOLDS} folds, seed {SEED}): fold 0 tests, fold 1 validates, the rest trains",
            "train": split_counts(labels[splits.train], task),
            "validation": split_counts(labels[splits.validation], task),
            "test": split_counts(labels[splits.test], task),
        },
        "sure_clean_below": threshold,
        "threshold_rule": f"validation only: {MARGIN_LOGIT:g} log-odds below its lowest-scoring {task.positive} "
        f"text, at most the {task.name} threshold {task.threshold:g}",
        "evaluation": {
            **{
                name: {
                    **binary_metrics(labels[rows].tolist(), (scores[rows] >= task.threshold).astype(int).tolist()),
                    **escalation(scores[rows], labels[rows], threshold),
                }
                for name, rows in (("validation", splits.validation), ("test", splits.test))
            },
            "answer_like_held_out": {"escalated_clean": round(float((held_scores >= threshold).mean()), 4)}
            if len(held_scores)
            else {},
        },
        "training_seconds": round(time.perf_counter() - started, 2),
    }
    artifact.save(out, model, card)
    return card


def split_counts(labels: NDArray[np.int_], task: BinaryTask = TOXICITY) -> dict[str, int]:
    return {task.positive: int(labels.sum()), task.negative: int(len(labels) - labels.sum())}


def artifact_dir(task: BinaryTask = TOXICITY) -> Path:
    return task.artifact_dir().with_name(f"{task.name}-char-ngram")


def ensure_trained(task: BinaryTask = TOXICITY, out: Path | None = None) -> CheapToxicity:
    """The cheap model, trained first (about a second) when missing or trained on other data or features."""
    out = out or artifact_dir(task)
    card = read_card(out)
    if (
        card is None
        or card.get("data", {}).get("sha256") != task.data_sha256()
        or card.get("answer_like", {}).get("sha256") != knowledge_sha256()
        or card.get("benign_requests", {}).get("sha256") != benign_requests_sha256(task)
        or card.get("features") != FEATURES
    ):
        card = train(task, out)
    scorer = CheapToxicity.from_model(artifact.load_model(out), float(card["sure_clean_below"]))
    if card.get("version") != scorer.version:
        card = train(task, out)
        scorer = CheapToxicity.from_model(artifact.load_model(out), float(card["sure_clean_below"]))
    return scorer


def read_card(directory: Path) -> dict[str, Any] | None:
    """The card of a complete artifact of this format, or None."""
    path = directory / artifact.CARD_FILE
    if not path.is_file() or not (directory / artifact.WEIGHTS_FILE).is_file():
        return None
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None
    return card if isinstance(card, dict) and card.get("format") == FORMAT else None


def against_minilm(scorer: CheapToxicity, task: BinaryTask = TOXICITY) -> dict[str, Any]:
    """On the test families: MiniLM alone and the cascade, with MiniLM trained on the train families (honest) and
    with the shipped MiniLM (trained on every row, test rows included), and the escalation rates."""
    from services.governor.classifiers import ensure_trained as ensure_minilm
    from services.governor.classifiers import fit as fit_minilm
    from services.governor.classifiers import scores as minilm_scores
    from services.shared.embedder import SentenceEmbedder

    texts, labels = task.load()
    splits = family_splits(texts, labels)
    shipped = ensure_minilm(task, embedder=SentenceEmbedder())
    embeddings = shipped.embed(texts)
    test = splits.test
    cheap = np.array([scorer.score(texts[i]) for i in test])
    escalated = cheap >= scorer.sure_clean_below
    # the governor's injection rule: the patterns flag a text whatever the models say, and a text they flag never
    # stops at the cheap model (RequestCascade)
    flagged = np.array([task.name == INJECTION.name and bool(injection_signals(texts[i])) for i in test])
    escalated |= flagged
    expected = labels[test].tolist()
    table: dict[str, Any] = {
        "test": split_counts(labels[test], task),
        **escalation(cheap, labels[test], scorer.sure_clean_below),
    }
    for name, minilm in (
        (
            "train-families MiniLM",
            minilm_scores(fit_minilm(embeddings[splits.train], labels[splits.train]), embeddings),
        ),
        ("shipped MiniLM", np.array(shipped.probabilities_of(embeddings))),
    ):
        alone = (minilm[test] >= task.threshold) | flagged
        table[name] = {
            "alone": binary_metrics(expected, alone.astype(int).tolist()),
            "cascade": binary_metrics(expected, ((alone & escalated) | flagged).astype(int).tolist()),
            f"{task.positive}_caught_alone_lost_by_cascade": [
                texts[row] for row, hit, up in zip(test, alone, escalated, strict=True) if hit and not up
            ],
        }
    return table


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.governor.char_ngram", description=__doc__)
    parser.add_argument("--task", choices=(TOXICITY.name, INJECTION.name), default=TOXICITY.name)
    parser.add_argument("--against-minilm", action="store_true", help="also compare the cascade with MiniLM alone")
    args = parser.parse_args(argv)
    task = INJECTION if args.task == INJECTION.name else TOXICITY
    card = train(task)
    print(json.dumps({key: card[key] for key in ("split", "sure_clean_below", "evaluation")}, indent=2))
    if args.against_minilm:
        print(json.dumps(against_minilm(ensure_trained(task), task), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
