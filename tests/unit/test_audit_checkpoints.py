"""Signed checkpoints of the audit chains: the auditor signs a chain's head beside its record, and `verify` holds
ClickHouse against them, so a chain rewritten and rehashed by someone who can write ClickHouse, or cut short, is
caught, as is a checkpoint the auditor did not sign; an intact chain passes, and chains hashed before RFC 8785
still verify."""

from __future__ import annotations

import asyncio
import hashlib
import json
import stat
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from services.auditor.checkpoint import (
    CHECKPOINT_TOPIC,
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    CheckpointSchedule,
    CheckpointSigner,
    CheckpointVerifier,
)
from services.auditor.checkpoint_log import read_jsonl, write_jsonl
from services.auditor.record import JCS_SCHEME, expected_hash
from services.auditor.stage import Auditor
from services.auditor.verify import AuditRow, check_chain, check_checkpoints, main, walk
from services.settings import Settings
from services.wire.models import AuditCheckpoint
from tests.unit.chain_records import answered
from tests.unit.test_audit_chain import CODEC, audited_on_the_wire, stored

CHAIN = "t1.0417"


@pytest.fixture
def signer(tmp_path: Path) -> CheckpointSigner:
    return CheckpointSigner(tmp_path / "secrets")


@pytest.fixture
def verifier(tmp_path: Path, signer: CheckpointSigner) -> CheckpointVerifier:
    return CheckpointVerifier.from_file(tmp_path / "secrets" / PUBLIC_KEY_FILE)


@pytest.fixture
def rows() -> list[AuditRow]:
    auditor = Auditor(Settings(topic_prefix="t1."))
    return [stored(audited_on_the_wire(auditor, f"r-{n}")) for n in range(1, 7)]


def checkpoint(signer: CheckpointSigner, row: AuditRow, at: int = 1_000) -> AuditCheckpoint:
    return signer.sign(row.chain_key, row.seq, row.hash, at)


def rechained(rows: list[AuditRow], legacy: int = 0) -> list[AuditRow]:
    """The rows with every hash recomputed in order, as whoever can write ClickHouse can do after an edit; those
    up to seq `legacy` as records from before RFC 8785 (no scheme)."""
    out, prev = [], ""
    for row in rows:
        record = json.loads(row.record)
        record["audit"]["prev_hash"] = prev
        if row.seq <= legacy:
            del record["audit"]["hash_scheme"]
        record["audit"]["hash"] = prev = expected_hash(record)
        out.append(replace(row, prev_hash=record["audit"]["prev_hash"], hash=prev, record=json.dumps(record)))
    return out


def findings(rows: list[AuditRow], checkpoints: list[AuditCheckpoint], verifier: CheckpointVerifier) -> list[str]:
    seqs = {c.chain_key: {x.seq for x in checkpoints if x.chain_key == c.chain_key} for c in checkpoints}
    _, held = walk(rows, seqs)
    return [f"{f.kind} {f.seq}" for f in check_checkpoints(checkpoints, held, verifier)]


