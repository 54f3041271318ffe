"""The audit record and its hash chain: what the auditor hashes is what ClickHouse stores and `verify` rehashes,
PII tokenised, and any edit, removal or reordering is named as the first broken link."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from itertools import pairwise
from typing import Any

import pytest

from services.auditor.chain import ChainHead, ChainHeadStore, Recovery
from services.auditor.stage import Auditor
from services.auditor.verify import AuditRow, check_chain
from services.runtime.faults import TransientError
from services.runtime.stage import compose, stage_timing
from services.settings import Settings
from services.telemetry.rows import AUDIT_RECORD_COLUMNS, audit_record_row
from services.wire.codec import AvroCodec
from services.wire.models import Finding, PromptMessage, Verdict
from services.wire.schema_registry import SchemaRegistry
from tests.unit.chain_records import answered

CODEC = AvroCodec(SchemaRegistry.load(Settings().schemas_dir))


def audited_on_the_wire(auditor: Auditor, request_id: str, store_id: str = "0417") -> dict[str, Any]:
    """What the runtime puts on `audited` for one answered request, as a reader decodes it."""
    record = answered(request_id, store_id)
    record.request.text = "Call jane.doe@example.com about the boots"
    record.governance.redacted_text = "Call <EMAIL_1> about the boots"
    record.context.prompt = [PromptMessage(role="user", content=record.request.text)]
    record.governance.redacted_prompt = [PromptMessage(role="user", content=record.governance.redacted_text)]
    record.governance.findings = [
        Finding(rule_id="pii.email", rule_version="g-3", kind="pii.email", action="mask", detail="e-mail address")
    ]
    record.governance.verdict = Verdict.MASK
    section = asyncio.run(auditor.decide(record))
    value = CODEC.decode(CODEC.encode("Answered", record.model_dump()), reader="Answered")[1]
    outgoing = compose(value, "audit", section.model_dump(), stage_timing("auditor", 20, 21, 22))
    return CODEC.decode(CODEC.encode("Audited", outgoing))[1]


def stored(audited: dict[str, Any]) -> AuditRow:
    row = dict(zip(AUDIT_RECORD_COLUMNS, audit_record_row(audited, "audited", 0, 0), strict=True))
    return AuditRow(row["chain_key"], row["seq"], row["request_id"], row["prev_hash"], row["hash"], row["record"])


@pytest.fixture
def chain() -> list[AuditRow]:
    auditor = Auditor(Settings(topic_prefix="t1."))
    rows = [stored(audited_on_the_wire(auditor, f"r-{n}")) for n in range(1, 6)]
    audited_on_the_wire(auditor, "elsewhere", store_id="1600")  # another store's chain is its own
    return rows


def test_a_stores_records_count_from_one_and_each_carries_the_hash_of_the_one_before(chain: list[AuditRow]) -> None:
    assert [row.seq for row in chain] == [1, 2, 3, 4, 5]
    assert chain[0].prev_hash == ""
    assert all(later.prev_hash == earlier.hash for earlier, later in pairwise(chain))
    assert {row.chain_key for row in chain} == {"t1.0417"}


def test_the_stored_record_verifies_after_the_trip_through_kafka_and_clickhouse(chain: list[AuditRow]) -> None:
    report = check_chain(chain)
    assert report.broken is None and report.records == 5 and report.last_seq == 5


def test_the_stored_record_holds_the_tokenised_request_never_the_raw_pii(chain: list[AuditRow]) -> None:
    record = json.loads(chain[0].record)
    assert record["request"]["text"] == "Call <EMAIL_1> about the boots"
    assert record["context"]["prompt"] == [{"role": "user", "content": "Call <EMAIL_1> about the boots"}]
    assert "jane.doe@example.com" not in chain[0].record
    assert record["governance"]["findings"][0]["rule_version"] == "g-3"
    assert [t["stage"] for t in record["timings"]] == ["router", "answerer", "auditor"]


def test_an_edited_answer_is_named_as_a_hash_mismatch_at_its_seq(chain: list[AuditRow]) -> None:
    record = json.loads(chain[2].record)
    record["answer"]["text"] = "a friendlier answer"
    chain[2] = replace(chain[2], record=json.dumps(record))
    broken = check_chain(chain).broken
    assert broken is not None and (broken.seq, broken.request_id) == (3, "r-3")
    assert broken.why.startswith("hash mismatch")


def test_a_removed_record_is_named_as_a_gap(chain: list[AuditRow]) -> None:
    del chain[1]
    broken = check_chain(chain).broken
    assert broken is not None and broken.seq == 3 and broken.why.startswith("gap: expected seq 2")


def test_a_record_rehashed_after_an_edit_breaks_the_next_link(chain: list[AuditRow]) -> None:
    from services.auditor.record import expected_hash

    record = json.loads(chain[1].record)
    record["route"]["reason"] = "rewritten"
    record["audit"]["hash"] = expected_hash(record)
    chain[1] = replace(chain[1], record=json.dumps(record), hash=record["audit"]["hash"])
    broken = check_chain(chain).broken
    assert broken is not None and broken.seq == 3 and broken.why.startswith("prev_hash mismatch")


def test_a_column_that_disagrees_with_its_record_is_named(chain: list[AuditRow]) -> None:
    chain[3] = replace(chain[3], request_id="someone-else")
    broken = check_chain(chain).broken
    assert broken is not None and broken.seq == 4 and broken.why.startswith("column request_id")


class Heads(ChainHeadStore):
    """Recovered heads as a test sets them, or a failure."""

    def __init__(self, heads: dict[str, ChainHead] | None = None, failure: Exception | None = None) -> None:
        self.heads, self.failure = heads or {}, failure

    async def recover(self, partitions: list[int]) -> Recovery:
        if self.failure is not None:
            raise self.failure
        return Recovery(dict(self.heads), len(self.heads), 0)


def test_after_an_assignment_each_chain_continues_from_its_recovered_head() -> None:
    auditor = Auditor(Settings(), heads=Heads({"0417": ChainHead(41, "f" * 64)}))
    asyncio.run(auditor.on_assigned([0, 1]))
    section = asyncio.run(auditor.decide(answered("r-42")))
    assert (section.seq, section.prev_hash) == (42, "f" * 64)
    assert asyncio.run(auditor.decide(answered("other", store_id="0001"))).seq == 1


def test_an_auditor_that_cannot_recover_its_heads_chains_nothing_and_says_so() -> None:
    auditor = Auditor(Settings(), heads=Heads(failure=ConnectionError("broker away")), recovery_attempts=1)
    asyncio.run(auditor.on_assigned([0]))
    with pytest.raises(TransientError, match="heads not recovered"):
        asyncio.run(auditor.decide(answered("r-1")))
    healthy, why = asyncio.run(auditor.healthy())
    assert not healthy and "broker away" in why
