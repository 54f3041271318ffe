"""Data-pipeline definitions made at export time: the Weaviate collection exactly as the stitcher creates it, and
(only with --with-data) the ClickHouse telemetry tables as gzipped JSON lines."""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from weaviate import WeaviateClient
from weaviate.collections.classes.config import _CollectionConfigCreate

from services.stitcher.knowledge import DEFAULT_COLLECTION, ensure_collection


class _Collections:
    """Answers "no such collection" and keeps what `create` was asked for."""

    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def exists(self, name: str) -> bool:
        return False

    def create(self, name: str, **config: Any) -> None:
        self.created = {"name": name, **config}


class _DefinitionRecorder:
    """Stands where ensure_collection expects a client, so the definition comes from the code that creates the
    collection rather than a copy of it."""

    def __init__(self) -> None:
        self.collections = _Collections()


def weaviate_collection_definition(name: str = DEFAULT_COLLECTION) -> dict[str, Any]:
    """The collection's REST schema (the body of POST /v1/schema) as services.stitcher.knowledge creates it."""
    recorder = _DefinitionRecorder()
    ensure_collection(cast(WeaviateClient, recorder), name)
    definition: dict[str, Any] = _CollectionConfigCreate(**recorder.collections.created)._to_dict()
    return definition


def dump_clickhouse_tables(out_dir: Path, database: str = "switchyard", tables: Sequence[str] = ()) -> list[Path]:
    """The database's tables (all, or `tables`) as <table>.jsonl.gz; production data, so only on request
    (--with-data). A table name that does not exist is an error, not an empty file."""
    from services.infra.clickhouse import get_client

    client = get_client()
    existing = [str(row[0]) for row in client.query(f"SHOW TABLES FROM {database}").result_rows]
    unknown = sorted(set(tables) - set(existing))
    if unknown:
        raise ValueError(f"no table {', '.join(unknown)} in {database}; tables: {', '.join(sorted(existing))}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for table in sorted(tables or existing):
        rows = bytes(client.raw_query(f"SELECT * FROM {database}.`{table}` FORMAT JSONEachRow"))
        path = out_dir / f"{table}.jsonl.gz"
        with gzip.GzipFile(path, "wb", mtime=0) as file:
            file.write(rows)
        written.append(path)
    return written
