"""The approval workflow's pure parts: a manager's approval satisfies require_approval rules (never block rules,
never a larger discount than approved); who may decide (the staff table); the states pending → approved /
rejected / expired and what the approvals process writes, releases and dead-letters for each decision; and a
restarted process deciding as the one before it did, from the state records alone."""

from __future__ import annotations

import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from clickhouse_connect.driver.exceptions import OperationalError

from services.approvals.cli import decision
from services.approvals.release import ApprovalRejected, approved_request_id, released_request
from services.approvals.staff import authorise
from services.approvals.staff import main as staff_cli
from services.approvals.state import Decision, decide_approval, escalated_at
from services.approvals.worker import ApprovalsConfig, ApprovalsWorker, AuditLookup
from services.infra.topic_specs import load_topics
from services.learning.feedback import FeedbackError
from services.policy.engine import PolicyEngine
from services.policy.facts import extract_facts, extract_sourced_facts
from services.settings import REPO_ROOT, Settings
from services.shared.vault import VaultCipher, VaultTable, vault_key_for
from services.tools.seed import staff_rows, stores
from services.wire.codec import AvroCodec
from services.wire.models import (
    Approval,
    ApprovalState,
    Channel,
    Feedback,
    FeedbackKind,
    Request,
    Staff,
    StaffRole,
    Verdict,
)
from services.wire.schema_registry import SchemaRegistry

APPROVAL = {"approved_by": "mgr-7", "approval_for": "1b2c"}
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def member(staff_id: str, role: StaffRole, *stores: str, active: bool = True) -> Staff:
    return Staff(staff_id=staff_id, name=staff_id.title(), role=role, stores=list(stores), active=active, updated_at=0)


# the staff table the tests decide with
STAFF = {
    row.staff_id: row
    for row in [
        member("mgr-7", StaffRole.MANAGER, "0417", "0999"),
        member("mgr-8", StaffRole.MANAGER, "0417"),
        member("mgr-9", StaffRole.MANAGER, "0999"),
        member("mgr-gone", StaffRole.MANAGER, "0417", active=False),
        member("clerk-1", StaffRole.CLERK, "0417"),
        member("rm-all", StaffRole.REGIONAL_MANAGER, "*"),
        member("rm-east", StaffRole.REGIONAL_MANAGER, "0417", "0418"),
        member("mgr-everywhere", StaffRole.MANAGER, "*"),
    ]
}


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
    released = released_request(feedback, escalated_record(original))
    assert released.request_id == approved_request_id("0417", original.request_id)
    assert released.request_id == str(uuid.uuid5(uuid.NAMESPACE_URL, f"0417:{original.request_id}:approved"))
    assert released.text == original.text and released.store_id == original.store_id
    assert released.attributes["approval_for"] == original.request_id
    assert released.attributes["approved_by"] == "mgr-7"
    assert released.attributes["approval_note"] == "loyal customer"
    assert released.attributes["run"] == "x"
    again = released_request(
        decision("approve", original.request_id, "mgr-7", store="0417"), escalated_record(original)
    )
    assert again.request_id == released.request_id


def test_a_rejection_releases_nothing() -> None:
    original = request("Can I get 25% off?")
    feedback = decision("reject", original.request_id, "mgr-7", note="no", store="0417")
    assert feedback.kind == FeedbackKind.ESCALATION_OUTCOME and feedback.outcome == "rejected"
    assert feedback.attributes == {"store_id": "0417", "note": "no"}
    decided = decide_approval(
        feedback, escalated_record(original), current=None, staff=STAFF, decided_at=original.created_at, ttl_ms=DAY_MS
    )
    assert decided.release is None and decided.refused is None
    assert decided.state is not None and decided.state.state == ApprovalState.REJECTED


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
        released_request(decision("approve", original.request_id, manager, store="0417"), audited)


def test_an_answer_escalated_by_the_output_guard_can_be_approved() -> None:
    original = request("Can you refund me?")
    audited = escalated_record(original, "ALLOW")
    audited["answer"]["output_findings"] = [{"action": "escalate", "rule_id": "output.no_refund_promise"}]
    released = released_request(decision("approve", original.request_id, "mgr-7", store="0417"), audited)
    assert released.attributes["approval_for"] == original.request_id


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


