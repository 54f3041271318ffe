"""The answer memory: Switchyard's own custom model for narrow, high-volume intents (returns rules, loyalty, store
policy). It embeds the question (MiniLM, as the router does), finds the nearest approved or corrected answer, and
answers with it only when the similarity reaches the threshold learned on the training split; below it the
memory declines and the provider's fallback (the large-model route) answers.

On disk (in the model registry): memory.npz (question embeddings, float32, no pickles) and memory.json (answers,
intents, threshold). The provider serves whichever answer memory the registry has deployed (`deployed.json`),
re-read when that file changes, so promotion and rollback need no restart.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from services.answerer.providers import (
    CircuitBreakerConfig,
    Completion,
    ProviderConfigError,
    ProviderRejected,
    TokenPrice,
)
from services.answerer.resilience import CircuitBreaker, ConcurrencyLimit, GuardedProvider
from services.shared.embedder import SentenceEmbedder
from services.shared.prompts import ChatMessage

KIND: Final = "answer_memory"
WEIGHTS_FILE: Final = "memory.npz"
ANSWERS_FILE: Final = "memory.json"
DEPLOYED_FILE: Final = "deployed.json"
_PII_TOKEN = re.compile(r"<[A-Z]+(?:_\d+)?>")
_QUESTION = re.compile(r"\n\nQuestion: (?P<question>.*)\Z", re.DOTALL)


class MemoryDeclined(ProviderRejected):
    """The memory's nearest answer is below its confidence threshold (or nothing is deployed): the next provider
    in the chain answers. A rejection, so the breaker does not count it as a failure."""


@dataclass(frozen=True)
class AnswerMemory:
    """Approved or corrected answers and how to pick one for a question, with the confidence to require.

    method "nearest": the answer of the most similar stored question (cosine similarity is the confidence);
    method "linear": a softmax layer over the distinct answers, fitted on the question embeddings (its
    probability is the confidence), which generalises better to new phrasings. Training picks the method by
    measurement (services/learning/training.py)."""

    embeddings: NDArray[np.float32]
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    intents: tuple[str, ...]
    threshold: float
    embedder: str
    method: str = "nearest"
    classes: tuple[str, ...] = ()  # linear: the distinct answers, in column order
    coef: NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    intercept: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def predict(self, vectors: NDArray[np.float32]) -> list[tuple[str, float, str]]:
        """Per row of `vectors`: the best answer, its confidence, and the intent it was given for."""
        if not len(self.answers):
            return [("", -1.0, "") for _ in range(len(vectors))]
        if self.method == "linear":
            logits = vectors.astype(np.float64) @ self.coef.T + self.intercept
            logits -= logits.max(axis=1, keepdims=True)
            probabilities = np.exp(logits)
            probabilities /= probabilities.sum(axis=1, keepdims=True)
            best = probabilities.argmax(axis=1)
            intent_of = dict(zip(self.answers, self.intents, strict=True))
            return [
                (self.classes[b], float(probabilities[i, b]), intent_of.get(self.classes[b], ""))
                for i, b in enumerate(best)
            ]
        similarities = vectors @ self.embeddings.T
        nearest = similarities.argmax(axis=1)
        return [(self.answers[n], float(similarities[i, n]), self.intents[n]) for i, n in enumerate(nearest)]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        with (directory / WEIGHTS_FILE).open("wb") as file:
            np.savez(file, embeddings=self.embeddings.astype(np.float32), coef=self.coef, intercept=self.intercept)
        meta = {
            "format": "switchyard.answer-memory/1",
            "method": self.method,
            "threshold": self.threshold,
            "embedder": self.embedder,
            "questions": list(self.questions),
            "answers": list(self.answers),
            "intents": list(self.intents),
            "classes": list(self.classes),
        }
        (directory / ANSWERS_FILE).write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", "utf-8")

    @classmethod
    def load(cls, directory: Path) -> AnswerMemory:
        meta = json.loads((directory / ANSWERS_FILE).read_text(encoding="utf-8"))
        with np.load(directory / WEIGHTS_FILE, allow_pickle=False) as arrays:
            embeddings = np.asarray(arrays["embeddings"], dtype=np.float32)
            coef = np.asarray(arrays["coef"], dtype=np.float64)
            intercept = np.asarray(arrays["intercept"], dtype=np.float64)
        return cls(
            embeddings=embeddings,
            questions=tuple(meta["questions"]),
            answers=tuple(meta["answers"]),
            intents=tuple(meta["intents"]),
            threshold=float(meta["threshold"]),
            embedder=str(meta["embedder"]),
            method=str(meta.get("method", "nearest")),
            classes=tuple(meta.get("classes", ())),
            coef=coef,
            intercept=intercept,
        )


def question_of(messages: Sequence[ChatMessage]) -> str:
    """The customer's question: the last user message, without the context the answerer put before it."""
    user = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
    match = _QUESTION.search(user)
    question = match.group("question") if match else user
    # a tokenised e-mail or phone number says nothing about which policy answer fits, but would pull every
    # question carrying one towards each other
    return " ".join(_PII_TOKEN.sub(" ", question).split())


