"""`switchyard export-audit --since T --until T --format jsonl|parquet`: the audit records of a period for a
regulator, in chain order. JSON lines hold each audit record exactly as stored and hashed (so `verify`'s
arithmetic can be redone on the export alone: sha256(prev_hash + "\\n" + canonical JSON of the record without its
own hash and the auditor's timing), RFC 8785 JSON where `audit.hash_scheme` is sha256-jcs); Parquet holds the
indexed columns next to the same record text. `switchyard export-checkpoints` hands over the signed heads."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from clickhouse_connect.driver.client import Client

from services.infra.clickhouse import get_client

COLUMNS = [
    "chain_key", "seq", "request_id", "audit_id", "prev_hash", "hash", "recorded_at", "store_id", "intent", "route",
    "route_table_version", "verdict", "policy_version", "provider", "model", "prompt_template", "prompt_hash",
    "record",
]  # fmt: skip


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time; a naive one is UTC."""
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def audit_blocks(
    client: Client, since: datetime, until: datetime, chain: str | None = None
) -> Iterator[list[tuple[Any, ...]]]:
    """The period's audit records (deduplicated), ordered by chain and seq, in blocks of rows."""
    where = "recorded_at >= {since:DateTime64(6, 'UTC')} AND recorded_at < {until:DateTime64(6, 'UTC')}"
    if chain is not None:
        where += " AND chain_key = {chain:String}"
    sql = f"SELECT {', '.join(COLUMNS)} FROM audit_records FINAL WHERE {where} ORDER BY chain_key, seq, request_id"
    parameters = {"since": since, "until": until, "chain": chain}
    with client.query_row_block_stream(sql, parameters=parameters) as stream:
        for block in stream:
            yield [tuple(row) for row in block]


def write_jsonl(blocks: Iterator[list[tuple[Any, ...]]], out: BinaryIO) -> int:
    record_at = COLUMNS.index("record")
    count = 0
    for block in blocks:
        out.write(b"".join(row[record_at].encode() + b"\n" for row in block))
        count += len(block)
    return count


def write_parquet(blocks: Iterator[list[tuple[Any, ...]]], path: Path) -> int:
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    types = {"seq": pa.uint64(), "recorded_at": pa.timestamp("us", tz="UTC")}
    schema = pa.schema([(name, types.get(name, pa.string())) for name in COLUMNS])
    count = 0
    with pq.ParquetWriter(path, schema, compression="zstd") as writer:
        for block in blocks:
            columns = list(zip(*block, strict=True)) if block else [() for _ in COLUMNS]
            arrays = [pa.array(list(values), type=column.type) for values, column in zip(columns, schema, strict=True)]
            writer.write_table(pa.table(arrays, schema=schema))
            count += len(block)
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard export-audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--since", type=parse_time, required=True, help="from (inclusive), ISO 8601; naive is UTC")
    parser.add_argument("--until", type=parse_time, default=datetime.now(tz=UTC), help="to (exclusive); default now")
    parser.add_argument("--format", choices=["jsonl", "parquet"], default="jsonl", help="default %(default)s")
    parser.add_argument("--chain", help="only this chain (chain_key)")
    parser.add_argument("--output", "-o", type=Path, help="file to write; default stdout (jsonl only)")
    args = parser.parse_args(argv)
    if args.format == "parquet" and args.output is None:
        parser.error("--format parquet needs --output FILE")
    blocks = audit_blocks(get_client(), args.since, args.until, args.chain)
    if args.format == "parquet":
        count = write_parquet(blocks, args.output)
    elif args.output is None:
        count = write_jsonl(blocks, sys.stdout.buffer)
    else:
        with args.output.open("wb") as out:
            count = write_jsonl(blocks, out)
    print(f"exported {count} audit records ({args.since.isoformat()} to {args.until.isoformat()})", file=sys.stderr)
    return 0
