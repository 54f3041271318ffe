"""Grounded answers quote the knowledge passages that answer the question; the answerer releases no junk model
output (it is replaced by the grounded answer or the hand-off, with the finding), and on the local base model it
answers from the passages before calling the model."""

from __future__ import annotations

import pytest

from services.answerer.grounded import grounded_answer
from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.answerer.stage import HOLD_REPLY, Answerer
from services.wire.models import (
    Channel,
    Context,
    ContextItem,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    Verdict,
)
from tests.unit.conftest import StubFactory

QUESTION = "How long does the battery of the Aurora headphones last?"
PASSAGE = (
    "The Aurora noise-cancelling headphones fold flat into a hard case. The battery lasts 30 hours with noise "
    "cancelling on and 40 hours with it off. A 10-minute charge gives 5 hours of playback."
)
RETURNS = "Most items can be returned within 30 days of purchase with the original receipt."


def passage(text: str, passage_id: str = "p-1", flags: list[str] | None = None) -> ContextItem:
    return ContextItem(
        source="knowledge_base", source_id=passage_id, version="h", score=0.8, text=text, flags=flags or []
    )


def test_the_sentences_that_answer_are_quoted_in_passage_order_with_their_passage() -> None:
    grounded = grounded_answer(QUESTION, [passage(RETURNS, "p-0"), passage(PASSAGE)])
    assert grounded is not None
    assert "The battery lasts 30 hours with noise cancelling on and 40 hours with it off." in grounded.text
    assert "returned" not in grounded.text and "10-minute charge" not in grounded.text
    assert grounded.passage_ids == ("p-1",)


def test_nothing_is_grounded_when_no_passage_shares_the_questions_words() -> None:
    assert grounded_answer("Do you sell garden furniture?", [passage(PASSAGE)]) is None
    assert grounded_answer(QUESTION, []) is None
    assert (
        grounded_answer(QUESTION, [ContextItem(source="store_hours", source_id="1", version="1", text=PASSAGE)]) is None
    )


def test_a_passage_flagged_as_instruction_like_is_never_quoted() -> None:
    assert grounded_answer(QUESTION, [passage(PASSAGE, flags=["instruction_like"])]) is None


def answerer(built: list[Answerer], url: str, *, grounded_first: bool = False) -> Answerer:
    config = parse_provider_config({"kind": "openai", "name": "default", "base_url": url, "model": "m", "retries": 0})
    providers = {"default": GuardedProvider.from_config(config, environ={})}
    stage = Answerer(ProviderRegistry(providers, fallbacks={}, source="test"), grounded_first=grounded_first)
    built.append(stage)
    return stage


def governed(items: list[ContextItem], text: str = QUESTION) -> Governed:
    return Governed(
        request=Request(
            request_id="g-1", store_id="0412", terminal_id="t", channel=Channel.POS, text=text, created_at=1
        ),
        route=RouteDecision(
            route_id="model.product_question",
            kind=RouteKind.SMALL_MODEL,
            intent="product_question",
            confidence=0.9,
            provider="default",
            reason="test",
            route_table_version="t",
        ),
        context=Context(items=items, token_count=10, token_budget=100),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text=text),
        timings=[],
    )


@pytest.mark.parametrize(
    ("reply", "kind"),
    [
        ("<tag> <tags> <tags> <tags> <tags> <tags> <tags>", "junk.repetition"),
        ("<request> How long does the battery of the Aurora headphones last? </request>", "junk.echoed_markup"),
        ("The store is open now, until 21:00 today, and tomorrow from 09:00 until 20:00.", "junk.off_topic"),
    ],
)
async def test_a_junk_model_answer_is_replaced_by_the_grounded_answer_with_the_finding(
    stub: StubFactory, answerers: list[Answerer], reply: str, kind: str
) -> None:
    behaviour, url = await stub()
    behaviour.reply = reply
    stage = answerer(answerers, url)
    answer = await stage.decide(governed([passage(PASSAGE)]))
    assert behaviour.requests == 1
    assert "The battery lasts 30 hours" in answer.text
    finding = next(f for f in answer.output_findings if f.kind.startswith("junk."))
    assert (finding.kind, finding.action, finding.inputs["replaced_with"]) == (kind, "block", "grounded")
    assert stage.junk_found[kind] == 1


async def test_junk_with_nothing_to_ground_on_becomes_the_hand_off(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub()
    behaviour.reply = "Answer: Answer: Answer: Answer:"
    answer = await answerer(answerers, url).decide(governed([]))
    assert answer.text == HOLD_REPLY
    assert [f.inputs["replaced_with"] for f in answer.output_findings if f.kind.startswith("junk.")] == ["handoff"]


async def test_a_sound_model_answer_is_released_as_written(stub: StubFactory, answerers: list[Answerer]) -> None:
    behaviour, url = await stub()
    behaviour.reply = "About 30 hours with noise cancelling on, 40 with it off."
    answer = await answerer(answerers, url).decide(governed([passage(PASSAGE)]))
    assert answer.text == "About 30 hours with noise cancelling on, 40 with it off."
    assert not [f for f in answer.output_findings if f.kind.startswith("junk.")]


async def test_on_the_local_base_model_the_passages_answer_first_and_the_model_is_not_called(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub()
    behaviour.reply = "anything"
    stage = answerer(answerers, url, grounded_first=True)
    answer = await stage.decide(governed([passage(PASSAGE)]))
    assert behaviour.requests == 0
    assert (answer.provider, answer.model, answer.tokens_in) == ("grounded", "extractive", 0)
    assert "The battery lasts 30 hours" in answer.text
    assert answer.output_findings[0].inputs == {"passages": "p-1"}
    unanswerable = await stage.decide(governed([passage(PASSAGE)], "Do you sell garden furniture?"))
    assert behaviour.requests == 1 and unanswerable.provider == "default"


def custom_route(record: Governed) -> Governed:
    route = record.route.model_copy(
        update={"route_id": "custom.product_question", "kind": RouteKind.CUSTOM_MODEL, "provider": "default"}
    )
    return record.model_copy(update={"route": route})


async def test_on_a_custom_model_route_the_custom_model_answers_before_the_passages(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub()
    behaviour.reply = "About 30 hours with noise cancelling on, 40 with it off."
    stage = answerer(answerers, url, grounded_first=True)
    answer = await stage.decide(custom_route(governed([passage(PASSAGE)])))
    assert behaviour.requests == 1
    assert (answer.provider, answer.text) == ("default", "About 30 hours with noise cancelling on, 40 with it off.")


async def test_where_the_custom_model_fails_the_passages_answer_instead_of_a_hand_off(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub(status=400, fail_rate=1.0)
    stage = answerer(answerers, url, grounded_first=True)
    answer = await stage.decide(custom_route(governed([passage(PASSAGE)])))
    assert behaviour.requests >= 1  # asked (and asked again with the prompt cut, as for any refusal)
    assert answer.provider == "grounded" and "The battery lasts 30 hours" in answer.text
