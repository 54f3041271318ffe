"""The governor's classifiers embed texts in bands of similar length: each text once, in calls of bounded size,
and with the vector the embedder gives the text on its own."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.governor.classifiers import (
    CALL_COST_PIECES,
    CHARS_PER_PIECE,
    MAX_CALL_PIECES,
    TOXICITY,
    BinaryClassifier,
    ensure_trained,
    length_bands,
)
from services.shared.embedder import SentenceEmbedder


@pytest.fixture(scope="module")
def toxicity() -> BinaryClassifier:
    return ensure_trained(TOXICITY, embedder=SentenceEmbedder())


@given(texts=st.lists(st.text(max_size=600), max_size=120))
def test_every_text_is_in_exactly_one_band_of_bounded_size(texts: list[str]) -> None:
    bands = length_bands(texts)
    assert sorted(i for band in bands for i in band) == list(range(len(texts)))
    for band in bands:
        widest = max(2 + len(texts[i]) / CHARS_PER_PIECE for i in band)
        assert len(band) == 1 or len(band) * widest <= MAX_CALL_PIECES


def test_texts_of_very_different_lengths_are_embedded_in_separate_calls() -> None:
    short, long = "What time do you close?", "Is the waxed field jacket in stock in size M at store 0417? " * 4
    assert length_bands([short, long, short]) == [[0, 2], [1]]
    similar = [short, short + "!", short + " today"]
    assert len(length_bands(similar)) == 1 and CALL_COST_PIECES > 0


def test_banded_embeddings_are_the_vectors_of_each_text_on_its_own(toxicity: BinaryClassifier) -> None:
    texts = [*TOXICITY.load()[0][:40], "short", "a much longer text " * 20]
    alone = np.vstack([toxicity.embed([text]) for text in texts])
    np.testing.assert_allclose(toxicity.embed(texts), alone, atol=1e-6)
    assert toxicity.probabilities(texts) == pytest.approx(toxicity.probabilities_of(alone), abs=1e-6)
