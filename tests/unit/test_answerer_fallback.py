"""The answerer's fallback execution against stub models over loopback HTTP: the route's provider first, the
next of its fallbacks when it fails, the Answer saying who answered and why."""

from __future__ import annotations

from typing import Any

import pytest

from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider, ProvidersExhausted
from services.answerer.stage import HOLD_REPLY, Answerer
from services.runtime.faults import TransientError
from services.shared.vault import VaultCipher, vault_key_for
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


def answerer(built: list[Answerer], urls: dict[str, str], fallback: dict[str, list[str]], **config: Any) -> Answerer:
    providers = {
        name: GuardedProvider.from_config(
            parse_provider_config(
                {"kind": "openai", "name": name, "base_url": url, "model": f"{name}-model", "backoff_s": 0.01, **config}
            ),
            environ={},
        )
        for name, url in urls.items()
    }
    stage = Answerer(ProviderRegistry(providers, fallbacks=fallback, source="test providers"))
    built.append(stage)
    return stage


def governed(provider: str | None = "default", *, kind: RouteKind = RouteKind.SMALL_MODEL) -> Governed:
    return Governed(
        request=Request(
            request_id="req-1",
            store_id="0412",
            terminal_id="pos-1",
            channel=Channel.POS,
            text="Is the blue kettle in stock?",
            created_at=1,
        ),
        route=RouteDecision(
            route_id="workflow.store_hours" if kind == RouteKind.WORKFLOW else "model.general",
            kind=kind,
            intent="stock_check",
            confidence=0.9,
            provider=provider,
            reason="test",
            route_table_version="t",
        ),
        context=Context(
            items=[ContextItem(source="workflow", source_id="workflow.store_hours", version="1", text="Open 9 to 5")],
            token_count=4,
            token_budget=100,
        ),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text="Is the blue kettle in stock?"),
        timings=[],
    )


async def test_the_routes_provider_answers_when_it_is_healthy(stub: StubFactory, answerers: list[Answerer]) -> None:
    _, primary = await stub()
    fallback_behaviour, fallback = await stub()
    stage = answerer(answerers, {"default": primary, "local": fallback}, {"default": ["local"]})
    answer = await stage.decide(governed())
    assert (answer.provider, answer.model, answer.failover) == ("default", "default-model", [])
    assert answer.text.startswith("Stub answer to:")
    assert fallback_behaviour.requests == 0


