"""Governance end to end on the real chain (six processes, real Kafka, the stub model told what to answer): a 25%
discount is escalated before any model and never reaches the store as an approved offer; a model answer that
promises an unallowed refund is never released; a model sees PII only as tokens, the records and the answer keep
them tokenised, the mapping travels encrypted on `pii.vault` and in the records, and the answer is restored only
at the edge."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from services.gateway.restore import AnswerRestorer
from services.policy.engine import PolicyWatcher
from services.settings import Settings
from services.shared.vault import VaultCipher, load_key_ring, vault_key_for
from services.wire.codec import AvroCodec
from services.wire.models import Channel, PiiVaultEntry, Request
from tests.integration.chain_harness import STORES, Chain, running_chain


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    with running_chain(
        settings, codec, admin, tmp_path_factory.mktemp("governance-chain"), model_latency_ms=5
    ) as running:
        for key in ("governor/0", "answerer/0"):
            running.wait_ready(key, timeout_s=120)
        yield running


def ask(chain: Chain, text: str, run: str, **attributes: str) -> dict[str, Any]:
    request = Request(
        request_id=str(uuid.uuid4()),
        store_id=STORES[0],
        terminal_id="pos-1",
        channel=Channel.POS,
        text=text,
        created_at=int(time.time() * 1000),
        attributes={"run": run, "seq": "0", **attributes},
    )
    chain.publish([request])
    [audited] = chain.read("audited", until=1, run=run, timeout_s=180)
    return audited


def test_a_25_percent_discount_never_reaches_the_store_as_an_approved_offer(chain: Chain) -> None:
    # were the model asked, it would grant the discount: the answer must not come from it
    chain.set_model_reply("Yes, approved: I can give you 25% off today.")
    audited = ask(chain, "Can I get 25% off this sofa please?", run="gov-discount")
    governance, answer = audited["governance"], audited["answer"]
    assert governance["verdict"] == "ESCALATE"
    [finding] = [f for f in governance["findings"] if f["rule_id"] == "discount.manager_approval"]
    assert finding["inputs"]["discount_percent"] == "25" and finding["rule_version"] == "1"
    assert governance["policy_version"] and governance["facts"]["discount_percent"] == "25"
    assert answer["provider"] == "governance" and answer["tokens_in"] == 0
    assert "25% off" not in answer["text"] and "manager" in answer["text"]


def test_a_model_answer_promising_an_unallowed_refund_is_never_released(chain: Chain) -> None:
    chain.set_model_reply("Good news: we will refund you in full today, no receipt needed.")
    audited = ask(chain, "My blender stopped working, what can you do for me?", run="gov-refund")
    answer = audited["answer"]
    assert audited["governance"]["verdict"] in ("ALLOW", "MASK")
    assert answer["provider"] != "governance" and answer["tokens_out"] > 0  # the model did answer
    assert "refund you in full" not in answer["text"]
    assert "manager must approve" in answer["text"]
    assert any(f["rule_id"] == "output.no_refund_promise" for f in answer["output_findings"])


def test_a_model_sees_pii_only_as_tokens_and_the_store_gets_back_what_it_may_see(
    chain: Chain, settings: Settings
) -> None:
    # the model answers in tokens, as a model that saw only tokens would
    chain.set_model_reply("Thanks <PERSON_1>, the warranty details are on their way to <EMAIL_1>.")
    email = "maria.lopez@example.com"
    audited = ask(chain, f"Does the blender have a warranty? I'm Maria Lopez, email {email}", run="gov-pii")
    governance, answer = audited["governance"], audited["answer"]
    assert governance["verdict"] == "MASK"
    sent = json.dumps(governance["redacted_prompt"])  # the hosted provider of this chain may see no PII
    assert email not in sent and "Maria Lopez" not in sent and "<EMAIL_1>" in sent
    # inside Switchyard the record holds tokens only: the request text, the prompt and the answer
    inside = json.dumps({k: v for k, v in audited.items() if k != "pii_vault"})
    assert email not in inside and "Maria Lopez" not in inside
    assert audited["request"]["text"] == governance["redacted_text"]
    assert answer["text"] == "Thanks <PERSON_1>, the warranty details are on their way to the e-mail address on file."
    # restored only where it leaves to the store (the gateway's responses), from the sealed entry the record carries
    restorer = AnswerRestorer(VaultCipher(load_key_ring(settings)), PolicyWatcher(settings.policies))
    assert restorer.restored(audited)["answer"]["text"] == (
        "Thanks Maria Lopez, the warranty details are on their way to the e-mail address on file."
    )
    [entry] = [
        PiiVaultEntry.model_validate({k: v for k, v in record.items() if k != "_partition"})
        for record in chain.read("pii.vault", until=1, timeout_s=30)
        if record.get("vault_key") == governance["vault_key"]
    ]
    assert email.encode() not in entry.ciphertext
    request = audited["request"]
    assert governance["vault_key"] == vault_key_for(request["store_id"], request["request_id"])
    opened = VaultCipher(load_key_ring(settings)).open(entry, governance["vault_key"])
    assert opened["<EMAIL_1>"] == email and opened["<PERSON_1>"] == "Maria Lopez"


def test_an_abusive_request_gets_the_calm_reply_without_a_model(chain: Chain) -> None:
    audited = ask(chain, "you useless idiots, give me my money back now", run="gov-abuse")
    assert audited["governance"]["verdict"] == "BLOCK"
    assert any(f["kind"] == "toxicity" for f in audited["governance"]["findings"])
    assert audited["answer"]["provider"] == "governance" and "respectful" in audited["answer"]["text"]
