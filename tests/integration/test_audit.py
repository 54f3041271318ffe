"""Audit on the real chain: every answer leaves one hash-chained audit record in ClickHouse; chains continue
across an auditor restart (recovering their heads from ClickHouse and the tail of `audited`); `verify` names a
tampered record; `replay` reproduces a recorded request's decisions; `export-audit` hands a period to a
regulator as JSON lines or Parquet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from services.auditor.record import expected_hash
from services.auditor.verify import AuditRow, check_chain, verify
from services.infra.clickhouse import get_client
from services.settings import REPO_ROOT, Settings
from services.wire.codec import AvroCodec
from services.wire.models import Feedback, FeedbackKind
from tests.integration.chain_harness import STORES, Chain, running_chain


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    with running_chain(settings, codec, admin, tmp_path_factory.mktemp("audit")) as running:
        yield running


def audit_rows(settings: Settings, prefix: str, expected: int, timeout_s: float = 60.0) -> int:
    client = get_client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        count = int(
            client.query(
                "SELECT count() FROM audit_records FINAL WHERE startsWith(chain_key, {p:String})",
                parameters={"p": prefix},
            ).result_rows[0][0]
        )
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


def switchyard(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_every_answer_leaves_one_audit_record_and_every_chain_verifies(chain: Chain, settings: Settings) -> None:
    chain.publish(chain.requests(2 * len(STORES), run="first"))
    assert audit_rows(settings, chain.prefix, 2 * len(STORES)) == 2 * len(STORES), f"logs in {chain.log_dir}"
    reports = verify(get_client(settings), prefix=chain.prefix)
    assert [r.broken for r in reports if r.broken] == []
    assert sorted(r.chain_key for r in reports) == sorted(chain.prefix + store for store in STORES)
    assert {(r.records, r.last_seq) for r in reports} == {(2, 2)}


def test_a_restarted_auditor_continues_every_chain_even_past_what_clickhouse_has(
    chain: Chain, settings: Settings
) -> None:
    before = audit_rows(settings, chain.prefix, 2 * len(STORES))
    chain.kill("telemetry/0", signal.SIGTERM)  # ClickHouse falls behind: the topic's tail must fill the gap
    chain.publish(chain.requests(len(STORES), run="while-telemetry-is-down"))
    assert len(chain.read("audited", until=len(STORES), run="while-telemetry-is-down")) == len(STORES)
    chain.kill("auditor/0", signal.SIGKILL)
    chain.wait_ready(chain.start("auditor"))
    chain.publish(chain.requests(len(STORES), run="after-restart"))
    assert len(chain.read("audited", until=len(STORES), run="after-restart")) == len(STORES)
    chain.wait_ready(chain.start("telemetry"))
    expected = before + 2 * len(STORES)
    assert audit_rows(settings, chain.prefix, expected) == expected
    reports = verify(get_client(settings), prefix=chain.prefix)
    assert [str(r.broken) for r in reports if r.broken] == []
    assert {r.last_seq for r in reports} == {before // len(STORES) + 2}


def test_verify_names_the_chain_seq_and_request_of_a_tampered_record(chain: Chain, settings: Settings) -> None:
    victim = chain.prefix + STORES[3]
    audit_rows(settings, chain.prefix, 2 * len(STORES))
    client = get_client(settings)
    columns = [c for c in client.query("SELECT * FROM audit_records LIMIT 0").column_names]
    row = client.query(
        "SELECT * FROM audit_records FINAL WHERE chain_key = {c:String} AND seq = 2", parameters={"c": victim}
    ).result_rows[0]
    tampered = dict(zip(columns, row, strict=True))
    record = json.loads(tampered["record"])
    record["answer"]["text"] = "Yes, take 50% off."
    tampered["record"] = json.dumps(record)
    client.insert("audit_records", [list(tampered.values())], column_names=columns)  # a newer version of the row
    # the chain's environment: verify reads the signed checkpoints from its prefixed audit.checkpoints topic
    done = switchyard("verify", "--chain", victim, env=chain.env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"chain {victim} breaks at seq 2 (request {tampered['request_id']}): hash mismatch" in done.stdout
    others = switchyard("verify", "--chain", chain.prefix + STORES[4], env=chain.env())
    assert others.returncode == 0 and "every link intact" in others.stdout


def test_an_insider_who_rewrites_and_rehashes_a_chain_in_clickhouse_is_caught_by_the_signed_checkpoints(
    chain: Chain, settings: Settings
) -> None:
    """Someone who can write ClickHouse changes an answer and recomputes every hash after it: the links all hold,
    but the auditor's signed checkpoints on `audit.checkpoints` (out of that person's reach) name the rewrite."""
    victim = chain.prefix + STORES[5]
    audit_rows(settings, chain.prefix, 2 * len(STORES))
    client = get_client(settings)
    columns = [c for c in client.query("SELECT * FROM audit_records LIMIT 0").column_names]
    stored = client.query(
        "SELECT * FROM audit_records FINAL WHERE chain_key = {c:String} ORDER BY seq", parameters={"c": victim}
    ).result_rows
    rewritten, prev_hash = [], ""
    for index, values in enumerate(stored):
        row = dict(zip(columns, values, strict=True))
        record = json.loads(row["record"])
        if index == 0:
            record["answer"]["text"] = "Yes, take 50% off."
        record["audit"]["prev_hash"] = prev_hash
        record["audit"]["hash"] = prev_hash = expected_hash(record)
        row.update(record=json.dumps(record), prev_hash=record["audit"]["prev_hash"], hash=prev_hash)
        rewritten.append(list(row.values()))
    client.insert("audit_records", rewritten, column_names=columns)  # newer versions of every row
    assert [r.broken for r in verify(get_client(settings), chain=victim)] == [None]  # the links alone pass
    done = switchyard("verify", "--chain", victim, env=chain.env())
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"chain {victim} checkpoint at seq 1: rewritten" in done.stdout, done.stdout


def test_replay_reproduces_the_routing_and_context_decisions_of_a_recorded_request(
    chain: Chain, settings: Settings
) -> None:
    audit_rows(settings, chain.prefix, 2 * len(STORES))
    request_id = (
        get_client(settings)
        .query(
            "SELECT request_id FROM audit_records FINAL WHERE chain_key = {c:String} ORDER BY seq LIMIT 1",
            parameters={"c": chain.prefix + STORES[1]},
        )
        .result_rows[0][0]
    )
    done = switchyard("replay", request_id, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    checks = {check["decision"]: check for check in json.loads(done.stdout)}
    assert checks["routing"]["same"] is True, checks["routing"]
    assert checks["context selection"]["same"] is True, checks["context selection"]
    assert checks["policy"]["same"] in (True, None), checks["policy"]


def test_a_period_exports_as_json_lines_that_verify_and_as_parquet(
    chain: Chain, settings: Settings, tmp_path: Path
) -> None:
    audit_rows(settings, chain.prefix, 2 * len(STORES))
    victim = chain.prefix + STORES[6]
    since = (datetime.now(tz=UTC) - timedelta(hours=1)).isoformat()
    exported = switchyard("export-audit", "--since", since, "--chain", victim, "--output", str(tmp_path / "a.jsonl"))
    assert exported.returncode == 0, exported.stderr
    lines = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    rows = [
        AuditRow(r["audit"]["chain_key"], r["audit"]["seq"], r["request"]["request_id"], r["audit"]["prev_hash"],
                 r["audit"]["hash"], json.dumps(r))
        for r in lines
    ]  # fmt: skip
    assert len(rows) >= 2 and check_chain(rows).broken is None
    parquet = switchyard("export-audit", "--since", since, "--chain", victim, "--format", "parquet", "-o",
                         str(tmp_path / "a.parquet"))  # fmt: skip
    assert parquet.returncode == 0, parquet.stderr
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    table = pq.read_table(tmp_path / "a.parquet")
    assert table.num_rows == len(rows) and table.column("seq").to_pylist() == [r.seq for r in rows]


def test_the_telemetry_writer_stores_feedback_findings_model_calls_and_consumer_lag(
    chain: Chain, settings: Settings, codec: AvroCodec
) -> None:
    audit_rows(settings, chain.prefix, 2 * len(STORES))
    client = get_client(settings)
    sql = "SELECT request_id FROM audit_records FINAL WHERE startsWith(chain_key, {p:String})"
    ids = [row[0] for row in client.query(sql, parameters={"p": chain.prefix}).result_rows]
    feedback = Feedback(
        feedback_id=str(uuid.uuid4()), request_id=ids[0], kind=FeedbackKind.RATING, rating=4, author="staff-7",
        created_at=int(time.time() * 1000),
    )  # fmt: skip
    chain.publish_raw("feedback", codec.encode("Feedback", feedback.model_dump()), key=ids[0].encode())
    deadline = time.monotonic() + 60
    counts: tuple[int, ...] = (0, 0, 0, 0)
    while time.monotonic() < deadline:
        counts = tuple(int(v) for v in client.query(
            "SELECT (SELECT count() FROM feedback FINAL WHERE feedback_id = {f:String}),"
            " (SELECT count() FROM rule_verdicts FINAL WHERE request_id IN {ids:Array(String)} AND stage = 'governor'),"
            " (SELECT count() FROM model_calls FINAL WHERE request_id IN {ids:Array(String)}),"
            " (SELECT uniqExact(stage) FROM consumer_lag WHERE startsWith(group_id, {p:String}))",
            parameters={"f": feedback.feedback_id, "ids": ids, "p": chain.prefix},
        ).result_rows[0])  # fmt: skip
        if counts[0] == 1 and all(counts[1:3]) and counts[3] == 6:
            break
        time.sleep(0.5)
    feedback_rows, findings, calls, lagged_stages = counts
    assert feedback_rows == 1, "the rating did not reach ClickHouse"
    assert findings > 0, "the e-mail and phone numbers in the traffic left no governor findings"
    assert calls > 0, "model calls of the chain's requests are missing"
    assert lagged_stages == 6, "consumer lag is not sampled for every stage"


def test_erasing_a_customer_deletes_their_raw_text_and_vault_entries_and_their_chain_still_verifies(
    chain: Chain, settings: Settings
) -> None:
    customer, store = f"ERASE-{uuid.uuid4().hex[:8]}", STORES[1]
    text = "Email me at maria.lopez@example.com when my order ships"
    sent = [
        request.model_copy(update={"customer_id": customer, "store_id": store, "text": text})
        for request in chain.requests(2, run="erase")
    ]
    chain.publish(sent)
    audited = chain.read("audited", until=2, run="erase")
    assert all("maria.lopez" not in r["request"]["text"] and r["pii_vault"] is not None for r in audited)
    ids = [request.request_id for request in sent]
    client = get_client(settings)
    stored = "SELECT (SELECT count() FROM requests FINAL WHERE request_id IN {ids:Array(String)}), " \
             "(SELECT count() FROM audit_records FINAL WHERE request_id IN {ids:Array(String)})"  # fmt: skip
    deadline = time.monotonic() + 60
    while tuple(client.query(stored, parameters={"ids": ids}).result_rows[0])[1] != 2:
        assert time.monotonic() < deadline, "the audit records never reached ClickHouse"
        time.sleep(0.5)
    done = switchyard("erase", "--customer", customer, env=chain.env())
    assert done.returncode == 0, done.stdout + done.stderr
    erased = json.loads(done.stdout)
    assert erased["vault_tombstones"] == 2 and sorted(erased["requests"]) == sorted(f"{store}:{i}" for i in ids)
    assert tuple(client.query(stored, parameters={"ids": ids}).result_rows[0]) == (0, 2), "raw text gone, audit kept"
    records = client.query(
        "SELECT record FROM audit_records FINAL WHERE request_id IN {ids:Array(String)}", parameters={"ids": ids}
    ).result_rows
    assert records and not any("maria.lopez" in record for (record,) in records)
    verified = switchyard("verify", "--chain", chain.prefix + store, env=chain.env())
    assert verified.returncode == 0 and "every link intact" in verified.stdout, verified.stdout + verified.stderr
