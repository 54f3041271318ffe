"""The approval workflow's pure parts: a manager's approval satisfies require_approval rules (never block rules,
never a larger discount than approved), and what the approvals process releases for each decision."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from clickhouse_connect.driver.exceptions import OperationalError

from services.approvals.cli import decision
from services.approvals.release import ApprovalRejected, approved_request_id, release
from services.approvals.worker import ApprovalsConfig, ApprovalsWorker, AuditLookup
from services.governor.vault import VaultCipher, VaultTable, vault_key_for
from services.learning.feedback import FeedbackError
from services.policy.engine import PolicyEngine
from services.policy.facts import extract_facts, extract_sourced_facts
from services.runtime.codec import AvroCodec
from services.runtime.models import Channel, FeedbackKind, Request, Verdict
from services.runtime.schema_registry import SchemaRegistry
from services.settings import REPO_ROOT, Settings

APPROVAL = {"approved_by": "mgr-7", "approval_for": "1b2c"}


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.from_file(REPO_ROOT / "policies")


def request(text: str, store_id: str = "0417", request_id: str = "", **attributes: str) -> Request:
    return Request(
        request_id=request_id or str(uuid.uuid4()),
        store_id=store_id,
        terminal_id="pos-1",
        channel=Channel.POS,
        text=text,
        created_at=int(time.time() * 1000),
        attributes=attributes,
    )


def test_a_25_percent_discount_without_approval_is_escalated(engine: PolicyEngine) -> None:
    facts = extract_facts(request("Can I get 25% off this sofa?"), "discount_request", None)
    assert "approved_by" not in facts
    assert engine.decide(facts).verdict == Verdict.ESCALATE


def test_an_approved_25_percent_discount_is_allowed_and_the_finding_names_the_approval(engine: PolicyEngine) -> None:
    # an approval whose signature the governor verified (services.approvals.signing)
    sourced = extract_sourced_facts(
        request("Can I get 25% off this sofa?", **APPROVAL), "discount_request", None, approval_verified=True
    )
    facts = sourced.facts
    assert facts["approved_by"] == "mgr-7" and facts["approval_for"] == "1b2c"
    assert sourced.sources(facts)["approved_by"] == "approval"
    outcome = engine.decide(facts)
    assert outcome.verdict == Verdict.ALLOW and outcome.reply is None
    [finding] = [f for f in outcome.findings if f.rule_id == "discount.manager_approval"]
    assert finding.action == "approved"
    assert finding.inputs["approved_by"] == "mgr-7" and finding.inputs["approval_for"] == "1b2c"
    assert finding.detail.startswith("approved by mgr-7")


def test_an_approval_needs_both_the_manager_and_the_request_it_approves(engine: PolicyEngine) -> None:
    facts = extract_facts(request("Can I get 25% off?", approved_by="mgr-7"), "discount_request", None)
    assert "approved_by" not in facts
    assert engine.decide(facts).verdict == Verdict.ESCALATE


def test_an_approval_never_lifts_a_block_rule(engine: PolicyEngine) -> None:
    facts = {"intent": "price_check", "marketplace": "amazon", "price_match": "true", **APPROVAL}
    assert engine.decide(facts).verdict == Verdict.BLOCK


def test_caps_still_apply_to_an_approved_request(engine: PolicyEngine) -> None:
    facts = {"channel": "KIOSK", "hour": "22", "discount_percent": "25", "intent": "discount_request", **APPROVAL}
    outcome = engine.decide(facts)
    assert outcome.verdict == Verdict.ALLOW
    assert outcome.caps == {"discount_percent": 10.0}


def test_an_approved_answer_may_offer_the_approved_discount_but_not_more(engine: PolicyEngine) -> None:
    base = {"discount_percent": "25", "promises_discount": "true", **APPROVAL}
    assert engine.decide({**base, "promised_discount_percent": "25"}, "output").verdict == Verdict.ALLOW
    assert engine.decide({**base, "promised_discount_percent": "40"}, "output").verdict == Verdict.ESCALATE


def escalated_record(original: Request, verdict: str = "ESCALATE") -> dict[str, Any]:
    return {
        "request": {**original.model_dump(), "text_chars": len(original.text)},
        "governance": {"verdict": verdict},
        "answer": {"output_findings": []},
    }


def test_an_approval_releases_the_request_with_a_deterministic_id_and_the_approval_attributes() -> None:
    original = request("Can I get 25% off this sofa?", staff_id="clerk-1", run="x")
    feedback = decision("approve", original.request_id, "mgr-7", note="loyal customer", store="0417")
    released = release(feedback, escalated_record(original))
    assert released is not None
    assert released.request_id == approved_request_id("0417", original.request_id)
    assert released.request_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"0417:{original.request_id}:approved"))
    assert released.text == original.text and released.store_id == original.store_id
    assert released.attributes["approval_for"] == original.request_id
    assert released.attributes["approved_by"] == "mgr-7"
    assert released.attributes["approval_note"] == "loyal customer"
    assert released.attributes["run"] == "x"
    again = release(decision("approve", original.request_id, "mgr-7", store="0417"), escalated_record(original))
    assert again is not None and again.request_id == released.request_id


def test_a_rejection_releases_nothing() -> None:
    original = request("Can I get 25% off?")
    feedback = decision("reject", original.request_id, "mgr-7", note="no", store="0417")
    assert feedback.kind == FeedbackKind.ESCALATION_OUTCOME and feedback.outcome == "rejected"
    assert feedback.attributes == {"store_id": "0417", "note": "no"}
    assert release(feedback, escalated_record(original)) is None


@pytest.mark.parametrize(
    ("record", "manager", "reason"),
    [
        (None, "mgr-7", "unknown request"),
        ("ALLOW", "mgr-7", "was not escalated"),
        ("ESCALATE", "clerk-1", "cannot approve it too"),
        ("ESCALATE", "api:sy_0417till3", "is an API key, not a manager"),
    ],
)
def test_bad_approvals_are_refused_with_the_reason(record: str | None, manager: str, reason: str) -> None:
    original = request("Can I get 25% off?", staff_id="clerk-1")
    audited = escalated_record(original, record) if record else None
    with pytest.raises(ApprovalRejected, match=reason):
        release(decision("approve", original.request_id, manager, store="0417"), audited)


def test_an_answer_escalated_by_the_output_guard_can_be_approved() -> None:
    original = request("Can you refund me?")
    audited = escalated_record(original, "ALLOW")
    audited["answer"]["output_findings"] = [{"action": "escalate", "rule_id": "output.no_refund_promise"}]
    assert release(decision("approve", original.request_id, "mgr-7", store="0417"), audited) is not None


def test_a_decision_must_name_the_manager() -> None:
    with pytest.raises(FeedbackError, match="--manager"):
        decision("approve", "r1", " ", store="0417")
    with pytest.raises(FeedbackError, match="--store"):
        decision("approve", "r1", "mgr-7", store=" ")


class KnownRecords(AuditLookup):
    """Audit records held in memory instead of ClickHouse (by store and request id, as the query selects them),
    for the worker's decision logic."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.records = {(r["request"]["store_id"], request_id): r for request_id, r in records.items()}

    def add(self, record: dict[str, Any]) -> None:
        self.records[(record["request"]["store_id"], record["request"]["request_id"])] = record

    def record(self, store_id: str, request_id: str) -> dict[str, Any] | None:
        return self.records.get((store_id, request_id))

    def exists(self, store_id: str, request_id: str) -> bool:
        return False


