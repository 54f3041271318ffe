"""The answerer's output guard: unauthorized commitments and unsupported stock claims are replaced or escalated,
leaked PII is withheld, the answer keeps tokens (restored at the edge only for what the store may see), and held
requests get fixed replies."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

import pytest

from services.answerer.guard import (
    APPROVAL_REPLY,
    CALM_REPLY,
    INJECTION_REPLY,
    check_answer,
    held_reply,
    restore_for_store,
    visible_for_chain,
)
from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.answerer.stage import Answerer, load_toxicity, prompt_for
from services.governor import char_ngram
from services.governor.char_ngram import CheapToxicity
from services.governor.classifiers import BinaryClassifier
from services.policy.engine import PolicyEngine
from services.policy.facts import commitments
from services.settings import REPO_ROOT
from services.wire.models import (
    Channel,
    Context,
    ContextItem,
    Finding,
    Governance,
    Governed,
    PromptMessage,
    Request,
    RouteDecision,
    RouteKind,
    Verdict,
)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine.from_file(REPO_ROOT / "policies")


def governed(
    facts: dict[str, str] | None = None,
    items: list[ContextItem] | None = None,
    verdict: Verdict = Verdict.ALLOW,
    findings: list[Finding] | None = None,
    redacted_prompt: list[PromptMessage] | None = None,
    question: str = "redacted text",
) -> Governed:
    return Governed(
        request=Request(
            request_id="r", store_id="0417", terminal_id="t", channel=Channel.POS, text="raw text", created_at=1
        ),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent="return_or_refund",
            confidence=0.9,
            provider="default",
            reason="t",
            route_table_version="t",
        ),
        context=Context(items=items or [], token_count=1, token_budget=10),
        governance=Governance(
            verdict=verdict,
            findings=findings or [],
            redacted_text=question,
            redacted_prompt=redacted_prompt or [],
            facts=facts or {},
        ),
        timings=[],
    )


@pytest.mark.parametrize(
    ("answer", "kinds"),
    [
        ("Sure, we will give you a full refund today.", ["refund"]),
        ("I can offer you a 25% discount on the sofa.", ["discount"]),
        ("We'll price match Argos for you.", ["price_match"]),
        ("It will be delivered by Friday, guaranteed.", ["delivery_date"]),
        ("Don't worry, the warranty covers it and we will replace it for free.", ["warranty"]),
        ("We can make an exception this once.", ["exception"]),
        ("We cannot refund items after 30 days.", []),
        ("The kettle costs $39.99 and comes in blue.", []),
    ],
)
def test_commitments_are_extracted_and_negations_are_not(answer: str, kinds: list[str]) -> None:
    assert commitments(answer) == kinds


def test_a_refund_promise_outside_the_window_is_never_released(engine: PolicyEngine) -> None:
    record = governed({"intent": "return_or_refund", "days_since_purchase": "45"})
    result = check_answer(record, "Good news: we will refund you in full today.", engine, tokens={})
    assert result.replaced
    assert "refund you in full" not in result.text
    assert "manager must approve" in result.text
    assert [f.rule_id for f in result.findings] == ["output.no_refund_promise"]


def test_a_refund_promise_within_the_window_is_released(engine: PolicyEngine) -> None:
    record = governed({"intent": "return_or_refund", "days_since_purchase": "10"})
    result = check_answer(record, "We will refund you once we have the item back.", engine, tokens={})
    assert not result.replaced


def test_a_discount_over_the_limit_is_escalated_and_one_within_is_released(engine: PolicyEngine) -> None:
    over = check_answer(governed(), "I can give you 30% off that.", engine, tokens={})
    assert over.replaced and [f.action for f in over.findings] == ["escalate"]
    within = check_answer(governed(), "I can give you 10% off that.", engine, tokens={})
    assert not within.replaced


def test_an_offer_over_the_cap_a_modify_rule_set_is_escalated(engine: PolicyEngine) -> None:
    capped = governed({"intent": "discount_request", "cap_discount_percent": "10"})
    over = check_answer(capped, "I can give you 15% off tonight.", engine, tokens={})
    assert over.replaced and [f.rule_id for f in over.findings] == ["output.no_discount_over_cap"]
    assert not check_answer(capped, "I can give you 10% off tonight.", engine, tokens={}).replaced


def test_stock_is_only_stated_when_the_inventory_shows_it(engine: PolicyEngine) -> None:
    inventory = [ContextItem(source="inventory", source_id="sku-1", version="1", score=None, text="Kettle: 4 in stock")]
    assert not check_answer(governed(items=inventory), "We have 4 in stock.", engine, tokens={}).replaced
    unsupported = check_answer(governed(items=inventory), "We have 12 units available.", engine, tokens={})
    assert unsupported.replaced and unsupported.findings[0].rule_id == "output.stock_not_in_inventory"
    assert check_answer(governed(), "Yes, it's in stock.", engine, tokens={}).replaced


def test_leaked_pii_is_withheld_and_the_answer_keeps_tokens_only_for_what_the_store_may_see(
    engine: PolicyEngine,
) -> None:
    tokens = {"<PERSON_1>": "Maria", "<EMAIL_1>": "maria@example.com"}
    answer = "Thanks <PERSON_1>, we e-mailed <EMAIL_1> and bob@example.org about <PHONE_3>."
    result = check_answer(governed(), answer, engine, tokens=tokens)
    assert result.text == (
        "Thanks <PERSON_1>, we e-mailed the e-mail address on file and [withheld] about the phone number on file."
    )
    assert {f.rule_id for f in result.findings} == {"pii.output_email", "pii.invented_token"}
    assert restore_for_store(result.text, tokens, engine.visible_types("store")) == (
        "Thanks Maria, we e-mailed the e-mail address on file and [withheld] about the phone number on file."
    )


def test_a_value_the_model_echoes_from_its_prompt_goes_back_to_its_token(engine: PolicyEngine) -> None:
    tokens = {"<PERSON_1>": "Maria Lopez", "<ACCOUNT_1>": "LOY-99812"}
    result = check_answer(governed(), "Thanks Maria Lopez, account LOY-99812 has 200 points.", engine, tokens=tokens)
    assert result.text == "Thanks <PERSON_1>, account <ACCOUNT_1> has 200 points."
    assert "Maria" not in result.text and "99812" not in result.text


def test_the_edge_puts_neutral_words_where_the_vault_entry_is_gone_or_the_type_is_not_the_stores(
    engine: PolicyEngine,
) -> None:
    visible = engine.visible_types("store")
    assert restore_for_store("Thanks <PERSON_1>.", {}, visible) == "Thanks the customer."
    hidden = restore_for_store("We called <PHONE_1>.", {"<PHONE_1>": "555-123-4567"}, visible)
    assert hidden == "We called the phone number on file."


def test_an_abusive_answer_is_replaced(engine: PolicyEngine) -> None:
    result = check_answer(governed(), "whatever", engine, tokens={}, toxicity=lambda text: 0.97)
    assert result.replaced and result.findings[0].kind == "toxicity"


def test_held_requests_get_fixed_replies_and_an_escalation_says_a_manager_must_approve(engine: PolicyEngine) -> None:
    def finding(rule_id: str, kind: str, action: str) -> Finding:
        return Finding(rule_id=rule_id, rule_version="1", kind=kind, action=action, detail="d")

    toxic = Governance(
        verdict=Verdict.BLOCK, findings=[finding("toxicity.request", "toxicity", "block")], redacted_text=""
    )
    assert held_reply(toxic, engine) == CALM_REPLY
    injected = Governance(
        verdict=Verdict.BLOCK, findings=[finding("injection.request", "injection", "block")], redacted_text=""
    )
    assert held_reply(injected, engine) == INJECTION_REPLY
    discount = Governance(
        verdict=Verdict.ESCALATE,
        findings=[finding("discount.manager_approval", "policy.discount_limit", "escalate")],
        redacted_text="",
    )
    assert "manager's approval" in held_reply(discount, engine)
    unknown = Governance(verdict=Verdict.ESCALATE, findings=[], redacted_text="")
    assert held_reply(unknown, engine) == APPROVAL_REPLY and "manager must approve" in APPROVAL_REPLY


def test_a_failover_chain_sees_only_what_every_provider_in_it_may_see(engine: PolicyEngine) -> None:
    assert visible_for_chain(engine, ["local"]) == {"PERSON"}
    assert visible_for_chain(engine, ["local", "default"]) == frozenset()
    assert visible_for_chain(engine, ["unlisted"]) == frozenset()


def test_the_model_gets_the_redacted_prompt_when_the_governor_made_one() -> None:
    prompt = [PromptMessage(role="system", content="s"), PromptMessage(role="user", content="<PERSON_1> asks")]
    assert prompt_for(governed(redacted_prompt=prompt)) == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "<PERSON_1> asks"},
    ]
    assert prompt_for(governed())[1]["content"] == "redacted text"


def test_the_answerer_loads_the_policy_it_guards_with() -> None:
    assert Answerer.__init__.__kwdefaults__ is not None and "policies" in Answerer.__init__.__kwdefaults__


async def test_an_answer_the_policy_replaces_is_not_scored_for_toxicity(
    engine: PolicyEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    toxicity = load_toxicity()
    probabilities = toxicity.probabilities
    scored = record_minilm_calls(toxicity, monkeypatch)
    never_sure = replace(char_ngram.ensure_trained(), sure_clean_below=0.0)  # every answer goes on to MiniLM
    stage = idle_answerer(toxicity, never_sure)
    await stage.start()
    try:
        late = governed({"intent": "return_or_refund", "days_since_purchase": "45"})
        promise = "Good news: we will refund you in full today."
        assert await stage.guard(late, promise, engine, {}) == check_answer(late, promise, engine, tokens={})
        assert scored == []
        clean = "Thanks <PERSON_1>, the kettle is covered for two years."
        tokens = {"<PERSON_1>": "Maria"}
        asked = governed(question="Is the kettle covered by a warranty?")
        released = await stage.guard(asked, clean, engine, tokens)
        assert scored == [clean]
        assert released == check_answer(
            asked, clean, engine, tokens=tokens, toxicity=lambda text: probabilities([text])[0]
        )
    finally:
        await stage.stop()


@pytest.fixture
async def cascade(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Answerer, list[str]]]:
    """An answerer with its toxicity cascade, and the texts its MiniLM classifier is asked to score."""
    toxicity = load_toxicity()
    minilm_scored = record_minilm_calls(toxicity, monkeypatch)
    stage = idle_answerer(toxicity)
    await stage.start()
    yield stage, minilm_scored
    await stage.stop()


def record_minilm_calls(toxicity: BinaryClassifier, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts the classifier is asked to score from now on (it still scores them)."""
    scored: list[str] = []
    probabilities = toxicity.probabilities

    def counted(texts: Sequence[str]) -> list[float]:
        scored.extend(texts)
        return probabilities(texts)

    monkeypatch.setattr(toxicity, "probabilities", counted)
    return scored


