"""An embedding passed on by the router is used downstream only where it is exactly what the reader's embedder would
compute: the same model and tokenizer, a text neither cut; the stitcher's search then embeds nothing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from numpy.typing import NDArray

from services.shared.embedder import SentenceEmbedder
from services.stitcher.retrieval import KnowledgeRetriever, RetrieverConfig

TEXT = "Can I return these boots without the box if I have the receipt?"


@pytest.fixture(scope="module")
def router_embedder() -> SentenceEmbedder:
    return SentenceEmbedder()  # the router's: 128 word pieces


@pytest.fixture(scope="module")
def search_embedder() -> SentenceEmbedder:
    return SentenceEmbedder(max_tokens=256)  # the stitcher's


def test_a_whole_text_passed_on_is_the_vector_a_longer_cut_would_compute(
    router_embedder: SentenceEmbedder, search_embedder: SentenceEmbedder
) -> None:
    vectors, tokens = router_embedder.embed_whole([TEXT])
    passed = router_embedder.passed_on(vectors[0], tokens[0])
    assert passed is not None and passed.tokens == tokens[0] and len(passed.vector) == 384 * 4
    reused = search_embedder.reusable(passed)
    assert reused is not None
    assert reused == pytest.approx(search_embedder.embed([TEXT])[0], abs=1e-5)


def test_a_cut_text_is_not_passed_on_and_a_foreign_or_longer_vector_is_not_reused(
    router_embedder: SentenceEmbedder, search_embedder: SentenceEmbedder
) -> None:
    long_text = "the customer wants to know about the warranty on this " * 30
    vectors, tokens = router_embedder.embed_whole([TEXT, long_text])
    assert tokens[0] is not None and tokens[1] is None
    assert router_embedder.passed_on(vectors[1], tokens[1]) is None
    passed = router_embedder.passed_on(vectors[0], tokens[0])
    assert passed is not None
    assert router_embedder.reusable(None) is None
    assert router_embedder.reusable(passed.model_copy(update={"model": "another-model"})) is None
    assert router_embedder.reusable(passed.model_copy(update={"vector": passed.vector[:-4]})) is None
    # a text of 200 pieces embedded whole by the stitcher's embedder would be cut by the router's
    whole_200 = search_embedder.passed_on(*_first(search_embedder.embed_whole([long_text[:800]])))
    assert whole_200 is not None and whole_200.tokens > 128
    assert router_embedder.reusable(whole_200) is None and search_embedder.reusable(whole_200) is not None


def _first(embedded: tuple[NDArray[np.float32], list[int | None]]) -> tuple[NDArray[np.float32], int | None]:
    return embedded[0][0], embedded[1][0]


def test_the_knowledge_search_uses_the_routers_vector_and_embeds_nothing(
    router_embedder: SentenceEmbedder, search_embedder: SentenceEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    retriever = KnowledgeRetriever(RetrieverConfig(), lambda: search_embedder)
    retriever._embedder = search_embedder

    def refused(texts: Sequence[str]) -> NDArray[np.float32]:
        raise AssertionError(f"embedded {list(texts)} again")

    passed = router_embedder.passed_on(*_first(router_embedder.embed_whole([TEXT])))
    expected = search_embedder.embed([TEXT])[0]
    monkeypatch.setattr(search_embedder, "embed", refused)
    vector = retriever._vector(TEXT, passed)
    assert vector == pytest.approx(list(expected), abs=1e-5) and retriever.reused == 1


def test_the_knowledge_search_passes_on_the_vector_it_made_for_the_governor(
    router_embedder: SentenceEmbedder, search_embedder: SentenceEmbedder
) -> None:
    """A request a workflow declined reaches the search with no vector: the one the search makes is handed on, and
    the governor's embedder (the router's settings) reads it as its own; a vector the router passed is not."""
    retriever = KnowledgeRetriever(RetrieverConfig(), lambda: search_embedder)
    retriever._embedder = search_embedder
    other = "Is the trail running shoe in stock in size 42 at this store?"
    assert retriever.embedding_made(other) is None  # never searched
    retriever._vector(other)
    made = retriever.embedding_made(other)
    assert made is not None
    reused = router_embedder.reusable(made)
    assert reused is not None and reused == pytest.approx(router_embedder.embed([other])[0], abs=1e-5)
    passed = router_embedder.passed_on(*_first(router_embedder.embed_whole([TEXT])))
    retriever._vector(TEXT, passed)
    assert retriever.embedding_made(TEXT) is None
