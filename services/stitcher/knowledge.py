"""The retail knowledge base: markdown sources under `knowledge/` chunked into passages, embedded on CPU and kept in
a Weaviate collection; hybrid (BM25 + vector) search over it with region and category filters.

Each passage is scored for prompt injection once, at ingest, by the governor's injection classifier, and the score
is stored with it and the classifier's version (`injection_score`, `injection_classifier`); search returns it, the
stitcher sets it on the passage's context item and the governor, where its own classifier has that version, uses
it instead of embedding the passage again on every request that retrieves it.

`python -m services.stitcher.knowledge ingest` and `python -m services.stitcher.knowledge search "query"`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import re
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np
import yaml
from numpy.typing import NDArray
from pydantic import SecretStr
from weaviate import WeaviateClient
from weaviate.classes.config import Configure, DataType, Property, Tokenization
from weaviate.classes.data import DataObject
from weaviate.classes.query import Filter, HybridFusion, MetadataQuery
from weaviate.collections import Collection

from services.settings import DATA_ROOT
from services.stitcher.prep import clean
from services.wire.models import ClassifierScore, TextEmbedding

DEFAULT_COLLECTION: Final = "KnowledgeBase"
DEFAULT_SOURCES_DIR: Final = DATA_ROOT / "knowledge"
CATEGORIES: Final = frozenset({"returns", "price_match", "discounts", "loyalty", "product", "faq"})
ALL_REGIONS: Final = "all"
# a passage is a paragraph or a few short ones: under MIN_WORDS is merged with the next, over MAX_WORDS is split
MIN_WORDS: Final = 40
MAX_WORDS: Final = 120
# fixed, so that a passage keeps its object id across machines and releases
PASSAGE_NAMESPACE: Final = uuid.UUID("6f1d7c2e-4b8a-5e39-9c11-7a0d2f3e5b64")
HEADING_SEPARATOR: Final = " > "
WRITE_BATCH: Final = 64

_FRONT_MATTER = re.compile(r"\A---\n(?P<yaml>.*?)\n---\n", re.DOTALL)
_HEADING = re.compile(r"^(?P<hashes>#{1,6})\s+(?P<title>.+?)\s*#*\s*$")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_REGION = re.compile(r"^[a-z]{2}-[a-z]+$")


class KnowledgeSourceError(ValueError):
    """A knowledge source file cannot be read as a passage source; the message names the file, the key and the fix."""


class Embedder(Protocol):
    """What ingest and search need from an embedding model (`SentenceEmbedder` is one)."""

    @property
    def version(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]: ...

    def embed_whole(self, texts: Sequence[str]) -> tuple[NDArray[np.float32], list[int | None]]:
        """`embed`, and per text the word pieces it took, or None where it was cut."""
        ...

    def passed_on(self, vector: NDArray[np.float32], tokens: int | None) -> TextEmbedding | None:
        """A row of `embed_whole` as a record field later stages can reuse; None where they could not."""
        ...

    def reusable(self, embedding: TextEmbedding | None) -> NDArray[np.float32] | None:
        """An earlier stage's vector of the text, where it is the one this embedder would compute."""
        ...


class PassageScorer(Protocol):
    """What ingest needs to score passages for injection: the governor's injection classifier
    (services.governor.classifiers.BinaryClassifier) is one."""

    @property
    def version(self) -> str: ...

    def probabilities(self, texts: Sequence[str]) -> list[float]: ...


@dataclass(frozen=True)
class SourceMeta:
    category: str
    region: str
    effective: dt.date


@dataclass(frozen=True)
class Chunk:
    """One passage before embedding. `source` is the path relative to the sources folder, with forward slashes."""

    source: str
    heading: str
    index: int
    text: str
    meta: SourceMeta

    @property
    def passage_id(self) -> uuid.UUID:
        return passage_id(self.source, self.heading, self.index)

    def content_hash(self, embedder_version: str) -> str:
        # the embedder version is part of the hash, so a new model re-embeds every passage
        fields = [self.text, self.heading, self.meta.category, self.meta.region, self.meta.effective.isoformat()]
        return hashlib.sha256("\x1f".join([*fields, embedder_version]).encode()).hexdigest()

    @property
    def item_text(self) -> str:
        """The text of the passage's context item (services.stitcher.stage.passage_items), which the governor
        reads and which the injection score is of."""
        return clean(self.text)

    @property
    def embedding_text(self) -> str:
        # the heading carries the topic (often the FAQ question itself), so it is embedded with the paragraph
        if not self.heading:
            return self.text
        title = self.heading.split(HEADING_SEPARATOR)[-1]
        return f"{title} {self.text}" if title.endswith((".", "?", "!")) else f"{title}. {self.text}"