def consumed(offset: int, value: bytes, partition: int = 0, timestamp: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("feedback", partition, offset, timestamp, 0, b"k", value, None, 1, len(value), ())


def staffed_worker(
    settings: Settings, records: AuditLookup, codec: AvroCodec, vault: VaultTable | None = None
) -> ApprovalsWorker:
    """A worker whose staff table holds STAFF, as if read from ref.staff."""
    worker = ApprovalsWorker(settings, ApprovalsConfig(), records, codec, vault=vault)
    for row in STAFF.values():
        worker.staff.put(row)
    return worker


def by_topic(out: list[tuple[str, str, bytes]]) -> dict[str, tuple[str, bytes]]:
    """What one decide() produced, by topic (key, value); one record per topic at most."""
    topics = {topic: (key, value) for topic, key, value in out}
    assert len(topics) == len(out)
    return topics


async def test_the_worker_releases_one_request_for_two_copies_of_an_approval_and_dead_letters_bad_input() -> None:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    original = request("Can I get 25% off this sofa?", staff_id="clerk-1")
    worker = staffed_worker(settings, KnownRecords({original.request_id: escalated_record(original)}), codec)
    approval = codec.encode("Feedback", decision("approve", original.request_id, "mgr-7", store="0417").model_dump())
    first = by_topic(await worker.decide(consumed(0, approval)))
    released_id = approved_request_id("0417", original.request_id)
    # keyed by its store, as every request: it is chained by the auditor that owns the store's chain
    assert sorted(first) == ["t.approvals.state", "t.requests"] and first["t.requests"][0] == "0417"
    _, released = codec.decode(first["t.requests"][1], "Request")
    assert released["request_id"] == released_id
    assert released["attributes"]["approved_by"] == "mgr-7"
    _, state = codec.decode(first["t.approvals.state"][1], "Approval")
    assert first["t.approvals.state"][0] == f"0417:{original.request_id}"
    assert (state["state"], state["decided_by"], state["released_request_id"]) == ("APPROVED", "mgr-7", released_id)
    assert await worker.decide(consumed(1, approval)) == []
    unknown = codec.encode("Feedback", decision("approve", "no-such-request", "mgr-7", store="0417").model_dump())
    [letter] = await worker.decide(consumed(2, unknown))
    assert letter[0] == "t.dlq.approvals"
    _, dead = codec.decode(letter[2], "DeadLetter")
    assert "unknown request" in dead["reason"] and dead["request_id"] == "no-such-request"
    [garbage] = await worker.decide(consumed(3, b"not avro"))
    assert garbage[0] == "t.dlq.approvals"


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
    return staffed_worker(settings, records, codec, vault=LoggedVault(calls, codec)), codec


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
        "send t.approvals.state",
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
        released_request(decision("approve", "pos-0001", "mgr-9", store="0999"), escalated_record(theirs))


def test_an_approval_that_names_no_store_releases_nothing() -> None:
    original = request("Can I get 25% off this sofa?")
    feedback = decision("approve", original.request_id, "mgr-7", store="0417")
    unnamed = feedback.model_copy(update={"attributes": {}})
    with pytest.raises(ApprovalRejected, match="must name its store"):
        released_request(unnamed, escalated_record(original))


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
    worker = staffed_worker(settings, records, codec, vault=vault)

    def approval(store: str, offset: int) -> ConsumerRecord[bytes, bytes]:
        feedback = decision("approve", "pos-0001", "mgr-7", store=store)
        return consumed(offset, codec.encode("Feedback", feedback.model_dump()))

    released = {}
    for offset, store in enumerate(("0999", "0417")):
        out = by_topic(await worker.decide(approval(store, offset)))
        released[store] = codec.decode(out["t.requests"][1], "Request")[1]
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
    worker = staffed_worker(settings, KnownRecords({"pos-0001": audited}), codec, vault=vault)
    feedback = decision("approve", "pos-0001", "mgr-9", store="0999")
    [letter] = await worker.decide(consumed(0, codec.encode("Feedback", feedback.model_dump())))
    assert letter[0] == "t.dlq.approvals"
    _, dead = codec.decode(letter[2], "DeadLetter")
    assert "unknown request of store 0999" in dead["reason"] and "jane" not in dead["reason"]


# -- who may decide, and the states pending → approved / rejected / expired -----------------------------------


def decide_on(
    original: Request,
    command: str,
    manager: str,
    *,
    current: Approval | None = None,
    after_ms: int = HOUR_MS,
    audited: dict[str, Any] | None = None,
) -> Decision:
    """One manager's decision on `original` (escalated), `after_ms` after it was sent, with a TTL of a day."""
    feedback = decision(command, original.request_id, manager, store=original.store_id)
    return decide_approval(
        feedback,
        audited or escalated_record(original),
        current=current,
        staff=STAFF,
        decided_at=original.created_at + after_ms,
        ttl_ms=DAY_MS,
    )


def decided(original: Request, state: ApprovalState, by: str = "mgr-8") -> Approval:
    """The state record of an earlier decision on `original`."""
    return Approval(
        store_id=original.store_id,
        request_id=original.request_id,
        state=state,
        decided_by=by,
        feedback_id="f-1",
        released_request_id=approved_request_id(original.store_id, original.request_id)
        if state == ApprovalState.APPROVED
        else None,
        escalated_at=original.created_at,
        decided_at=original.created_at + HOUR_MS,
    )


@pytest.mark.parametrize(
    ("command", "manager", "store", "before", "after_ms", "reason"),
    [
        ("approve", "mgr-404", "0417", None, HOUR_MS, "mgr-404 is not a known member of staff \\(ref.staff\\)"),
        ("reject", "mgr-404", "0417", None, HOUR_MS, "mgr-404 is not a known member of staff"),
        ("approve", "mgr-gone", "0417", None, HOUR_MS, "mgr-gone is inactive and can no longer decide"),
        ("approve", "clerk-1", "0417", None, HOUR_MS, "clerk-1 is a clerk, not a manager"),
        ("reject", "clerk-1", "0417", None, HOUR_MS, "clerk-1 is a clerk, not a manager"),
        ("approve", "mgr-9", "0417", None, HOUR_MS, "mgr-9 is not a manager of store 0417"),
        ("approve", "rm-east", "0999", None, HOUR_MS, "rm-east is not a manager of store 0999"),
        ("approve", "mgr-everywhere", "0417", None, HOUR_MS, "mgr-everywhere is not a manager of store 0417"),
        ("approve", "mgr-7", "0417", None, DAY_MS + 1, "expired: escalated 24.0 h before this decision"),
        ("reject", "mgr-7", "0417", None, DAY_MS + 1, "expired"),
        ("approve", "mgr-7", "0417", ApprovalState.REJECTED, HOUR_MS, "was rejected by mgr-8; a rejection is final"),
        ("reject", "mgr-7", "0417", ApprovalState.APPROVED, HOUR_MS, "already approved by mgr-8 and released"),
        ("approve", "mgr-7", "0417", ApprovalState.EXPIRED, HOUR_MS, "expired: it was not decided within"),
    ],
)
def test_a_decision_that_cannot_count_is_refused_with_the_reason_and_releases_nothing(
    command: str, manager: str, store: str, before: ApprovalState | None, after_ms: int, reason: str
) -> None:
    original = request("Can I get 25% off?", store_id=store, staff_id="clerk-1")
    current = decided(original, before) if before else None
    outcome = decide_on(original, command, manager, current=current, after_ms=after_ms)
    assert outcome.refused is not None and outcome.release is None
    assert re.search(reason, str(outcome.refused)), str(outcome.refused)
    if after_ms > DAY_MS:  # the first decision too late moves the request to expired, for good
        assert outcome.state is not None and outcome.state.state == ApprovalState.EXPIRED
        assert outcome.state.decided_by == manager
    else:
        assert outcome.state is None


def test_an_approval_by_the_manager_who_asked_is_refused_and_another_manager_of_the_store_may_approve() -> None:
    original = request("Can I get 25% off?", staff_id="mgr-8")
    refused = decide_on(original, "approve", "mgr-8")
    assert refused.state is None and refused.release is None
    assert refused.refused is not None and "mgr-8 asked for it and cannot approve it too" in str(refused.refused)
    approved = decide_on(original, "approve", "mgr-7")  # still pending: the refusal changed nothing
    assert approved.refused is None and approved.release is not None


def test_a_pending_request_approved_by_a_manager_of_its_store_is_approved_and_released_once() -> None:
    original = request("Can I get 25% off?", staff_id="clerk-1")
    outcome = decide_on(original, "approve", "mgr-8", after_ms=2 * HOUR_MS)
    assert outcome.refused is None and outcome.release is not None
    released_id = approved_request_id("0417", original.request_id)
    assert outcome.release.request_id == released_id
    assert outcome.state is not None
    assert outcome.state.model_dump() == {
        "store_id": "0417",
        "request_id": original.request_id,
        "state": ApprovalState.APPROVED,
        "decided_by": "mgr-8",
        "feedback_id": outcome.release.attributes["approval_feedback_id"],
        "released_request_id": released_id,
        "escalated_at": original.created_at,
        "decided_at": original.created_at + 2 * HOUR_MS,
    }
    assert decide_on(original, "approve", "mgr-7", current=outcome.state) == Decision()


def test_a_rejection_is_final_and_rejecting_again_changes_nothing() -> None:
    original = request("Can I get 25% off?", staff_id="clerk-1")
    rejected = decide_on(original, "reject", "mgr-8")
    assert rejected.refused is None and rejected.release is None
    assert rejected.state is not None and rejected.state.state == ApprovalState.REJECTED
    assert rejected.state.released_request_id is None
    assert decide_on(original, "reject", "mgr-7", current=rejected.state) == Decision()
    again = decide_on(original, "approve", "mgr-7", current=rejected.state)
    assert again.release is None and again.state is None and again.refused is not None


def test_a_decision_at_exactly_the_ttl_still_counts() -> None:
    original = request("Can I get 25% off?", staff_id="clerk-1")
    assert decide_on(original, "approve", "mgr-7", after_ms=DAY_MS).release is not None
    assert decide_on(original, "approve", "mgr-7", after_ms=DAY_MS + 1).release is None


def test_expiry_counts_from_the_audit_record_when_the_client_dated_its_request_later() -> None:
    recorded_ms = int(time.time() * 1000)
    original = request("Can I get 25% off?", staff_id="clerk-1").model_copy(
        update={"created_at": recorded_ms + 30 * DAY_MS}
    )
    audited = {**escalated_record(original), "audit": {"recorded_at": recorded_ms * 1000}}
    assert escalated_at(audited["request"], audited) == recorded_ms
    feedback = decision("approve", original.request_id, "mgr-7", store="0417")
    late = decide_approval(
        feedback, audited, current=None, staff=STAFF, decided_at=recorded_ms + DAY_MS + 1, ttl_ms=DAY_MS
    )
    assert late.state is not None and late.state.state == ApprovalState.EXPIRED and late.release is None


@pytest.mark.parametrize("store", ["0417", "0999", "1600"])
def test_a_regional_manager_with_the_wildcard_may_approve_for_any_store(store: str) -> None:
    original = request("Can I get 25% off?", store_id=store, staff_id="clerk-1")
    outcome = decide_on(original, "approve", "rm-all")
    assert outcome.refused is None and outcome.release is not None
    assert outcome.release.attributes["approved_by"] == "rm-all"


def test_a_regional_manager_with_named_stores_may_approve_for_those_stores_only() -> None:
    assert decide_on(request("25% off?", store_id="0418"), "approve", "rm-east").release is not None
    assert decide_on(request("25% off?", store_id="0999"), "approve", "rm-east").release is None


def test_the_seed_gives_every_store_two_managers_two_clerks_and_regional_managers() -> None:
    directory = stores(3)
    staff = {row.staff_id: row for row in staff_rows(directory, updated_at=0)}
    assert authorise("mgr-0001-1", "0001", staff, "r").role == StaffRole.MANAGER  # the integration tests' manager
    assert authorise("mgr-0003-2", "0003", staff, "r").staff_id == "mgr-0003-2"
    assert authorise("rm-all", "0002", staff, "r").stores == ["*"]
    assert authorise(f"rm-{directory[1].region}", "0002", staff, "r").role == StaffRole.REGIONAL_MANAGER
    with pytest.raises(ApprovalRejected, match="not a manager of store 0002"):
        authorise("mgr-0001-1", "0002", staff, "r")
    with pytest.raises(ApprovalRejected, match="is a clerk"):
        authorise("clerk-0001-1", "0001", staff, "r")
    assert staff_rows(directory, updated_at=0) == list(staff.values())  # deterministic: republishing is harmless


class CapturingProducer(RecordingProducer):
    """A RecordingProducer that also keeps every record it was given: (topic, key, value)."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__(calls)
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, *, key: bytes | None, value: bytes) -> None:
        await super().send(topic, key=key, value=value)
        self.sent.append((topic, key, value))


def feedback_batch(
    codec: AvroCodec, decisions: list[Feedback]
) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
    records = [consumed(offset, codec.encode("Feedback", f.model_dump())) for offset, f in enumerate(decisions)]
    return {TopicPartition("t.feedback", 0): records}


async def test_a_restarted_process_decides_as_before_from_the_state_records_alone() -> None:
    settings = Settings(topic_prefix="t.")
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    approved, rejected = (request("Can I get 25% off?", staff_id="clerk-1") for _ in range(2))
    records = KnownRecords({r.request_id: escalated_record(r) for r in (approved, rejected)})
    decisions = [
        decision("approve", approved.request_id, "mgr-7", store="0417"),
        decision("reject", rejected.request_id, "mgr-8", store="0417"),
        decision("approve", rejected.request_id, "mgr-7", store="0417"),  # after the rejection, in the same batch
        decision("approve", approved.request_id, "mgr-8", store="0417"),
    ]
    before = CapturingProducer([])
    await staffed_worker(settings, records, codec).process_batch(before, feedback_batch(codec, decisions))
    assert [topic for topic, _, _ in before.sent] == [
        "t.approvals.state",
        "t.requests",
        "t.approvals.state",
        "t.dlq.approvals",
    ]
    # SIGKILL: the new process has nothing in memory but what it reads back from approvals.state
    restarted = staffed_worker(settings, records, codec)
    for topic, key, value in before.sent:
        if topic == "t.approvals.state":
            restarted.states.apply(key, value)
    assert {key: row.state for key, row in restarted.states.rows.items()} == {
        f"0417:{approved.request_id}": ApprovalState.APPROVED,
        f"0417:{rejected.request_id}": ApprovalState.REJECTED,
    }
    after = CapturingProducer([])
    await restarted.process_batch(after, feedback_batch(codec, decisions))
    # the approval is not released again, the rejection stands, and the approval after it is refused as before
    assert [topic for topic, _, _ in after.sent] == ["t.dlq.approvals"]
    [(_, _, letter_before)] = [sent for sent in before.sent if sent[0] == "t.dlq.approvals"]
    [(_, _, letter_after)] = after.sent
    reasons = [codec.decode(letter, "DeadLetter")[1]["reason"] for letter in (letter_before, letter_after)]
    assert reasons[0] == reasons[1] and "a rejection is final" in reasons[0]
    # without the state records the same feedback would release the approved request a second time
    forgetful = CapturingProducer([])
    await staffed_worker(settings, records, codec).process_batch(forgetful, feedback_batch(codec, decisions[:1]))
    assert "t.requests" in [topic for topic, _, _ in forgetful.sent]


async def test_a_backdated_decision_that_reached_kafka_after_the_ttl_is_dead_lettered_as_expired() -> None:
    settings = Settings(topic_prefix="t.", approval_ttl_s=86_400)
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    original = request("Can I get 25% off?", staff_id="clerk-1")
    worker = staffed_worker(settings, KnownRecords({original.request_id: escalated_record(original)}), codec)
    feedback = decision("approve", original.request_id, "mgr-7", store="0417")
    backdated = feedback.model_copy(update={"created_at": original.created_at + HOUR_MS})
    message = consumed(0, codec.encode("Feedback", backdated.model_dump()), timestamp=original.created_at + 2 * DAY_MS)
    out = by_topic(await worker.decide(message))
    assert sorted(out) == ["t.approvals.state", "t.dlq.approvals"]
    assert codec.decode(out["t.approvals.state"][1], "Approval")[1]["state"] == "EXPIRED"
    assert "expired" in codec.decode(out["t.dlq.approvals"][1], "DeadLetter")[1]["reason"]
    assert worker.states.get(f"0417:{original.request_id}") is not None


def test_switchyard_staff_add_refuses_the_every_store_wildcard_for_anyone_but_a_regional_manager(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as refused:
        staff_cli(["add", "mgr-x", "--name", "X", "--role", "manager", "--store", "*"])
    assert refused.value.code == 2 and "is for a regional_manager only" in capsys.readouterr().err


def test_decided_states_are_kept_longer_than_any_approval_can_wait() -> None:
    """approvals.state drops states after its retention; a decision on a request whose state is gone must still be
    refused, which holds while every such request is past its TTL: retention over the longest TTL allowed."""
    specs = {spec.name: spec for spec in load_topics(REPO_ROOT / "topics")}
    state = specs["approvals.state"]
    longest_ttl_s = Settings.model_fields["approval_ttl_s"].metadata
    bound = next(m.le for m in longest_ttl_s if getattr(m, "le", None) is not None)
    assert state.cleanup_policy == "compact,delete" and state.retention_ms >= 2 * bound * 1000
    with pytest.raises(ValueError, match="less than or equal"):
        Settings(approval_ttl_s=bound + 1)
