"""Restore at the edge and erasure: records and the audit chain hold the governor's tokens only; the answer is
restored where it leaves Switchyard to the store, from the sealed entry the record carries; erasing a customer
tombstones the entries that open their tokens and deletes raw-text rows, and the audit chain still verifies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from services.auditor.stage import Auditor
from services.auditor.verify import AuditRow, walk
from services.gateway import shapes
from services.gateway.app import REPLY_TO, Gateway
from services.gateway.restore import AnswerRestorer
from services.governor.erase import CUSTOMER_REQUESTS_SQL, ERASED_TABLES, find
from services.policy.engine import PolicyWatcher
from services.runtime.stage import compose, stage_timing
from services.settings import REPO_ROOT, Settings
from services.shared.vault import VaultCipher, VaultError, VaultTable, vault_key_for
from services.telemetry.rows import AUDIT_RECORD_COLUMNS, audit_record_row
from services.wire.codec import AvroCodec
from services.wire.models import Answered, Finding, PromptMessage, Verdict
from services.wire.schema_registry import SchemaRegistry
from tests.unit.chain_records import answered

CODEC = AvroCodec(SchemaRegistry.load(REPO_ROOT / "schemas"))
CIPHER = VaultCipher(b"v" * 32)
RAW = "I'm Maria Lopez, loyalty LOY-99812: is my kettle repair done?"
TOKENISED = "I'm <PERSON_1>, loyalty <ACCOUNT_1>: is my kettle repair done?"
TOKENS = {"<PERSON_1>": "Maria Lopez", "<ACCOUNT_1>": "LOY-99812"}


def governed_answer(request_id: str, customer: str, store_id: str = "0417") -> Answered:
    """An answered record as the chain now makes it: request and answer tokenised, the sealed entry carried."""
    record = answered(request_id, store_id)
    record.request.customer_id = customer
    record.request.text = TOKENISED
    record.governance.redacted_text = TOKENISED
    record.governance.request_text_chars = len(RAW)
    record.governance.vault_key = vault_key_for(store_id, request_id)
    record.governance.verdict = Verdict.MASK
    record.governance.findings = [
        Finding(rule_id="pii.person", rule_version="g", kind="pii.person", action="mask", detail="1 person value")
    ]
    record.governance.redacted_prompt = [PromptMessage(role="user", content=TOKENISED)]
    record.context.prompt = record.governance.redacted_prompt
    record.answer.text = "Thanks <PERSON_1>, the repair on <ACCOUNT_1> is done."
    record.pii_vault = CIPHER.seal(record.governance.vault_key, TOKENS)
    return record


def on_the_wire(auditor: Auditor, record: Answered) -> dict[str, Any]:
    """The audited record as the runtime produces it and a reader (the gateway, the POS reader) decodes it."""
    section = asyncio.run(auditor.decide(record))
    value = CODEC.decode(CODEC.encode("Answered", record.model_dump()), reader="Answered")[1]
    outgoing = compose(value, "audit", section.model_dump(), stage_timing("auditor", 20, 21, 22))
    return CODEC.decode(CODEC.encode("Audited", outgoing), reader="Audited")[1]


def stored(audited: dict[str, Any]) -> AuditRow:
    row = dict(zip(AUDIT_RECORD_COLUMNS, audit_record_row(audited, "audited", 0, 0), strict=True))
    return AuditRow(row["chain_key"], row["seq"], row["request_id"], row["prev_hash"], row["hash"], row["record"])


@pytest.fixture
def restorer() -> AnswerRestorer:
    return AnswerRestorer(CIPHER, PolicyWatcher(REPO_ROOT / "policies"))


def test_the_audited_record_carries_the_sealed_entry_but_the_audit_record_holds_tokens_only() -> None:
    audited = on_the_wire(Auditor(Settings()), governed_answer("r-1", "cust-7"))
    assert audited["pii_vault"] is not None and audited["answer"]["text"].startswith("Thanks <PERSON_1>")
    row = stored(audited)
    record = json.loads(row.record)
    assert "pii_vault" not in record and "Maria" not in row.record and "99812" not in row.record
    assert record["request"]["text"] == TOKENISED and record["request"]["text_chars"] == len(RAW)
    assert walk([row])[0][0].broken is None


def test_the_edge_restores_the_answer_for_the_store_from_the_entry_the_record_carries(
    restorer: AnswerRestorer,
) -> None:
    audited = on_the_wire(Auditor(Settings()), governed_answer("r-1", "cust-7"))
    released = restorer.restored(audited)
    assert released["answer"]["text"] == "Thanks Maria Lopez, the repair on LOY-99812 is done."
    assert "pii_vault" not in released and audited["answer"]["text"].startswith("Thanks <PERSON_1>")
    completion = shapes.completion({**released, "audit": audited["audit"]})
    assert completion["choices"][0]["message"]["content"] == "Thanks Maria Lopez, the repair on LOY-99812 is done."


def test_the_edge_never_opens_another_requests_entry_and_then_says_neutral_words(restorer: AnswerRestorer) -> None:
    audited = on_the_wire(Auditor(Settings()), governed_answer("r-1", "cust-7"))
    audited["pii_vault"] = CIPHER.seal(vault_key_for("0417", "r-2"), {"<PERSON_1>": "Someone Else"}).model_dump()
    released = restorer.restored(audited)
    assert released["answer"]["text"] == "Thanks the customer, the repair on the account on file is done."
    assert restorer.unopened == 1


def test_erasing_a_customer_tombstones_their_vault_entries_and_the_audit_chain_still_verifies(
    restorer: AnswerRestorer,
) -> None:
    auditor = Auditor(Settings(topic_prefix="t1."))
    customers = {"r-1": "cust-7", "r-2": "cust-8", "r-3": "cust-7", "r-4": "cust-8"}
    audited = [on_the_wire(auditor, governed_answer(rid, customer)) for rid, customer in customers.items()]
    rows = [stored(record) for record in audited]
    table = VaultTable(bootstrap="unused", topic="pii.vault", codec=CODEC, cipher=CIPHER)
    for record in audited:
        entry = record["pii_vault"]
        table.apply(entry["vault_key"].encode(), CODEC.encode("PiiVaultEntry", entry))

    def requests_table(sql: str, parameters: dict[str, str]) -> list[Sequence[Any]]:
        assert sql == CUSTOMER_REQUESTS_SQL  # what ClickHouse's `requests` answers for the customer
        return [("0417", rid) for rid, customer in customers.items() if customer == parameters["customer"]]

    erasure = find(requests_table, customer="cust-7")
    assert erasure.requests == (("0417", "r-1"), ("0417", "r-3"))
    for key in erasure.vault_keys:  # the tombstones `switchyard erase` writes, as every vault reader applies them
        table.apply(key.encode(), None)

    for rid in ("r-1", "r-3"):
        with pytest.raises(VaultError):
            asyncio.run(table.mapping(vault_key_for("0417", rid), wait_s=0))
    assert asyncio.run(table.mapping(vault_key_for("0417", "r-2"), wait_s=0)) == TOKENS, "another customer keeps"
    # an answer read back after erasure (the gateway's stored answers) has nothing to restore from
    erased_answer = restorer.restored({**audited[0], "pii_vault": None})["answer"]["text"]
    assert erased_answer == "Thanks the customer, the repair on the account on file is done."
    # raw-text rows go; the audit chain and the tokenised answers stay, and every link still verifies
    assert [sql.split()[2] for sql, _ in erasure.deletions()] == list(ERASED_TABLES)
    assert not {"audit_records", "answers"} & set(ERASED_TABLES)
    [report], _ = walk(rows)
    assert report.broken is None and report.records == 4
    assert not any("Maria" in row.record or "99812" in row.record for row in rows)


def test_erasure_asks_for_a_customer_or_a_request_not_both() -> None:
    with pytest.raises(ValueError):
        find(lambda sql, parameters: [], customer="c", request="r")


class Message:
    """A consumed `audited` message, as confluent-kafka hands it to the gateway's reply reader."""

    def __init__(self, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self._value, self._headers = value, headers

    def error(self) -> None:
        return None

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers


def test_the_gateway_returns_the_answer_restored_and_keeps_no_sealed_entry(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path, kafka_bootstrap="127.0.0.1:9")  # nothing is contacted
    gateway = Gateway(settings, "r1")
    record = governed_answer("r-1", "cust-7")
    record.pii_vault = gateway.restorer.cipher.seal(record.governance.vault_key, TOKENS)  # this deployment's ring
    audited = on_the_wire(Auditor(settings), record)
    value = CODEC.encode("Audited", audited)
    try:
        answered = gateway._reply(Message(value, [(REPLY_TO, gateway.reply_to)]))
    finally:
        gateway.consumer.close()
    assert answered is not None and "pii_vault" not in answered.record
    body = shapes.completion(answered.record)
    assert body["choices"][0]["message"]["content"] == "Thanks Maria Lopez, the repair on LOY-99812 is done."
