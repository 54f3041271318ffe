"""The learning demo's incumbent: what a fresh install answers a policy question with. On the default, local
configuration the answerer quotes the stitched knowledge-base passages (services/answerer/grounded.py) and calls
the model only where no passage answers; this module stitches those passages in process.

The passages are the shipped knowledge sources chunked exactly as `knowledge ingest` chunks them, embedded with
the same embedder, filtered as the stitcher filters (the intent's categories, the store's region or all regions)
and ranked as the stitcher's Weaviate query ranks them: BM25 and vector scores fused by relative score, alpha 0.5,
top 4. In process, not against Weaviate, so that the demo's before column and its unit test take the same path.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from numpy.typing import NDArray

from services.shared.embedder import SentenceEmbedder
from services.stitcher.knowledge import ALL_REGIONS, DEFAULT_SOURCES_DIR, Chunk, Passage, load_chunks
from services.stitcher.retrieval import INTENT_CATEGORIES, RetrieverConfig
from services.stitcher.stage import passage_items
from services.wire.models import ContextItem

BM25_K1: Final = 1.2  # Weaviate's defaults
BM25_B: Final = 0.75
_TOKEN = re.compile(r"[a-z0-9]+")


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


def _relative(scores: NDArray[np.float64]) -> NDArray[np.float64]:
    """Scores scaled to 0..1 over the candidates, as Weaviate's relative-score fusion scales each search."""
    low, high = float(scores.min()), float(scores.max())
    return np.zeros_like(scores) if high <= low else (scores - low) / (high - low)


@dataclass(frozen=True)
class _Indexed:
    chunks: tuple[Chunk, ...]
    vectors: NDArray[np.float32]
    terms: tuple[Counter[str], ...]
    lengths: NDArray[np.float64]
    document_frequency: Counter[str]


class LocalKnowledge:
    """The knowledge base's passages in memory, searched the way the stitcher searches Weaviate."""

    def __init__(
        self,
        embedder: SentenceEmbedder,
        sources_dir: Path = DEFAULT_SOURCES_DIR,
        *,
        k: int = RetrieverConfig.k,
        alpha: float = RetrieverConfig.alpha,
    ) -> None:
        self.embedder, self.k, self.alpha = embedder, k, alpha
        _, chunks = load_chunks(sources_dir)
        terms = tuple(Counter(_tokens(f"{chunk.heading} {chunk.text}")) for chunk in chunks)
        self._index = _Indexed(
            chunks=tuple(chunks),
            vectors=embedder.embed([chunk.embedding_text for chunk in chunks]),
            terms=terms,
            lengths=np.array([sum(counts.values()) for counts in terms], dtype=np.float64),
            document_frequency=Counter(term for counts in terms for term in counts),
        )

    def search(self, question: str, intent: str, region: str | None) -> list[Passage]:
        """The top k passages for the question: of the intent's categories (all where it names none), for the
        store's region or all regions."""
        index = self._index
        categories = INTENT_CATEGORIES.get(intent, ())
        allowed = [
            i
            for i, chunk in enumerate(index.chunks)
            if (not categories or chunk.meta.category in categories)
            and (region is None or chunk.meta.region in (region, ALL_REGIONS))
        ]
        if not allowed:
            return []
        vector = self.embedder.embed([question])[0]
        similarity = index.vectors[allowed] @ vector
        keyword = np.array([self._bm25(_tokens(question), i) for i in allowed])
        fused = self.alpha * _relative(similarity.astype(np.float64)) + (1 - self.alpha) * _relative(keyword)
        best = np.argsort(-fused, kind="stable")[: self.k]
        return [self._passage(allowed[int(rank)], float(fused[rank])) for rank in best]

    def context(self, question: str, intent: str, region: str | None) -> list[ContextItem]:
        """The passages as the stitcher puts them in the context: cleaned, flagged, duplicates left out."""
        items, _ = passage_items(self.search(question, intent, region))
        return items

    def _bm25(self, query: Sequence[str], row: int) -> float:
        index = self._index
        count, average = len(index.chunks), float(index.lengths.mean())
        score = 0.0
        for term in set(query):
            frequency = index.terms[row].get(term, 0)
            if not frequency:
                continue
            documents = index.document_frequency[term]
            idf = math.log(1 + (count - documents + 0.5) / (documents + 0.5))
            norm = frequency + BM25_K1 * (1 - BM25_B + BM25_B * index.lengths[row] / average)
            score += idf * frequency * (BM25_K1 + 1) / norm
        return score

    def _passage(self, row: int, score: float) -> Passage:
        chunk = self._index.chunks[row]
        return Passage(
            text=chunk.text,
            source=chunk.source,
            heading=chunk.heading,
            category=chunk.meta.category,
            region=chunk.meta.region,
            score=score,
            passage_id=str(chunk.passage_id),
            content_hash=chunk.content_hash(self.embedder.version),
        )