_EMBEDDER: SentenceEmbedder | None = None


def shared_embedder() -> SentenceEmbedder:
    """One embedder per process (the ONNX session is the expensive part)."""
    global _EMBEDDER
    if _EMBEDDER is None:
        _EMBEDDER = SentenceEmbedder()
    return _EMBEDDER


@dataclass(frozen=True)
class Lookup:
    answer: str | None  # None: declined
    similarity: float
    intent: str
    latency_ms: float


class AnswerMemoryProvider:
    """A Provider (services.answerer.providers.Provider) answering from the deployed answer memory."""

    def __init__(self, name: str, registry_dir: Path, *, model_id: str | None = None) -> None:
        self.name = name
        self.model = KIND
        self.registry_dir = registry_dir
        self.pinned = model_id  # a fixed model (shadow candidates); None: whatever deployed.json names
        self._loaded: tuple[str, AnswerMemory] | None = None
        self._deployed_stat: tuple[int, int] | None = None

    @property
    def model_id(self) -> str | None:
        return self._loaded[0] if self._loaded else None

    async def load(self) -> None:
        await asyncio.to_thread(self._refresh)
        await asyncio.to_thread(shared_embedder)

    def _refresh(self) -> AnswerMemory | None:
        model_id = self.pinned or self._deployed_id()
        if model_id is None:
            self._loaded = None
            return None
        if self._loaded is None or self._loaded[0] != model_id:
            self._loaded = (model_id, AnswerMemory.load(self.registry_dir / "models" / model_id))
        return self._loaded[1]

    def _deployed_id(self) -> str | None:
        path = self.registry_dir / DEPLOYED_FILE
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return None
        if self._loaded is not None and self._deployed_stat == (stat.st_mtime_ns, stat.st_size):
            return self._loaded[0]
        self._deployed_stat = (stat.st_mtime_ns, stat.st_size)
        deployed: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        value = deployed.get(KIND)
        return str(value) if value else None

    def lookup(self, question: str) -> Lookup:
        """Blocking: embeds the question (a few ms of CPU); call it from a thread on an event loop."""
        started = time.perf_counter()
        memory = self._refresh()
        if memory is None:
            return Lookup(None, -1.0, "", 0.0)
        answer, confidence, intent = memory.predict(shared_embedder().embed([question]))[0]
        chosen = answer if confidence >= memory.threshold else None
        return Lookup(chosen, confidence, intent, (time.perf_counter() - started) * 1000)

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        started = time.perf_counter()
        found = await asyncio.to_thread(self.lookup, question_of(messages))
        if found.answer is None:
            reason = f"{self.name}: confidence {found.similarity:.3f} in its best answer is below the threshold"
            raise MemoryDeclined(reason, provider=self.name, request_id=request_id)
        return Completion(
            text=found.answer,
            provider=self.name,
            model=self.model,
            model_version=f"{self.model_id}@{found.similarity:.3f}",
            tokens_in=0,
            tokens_out=0,
            latency_ms=(time.perf_counter() - started) * 1000,
            finish_reason="stop",
        )

    async def aclose(self) -> None:
        return None


def memory_entries(document: Any) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Splits `kind: answer_memory` entries off a providers.yaml document, which the HTTP and GGUF provider
    validation does not know; returns the rest of the document and those entries by name."""
    if not isinstance(document, dict) or not isinstance(document.get("providers"), dict):
        return document, {}
    memories = {str(k): v for k, v in document["providers"].items() if isinstance(v, dict) and v.get("kind") == KIND}
    rest = {k: v for k, v in document["providers"].items() if str(k) not in memories}
    return {**document, "providers": rest}, memories


def default_registry_dir() -> Path:
    from services.learning.switch import default_registry_dir as registry_dir  # one definition, a light module

    return registry_dir()


def guarded_memory_provider(name: str, entry: dict[str, Any], source: str) -> tuple[GuardedProvider, tuple[str, ...]]:
    """The provider a `kind: answer_memory` entry describes (keys: registry, fallback), guarded like any other,
    priced at zero (it runs in-process on the answerer's CPU), and its fallback list."""
    unknown = sorted(set(entry) - {"kind", "registry", "fallback", "max_concurrency"})
    fallback = entry.get("fallback", [])
    if unknown or not isinstance(fallback, list):
        problem = f"key 'providers.{name}': answer_memory takes registry, fallback (a list), max_concurrency"
        raise ProviderConfigError(source, [problem + (f"; not {unknown}" if unknown else "")])
    registry_dir = Path(entry["registry"]) if entry.get("registry") else default_registry_dir()
    provider = AnswerMemoryProvider(name, registry_dir)
    guarded = GuardedProvider(
        provider,
        breaker=CircuitBreaker(name, CircuitBreakerConfig()),
        limit=ConcurrencyLimit(entry.get("max_concurrency")),
        price=TokenPrice(),
    )
    return guarded, tuple(str(n) for n in fallback)
