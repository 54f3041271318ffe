"""Retrieval quality on the labelled query set: `python -m services.tools.eval.retrieval` (`make eval-retrieval`).

Ingests the shipped knowledge base (idempotent), then asks every labelled question with hybrid search, pure BM25
and pure vector search, and prints recall@5, MRR@10, retrieval latency p50/p99 (query embedding included) and the
embedding model's throughput.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from weaviate import WeaviateClient

from services.stitcher.knowledge import (
    DEFAULT_COLLECTION,
    DEFAULT_SOURCES_DIR,
    Embedder,
    connect,
    ingest,
    load_chunks,
    search,
)

QUERIES_FILE: Final = Path(__file__).resolve().parent / "retrieval_queries.yaml"
MODES: Final = {"hybrid": 0.5, "bm25": 0.0, "vector": 1.0}
RECALL_AT: Final = 5
MRR_AT: Final = 10


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    source: str
    heading: str


class LabelledQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    q: str = Field(min_length=3)
    region: str | None = None
    answer: Answer


class QuerySet(BaseModel):
    queries: list[LabelledQuery] = Field(min_length=1)


def load_queries(path: Path = QUERIES_FILE) -> list[LabelledQuery]:
    try:
        return QuerySet.model_validate(yaml.safe_load(path.read_text("utf-8"))).queries
    except ValidationError as error:
        first = error.errors()[0]
        raise ValueError(f"{path}: {'.'.join(map(str, first['loc']))}: {first['msg']}") from error


@dataclass(frozen=True)
class Quality:
    mode: str
    alpha: float
    queries: int
    recall_at_5: float
    mrr_at_10: float
    latency_ms_p50: float
    latency_ms_p99: float
    misses: list[str]


def rank_of(query: LabelledQuery, hits: Sequence[tuple[str, str]]) -> int | None:
    """1-based rank of the first hit under the answer's source and heading; None when it is not among them."""
    wanted = (query.answer.source, query.answer.heading)
    return next((rank for rank, hit in enumerate(hits, 1) if hit == wanted), None)


def evaluate(
    client: WeaviateClient,
    embedder: Embedder,
    queries: Sequence[LabelledQuery],
    alpha: float,
    mode: str,
    collection: str,
) -> Quality:
    ranks: list[int | None] = []
    latencies: list[float] = []
    for query in queries:
        started = time.perf_counter()
        hits = search(client, embedder, query.q, region=query.region, k=MRR_AT, alpha=alpha, collection=collection)
        latencies.append((time.perf_counter() - started) * 1000)
        ranks.append(rank_of(query, [(h.source, h.heading) for h in hits]))
    ordered = sorted(latencies)
    return Quality(
        mode=mode,
        alpha=alpha,
        queries=len(queries),
        recall_at_5=round(sum(1 for r in ranks if r is not None and r <= RECALL_AT) / len(queries), 3),
        mrr_at_10=round(sum(1 / r for r in ranks if r is not None) / len(queries), 3),
        latency_ms_p50=round(statistics.median(ordered), 1),
        latency_ms_p99=round(ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))], 1),
        misses=[q.q for q, r in zip(queries, ranks, strict=True) if r is None or r > RECALL_AT],
    )


def embedding_throughput(embedder: Embedder, questions: Sequence[str], passages: Sequence[str]) -> dict[str, float]:
    """Embeddings per second: questions one at a time (as requests arrive) and passages batched (as ingest)."""
    started = time.perf_counter()
    for text in questions:
        embedder.embed([text])
    single = len(questions) / (time.perf_counter() - started)
    started = time.perf_counter()
    embedder.embed(list(passages))
    batch = len(passages) / (time.perf_counter() - started)
    return {"questions_per_s": round(single, 1), "passages_batched_per_s": round(batch, 1), "passages": len(passages)}


def run(
    client: WeaviateClient, embedder: Embedder, collection: str, queries: Sequence[LabelledQuery]
) -> dict[str, Any]:
    report = ingest(client, embedder, DEFAULT_SOURCES_DIR, collection=collection)
    for query in queries[:5]:  # warm-up: connections and the first embeddings
        search(client, embedder, query.q, collection=collection)
    results = [evaluate(client, embedder, queries, alpha, mode, collection) for mode, alpha in MODES.items()]
    _, chunks = load_chunks(DEFAULT_SOURCES_DIR)
    return {
        "ingest": report.summary(),
        "retrieval": [asdict(r) for r in results],
        "embeddings": embedding_throughput(embedder, [q.q for q in queries], [c.embedding_text for c in chunks]),
    }


def main(argv: Sequence[str] | None = None) -> int:
    from services.settings import get_settings
    from services.shared.embedder import SentenceEmbedder

    parser = argparse.ArgumentParser(prog="switchyard eval-retrieval", description=__doc__.splitlines()[0])
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help="Weaviate collection (default %(default)s)")
    parser.add_argument("--queries", type=Path, default=QUERIES_FILE, help="the labelled questions")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")
    args = parser.parse_args(argv)
    settings = get_settings()
    queries = load_queries(args.queries)
    client = connect(
        settings.weaviate_host,
        settings.weaviate_http_port,
        settings.weaviate_grpc_port,
        api_key=settings.weaviate_api_key,
    )
    try:
        result = run(client, SentenceEmbedder(max_tokens=256), args.collection, queries)
    finally:
        client.close()
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"[eval] {len(queries)} labelled questions; {result['ingest']}")
    print(f"{'mode':<8} {'recall@5':>9} {'MRR@10':>7} {'p50 ms':>7} {'p99 ms':>7}")
    for r in result["retrieval"]:
        print(
            f"{r['mode']:<8} {r['recall_at_5']:>9.3f} {r['mrr_at_10']:>7.3f} "
            f"{r['latency_ms_p50']:>7.1f} {r['latency_ms_p99']:>7.1f}"
        )
    e = result["embeddings"]
    print(
        f"embeddings/s: {e['questions_per_s']} questions one at a time, "
        f"{e['passages_batched_per_s']} passages batched ({e['passages']} passages)"
    )
    for r in result["retrieval"]:
        if r["misses"]:
            print(f"{r['mode']} misses: " + "; ".join(r["misses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