def consumed(offset: int, value: bytes, partition: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("feedback", partition, offset, 0, 0, b"k", value, None, 1, len(value), ())


async def test_the_worker_releases_one_request_for_two_copies_of_an_approval_and_dead_letters_bad_input() -> None:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    original = request("Can I get 25% off this sofa?", staff_id="clerk-1")
    worker = ApprovalsWorker(
        settings, ApprovalsConfig(), KnownRecords({original.request_id: escalated_record(original)}), codec
    )
    approval = codec.encode("Feedback", decision("approve", original.request_id, "mgr-7", store="0417").model_dump())
    first = await worker.decide(consumed(0, approval))
    released_id = approved_request_id("0417", original.request_id)
    assert first is not None and first[0] == "t.requests" and first[1] == released_id
    _, released = codec.decode(first[2], "Request")
    assert released["attributes"]["approved_by"] == "mgr-7"
    assert await worker.decide(consumed(1, approval)) is None
    unknown = codec.encode("Feedback", decision("approve", "no-such-request", "mgr-7", store="0417").model_dump())
    letter = await worker.decide(consumed(2, unknown))
    assert letter is not None and letter[0] == "t.dlq.approvals"
    _, dead = codec.decode(letter[2], "DeadLetter")
    assert "unknown request" in dead["reason"] and dead["request_id"] == "no-such-request"
    garbage = await worker.decide(consumed(3, b"not avro"))
    assert garbage is not None and garbage[0] == "t.dlq.approvals"


class LoggedRecords(KnownRecords):
    """Known audit records whose look-ups are written to `calls` (and fail with `error`, when one is given)."""

    def __init__(self, records: dict[str, dict[str, Any]], calls: list[str], error: Exception | None = None) -> None:
        super().__init__(records)
        self.calls, self.error = calls, error

    def record(self, store_id: str, request_id: str) -> dict[str, Any] | None:
        self.calls.append(f"record {store_id}:{request_id}")
        if self.error is not None:
            raise self.error
        time.sleep(0.01)  # a look-up that takes a while, in its thread
        return super().record(store_id, request_id)

    def exists(self, store_id: str, request_id: str) -> bool:
        self.calls.append(f"exists {store_id}:{request_id}")
        return super().exists(store_id, request_id)


class LoggedVault(VaultTable):
    """A vault that holds one mapping for every key and writes each wait for an entry to `calls`."""

    def __init__(self, calls: list[str], codec: AvroCodec) -> None:
        super().__init__(bootstrap="unused", topic="t.pii.vault", codec=codec, cipher=VaultCipher(bytes(32)))
        self.calls = calls

    async def mapping(self, vault_key: str, *, wait_s: float = 2.0) -> dict[str, str]:
        self.calls.append(f"vault {vault_key}")
        return {"<EMAIL_1>": "jane.doe@example.com"}


class RecordingProducer:
    """Stands in for AIOKafkaProducer: writes its transaction calls to `calls`, in order."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        self.calls.append("begin_transaction")
        try:
            yield
        except BaseException:
            self.calls.append("abort_transaction")
            raise
        self.calls.append("commit_transaction")

    async def send(self, topic: str, *, key: bytes | None, value: bytes) -> None:
        self.calls.append(f"send {topic}")

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, OffsetAndMetadata], group: str) -> None:
        self.calls.append(f"send_offsets {sorted((tp.partition, at.offset) for tp, at in offsets.items())}")


def approvals_worker(records: LoggedRecords, calls: list[str]) -> tuple[ApprovalsWorker, AvroCodec]:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    return ApprovalsWorker(settings, ApprovalsConfig(), records, codec, vault=LoggedVault(calls, codec)), codec


async def test_every_look_up_of_a_batch_is_awaited_before_its_transaction_begins() -> None:
    calls: list[str] = []
    original = request("Can I get 25% off? Mail <EMAIL_1>", staff_id="clerk-1")
    audited = escalated_record(original)
    audited["governance"]["vault_key"] = vault_key_for("0417", original.request_id)
    worker, codec = approvals_worker(LoggedRecords({original.request_id: audited}, calls), calls)
    approval = codec.encode("Feedback", decision("approve", original.request_id, "mgr-7", store="0417").model_dump())
    unknown = codec.encode("Feedback", decision("approve", "no-such-request", "mgr-7", store="0417").model_dump())
    batch = {
        TopicPartition("t.feedback", 0): [consumed(5, approval), consumed(6, b"not avro")],
        TopicPartition("t.feedback", 1): [consumed(9, unknown, partition=1)],
    }
    await worker.process_batch(RecordingProducer(calls), batch)
    released = approved_request_id("0417", original.request_id)
    assert calls == [
        f"record 0417:{original.request_id}",
        f"vault 0417:{original.request_id}",
        f"exists 0417:{released}",
        "record 0417:no-such-request",
        "begin_transaction",  # the transaction holds only what is produced and the offsets
        "send t.requests",
        "send t.dlq.approvals",
        "send t.dlq.approvals",
        "send_offsets [(0, 7), (1, 10)]",
        "commit_transaction",
    ]


async def test_a_look_up_that_fails_past_its_retries_begins_no_transaction_and_commits_no_offset() -> None:
    calls: list[str] = []
    gone = OperationalError("clickhouse unavailable")
    worker, codec = approvals_worker(LoggedRecords({}, calls, error=gone), calls)
    approval = codec.encode("Feedback", decision("approve", "r-1", "mgr-7", store="0417").model_dump())
    batch = {TopicPartition("t.feedback", 0): [consumed(0, b"not avro"), consumed(1, approval)]}
    with pytest.raises(OperationalError):
        await worker.process_batch(RecordingProducer(calls), batch)
    # nothing begun, nothing dead-lettered, no offset committed: the whole batch is redelivered after the restart
    assert calls == ["record 0417:r-1"]


def test_an_approval_for_one_store_never_releases_another_stores_request_of_the_same_id() -> None:
    theirs = request("Can I get 25% off this sofa?", store_id="0417", request_id="pos-0001")
    with pytest.raises(ApprovalRejected, match="unknown request of store 0999"):
        release(decision("approve", "pos-0001", "mgr-9", store="0999"), escalated_record(theirs))


def test_an_approval_that_names_no_store_releases_nothing() -> None:
    original = request("Can I get 25% off this sofa?")
    feedback = decision("approve", original.request_id, "mgr-7", store="0417")
    unnamed = feedback.model_copy(update={"attributes": {}})
    with pytest.raises(ApprovalRejected, match="must name its store"):
        release(unnamed, escalated_record(original))


def sealed_vault(codec: AvroCodec, entries: dict[str, dict[str, str]]) -> VaultTable:
    """A vault table that has read `entries` (vault key → mapping) from its topic, in order."""
    cipher = VaultCipher(bytes(32))
    table = VaultTable(bootstrap="unused", topic="t.pii.vault", codec=codec, cipher=cipher)
    for key, tokens in entries.items():
        table.apply(key.encode(), codec.encode("PiiVaultEntry", cipher.seal(key, tokens).model_dump()))
    return table


async def test_two_stores_with_the_same_request_id_each_release_only_their_own_request_and_pii() -> None:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    records = KnownRecords({})
    for store, staff in (("0417", "clerk-1"), ("0999", "clerk-9")):
        original = request("Can I get 25% off? Mail <EMAIL_1>", store_id=store, request_id="pos-0001", staff_id=staff)
        audited = escalated_record(original)
        audited["governance"]["vault_key"] = vault_key_for(store, "pos-0001")
        records.add(audited)
    vault = sealed_vault(
        codec,
        {
            vault_key_for("0417", "pos-0001"): {"<EMAIL_1>": "jane@example.com"},
            vault_key_for("0999", "pos-0001"): {"<EMAIL_1>": "john@example.com"},
        },
    )
    worker = ApprovalsWorker(settings, ApprovalsConfig(), records, codec, vault=vault)

    def approval(store: str, offset: int) -> ConsumerRecord[bytes, bytes]:
        feedback = decision("approve", "pos-0001", "mgr-7", store=store)
        return consumed(offset, codec.encode("Feedback", feedback.model_dump()))

    released = {}
    for offset, store in enumerate(("0999", "0417")):
        out = await worker.decide(approval(store, offset))
        assert out is not None and out[0] == "t.requests"
        released[store] = codec.decode(out[2], "Request")[1]
    assert released["0999"]["store_id"] == "0999" and released["0999"]["text"].endswith("john@example.com")
    assert released["0999"]["attributes"]["staff_id"] == "clerk-9"
    assert released["0417"]["store_id"] == "0417" and released["0417"]["text"].endswith("jane@example.com")
    assert released["0999"]["request_id"] == approved_request_id("0999", "pos-0001")
    assert released["0417"]["request_id"] == approved_request_id("0417", "pos-0001") != released["0999"]["request_id"]


async def test_an_approval_for_a_store_that_never_sent_the_id_is_dead_lettered() -> None:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    theirs = request("Can I get 25% off? Mail <EMAIL_1>", store_id="0417", request_id="pos-0001")
    audited = escalated_record(theirs)
    audited["governance"]["vault_key"] = vault_key_for("0417", "pos-0001")
    vault = sealed_vault(codec, {vault_key_for("0417", "pos-0001"): {"<EMAIL_1>": "jane@example.com"}})
    worker = ApprovalsWorker(settings, ApprovalsConfig(), KnownRecords({"pos-0001": audited}), codec, vault=vault)
    feedback = decision("approve", "pos-0001", "mgr-9", store="0999")
    letter = await worker.decide(consumed(0, codec.encode("Feedback", feedback.model_dump())))
    assert letter is not None and letter[0] == "t.dlq.approvals"
    _, dead = codec.decode(letter[2], "DeadLetter")
    assert "unknown request of store 0999" in dead["reason"] and "jane" not in dead["reason"]
