"""Knowledge-base retrieval on the request path: hybrid search in Weaviate, off the event loop and on a short
leash. When Weaviate does not answer in time, the caller goes on without passages (the record is marked
degraded) and for `retry_after_s` no request waits on it again; then one request tries to reconnect, and
retrieval recovers as soon as Weaviate is back."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

from pydantic import SecretStr

from services.runtime.cache import BoundedCache
from services.stitcher.knowledge import DEFAULT_COLLECTION, Embedder, Passage, connect, search
from services.wire.models import TextEmbedding

log = logging.getLogger("switchyard.stitcher.retrieval")

# a route's intent → the knowledge-base categories that can answer it; an intent not listed is not filtered
INTENT_CATEGORIES: Final[dict[str, tuple[str, ...]]] = {
    "return_or_refund": ("returns", "faq"),
    "price_check": ("price_match", "discounts", "product", "faq"),
    "discount_request": ("discounts", "loyalty", "price_match"),
    "loyalty_account": ("loyalty", "faq"),
    "product_question": ("product", "faq"),
    "stock_check": ("product", "faq"),
    "order_status": ("faq",),
}


class KnowledgeUnavailableError(RuntimeError):
    """Weaviate did not answer in time or refused; the reason says which."""


@dataclass(frozen=True)
class RetrieverConfig:
    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int = 50051
    api_key: SecretStr | None = None  # settings.weaviate_api_key; None: anonymous access
    collection: str = DEFAULT_COLLECTION
    k: int = 4
    alpha: float = 0.5
    timeout_s: float = 1.0  # Weaviate's own connect and query timeout: slower than this counts as down
    wait_s: float = 3.0  # the most a request waits for passages, queueing and embedding included
    retry_after_s: float = 2.0  # after Weaviate failed, requests skip the knowledge base this long
    workers: int = 4  # threads embedding queries and waiting on Weaviate
    cached_queries: int = 10_000  # query embeddings remembered (least recently used evicted)
    # A vector is 384 Python floats (about 12 KB): for till-length queries the count binds first; long ones (a
    # query can be up to 1 MiB) are bounded by this.
    cached_query_bytes: int = 128 << 20


class KnowledgeRetriever:
    """Thread-backed hybrid search with a timeout and a short back-off; `retrieve` never blocks the loop."""

    def __init__(self, config: RetrieverConfig, embedder_factory: Callable[[], Embedder]) -> None:
        self.config = config
        self._embedder_factory = embedder_factory
        self._embedder: Embedder | None = None
        self._client: Any = None
        self._lock = threading.Lock()  # one connect at a time; queries share the connected client
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="knowledge")
        self._down_until = 0.0
        # query -> its vector, and the same as a record field where this embedder's vector is one a later stage can
        # reuse (the governor's classifiers read MiniLM's vector of the request text)
        self._vectors: BoundedCache[str, tuple[list[float], TextEmbedding | None]] = BoundedCache(
            config.cached_queries, config.cached_query_bytes
        )
        self.cache_hits = 0
        self.reused = 0  # queries searched with the router's embedding
        self.last_error = ""

    @property
    def available(self) -> bool:
        return self._client is not None and time.monotonic() >= self._down_until

    async def start(self) -> None:
        """Loads the embedding model (seconds, in a thread) and tries a first connection; an unavailable
        Weaviate is not an error here, only a degraded start."""
        loop = asyncio.get_running_loop()
        self._embedder = await loop.run_in_executor(self._pool, self._embedder_factory)
        try:
            await asyncio.wait_for(loop.run_in_executor(self._pool, self._connect), self.config.wait_s)
        except Exception as error:
            self._fail(error)

    async def stop(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._close)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def retrieve(
        self,
        query: str,
        region: str | None,
        categories: Sequence[str],
        passed_on: TextEmbedding | None = None,
    ) -> list[Passage]:
        """The top-k passages; `passed_on` is the query's embedding where the router made it (used when this
        embedder would compute the same vector). Raises KnowledgeUnavailableError at once while backing off, when
        Weaviate fails or does not answer within timeout_s (then backing off), or when this request waited wait_s
        in all (a burst of requests: this one goes without passages, the next ones still try)."""
        if time.monotonic() < self._down_until:
            raise KnowledgeUnavailableError(f"knowledge base backing off after: {self.last_error}")
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool, self._search, query, region, tuple(categories), passed_on)
        try:
            return await asyncio.wait_for(job, self.config.wait_s)
        except TimeoutError as error:
            raise KnowledgeUnavailableError(f"no passages within {self.config.wait_s} s") from error
        except KnowledgeUnavailableError:
            raise
        except Exception as error:
            self._fail(error)
            raise KnowledgeUnavailableError(self.last_error) from error

    def _fail(self, error: BaseException) -> None:
        self.last_error = f"{type(error).__name__}: {error}"[:300]
        self._down_until = time.monotonic() + self.config.retry_after_s
        log.warning("knowledge base unavailable", extra={"error": self.last_error})

    def _vector(self, query: str, passed_on: TextEmbedding | None = None) -> list[float]:
        """The query's embedding: the router's where it is this embedder's, else remembered (POS traffic repeats
        its phrasings) or computed."""
        assert self._embedder is not None, "start() loads the embedder"
        reusable = self._embedder.reusable(passed_on)
        if reusable is not None:
            self.reused += 1
            passed: list[float] = reusable.tolist()
            return passed
        with self._lock:
            cached = self._vectors.get(query)
            if cached is not None:
                self.cache_hits += 1
                return cached[0]
        vectors, tokens = self._embedder.embed_whole([query])
        vector: list[float] = vectors[0].tolist()
        with self._lock:
            self._vectors.put(query, (vector, self._embedder.passed_on(vectors[0], tokens[0])))
        return vector

    def embedding_made(self, query: str) -> TextEmbedding | None:
        """The query's embedding where this retriever made it (not where the router passed one on), as a record
        field for the stages after the stitcher: a request the router sent to a workflow, which declined it, reaches
        the knowledge search without one, and the governor would embed its text again. None where it was not made
        here, is no longer remembered, or is not one a later stage can reuse."""
        with self._lock:
            cached = self._vectors.get(query)
        return None if cached is None else cached[1]

    def _search(
        self, query: str, region: str | None, categories: tuple[str, ...], passed_on: TextEmbedding | None = None
    ) -> list[Passage]:
        if time.monotonic() < self._down_until:  # failed while this request queued
            raise KnowledgeUnavailableError(f"knowledge base backing off after: {self.last_error}")
        client = self._client or self._connect()
        assert self._embedder is not None, "start() loads the embedder"
        vector = self._vector(query, passed_on)
        try:
            return search(
                client,
                self._embedder,
                query,
                vector=vector,
                region=region,
                categories=categories,
                k=self.config.k,
                alpha=self.config.alpha,
                collection=self.config.collection,
            )
        except Exception:
            self._close()  # a fresh connection next time: the old one may point at a dead server
            raise

    def _connect(self) -> Any:
        with self._lock:
            if self._client is not None:
                return self._client
            config = self.config
            client = connect(config.host, config.http_port, config.grpc_port, config.timeout_s, config.api_key)
            self._client = client
            log.info("knowledge base connected", extra={"collection": self.config.collection})
            return client

    def _close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as error:  # closing a dead connection may fail; it is gone either way
                log.debug("closing knowledge base client failed", extra={"error": str(error)})