@dataclass(frozen=True)
class Passage:
    text: str
    source: str
    heading: str
    category: str
    region: str
    score: float
    passage_id: str = ""
    content_hash: str = ""
    injection: ClassifierScore | None = None  # scored at ingest; None for a passage ingested before scores


@dataclass(frozen=True)
class IngestReport:
    sources: int
    passages: int
    written: int
    unchanged: int
    deleted: int
    seconds: float

    def summary(self) -> str:
        return (
            f"{self.sources} sources, {self.passages} passages: {self.written} written, {self.unchanged} unchanged, "
            f"{self.deleted} deleted in {self.seconds:.2f} s"
        )


def passage_id(source: str, heading: str, index: int) -> uuid.UUID:
    return uuid.uuid5(PASSAGE_NAMESPACE, f"{source}#{heading}#{index}")


def parse_front_matter(text: str, source: str) -> tuple[SourceMeta, str]:
    """The validated front matter and the markdown body after it."""
    match = _FRONT_MATTER.match(text)
    if match is None:
        raise KnowledgeSourceError(
            f"{source}: no front matter; start the file with `---`, category/region/effective, `---`"
        )
    data = yaml.safe_load(match["yaml"])
    if not isinstance(data, dict):
        raise KnowledgeSourceError(f"{source}: front matter is not a mapping of category, region and effective")
    return _source_meta(data, source), text[match.end() :]


def _source_meta(data: dict[str, Any], source: str) -> SourceMeta:
    category = data.get("category")
    if category not in CATEGORIES:
        raise KnowledgeSourceError(f"{source}: category {category!r} is not one of {', '.join(sorted(CATEGORIES))}")
    region = data.get("region")
    if not isinstance(region, str) or not (region == ALL_REGIONS or _REGION.match(region)):
        raise KnowledgeSourceError(f"{source}: region {region!r} must be `all` or a region such as `us-east`")
    effective = data.get("effective")
    if isinstance(effective, str):
        try:
            effective = dt.date.fromisoformat(effective)
        except ValueError:
            effective = None
    if not isinstance(effective, dt.date) or isinstance(effective, dt.datetime):
        raise KnowledgeSourceError(f"{source}: effective {data.get('effective')!r} must be a date as YYYY-MM-DD")
    return SourceMeta(category=category, region=region, effective=effective)


def chunk_markdown(text: str, source: str) -> list[Chunk]:
    """Passages of one markdown source: paragraphs under their heading path, merged or split to MIN..MAX words."""
    meta, body = parse_front_matter(text, source)
    chunks: list[Chunk] = []
    for heading, paragraphs in _sections(body):
        for index, passage_text in enumerate(_passages(paragraphs)):
            chunks.append(Chunk(source=source, heading=heading, index=index, text=passage_text, meta=meta))
    return chunks


def _sections(body: str) -> Iterable[tuple[str, list[str]]]:
    """(heading path, paragraphs) per section, in document order; sections without text are skipped."""
    headings: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    lines: list[str] = []

    def close_paragraph() -> None:
        if lines:
            paragraphs.append(" ".join(line.strip() for line in lines))
            lines.clear()

    for line in body.splitlines():
        heading = _HEADING.match(line)
        if heading is None:
            if line.strip():
                lines.append(line)
            else:
                close_paragraph()
            continue
        close_paragraph()
        if paragraphs:
            yield HEADING_SEPARATOR.join(title for _, title in headings), paragraphs
            paragraphs = []
        level = len(heading["hashes"])
        headings = [(lvl, title) for lvl, title in headings if lvl < level] + [(level, heading["title"])]
    close_paragraph()
    if paragraphs:
        yield HEADING_SEPARATOR.join(title for _, title in headings), paragraphs


