"""The token budget: counting tokens with the target model's tokenizer where it is available (the local Gemma
GGUF's vocabulary, loaded without weights), an estimate otherwise, and fitting context items into a budget by
rank, whole items only."""

from __future__ import annotations

import functools
import logging
import math
import re
from collections.abc import Sequence
from typing import Any, Final, Protocol

from services.wire.models import ContextItem, DroppedContext

log = logging.getLogger("switchyard.stitcher.budget")

# the order in which sources are kept when the budget is short: facts the answer rests on first
DEFAULT_PRIORITY: Final = ("store_hours", "customer", "inventory", "knowledge_base", "customer_history")
OVER_BUDGET: Final = "over_budget"
_PIECES = re.compile(r"\w+|[^\w\s]")


class TokenCounter(Protocol):
    name: str

    def count(self, text: str) -> int: ...


class EstimatedTokens:
    """No tokenizer at hand: SentencePiece-style vocabularies average about 1.3 tokens per English word, and each
    punctuation mark or digit group is usually its own token."""

    name = "estimate"

    def count(self, text: str) -> int:
        pieces = _PIECES.findall(text)
        words = sum(1 for p in pieces if p[0].isalnum() or p[0] == "_")
        return math.ceil(words * 1.3) + (len(pieces) - words)


class LlamaVocabTokens:
    """The exact tokenizer of a GGUF model: llama.cpp loads only its vocabulary (no weights, milliseconds).
    Counts are remembered per text: passages, stock rows and store facts recur across requests."""

    def __init__(self, gguf_path: str, name: str, cached: int = 20_000) -> None:
        from llama_cpp import Llama

        self.name = name
        self._llama: Any = Llama(model_path=gguf_path, vocab_only=True, verbose=False)
        self.count = functools.lru_cache(maxsize=cached)(self._count)  # type: ignore[method-assign]

    def count(self, text: str) -> int:
        return self._count(text)

    def _count(self, text: str) -> int:
        return len(self._llama.tokenize(text.encode(), add_bos=False, special=False))


def counter_for(provider: str, model: str) -> TokenCounter:
    """The target model's tokenizer when it is a packaged local GGUF, else the estimate (an OpenAI-compatible
    endpoint's tokenizer is not known here)."""
    if provider != "local_gguf":
        return EstimatedTokens()
    try:
        from services.answerer.local_model import PACKAGED_MODELS, resolve_packaged

        if model not in PACKAGED_MODELS:
            return EstimatedTokens()
        gguf = resolve_packaged(model)
        return LlamaVocabTokens(str(gguf.path), f"{model}-vocab")
    except Exception as error:  # a missing package or llama.cpp build only costs accuracy, never availability
        log.warning("tokenizer unavailable, estimating tokens", extra={"model": model, "error": str(error)})
        return EstimatedTokens()


def with_tokens(items: Sequence[ContextItem], counter: TokenCounter) -> list[ContextItem]:
    return [item.model_copy(update={"tokens": counter.count(item.text)}) for item in items]


def rank_key(item: ContextItem, position: int, priority: Sequence[str]) -> tuple[int, float, int]:
    """Source priority first, then retrieval score (best first; items fetched by key keep their order), then
    the position the item came in: a total order, so the same items always give the same cut."""
    source_rank = priority.index(item.source) if item.source in priority else len(priority)
    return source_rank, -(item.score if item.score is not None else math.inf), position


def fit_to_budget(
    items: list[ContextItem], budget: int, priority: Sequence[str] = DEFAULT_PRIORITY
) -> tuple[list[ContextItem], list[DroppedContext]]:
    """The items that fit in `budget` tokens, in their original order, and the ones left out.

    Items are taken in rank order (`rank_key`) while they fit; one that does not fit is dropped whole (never
    cut mid-fact) and smaller, lower-ranked items may still fill the room left. Items carry their `tokens`."""
    ranked = sorted(range(len(items)), key=lambda i: rank_key(items[i], i, priority))
    room = budget
    kept: set[int] = set()
    for index in ranked:
        if items[index].tokens <= room:
            kept.add(index)
            room -= items[index].tokens
    dropped = [
        DroppedContext(source=items[i].source, source_id=items[i].source_id, tokens=items[i].tokens, reason=OVER_BUDGET)
        for i in ranked
        if i not in kept
    ]
    return [items[i] for i in range(len(items)) if i in kept], dropped
