"""Degrade, never stall, on the real broker: with the model provider down, every request is answered with the
hand-off within the outage deadline (none lost, none twice, none dead-lettered), and answers return with the
provider; a question too long for the model's window is cut and answered, not dead-lettered."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from services.answerer.stage import HOLD_REPLY, INPUT_TRUNCATED, PROVIDERS_UNAVAILABLE
from services.settings import Settings
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import Chain, running_chain
from tests.integration.test_chain import answered_once_in_order

DEADLINE_S = 3.0


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    log_dir = tmp_path_factory.mktemp("degrade")
    # the circuit stays closed: the deadline, not an open circuit, releases the hand-off here
    env = {"SWITCHYARD_ANSWER_OUTAGE_DEADLINE_S": str(DEADLINE_S)}
    with running_chain(settings, codec, admin, log_dir, model_latency_ms=10, extra_env=env, fused=True) as running:
        yield running


def stub_behaviour(chain: Chain, **knobs: object) -> None:
    request = urllib.request.Request(
        chain.model_url.removesuffix("/v1") + "/stub/behaviour",
        data=json.dumps(knobs).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def model_requests(chain: Chain, count: int, run: str) -> list:  # type: ignore[type-arg]
    # the warranty question goes to a model route (no data workflow answers it)
    return [
        r.model_copy(update={"text": f"Does this blender come with a warranty? ({n})"})
        for n, r in enumerate(chain.requests(count, run))
    ]


def wait_until_recovered(chain: Chain, timeout_s: float = 90.0) -> None:
    """Until a request is answered by the model again: an open circuit stays open for its cooldown, answering
    the hand-off at once, then lets one probe through and closes when it succeeds."""
    deadline = time.monotonic() + timeout_s
    for attempt in range(1000):
        assert time.monotonic() < deadline, "the provider's answers never came back"
        chain.publish(model_requests(chain, 1, f"probe-{attempt}"))
        probe = answered_once_in_order(chain, f"probe-{attempt}", 1)[0]
        if probe["answer"]["provider"] != "none":
            return
        time.sleep(1.0)


def test_a_provider_outage_releases_the_hand_off_within_the_deadline_and_answers_return(chain: Chain) -> None:
    dead_before = chain.end_offsets("dlq.answerer")
    stub_behaviour(chain, fail_rate=1.0, status=503)
    started = time.monotonic()
    chain.publish(model_requests(chain, 20, "outage"))
    audited = answered_once_in_order(chain, "outage", 20)
    took = time.monotonic() - started
    held = [r for r in audited if r["answer"]["text"] == HOLD_REPLY]
    assert len(held) == 20, [r["answer"]["text"] for r in audited]
    assert all(any(f["kind"] == PROVIDERS_UNAVAILABLE for f in r["answer"]["output_findings"]) for r in held)
    assert took < DEADLINE_S + 30, f"the hand-off took {took:.1f} s"
    stub_behaviour(chain, fail_rate=0.0)
    wait_until_recovered(chain)
    chain.publish(model_requests(chain, 20, "recovered"))
    recovered = answered_once_in_order(chain, "recovered", 20)
    assert all(r["answer"]["provider"] != "none" for r in recovered)
    assert chain.end_offsets("dlq.answerer") == dead_before


def test_a_question_too_long_for_the_model_is_cut_and_answered_not_dead_lettered(chain: Chain) -> None:
    dead_before = chain.end_offsets("dlq.answerer")
    stub_behaviour(chain, max_prompt_chars=1500, reply="Yes, with the receipt, within 30 days.")
    long_question = "Please check this receipt: " + "SKU 1234 boots 89.00; " * 400 + "can I return the boots?"
    request = chain.requests(1, "long")[0].model_copy(update={"text": long_question})
    chain.publish([request])
    answered = answered_once_in_order(chain, "long", 1)[0]
    assert answered["answer"]["text"] != HOLD_REPLY
    assert any(f["kind"] == INPUT_TRUNCATED for f in answered["answer"]["output_findings"])
    assert chain.end_offsets("dlq.answerer") == dead_before
    stub_behaviour(chain, max_prompt_chars=0, reply="")