def test_the_key_is_made_once_private_to_its_owner_and_its_public_half_verifies(
    tmp_path: Path, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    private = tmp_path / "secrets" / "auditor_ed25519.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE" not in (tmp_path / "secrets" / PUBLIC_KEY_FILE).read_bytes()
    assert CheckpointSigner(tmp_path / "secrets").key_id == signer.key_id == verifier.key_id
    assert verifier.problem(signer.sign(CHAIN, 3, "ab" * 32, 1)) is None


def test_a_checkpoint_altered_after_signing_or_signed_by_another_key_does_not_verify(
    tmp_path: Path, signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    signed = signer.sign(CHAIN, 3, "ab" * 32, 1)
    for altered in ({"seq": 4}, {"hash": "cd" * 32}, {"chain_key": "t1.0001"}, {"checkpointed_at": 2}):
        assert "does not verify" in (verifier.problem(signed.model_copy(update=altered)) or "")
    assert "does not verify" in (verifier.problem(signed.model_copy(update={"signature": "not base64!"})) or "")
    insider = CheckpointSigner(tmp_path / "insider").sign(CHAIN, 3, "ab" * 32, 1)
    assert "not the auditor's key" in (verifier.problem(insider) or "")
    relabelled = insider.model_copy(update={"key_id": verifier.key_id})
    assert "does not verify" in (verifier.problem(relabelled) or "")


def test_the_auditor_signs_a_chains_head_on_its_first_record_then_every_n_records(signer: CheckpointSigner) -> None:
    auditor = Auditor(Settings(audit_checkpoint_records=3, audit_checkpoint_s=3600), signer=signer)
    signed = []
    for n in range(1, 8):
        record = answered(f"r-{n}")
        section = asyncio.run(auditor.decide(record))
        for side in auditor.side_records(record, section):
            assert (side.topic, side.record, side.key) == (CHECKPOINT_TOPIC, "AuditCheckpoint", section.chain_key)
            _, value = CODEC.decode(CODEC.encode(side.record, side.value))  # what audit.checkpoints carries
            signed.append(AuditCheckpoint.model_validate(value))
            assert (signed[-1].seq, signed[-1].hash) == (section.seq, section.hash)
    assert [c.seq for c in signed] == [1, 4, 7]
    asyncio.run(auditor.on_assigned([0]))  # a new owner signs the head it takes over at once
    assert auditor.checkpoints.last == {}


def test_a_quiet_chain_is_signed_on_its_first_record_after_the_interval() -> None:
    now = [0.0]
    schedule = CheckpointSchedule(every_records=100, every_s=30, clock=lambda: now[0])
    due = []
    for seq, at in enumerate([0, 10, 29, 31, 40, 62], start=1):
        now[0] = at
        due.append(schedule.due("c", seq))
    assert due == [True, False, False, True, False, True]


def test_the_auditor_hashes_rfc_8785_json_and_says_so_in_the_record(rows: list[AuditRow]) -> None:
    record = json.loads(rows[0].record)
    assert record["audit"]["hash_scheme"] == JCS_SCHEME
    assert check_chain(rows).broken is None


def test_each_scheme_hashes_exactly_what_the_readme_says(rows: list[AuditRow]) -> None:
    """sha256(prev_hash + "\\n" + canonical JSON of the record without its hash and the auditor's timing): RFC 8785
    now, Python's sorted-key JSON (no scheme field) before; the two differ (50.0 is "50" in JCS)."""

    def payload(row: AuditRow) -> dict[str, Any]:
        record = json.loads(row.record)
        record["timings"] = [t for t in record["timings"] if t["stage"] != "auditor"]
        del record["audit"]["hash"]
        return dict(record)

    assert rows[1].hash == hashlib.sha256(rows[0].hash.encode() + b"\n" + rfc8785.dumps(payload(rows[1]))).hexdigest()
    legacy = rechained(rows[:1], legacy=1)[0]
    spelled = json.dumps(payload(legacy), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert '"latency_ms":50.0' in spelled and "hash_scheme" not in spelled
    assert legacy.hash == hashlib.sha256(b"\n" + spelled.encode()).hexdigest() != rows[0].hash


def test_chains_hashed_before_rfc_8785_still_verify_and_may_continue_in_it(rows: list[AuditRow]) -> None:
    legacy = rechained(rows[:3], legacy=3)
    assert "hash_scheme" not in json.loads(legacy[0].record)["audit"]
    assert check_chain(legacy).broken is None
    # a legacy record read with today's schema gets the empty scheme: the hash does not cover it
    read_today = []
    for row in legacy:
        record = json.loads(row.record)
        record["audit"]["hash_scheme"] = ""
        read_today.append(replace(row, record=json.dumps(record)))
    assert check_chain(read_today).broken is None
    continued = rechained(rows, legacy=3)  # the new auditor goes on from the legacy head
    assert continued[:3] == legacy and check_chain(continued).broken is None
    assert [json.loads(r.record)["audit"].get("hash_scheme") for r in continued][2:4] == [None, JCS_SCHEME]


def test_a_record_under_a_scheme_verify_does_not_know_is_a_broken_link(rows: list[AuditRow]) -> None:
    record = json.loads(rows[1].record)
    record["audit"]["hash_scheme"] = "sha3-cbor"
    broken = check_chain([rows[0], replace(rows[1], record=json.dumps(record))]).broken
    assert broken is not None and broken.seq == 2 and "unknown hash scheme 'sha3-cbor'" in broken.why


def test_an_intact_chain_matches_every_checkpoint(
    rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    assert findings(rows, [checkpoint(signer, rows[2]), checkpoint(signer, rows[5])], verifier) == []


def test_a_chain_rewritten_and_rehashed_passes_the_links_but_not_the_checkpoints(
    rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoints = [checkpoint(signer, rows[2]), checkpoint(signer, rows[5])]
    record = json.loads(rows[1].record)
    record["answer"]["text"] = "Yes, take 50% off."
    rewritten = rechained([rows[0], replace(rows[1], record=json.dumps(record)), *rows[2:]])
    assert check_chain(rewritten).broken is None  # the hash chain alone cannot tell
    assert findings(rewritten, checkpoints, verifier) == ["rewritten 3", "rewritten 6"]
    edited_after_the_last = rechained([*rows[:5], replace(rows[5], request_id="r-6")])  # nothing changed up to 6
    assert findings(edited_after_the_last[:6], checkpoints, verifier) == []


def test_a_chain_cut_short_of_its_latest_checkpoint_is_truncated_unless_the_checkpoint_is_just_signed(
    rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    checkpoints = [checkpoint(signer, rows[2], at=1_000), checkpoint(signer, rows[5], at=9_000)]
    assert check_chain(rows[:4]).broken is None
    assert findings(rows[:4], checkpoints, verifier) == ["truncated 6"]
    assert findings([], checkpoints, verifier) == ["truncated 3", "truncated 6"]
    _, held = walk(rows[:4], {CHAIN: {3, 6}})
    recent = check_checkpoints(checkpoints, held, verifier, settled_before=5_000)
    assert [(f.kind, f.seq) for f in recent] == [("pending", 6)]


def test_a_forged_checkpoint_is_named_and_not_trusted(
    tmp_path: Path, rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    record = json.loads(rows[1].record)
    record["answer"]["text"] = "Yes, take 50% off."
    rewritten = rechained([rows[0], replace(rows[1], record=json.dumps(record)), *rows[2:]])
    insider = CheckpointSigner(tmp_path / "insider")  # the rewriter signs the new head with a key of their own
    forged = insider.sign(CHAIN, 6, rewritten[5].hash, 1_000).model_copy(update={"key_id": verifier.key_id})
    assert findings(rewritten, [forged], verifier) == ["forged 6"]


def test_a_checkpointed_seq_missing_from_clickhouse_is_named(
    rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    without_3 = [row for row in rows if row.seq != 3]
    assert findings(without_3, [checkpoint(signer, rows[2]), checkpoint(signer, rows[5])], verifier) == ["missing 3"]
    broken = check_chain(without_3).broken
    assert broken is not None and broken.why.startswith("gap")


def test_two_signed_heads_at_one_seq_are_a_fork(
    rows: list[AuditRow], signer: CheckpointSigner, verifier: CheckpointVerifier
) -> None:
    other = signer.sign(CHAIN, 3, "ee" * 32, 2_000)
    assert findings(rows, [checkpoint(signer, rows[2]), other], verifier) == ["fork 3"]


def test_checkpoints_kept_offline_accumulate_once_each(tmp_path: Path, signer: CheckpointSigner) -> None:
    path = tmp_path / "checkpoints.jsonl"
    first, second = signer.sign(CHAIN, 3, "ab" * 32, 1), signer.sign(CHAIN, 6, "cd" * 32, 2)
    assert write_jsonl([first], path) == 1
    assert write_jsonl([first, second], path) == 1  # the topic compacted `first` away later: the file keeps it
    assert read_jsonl(path) == [first, second]
    path.write_text(path.read_text() + "{}\n")
    with pytest.raises(ValueError, match=r"checkpoints\.jsonl:3 "):
        read_jsonl(path)


def test_switchyard_verify_exits_1_and_names_a_rewritten_chain_from_a_checkpoints_file(
    tmp_path: Path,
    rows: list[AuditRow],
    signer: CheckpointSigner,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = tmp_path / "checkpoints.jsonl"
    write_jsonl([checkpoint(signer, rows[2]), checkpoint(signer, rows[5])], path)
    arguments = ["--checkpoints", str(path), "--public-key", str(tmp_path / "secrets" / PUBLIC_KEY_FILE)]
    monkeypatch.setattr("services.auditor.verify.get_client", lambda: None)
    held = rows
    monkeypatch.setattr("services.auditor.verify.stored_rows", lambda client, chain, prefix: iter(held))
    assert main(arguments) == 0
    assert "2 signed checkpoints: every one matches" in capsys.readouterr().out
    record = json.loads(rows[0].record)
    record["request"]["text"] = "nothing to see"
    held = rechained([replace(rows[0], record=json.dumps(record)), *rows[1:]])
    assert main(arguments) == 1
    out = capsys.readouterr().out
    assert f"CHECKPOINT chain {CHAIN} checkpoint at seq 3: rewritten" in out and "every link intact" in out


def test_switchyard_verify_fails_closed_when_it_cannot_read_the_checkpoints_topic(
    tmp_path: Path,
    rows: list[AuditRow],
    signer: CheckpointSigner,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr("services.auditor.verify.get_settings", lambda: Settings(kafka_bootstrap="127.0.0.1:1"))
    monkeypatch.setattr("services.auditor.verify.get_client", lambda: None)
    monkeypatch.setattr("services.auditor.verify.stored_rows", lambda client, chain, prefix: iter(rows))
    assert main(["--public-key", str(tmp_path / "secrets" / PUBLIC_KEY_FILE)]) == 2
    assert "cannot read audit.checkpoints" in capsys.readouterr().err
    assert main(["--no-checkpoints"]) == 0
    assert "every link intact" in capsys.readouterr().out


def test_replicas_that_make_the_key_at_once_all_end_with_the_one_that_won(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from services.runtime.signing_keys import key_id, read_public_key

    def start() -> str:
        return CheckpointSigner(tmp_path / "shared").key_id

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(lambda _: start(), range(8)))
    assert ids == {key_id(read_public_key(tmp_path / "shared" / PUBLIC_KEY_FILE))}
    assert sorted(path.name for path in (tmp_path / "shared").iterdir()) == [PRIVATE_KEY_FILE, PUBLIC_KEY_FILE]