def idle_answerer(toxicity: BinaryClassifier, sure_clean: CheapToxicity | None = None) -> Answerer:
    """An answerer whose only provider is never called: for tests of its guard."""
    idle = parse_provider_config(
        {"kind": "openai", "name": "default", "base_url": "http://127.0.0.1:9/v1", "model": "m"}
    )
    providers = ProviderRegistry({"default": GuardedProvider.from_config(idle, environ={})})
    return Answerer(providers, toxicity=toxicity, sure_clean=sure_clean)


async def test_an_off_topic_answer_is_junk_and_never_scored_for_toxicity(
    engine: PolicyEngine, cascade: tuple[Answerer, list[str]]
) -> None:
    stage, minilm_scored = cascade
    replaced = await stage.guard(governed(question="Why is my refund late?"), "<tag> <tags> <tags> <tags>", engine, {})
    assert replaced.replaced and [f.rule_id for f in replaced.findings] == ["junk.repetition"]
    assert minilm_scored == [] and not stage.toxicity_deciders


async def test_a_clean_retail_answer_is_decided_by_the_cheap_model_without_minilm(
    engine: PolicyEngine, cascade: tuple[Answerer, list[str]]
) -> None:
    stage, minilm_scored = cascade
    clean = "The store closes at 9 pm today and opens again at 8 am tomorrow."
    released = await stage.guard(governed(question="When do you close today?"), clean, engine, {})
    assert not released.replaced and released.text == clean
    assert minilm_scored == []
    assert stage.toxicity_deciders == {"char_ngram": 1}


async def test_an_abusive_answer_is_escalated_to_minilm_and_blocked(
    engine: PolicyEngine, cascade: tuple[Answerer, list[str]]
) -> None:
    stage, minilm_scored = cascade
    abusive = "Shut up about your late refund, you useless idiot, and stop wasting my time."
    asked = governed(question="Why is my refund late?")
    blocked = await stage.guard(asked, abusive, engine, {})
    assert minilm_scored == [abusive]
    assert blocked.replaced and [f.rule_id for f in blocked.findings] == ["toxicity.answer"]
    assert await stage.guard(asked, abusive, engine, {}) == blocked
    assert stage.toxicity_deciders == {"minilm": 1, "remembered": 1}
