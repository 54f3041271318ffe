"""The approval workflow on the real chain (every process, real Kafka and ClickHouse, the stub model told what to
answer): a 25% discount is escalated; after `switchyard approve` by one of the store's managers (ref.staff, seeded by
the harness) the released request is answered and its audit record names the approval; a rejection releases
nothing, also after the approvals process is SIGKILLed and restarted; approving twice answers once; a decider the
staff table does not know is dead-lettered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from services.approvals.release import approved_request_id
from services.infra.clickhouse import get_client
from services.runtime.kafka_clients import confluent_config
from services.settings import Settings
from services.wire.codec import AvroCodec
from services.wire.models import Channel, Request
from tests.integration.chain_harness import STORES, Chain, running_chain

DISCOUNT = "Can I get 25% off this sofa please?"
# seeded for STORES[0] by Chain.prepare() (services.tools.seed.staff_rows)
MANAGER, CLERK = "mgr-0001-1", "clerk-0001-1"
MODEL_REPLY = "Yes, approved: I can give you 25% off today."


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    with running_chain(
        settings, codec, admin, tmp_path_factory.mktemp("approval-chain"), model_latency_ms=5
    ) as running:
        running.set_model_reply(MODEL_REPLY)
        yield running


def escalate(chain: Chain, run: str, text: str = DISCOUNT, staff_id: str = CLERK) -> str:
    """Sends the 25% discount request, checks it was held for a manager, and waits for its audit row."""
    request = Request(
        request_id=str(uuid.uuid4()),
        store_id=STORES[0],
        terminal_id="pos-1",
        channel=Channel.POS,
        text=text,
        created_at=int(time.time() * 1000),
        attributes={"run": run, "seq": "0", "staff_id": staff_id},
    )
    chain.publish([request])
    [audited] = chain.read("audited", until=1, run=run, timeout_s=180)
    assert audited["governance"]["verdict"] == "ESCALATE" and audited["answer"]["provider"] == "governance"
    client = get_client(chain.settings)
    deadline = time.monotonic() + 60
    sql = "SELECT count() FROM audit_records WHERE request_id = {id:String}"
    while client.query(sql, parameters={"id": request.request_id}).result_rows[0][0] == 0:
        assert time.monotonic() < deadline, "the audit record never reached ClickHouse"
        time.sleep(0.5)
    return request.request_id


def decide(chain: Chain, command: str, request_id: str, manager: str = MANAGER) -> None:
    environment = {**os.environ, **chain.env()}
    arguments = [command, request_id, "--store", STORES[0], "--manager", manager, "--note", "loyal customer"]
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *arguments], env=environment, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()


def released(chain: Chain, run: str, until: int) -> list[dict[str, Any]]:
    records = chain.read("audited", until=until, run=run, timeout_s=180)
    return [r for r in records if r["request"]["attributes"].get("approval_for")]


def dead_letter(chain: Chain, request_id: str, timeout_s: float = 60.0) -> dict[str, Any]:
    """The approvals process's dead letter for `request_id`, once it is there."""
    deadline = time.monotonic() + timeout_s
    while True:
        letters = [d for d in chain.read("dlq.approvals", until=1, timeout_s=5) if d["request_id"] == request_id]
        if letters:
            return letters[-1]
        assert time.monotonic() < deadline, f"no dead letter for {request_id}"


def wait_until_feedback_consumed(chain: Chain) -> None:
    """Until the approvals group has committed every feedback record (so it has decided each one)."""
    consumer = Consumer(confluent_config({"group.id": f"{chain.prefix}switchyard-approvals"}, chain.settings))
    topic = chain.topic("feedback")
    partitions = [TopicPartition(topic, p) for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions]
    deadline = time.monotonic() + 60
    try:
        while True:
            ends = [consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in partitions]
            committed = [max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10)]
            if committed == ends:
                return
            assert time.monotonic() < deadline, f"approvals committed {committed} of {ends}"
            time.sleep(0.5)
    finally:
        consumer.close()


def test_an_approved_discount_is_answered_by_its_workflow_and_its_audit_names_the_approval(chain: Chain) -> None:
    original = escalate(chain, "approve-once", text=f"{DISCOUNT} Email me at jane.doe@example.com")
    decide(chain, "approve", original)
    decide(chain, "approve", original)  # the same approval twice
    [audited] = released(chain, "approve-once", until=2)
    request, governance, answer = audited["request"], audited["governance"], audited["answer"]
    assert request["request_id"] == approved_request_id(STORES[0], original)
    assert request["attributes"]["approved_by"] == MANAGER and request["attributes"]["approval_for"] == original
    assert governance["verdict"] == "MASK"  # allowed, with the restored e-mail address masked again for the model
    [finding] = [f for f in governance["findings"] if f["rule_id"] == "discount.manager_approval"]
    assert finding["action"] == "approved" and finding["inputs"]["approved_by"] == MANAGER
    assert finding["inputs"]["approval_for"] == original
    # the discount workflow answers from the policy, naming the approval; no model is called
    assert (answer["provider"], answer["model"]) == ("workflow", "workflow.discount_request")
    assert answer["text"] == f"A 25% discount was approved by manager {MANAGER}."
    # the released request reads as the original did: its PII came back from the governor's vault entry
    [request_record] = [
        r
        for r in chain.read("requests", until=2, run="approve-once", timeout_s=60)
        if r["attributes"].get("approval_for")
    ]
    assert request_record["text"] == f"{DISCOUNT} Email me at jane.doe@example.com"


def test_a_rejected_discount_releases_nothing(chain: Chain) -> None:
    original = escalate(chain, "reject")
    decide(chain, "reject", original)
    wait_until_feedback_consumed(chain)
    # the decision and anything it released were committed together: nothing more can appear on `requests`
    requests = chain.read("requests", until=2, run="reject", timeout_s=5)
    assert [r["request_id"] for r in requests] == [original]


def test_an_approval_by_the_person_who_asked_is_dead_lettered_with_the_reason(chain: Chain) -> None:
    original = escalate(chain, "self-approve", staff_id=MANAGER)
    decide(chain, "approve", original, manager=MANAGER)
    letter = dead_letter(chain, original)
    assert letter["stage"] == "approvals" and f"{MANAGER} asked for it and cannot approve it too" in letter["reason"]
    wait_until_feedback_consumed(chain)
    assert [r["request_id"] for r in chain.read("requests", until=2, run="self-approve", timeout_s=5)] == [original]


def test_an_approval_by_someone_the_staff_table_does_not_know_is_dead_lettered(chain: Chain) -> None:
    original = escalate(chain, "unknown-manager")
    decide(chain, "approve", original, manager="mgr-7")
    assert "mgr-7 is not a known member of staff" in dead_letter(chain, original)["reason"]
    wait_until_feedback_consumed(chain)
    assert [r["request_id"] for r in chain.read("requests", until=2, run="unknown-manager", timeout_s=5)] == [original]


def test_a_rejection_survives_a_sigkill_of_the_approvals_process_and_a_later_approval_releases_nothing(
    chain: Chain,
) -> None:
    original = escalate(chain, "reject-kill")
    decide(chain, "reject", original)
    wait_until_feedback_consumed(chain)
    assert chain.kill("approvals/0", signal.SIGKILL) == -signal.SIGKILL
    chain.wait_ready(chain.start("approvals", "0"))
    decide(chain, "approve", original, manager="mgr-0001-2")
    assert "a rejection is final" in dead_letter(chain, original)["reason"]
    wait_until_feedback_consumed(chain)
    assert [r["request_id"] for r in chain.read("requests", until=2, run="reject-kill", timeout_s=5)] == [original]