async def test_a_failing_primary_is_answered_by_its_fallback_and_the_failover_is_recorded(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    primary_behaviour, primary = await stub(fail_rate=1.0, status=500)
    _, fallback = await stub()
    stage = answerer(answerers, {"default": primary, "local": fallback}, {"default": ["local"]}, retries=1)
    answer = await stage.decide(governed())
    assert answer.provider == "local"
    assert answer.failover == ["default: HTTP 500", "local: answered"]
    assert primary_behaviour.requests == 2  # retried once before failing over


async def test_a_timeout_and_malformed_json_fail_over_with_their_reasons(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, slow = await stub(latency_ms=500)
    _, garbled = await stub(malformed_rate=1.0)
    _, healthy = await stub()
    urls = {"default": slow, "garbled": garbled, "local": healthy}
    stage = answerer(answerers, urls, {"default": ["garbled", "local"]}, retries=0, timeout_s=0.1)
    answer = await stage.decide(governed())
    assert answer.failover == ["default: timeout", "garbled: malformed answer", "local: answered"]


async def test_an_open_circuit_is_skipped_without_calling_the_provider(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    primary_behaviour, primary = await stub(fail_rate=1.0, status=503)
    _, fallback = await stub()
    stage = answerer(
        answerers,
        {"default": primary, "local": fallback},
        {"default": ["local"]},
        retries=0,
        breaker={"failure_threshold": 1, "cooldown_s": 60},
    )
    first = await stage.decide(governed())
    second = await stage.decide(governed())
    assert first.failover == ["default: HTTP 503", "local: answered"]
    assert second.failover == ["default: circuit open", "local: answered"]
    assert primary_behaviour.requests == 1


async def test_when_every_provider_fails_transiently_the_record_is_retried_not_dead_lettered(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, primary = await stub(fail_rate=1.0, status=500)
    _, fallback = await stub(fail_rate=1.0, status=429)
    stage = answerer(answerers, {"default": primary, "local": fallback}, {"default": ["local"]}, retries=0)
    with pytest.raises(ProvidersExhausted) as raised:
        await stage.decide(governed())
    assert isinstance(raised.value, TransientError)
    assert raised.value.request_id == "req-1"
    assert raised.value.reason == "no provider answered: default: HTTP 500; local: HTTP 429"


async def test_a_provider_the_registry_does_not_know_falls_back_to_the_default_and_says_so(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, primary = await stub()
    stage = answerer(answerers, {"default": primary}, {})
    answer = await stage.decide(governed("gpt-9"))
    assert answer.provider == "default"
    assert answer.failover == ["gpt-9: not configured", "default: answered"]


async def test_the_answer_carries_tokens_and_the_cost_from_the_providers_price(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    _, primary = await stub()
    stage = answerer(
        answerers, {"default": primary}, {}, price={"input_usd": 1.0, "output_usd": 3.0, "per_tokens": 1000}
    )
    answer = await stage.decide(governed())
    assert answer.tokens_in > 0 and answer.tokens_out > 0
    assert answer.cost_usd == pytest.approx((answer.tokens_in * 1.0 + answer.tokens_out * 3.0) / 1000)


async def test_held_and_workflow_records_call_no_provider(stub: StubFactory, answerers: list[Answerer]) -> None:
    behaviour, primary = await stub()
    stage = answerer(answerers, {"default": primary}, {})
    held = governed().model_copy(
        update={"governance": Governance(verdict=Verdict.BLOCK, findings=[], redacted_text="x")}
    )
    assert (await stage.decide(held)).text == HOLD_REPLY
    workflow = await stage.decide(governed(None, kind=RouteKind.WORKFLOW))
    assert (workflow.provider, workflow.text) == ("workflow", "Open 9 to 5")
    assert behaviour.requests == 0


async def test_the_answerer_restores_tokens_from_the_sealed_entry_the_governed_record_carries(
    answerers: list[Answerer],
) -> None:
    stage = answerer(answerers, {"default": "http://127.0.0.1:9/v1"}, {})
    stage.vault = VaultCipher(b"k" * 32)
    record = governed()
    own = vault_key_for("0412", "req-1")
    record.governance.vault_key = own
    assert (await stage._tokens(record))[1][0].rule_id == "pii.vault_unavailable", "no entry carried: neutral words"
    record.pii_vault = stage.vault.seal(own, {"<PERSON_1>": "Maria Lopez"})
    assert await stage._tokens(record) == ({"<PERSON_1>": "Maria Lopez"}, [])
    record.pii_vault = stage.vault.seal(vault_key_for("0412", "req-2"), {"<PERSON_1>": "Someone Else"})
    tokens, [finding] = await stage._tokens(record)
    assert tokens == {} and "req-2" in finding.detail, "another request's entry is never opened for this one"


async def test_the_answerer_never_opens_another_stores_entry_for_a_request_of_the_same_id(
    answerers: list[Answerer],
) -> None:
    stage = answerer(answerers, {"default": "http://127.0.0.1:9/v1"}, {})
    stage.vault = VaultCipher(b"k" * 32)
    record = governed()  # store 0412, request req-1
    other = vault_key_for("0999", "req-1")
    record.governance.vault_key = other  # a record naming the other store's entry does not make it this one's
    record.pii_vault = stage.vault.seal(other, {"<PERSON_1>": "Someone Else"})
    tokens, [finding] = await stage._tokens(record)
    assert tokens == {} and finding.rule_id == "pii.vault_unavailable" and "0999:req-1" in finding.detail


async def test_the_answer_stays_tokenised_even_where_the_model_saw_and_echoed_the_value(
    stub: StubFactory, answerers: list[Answerer]
) -> None:
    behaviour, url = await stub(latency_ms=1)
    behaviour.reply = (
        "Hello Maria Lopez, the blue kettle is a fine choice; <PERSON_1> can collect it near 2 Elm Street."
    )
    # the shipped privacy policy lets `local` see PERSON
    stage = answerer(answerers, {"local": url, "default": "http://127.0.0.1:9/v1"}, {})
    stage.vault = VaultCipher(b"k" * 32)
    own = vault_key_for("0412", "req-1")
    tokenised = "I'm <PERSON_1>, is the blue kettle in stock at <ADDRESS_1>?"
    record = governed("local").model_copy(
        update={
            "request": governed().request.model_copy(update={"text": tokenised}),
            "governance": Governance(
                verdict=Verdict.MASK, findings=[], redacted_text=tokenised, vault_key=own, request_text_chars=55
            ),
            "pii_vault": stage.vault.seal(own, {"<PERSON_1>": "Maria Lopez", "<ADDRESS_1>": "2 Elm Street"}),
        }
    )
    answer = await stage.decide(record)
    assert behaviour.requests == 1 and answer.provider == "local"
    # the model was shown the name and echoed it: back to its token; the address it was never shown is a type the
    # store may not see: neutral words; the store's types stay tokens for the edge to restore
    assert (
        answer.text
        == "Hello <PERSON_1>, the blue kettle is a fine choice; <PERSON_1> can collect it near the address on file."
    )
    assert "Maria" not in answer.model_dump_json() and "Elm" not in answer.model_dump_json()