def _passages(paragraphs: list[str]) -> list[str]:
    pieces = [piece for paragraph in paragraphs for piece in _split_long(paragraph)]
    passages: list[str] = []
    pending: list[str] = []
    for piece in pieces:
        pending.append(piece)
        if _words(" ".join(pending)) >= MIN_WORDS:
            passages.append("\n\n".join(pending))
            pending = []
    if pending and passages and _words(passages[-1]) + _words(" ".join(pending)) <= MAX_WORDS:
        passages[-1] = "\n\n".join([passages[-1], *pending])
    elif pending:
        passages.append("\n\n".join(pending))
    return passages


def _split_long(paragraph: str) -> list[str]:
    """A paragraph over MAX_WORDS as consecutive runs of whole sentences, each at most MAX_WORDS where possible."""
    if _words(paragraph) <= MAX_WORDS:
        return [paragraph]
    runs: list[list[str]] = [[]]
    for sentence in _SENTENCE_END.split(paragraph):
        if runs[-1] and _words(" ".join([*runs[-1], sentence])) > MAX_WORDS:
            runs.append([])
        runs[-1].append(sentence)
    return [" ".join(run) for run in runs]


def _words(text: str) -> int:
    return len(text.split())


def load_chunks(sources_dir: Path) -> tuple[int, list[Chunk]]:
    """(number of source files, their passages) for every `*.md` under `sources_dir`, in a stable order."""
    if not sources_dir.is_dir():
        raise KnowledgeSourceError(f"{sources_dir}: not a folder of markdown sources; pass --sources DIR")
    files = sorted(sources_dir.rglob("*.md"))
    chunks = [
        c for path in files for c in chunk_markdown(path.read_text("utf-8"), path.relative_to(sources_dir).as_posix())
    ]
    return len(files), chunks


KEYWORD: Final = Tokenization.FIELD  # filtered on whole values, not words: "us-east" is one token
PROPERTIES: Final = (
    Property(name="text", data_type=DataType.TEXT),
    Property(name="heading", data_type=DataType.TEXT),
    Property(name="source", data_type=DataType.TEXT, tokenization=KEYWORD, index_searchable=False),
    Property(name="category", data_type=DataType.TEXT, tokenization=KEYWORD, index_searchable=False),
    Property(name="region", data_type=DataType.TEXT, tokenization=KEYWORD, index_searchable=False),
    Property(name="effective", data_type=DataType.DATE),
    Property(name="content_hash", data_type=DataType.TEXT, tokenization=KEYWORD, index_searchable=False),
    # added later: a collection made before them gains them at the next ingest (ensure_collection)
    Property(name="injection_score", data_type=DataType.NUMBER, index_filterable=False, index_range_filters=False),
    Property(
        name="injection_classifier",
        data_type=DataType.TEXT,
        tokenization=KEYWORD,
        index_searchable=False,
        index_filterable=False,
    ),
)


def ensure_collection(client: WeaviateClient, name: str) -> Collection[Any, Any]:
    """The collection, made with every property of PROPERTIES, or given the ones an older release did not have
    (Weaviate adds a property to a collection in place; objects written before it read it as missing)."""
    if not client.collections.exists(name):
        return client.collections.create(
            name, vector_config=Configure.Vectors.self_provided(), properties=list(PROPERTIES)
        )
    collection = client.collections.get(name)
    present = {prop.name for prop in collection.config.get(simple=True).properties}
    for prop in PROPERTIES:
        if prop.name not in present:
            collection.config.add_property(prop)
    return collection


def connect(
    host: str, http_port: int, grpc_port: int, timeout_s: float | None = None, api_key: SecretStr | None = None
) -> WeaviateClient:
    """A client of the Weaviate at host:ports, presenting `api_key` (settings.weaviate_api_key) when there is one.
    The client's start-up checks are skipped: they look up the newest weaviate-client on pypi.org (an outbound call
    from a store back office, and on each reconnect) and OIDC settings we do not use; the server's version and gRPC
    are still checked, and a dead server fails the first query, which callers treat as unavailable. A refused key
    (401) fails here already."""
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    timeouts = None
    if timeout_s is not None:
        seconds = max(1, round(timeout_s))
        timeouts = AdditionalConfig(timeout=Timeout(init=seconds, query=seconds, insert=seconds))
    return weaviate.connect_to_local(
        host=host,
        port=http_port,
        grpc_port=grpc_port,
        additional_config=timeouts,
        skip_init_checks=True,
        auth_credentials=Auth.api_key(api_key.get_secret_value()) if api_key is not None else None,
    )


