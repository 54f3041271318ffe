"""`switchyard verify [--chain KEY]`: walks the audit hash chains stored in ClickHouse and reports, per chain, the
first broken link: a record whose content no longer matches its hash (hash mismatch), whose prev_hash is not
the hash of the record before it (prev_hash mismatch), a missing or doubled position (gap, fork), or a column
that disagrees with the record it indexes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from clickhouse_connect.driver.client import Client

from services.auditor.record import expected_hash
from services.infra.clickhouse import get_client


@dataclass(frozen=True)
class AuditRow:
    chain_key: str
    seq: int
    request_id: str
    prev_hash: str
    hash: str
    record: str


@dataclass(frozen=True)
class BrokenLink:
    chain_key: str
    seq: int
    request_id: str
    why: str

    def __str__(self) -> str:
        return f"chain {self.chain_key} breaks at seq {self.seq} (request {self.request_id}): {self.why}"


@dataclass(frozen=True)
class ChainReport:
    chain_key: str
    records: int
    last_seq: int
    broken: BrokenLink | None


def check_chain(rows: Iterable[AuditRow]) -> ChainReport:
    """Checks one chain's rows, in seq order, and stops at the first broken link."""
    chain_key, records, prev = "", 0, None
    for row in rows:
        chain_key, records = row.chain_key, records + 1
        why = _link_problem(row, prev)
        if why is not None:
            return ChainReport(chain_key, records, row.seq, BrokenLink(chain_key, row.seq, row.request_id, why))
        prev = row
    return ChainReport(chain_key, records, prev.seq if prev else 0, None)


def _link_problem(row: AuditRow, prev: AuditRow | None) -> str | None:
    expected_seq = prev.seq + 1 if prev else 1
    if prev is not None and row.seq == prev.seq:
        return f"fork: two records at seq {row.seq} (requests {prev.request_id} and {row.request_id})"
    if row.seq != expected_seq:
        return f"gap: expected seq {expected_seq}, found {row.seq} (records {expected_seq}..{row.seq - 1} missing)"
    try:
        record: dict[str, Any] = json.loads(row.record)
        audit = record["audit"]
        recomputed = expected_hash(record)
    except (ValueError, KeyError, TypeError) as error:
        return f"record is not a readable audit record ({type(error).__name__}: {error})"
    for column, stored, inside in (
        ("request_id", row.request_id, record["request"]["request_id"]),
        ("chain_key", row.chain_key, audit["chain_key"]),
        ("seq", row.seq, audit["seq"]),
        ("prev_hash", row.prev_hash, audit["prev_hash"]),
        ("hash", row.hash, audit["hash"]),
    ):
        if stored != inside:
            return f"column {column} ({stored}) differs from the record's ({inside})"
    if recomputed != row.hash:
        return f"hash mismatch: the record's content hashes to {recomputed[:16]}…, it carries {row.hash[:16]}…"
    expected_prev = prev.hash if prev else ""
    if row.prev_hash != expected_prev:
        carried, before = row.prev_hash[:16] or "(empty)", expected_prev[:16] or "(none)"
        return f"prev_hash mismatch: carries {carried}…, the record before has {before}…"
    return None


def stored_rows(client: Client, chain: str | None = None, prefix: str | None = None) -> Iterator[AuditRow]:
    """Every audit row (deduplicated) of one chain, of the chains whose key starts with `prefix`, or of all,
    ordered by chain and seq, streamed block by block."""
    where = []
    if chain is not None:
        where.append("chain_key = {chain:String}")
    if prefix is not None:
        where.append("startsWith(chain_key, {prefix:String})")
    sql = (
        "SELECT chain_key, seq, request_id, prev_hash, hash, record FROM audit_records FINAL "
        f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY chain_key, seq, request_id"
    )
    with client.query_row_block_stream(sql, parameters={"chain": chain, "prefix": prefix}) as stream:
        for block in stream:
            for chain_key, seq, request_id, prev_hash, digest, record in block:
                yield AuditRow(chain_key, int(seq), request_id, prev_hash, digest, record)


def verify(client: Client, chain: str | None = None, prefix: str | None = None) -> list[ChainReport]:
    rows = stored_rows(client, chain, prefix)
    return [check_chain(chain_rows) for _, chain_rows in groupby(rows, key=lambda row: row.chain_key)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard verify", description=__doc__)
    parser.add_argument("--chain", help="verify one chain (its chain_key, e.g. a store id); default: all")
    parser.add_argument("--prefix", help="verify the chains whose key starts with this (a topic prefix)")
    parser.add_argument("--json", action="store_true", help="one JSON object per chain instead of text")
    args = parser.parse_args(argv)
    reports = verify(get_client(), args.chain, args.prefix)
    broken = [r for r in reports if r.broken is not None]
    if args.json:
        for report in reports:
            print(json.dumps({"chain": report.chain_key, "records": report.records, "last_seq": report.last_seq,
                              "broken": None if report.broken is None else report.broken.__dict__}))  # fmt: skip
        return 1 if broken or not reports else 0
    if not reports:
        print(f"no audit records{' for chain ' + args.chain if args.chain else ''}", file=sys.stderr)
        return 1
    for report in broken:
        print(f"BROKEN {report.broken}")
    records = sum(r.records for r in reports)
    print(f"{len(reports)} chains, {records} records checked: {len(broken)} broken" if broken else
          f"{len(reports)} chains, {records} records: every link intact")  # fmt: skip
    return 1 if broken else 0
