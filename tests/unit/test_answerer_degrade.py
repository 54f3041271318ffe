"""Degrade, never stall: when no provider can answer, the hand-off to staff is released within the deadline (at
once when every circuit is open) and answers return with the providers; a prompt every provider refuses as too
long is cut to fit and answered, never dead-lettered for its length."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from services.answerer.resilience import ProvidersExhausted
from services.answerer.stage import CUT_MARK, HOLD_REPLY, INPUT_TRUNCATED, PROVIDERS_UNAVAILABLE, Answerer, cut_prompt
from services.shared.prompts import ChatMessage
from services.wire.models import Governance, Verdict
from tests.unit.conftest import StubFactory
from tests.unit.test_answerer_fallback import answerer, governed


def finding(answer_findings: list, kind: str) -> dict[str, str]:  # type: ignore[type-arg]
    return next(f.inputs for f in answer_findings if f.kind == kind)


async def test_an_outage_is_retried_until_the_deadline_then_handed_to_staff_and_answers_return_after(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=503)
    stage = answerer(answerers, {"default": url}, {}, retries=0, breaker={"failure_threshold": 1000})
    stage.outage_deadline_s = 0.3
    with pytest.raises(ProvidersExhausted):  # within the deadline: the runtime retries it
        await stage.decide(governed())
    await asyncio.sleep(0.35)
    held = await stage.decide(governed())  # the same request, past its deadline
    assert held.text == HOLD_REPLY and held.provider == "none"
    assert finding(held.output_findings, PROVIDERS_UNAVAILABLE)["why"] == "deadline"
    behaviour.fail_rate = 0.0
    answered = await stage.decide(
        governed().model_copy(update={"request": governed().request.model_copy(update={"request_id": "req-2"})})
    )
    assert answered.provider == "default" and answered.text != HOLD_REPLY


async def test_with_every_circuit_open_the_hand_off_is_released_at_once(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, url = await stub(fail_rate=1.0, status=500)
    stage = answerer(answerers, {"default": url}, {}, retries=0, breaker={"failure_threshold": 1})
    held = await stage.decide(governed())  # the failure opens the circuit: nobody is left to wait for
    assert held.text == HOLD_REPLY
    assert finding(held.output_findings, PROVIDERS_UNAVAILABLE)["why"] == "circuits open"
    assert stage.degraded["circuits open"] == 1


async def test_a_request_every_provider_refuses_gets_the_hand_off_not_a_dead_letter(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, primary = await stub(fail_rate=1.0, status=400)
    _, fallback = await stub(fail_rate=1.0, status=422)
    stage = answerer(answerers, {"default": primary, "local": fallback}, {"default": ["local"]})
    held = await stage.decide(governed())
    assert held.text == HOLD_REPLY
    assert finding(held.output_findings, PROVIDERS_UNAVAILABLE)["why"] == "rejected"


async def test_a_question_too_long_for_the_model_is_cut_to_fit_and_answered(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub()
    behaviour.max_prompt_chars, behaviour.reply = 700, "Yes: boots return within 30 days with the receipt."
    stage = answerer(answerers, {"default": url}, {})
    question = "My receipt says " + "item, " * 600 + "can I still return the boots?"
    record = governed()
    record = record.model_copy(
        update={"governance": Governance(verdict=Verdict.ALLOW, findings=[], redacted_text=question)}
    )
    answer = await stage.decide(record)
    assert answer.provider == "default" and answer.text != HOLD_REPLY
    cut = finding(answer.output_findings, INPUT_TRUNCATED)
    assert int(cut["kept_chars"]) <= 700 < int(cut["sent_chars"])
    assert behaviour.requests >= 2  # refused whole, answered cut


@given(
    st.lists(st.sampled_from(["system", "user", "assistant"]), min_size=1, max_size=4),
    st.lists(st.text(min_size=0, max_size=3000), min_size=4, max_size=4),
    st.integers(min_value=256, max_value=8000),
)
@example(["system", "system", "system", "user"], ["", "", "", "0" * 32], 256)  # the smallest share: 16 characters
def test_a_cut_prompt_fits_keeps_the_system_prompt_and_the_end_of_each_question(
    roles: list[str], texts: list[str], limit: int
) -> None:
    messages: list[ChatMessage] = [{"role": role, "content": text} for role, text in zip(roles, texts, strict=False)]
    cut = cut_prompt(messages, limit)
    total = sum(len(m["content"]) for m in messages)
    if cut is None:
        return
    assert sum(len(m["content"]) for m in cut) <= min(limit, total // 2)
    for before, after in zip(messages, cut, strict=True):
        if before["role"] != "user":
            assert after == before
        elif after["content"] != before["content"]:
            head, tail = after["content"].split(CUT_MARK)  # the message's start, the mark, the end (the question)
            assert before["content"].startswith(head) and before["content"].endswith(tail) and tail