def ingest(
    client: WeaviateClient,
    embedder: Embedder,
    sources_dir: Path,
    collection: str = DEFAULT_COLLECTION,
    *,
    injection: PassageScorer | None = None,
) -> IngestReport:
    """Makes the collection hold exactly the passages of `sources_dir`: new and changed passages are embedded,
    scored by `injection` (the governor's injection classifier) and written under their stable ids, unchanged ones
    are left alone, and passages no longer in the sources deleted. A passage scored by another classifier version
    (or by none, as before scores were stored) counts as changed. Without `injection` passages are stored unscored
    and the governor scores them when they are retrieved."""
    started = time.perf_counter()
    sources, chunks = load_chunks(sources_dir)
    target = ensure_collection(client, collection)
    stored = _stored_versions(target)
    scored_by = injection.version if injection is not None else ""
    wanted = {c.passage_id: (c, c.content_hash(embedder.version)) for c in chunks}
    changed = [(c, digest) for object_id, (c, digest) in wanted.items() if stored.get(object_id) != (digest, scored_by)]
    _write(target, embedder, changed, injection)
    stale = [object_id for object_id in stored if object_id not in wanted]
    if stale:
        target.data.delete_many(where=Filter.by_id().contains_any(stale))
    return IngestReport(
        sources=sources,
        passages=len(wanted),
        written=len(changed),
        unchanged=len(wanted) - len(changed),
        deleted=len(stale),
        seconds=time.perf_counter() - started,
    )


def _stored_versions(target: Collection[Any, Any]) -> dict[uuid.UUID, tuple[str, str]]:
    """Per stored passage: its content hash and the version of the classifier that scored it ("" for none)."""
    return {
        uuid.UUID(str(obj.uuid)): (
            str(obj.properties.get("content_hash") or ""),
            str(obj.properties.get("injection_classifier") or ""),
        )
        for obj in target.iterator(return_properties=["content_hash", "injection_classifier"])
    }


def _write(
    target: Collection[Any, Any],
    embedder: Embedder,
    changed: list[tuple[Chunk, str]],
    injection: PassageScorer | None = None,
) -> None:
    for start in range(0, len(changed), WRITE_BATCH):
        batch = changed[start : start + WRITE_BATCH]
        vectors = embedder.embed([chunk.embedding_text for chunk, _ in batch])
        # The score is of the item's text (the passage cleaned, without its heading) as the governor's classifier
        # embeds it (cut at its own length): another text than the vector above, which the search uses.
        scores: list[float | None] = (
            list(injection.probabilities([chunk.item_text for chunk, _ in batch]))
            if injection is not None
            else [None] * len(batch)
        )
        scored_by = injection.version if injection is not None else ""
        objects = [
            DataObject(
                properties=_properties(chunk, digest, score, scored_by), uuid=chunk.passage_id, vector=vector.tolist()
            )
            for (chunk, digest), vector, score in zip(batch, vectors, scores, strict=True)
        ]
        # insert_many replaces an object with the same id, which is what makes re-ingest an upsert
        result = target.data.insert_many(objects)
        if result.has_errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"{len(result.errors)} passages were not written to {target.name}: {first.message}")


def _properties(chunk: Chunk, digest: str, injection_score: float | None, scored_by: str) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "text": chunk.text,
        "heading": chunk.heading,
        "source": chunk.source,
        "category": chunk.meta.category,
        "region": chunk.meta.region,
        "effective": dt.datetime.combine(chunk.meta.effective, dt.time(), tzinfo=dt.UTC),
        "content_hash": digest,
    }
    if injection_score is not None:
        properties |= {"injection_score": injection_score, "injection_classifier": scored_by}
    return properties


