"""Guarded OpenAI-compatible providers against the stub model over real loopback HTTP: retries for 429, 500,
timeouts and malformed JSON, no retry for a 400, and a circuit that opens on a failing stub and closes when
it recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.answerer.providers import (
    ProviderMalformed,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    parse_provider_config,
)
from services.answerer.resilience import BreakerState, CircuitOpen, GuardedProvider
from services.shared.prompts import ChatMessage
from tests.unit.conftest import StubFactory

QUESTION: list[ChatMessage] = [{"role": "user", "content": "Is the blue kettle in stock at store 0412?"}]


@pytest.fixture
async def providers() -> AsyncIterator[list[GuardedProvider]]:
    """Guarded providers the test builds; closed after it."""
    built: list[GuardedProvider] = []
    yield built
    for provider in built:
        await provider.aclose()


def guarded(built: list[GuardedProvider], url: str, **overrides: Any) -> GuardedProvider:
    config = {"kind": "openai", "name": "primary", "base_url": url, "model": "stub", "backoff_s": 0.01, **overrides}
    provider = GuardedProvider.from_config(parse_provider_config(config), environ={})
    built.append(provider)
    return provider


@pytest.mark.parametrize(
    ("faults", "raised"),
    [
        ({"fail_rate": 1.0, "status": 429}, ProviderUnavailable),
        ({"fail_rate": 1.0, "status": 500}, ProviderUnavailable),
        ({"fail_rate": 1.0, "status": 503}, ProviderUnavailable),
        ({"malformed_rate": 1.0}, ProviderMalformed),
        ({"latency_ms": 500}, ProviderTimeout),
    ],
    ids=["429", "500", "503", "malformed-json", "timeout"],
)
async def test_retryable_failures_are_retried_then_raised_as_transient(
    stub: StubFactory, providers: list[GuardedProvider], faults: dict[str, Any], raised: type[Exception]
) -> None:
    behaviour, url = await stub(**faults)
    provider = guarded(providers, url, retries=2, timeout_s=0.1)
    with pytest.raises(raised):
        await provider.complete(QUESTION, max_tokens=16)
    assert behaviour.requests == 3
    assert provider.breaker.stats().consecutive_failures == 1  # one call, however many attempts


async def test_a_400_is_not_retried_and_leaves_the_circuit_closed(
    stub: StubFactory, providers: list[GuardedProvider]
) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=400)
    provider = guarded(providers, url, retries=3, breaker={"failure_threshold": 1})
    with pytest.raises(ProviderRejected):
        await provider.complete(QUESTION, max_tokens=16)
    assert behaviour.requests == 1
    assert provider.breaker.state is BreakerState.CLOSED


async def test_malformed_json_that_clears_within_the_retries_returns_the_answer(
    stub: StubFactory, providers: list[GuardedProvider]
) -> None:
    behaviour, url = await stub(malformed_rate=0.5)
    provider = guarded(providers, url, retries=8)
    completions = [await provider.complete(QUESTION, max_tokens=16) for _ in range(5)]
    assert all(c.text.startswith("Stub answer to:") for c in completions)
    assert behaviour.failures > 0
    assert behaviour.requests == 5 + behaviour.failures


async def test_a_failing_stub_opens_the_circuit_and_a_recovered_one_closes_it_after_the_probe(
    stub: StubFactory, providers: list[GuardedProvider]
) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=500)
    breaker = {"failure_threshold": 2, "cooldown_s": 0.2}
    provider = guarded(providers, url, retries=0, breaker=breaker)
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await provider.complete(QUESTION, max_tokens=16)
    with pytest.raises(CircuitOpen):
        await provider.complete(QUESTION, max_tokens=16)
    assert behaviour.requests == 2  # the open circuit made no call

    await asyncio.sleep(0.2)
    with pytest.raises(ProviderUnavailable):  # the probe, still failing
        await provider.complete(QUESTION, max_tokens=16)
    assert provider.breaker.state is BreakerState.OPEN

    behaviour.fail_rate = 0.0
    await asyncio.sleep(0.2)
    completion = await provider.complete(QUESTION, max_tokens=16)
    assert completion.provider == "primary"
    assert provider.breaker.stats().state is BreakerState.CLOSED
    assert behaviour.requests == 4


async def test_the_concurrency_limit_holds_against_a_real_endpoint(
    stub: StubFactory, providers: list[GuardedProvider]
) -> None:
    behaviour, url = await stub(latency_ms=50)
    provider = guarded(providers, url, max_concurrency=4)
    calls = [asyncio.create_task(provider.complete(QUESTION, max_tokens=16)) for _ in range(8)]
    await asyncio.sleep(0.02)
    assert (provider.limit.in_flight, provider.limit.waiting) == (4, 4)
    completions = await asyncio.gather(*calls)
    assert behaviour.requests == 8
    assert max(c.latency_ms for c in completions) >= 100  # the second four waited for the first


async def test_a_completion_is_priced_from_the_endpoints_usage(
    stub: StubFactory, providers: list[GuardedProvider]
) -> None:
    _, url = await stub()
    provider = guarded(providers, url, price={"input_usd": 2.0, "output_usd": 8.0, "per_tokens": 1000})
    completion = await provider.complete(QUESTION, max_tokens=64)
    assert (completion.tokens_in, completion.tokens_out) == (12, 16)
    assert completion.cost_usd == pytest.approx((12 * 2.0 + 16 * 8.0) / 1000)
