"""`switchyard verify [--chain KEY]`: walks the audit hash chains stored in ClickHouse and reports, per chain, the
first broken link: a record whose content no longer matches its hash (hash mismatch), whose prev_hash is not
the hash of the record before it (prev_hash mismatch), a missing or doubled position (gap, fork), or a column
that disagrees with the record it indexes.

Then it holds ClickHouse against the auditor's signed checkpoints (services.auditor.checkpoint), from the
`audit.checkpoints` topic or from files kept offline (`--checkpoints FILE`): a checkpoint whose signature does not
verify with the auditor's public key (forged), two signed heads at one seq (a fork), a chain in ClickHouse that
ends before a checkpoint's seq (truncated), no record at a checkpoint's seq (missing), or a record there with
another hash (rewritten: whoever can write ClickHouse can rehash a whole chain, but cannot sign its new head).
Any finding exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from clickhouse_connect.driver.client import Client

from services.auditor.checkpoint import PUBLIC_KEY_FILE, CheckpointVerifier
from services.auditor.checkpoint_log import CheckpointsUnavailable, read_jsonl, read_topic
from services.auditor.record import expected_hash
from services.infra.clickhouse import get_client
from services.runtime.signing_keys import secrets_dir
from services.runtime.stage import now_us
from services.settings import get_settings
from services.wire.models import AuditCheckpoint


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


@dataclass
class StoredChain:
    """What ClickHouse holds of one chain, as the checkpoints ask: its highest seq, and the hash of the record at
    each checkpointed seq."""

    last_seq: int = 0
    hashes: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckpointFinding:
    chain_key: str
    seq: int
    kind: str  # forged, fork, truncated, missing, rewritten; pending is not a failure
    why: str

    def __str__(self) -> str:
        return f"chain {self.chain_key} checkpoint at seq {self.seq}: {self.kind}: {self.why}"


def walk(
    rows: Iterable[AuditRow], checkpointed: Mapping[str, set[int]] | None = None
) -> tuple[list[ChainReport], dict[str, StoredChain]]:
    """Every chain's report (its first broken link), and what the checkpoints at `checkpointed` (chain key:
    seqs) need of it, from rows ordered by chain and seq; past a broken link the rows are still read for them."""
    reports, stored = [], {}
    for chain_key, chain_rows in groupby(rows, key=lambda row: row.chain_key):
        seen = stored[chain_key] = StoredChain()
        tapped = _tap(chain_rows, (checkpointed or {}).get(chain_key, set()), seen)
        reports.append(check_chain(tapped))
        for _ in tapped:
            pass
    return reports, stored


def _tap(rows: Iterable[AuditRow], wanted: set[int], seen: StoredChain) -> Iterator[AuditRow]:
    for row in rows:
        seen.last_seq = max(seen.last_seq, row.seq)
        if row.seq in wanted:
            seen.hashes.setdefault(row.seq, row.hash)
        yield row


def check_checkpoints(
    checkpoints: Iterable[AuditCheckpoint],
    stored: Mapping[str, StoredChain],
    verifier: CheckpointVerifier,
    settled_before: int | None = None,
) -> list[CheckpointFinding]:
    """Each checkpoint against the auditor's key and against what ClickHouse holds of its chain. A chain that ends
    before a checkpoint signed at or after `settled_before` (µs) is `pending`, not truncated: the telemetry
    writer may not have stored its newest records yet."""
    findings: list[CheckpointFinding] = []
    signed: dict[tuple[str, int], str] = {}
    for checkpoint in checkpoints:
        problem = _checkpoint_problem(checkpoint, signed, stored, verifier, settled_before)
        if problem is not None:
            findings.append(CheckpointFinding(checkpoint.chain_key, checkpoint.seq, *problem))
    return findings


def _checkpoint_problem(
    checkpoint: AuditCheckpoint,
    signed: dict[tuple[str, int], str],
    stored: Mapping[str, StoredChain],
    verifier: CheckpointVerifier,
    settled_before: int | None,
) -> tuple[str, str] | None:
    seq = checkpoint.seq
    problem = verifier.problem(checkpoint)
    if problem is not None:
        return "forged", problem
    first = signed.setdefault((checkpoint.chain_key, seq), checkpoint.hash)
    if first != checkpoint.hash:
        return "fork", f"two signed heads at this seq ({first[:16]}… and {checkpoint.hash[:16]}…)"
    chain = stored.get(checkpoint.chain_key)
    if chain is None or chain.last_seq < seq:
        holds = f"up to seq {chain.last_seq}" if chain is not None else "no record of it"
        recent = settled_before is not None and checkpoint.checkpointed_at >= settled_before
        return "pending" if recent else "truncated", f"ClickHouse holds {holds}, the auditor signed seq {seq}"
    if seq not in chain.hashes:
        return "missing", "ClickHouse has no record at this seq"
    if chain.hashes[seq] != checkpoint.hash:
        return (
            "rewritten",
            f"ClickHouse's record hashes {chain.hashes[seq][:16]}…, the auditor signed {checkpoint.hash[:16]}…",
        )
    return None


def anchored_seqs(checkpoints: Iterable[AuditCheckpoint]) -> dict[str, set[int]]:
    seqs: dict[str, set[int]] = {}
    for checkpoint in checkpoints:
        seqs.setdefault(checkpoint.chain_key, set()).add(checkpoint.seq)
    return seqs


def in_scope(checkpoints: Iterable[AuditCheckpoint], chain: str | None, prefix: str | None) -> list[AuditCheckpoint]:
    """The checkpoints of the chains verified, each once (the topic and a file may both hold one)."""
    unique = {c.model_dump_json(): c for c in checkpoints}.values()
    return [
        c
        for c in unique
        if (chain is None or c.chain_key == chain) and (prefix is None or c.chain_key.startswith(prefix))
    ]


def verify(client: Client, chain: str | None = None, prefix: str | None = None) -> list[ChainReport]:
    return walk(stored_rows(client, chain, prefix))[0]


@dataclass
class Outcome:
    reports: list[ChainReport]
    stored: dict[str, StoredChain]
    checkpoints: list[AuditCheckpoint]
    findings: list[CheckpointFinding]
    not_checkpoints: list[str]

    @property
    def broken(self) -> list[ChainReport]:
        return [r for r in self.reports if r.broken is not None]

    def after_last_checkpoint(self) -> tuple[int, int]:
        """(records after their chain's latest checkpoint, chains with no checkpoint): what no signature covers
        yet, which the next checkpoint of each chain will."""
        forged = {(f.chain_key, f.seq) for f in self.findings if f.kind == "forged"}
        latest: dict[str, int] = {}
        for checkpoint in self.checkpoints:
            if (checkpoint.chain_key, checkpoint.seq) not in forged:
                latest[checkpoint.chain_key] = max(latest.get(checkpoint.chain_key, 0), checkpoint.seq)
        records = sum(max(0, held.last_seq - latest[key]) for key, held in self.stored.items() if key in latest)
        return records, sum(1 for key in self.stored if key not in latest)


def load_checkpoints(args: argparse.Namespace) -> tuple[list[AuditCheckpoint], list[str]]:
    checkpoints, not_checkpoints = [], []
    for path in args.checkpoints:
        checkpoints += read_jsonl(path)
    if args.topic or not args.checkpoints:
        feed = asyncio.run(read_topic(get_settings()))
        checkpoints += feed.checkpoints
        not_checkpoints = [f"the checkpoints topic holds {what}" for what in feed.not_checkpoints]
    return checkpoints, not_checkpoints


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", help="verify one chain (its chain_key, e.g. a store id); default: all")
    parser.add_argument("--prefix", help="verify the chains whose key starts with this (a topic prefix)")
    parser.add_argument("--json", action="store_true", help="one JSON object per chain and per finding")
    parser.add_argument(
        "--checkpoints",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="signed checkpoints from this JSON lines file (switchyard export-checkpoints) instead of the topic; "
        "repeat for several files",
    )
    parser.add_argument("--topic", action="store_true", help="with --checkpoints: read the topic's as well")
    parser.add_argument("--no-checkpoints", action="store_true", help="check the links only, no signed heads")
    parser.add_argument(
        "--public-key", type=Path, help=f"the auditor's public key (default var/secrets/{PUBLIC_KEY_FILE})"
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="a chain that ends before a checkpoint younger than this is pending (the telemetry writer's batch in "
        "flight), not truncated; default 60",
    )
    args = parser.parse_args(argv)
    rows = stored_rows(get_client(), args.chain, args.prefix)
    if args.no_checkpoints:
        reports, stored = walk(rows)
        return report(Outcome(reports, stored, [], [], []), args)
    try:
        verifier = CheckpointVerifier.from_file(args.public_key or secrets_dir(get_settings()) / PUBLIC_KEY_FILE)
        checkpoints, not_checkpoints = load_checkpoints(args)
    except (OSError, ValueError, CheckpointsUnavailable) as error:
        print(f"cannot read the signed checkpoints: {error}", file=sys.stderr)
        print(
            "give --public-key FILE and --checkpoints FILE, or --no-checkpoints to check the links only",
            file=sys.stderr,
        )
        return 2
    checkpoints = in_scope(checkpoints, args.chain, args.prefix)
    reports, stored = walk(rows, anchored_seqs(checkpoints))
    findings = check_checkpoints(checkpoints, stored, verifier, now_us() - int(args.settle * 1e6))
    return report(Outcome(reports, stored, checkpoints, findings, not_checkpoints), args)


def report(outcome: Outcome, args: argparse.Namespace) -> int:
    failures = [finding for finding in outcome.findings if finding.kind != "pending"]
    failed = bool(outcome.broken or failures or outcome.not_checkpoints)
    if args.json:
        for chain in outcome.reports:
            print(json.dumps({"chain": chain.chain_key, "records": chain.records, "last_seq": chain.last_seq,
                              "broken": None if chain.broken is None else chain.broken.__dict__}))  # fmt: skip
        for finding in outcome.findings:
            print(json.dumps({"checkpoint": finding.__dict__}))
        for what in outcome.not_checkpoints:
            print(json.dumps({"checkpoints_topic": what}))
        return 1 if failed or not outcome.reports else 0
    if not outcome.reports and not outcome.findings:
        print(f"no audit records{' for chain ' + args.chain if args.chain else ''}", file=sys.stderr)
        return 1
    for chain in outcome.broken:
        print(f"BROKEN {chain.broken}")
    for finding in outcome.findings:
        print(f"{'PENDING' if finding.kind == 'pending' else 'CHECKPOINT'} {finding}")
    for what in outcome.not_checkpoints:
        print(f"CHECKPOINTS {what}")
    records, broken = sum(r.records for r in outcome.reports), len(outcome.broken)
    print(f"{len(outcome.reports)} chains, {records} records checked: {broken} broken" if broken else
          f"{len(outcome.reports)} chains, {records} records: every link intact")  # fmt: skip
    if not args.no_checkpoints:
        unsigned, unanchored = outcome.after_last_checkpoint()
        verdict = f"{len(failures)} do not match" if failures else "every one matches"
        print(f"{len(outcome.checkpoints)} signed checkpoints: {verdict}; {unsigned} records after their chain's "
              f"latest checkpoint and {unanchored} chains without one wait for the next")  # fmt: skip
    return 1 if failed else 0