def search(
    client: WeaviateClient,
    embedder: Embedder,
    query: str,
    *,
    region: str | None = None,
    category: str | None = None,
    k: int = 5,
    alpha: float = 0.5,
    collection: str = DEFAULT_COLLECTION,
    categories: Sequence[str] = (),
    vector: Sequence[float] | None = None,
) -> list[Passage]:
    """The top `k` passages by hybrid score (alpha 0 is pure BM25, 1 pure vector). A region keeps passages for that
    region or for all regions; a category (or any of `categories`) keeps that category only. `vector` is the
    query's embedding when the caller already has it."""
    if vector is None:
        vector = embedder.embed([query])[0].tolist()
    result = client.collections.get(collection).query.hybrid(
        query=query,
        vector=list(vector),
        alpha=alpha,
        limit=k,
        query_properties=["text", "heading"],
        fusion_type=HybridFusion.RELATIVE_SCORE,
        filters=_filters(region, [category] if category is not None else list(categories)),
        return_metadata=MetadataQuery(score=True),
        # every property the collection has: naming the score properties fails the query on a collection made
        # before them, which keeps working (its passages come back without a score) until the next ingest
        return_properties=None,
    )
    return [
        Passage(
            text=str(obj.properties["text"]),
            source=str(obj.properties["source"]),
            heading=str(obj.properties["heading"]),
            category=str(obj.properties["category"]),
            region=str(obj.properties["region"]),
            score=float(obj.metadata.score or 0.0),
            passage_id=str(obj.uuid),
            content_hash=str(obj.properties.get("content_hash", "")),
            injection=stored_score(obj.properties),
        )
        for obj in result.objects
    ]


def stored_score(properties: Mapping[str, Any]) -> ClassifierScore | None:
    """The injection score stored with a passage at ingest, with the classifier version that made it; None for a
    passage stored without one."""
    score, classifier = properties.get("injection_score"), properties.get("injection_classifier")
    if score is None or not classifier:
        return None
    return ClassifierScore(classifier=str(classifier), score=float(score))


def _filters(region: str | None, categories: Sequence[str]) -> Any:
    clauses = []
    if region is not None:
        clauses.append(Filter.by_property("region").contains_any([region, ALL_REGIONS]))
    if len(categories) == 1:
        clauses.append(Filter.by_property("category").equal(categories[0]))
    elif categories:
        clauses.append(Filter.by_property("category").contains_any(list(categories)))
    return Filter.all_of(clauses) if clauses else None


def main(argv: Sequence[str] | None = None) -> int:
    # imported here so that `--help` and the library import do not load the model
    from services.settings import get_settings
    from services.shared.embedder import SentenceEmbedder

    args = _parser().parse_args(argv)
    settings = get_settings()
    embedder = SentenceEmbedder(max_tokens=256)
    client = connect(
        settings.weaviate_host,
        settings.weaviate_http_port,
        settings.weaviate_grpc_port,
        api_key=settings.weaviate_api_key,
    )
    try:
        if args.command == "ingest":
            report = ingest(client, embedder, args.sources, args.collection, injection=injection_scorer())
            print(f"[knowledge] {report.summary()}")
            return 0
        started = time.perf_counter()
        passages = search(
            client,
            embedder,
            args.query,
            region=args.region,
            category=args.category,
            k=args.k,
            alpha=args.alpha,
            collection=args.collection,
        )
        print(f"[knowledge] {len(passages)} passages in {(time.perf_counter() - started) * 1000:.0f} ms")
        for rank, p in enumerate(passages, 1):
            print(f"{rank}. {p.score:.3f} {p.source} [{p.region}/{p.category}] {p.heading}\n   {p.text[:160]}")
        return 0
    finally:
        client.close()


def injection_scorer() -> PassageScorer:
    """The governor's injection classifier, as the governor loads it (the same embedder settings, the same
    artifact under var/models, trained first where missing), so that its version is the one the governor checks."""
    from services.governor.classifiers import INJECTION, ensure_trained
    from services.shared.embedder import SentenceEmbedder

    return ensure_trained(INJECTION, embedder=SentenceEmbedder())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="switchyard knowledge", description=__doc__)
    parser.add_argument("--collection", default=DEFAULT_COLLECTION, help="Weaviate collection (default %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    ingest_command = commands.add_parser(
        "ingest", help="chunk, embed, score for injection and upsert the markdown sources"
    )
    ingest_command.add_argument("--sources", type=Path, default=DEFAULT_SOURCES_DIR, help="folder of *.md sources")
    search_command = commands.add_parser("search", help="hybrid search with optional filters")
    search_command.add_argument("query", help="the question, as a till would ask it")
    search_command.add_argument("--region", help="e.g. us-east; passages for all regions always qualify")
    search_command.add_argument("--category", choices=sorted(CATEGORIES), help="only passages of this category")
    search_command.add_argument("-k", type=int, default=5, help="passages to return (default %(default)s)")
    search_command.add_argument("--alpha", type=float, default=0.5, help="0 = BM25 only, 1 = vector only")
    return parser


if __name__ == "__main__":
    sys.exit(main())
