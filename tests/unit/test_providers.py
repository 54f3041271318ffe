"""The OpenAI-compatible provider against the stub model over real loopback HTTP: answers, usage, latency,
and how each kind of failure becomes a retry, a transient fault or a rejected record."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from services.answerer.providers import (
    OpenAICompatibleProvider,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    provider_from_config,
)
from services.dev.stub_model import start_stub
from services.runtime.faults import RejectedRecord, TransientError
from services.shared.prompts import ChatMessage
from tests.unit.conftest import StubFactory

QUESTION: list[ChatMessage] = [
    {"role": "system", "content": "You answer store staff briefly."},
    {"role": "user", "content": "Is the blue kettle in stock at store 0412?"},
]


def openai_provider(url: str, **overrides: Any) -> OpenAICompatibleProvider:
    config = {"kind": "openai", "base_url": url, "model": "switchyard-stub", "backoff_s": 0.01, **overrides}
    provider = provider_from_config(config)
    assert isinstance(provider, OpenAICompatibleProvider)
    return provider


async def test_answer_and_usage_are_read_from_the_response(stub: StubFactory) -> None:
    _, url = await stub()
    provider = openai_provider(url)
    try:
        completion = await provider.complete(QUESTION, max_tokens=64)
    finally:
        await provider.aclose()
    assert completion.text == "Stub answer to: Is the blue kettle in stock at store 0412?"
    assert completion.provider == "openai"
    assert completion.model == "switchyard-stub"
    assert completion.model_version == "switchyard-stub@fp_stub"
    assert completion.tokens_in == 7 + 12  # the stub counts words * 1.3, rounded up, per message
    assert completion.tokens_out == 16
    assert completion.finish_reason == "stop"


async def test_max_tokens_cuts_the_answer_with_finish_reason_length(stub: StubFactory) -> None:
    _, url = await stub()
    provider = openai_provider(url)
    try:
        completion = await provider.complete(QUESTION, max_tokens=4)
    finally:
        await provider.aclose()
    assert completion.text == "Stub answer to:"
    assert completion.finish_reason == "length"


async def test_latency_is_the_stated_model_latency_plus_little_overhead(stub: StubFactory) -> None:
    _, url = await stub(latency_ms=50)
    provider = openai_provider(url)
    try:
        await provider.complete(QUESTION, max_tokens=16)  # opens the pooled connection
        latencies = [(await provider.complete(QUESTION, max_tokens=16)).latency_ms for _ in range(5)]
    finally:
        await provider.aclose()
    assert min(latencies) >= 50
    assert sorted(latencies)[2] < 50 + 40


async def test_two_hundred_concurrent_calls_overlap_instead_of_queueing(stub: StubFactory) -> None:
    behaviour, url = await stub(latency_ms=50)
    provider = openai_provider(url, max_connections=200)
    started = time.perf_counter()
    try:
        completions = await asyncio.gather(*(provider.complete(QUESTION, max_tokens=16) for _ in range(200)))
    finally:
        await provider.aclose()
    assert len(completions) == behaviour.requests == 200
    assert time.perf_counter() - started < 5.0  # one after another would take 10 s


async def test_a_500_is_retried_then_raises_provider_unavailable(stub: StubFactory) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=500)
    provider = openai_provider(url, retries=2)
    try:
        with pytest.raises(ProviderUnavailable) as raised:
            await provider.complete(QUESTION, max_tokens=16, request_id="req-500")
    finally:
        await provider.aclose()
    assert behaviour.requests == 3
    assert raised.value.status == 500
    assert raised.value.request_id == "req-500"
    assert "stub failure injected" in raised.value.reason
    assert isinstance(raised.value, TransientError)


async def test_a_failure_that_clears_within_the_retries_returns_the_answer(stub: StubFactory) -> None:
    behaviour, url = await stub(fail_rate=0.5, status=503)
    provider = openai_provider(url, retries=8)
    try:
        completions = [await provider.complete(QUESTION, max_tokens=16) for _ in range(5)]
    finally:
        await provider.aclose()
    assert all(c.finish_reason == "stop" for c in completions)
    assert behaviour.failures > 0
    assert behaviour.requests == 5 + behaviour.failures


async def test_a_429_is_transient_and_retried(stub: StubFactory) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=429)
    provider = openai_provider(url, retries=1)
    try:
        with pytest.raises(ProviderUnavailable):
            await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert behaviour.requests == 2


async def test_a_slow_answer_raises_provider_timeout(stub: StubFactory) -> None:
    behaviour, url = await stub(latency_ms=1000)
    provider = openai_provider(url, timeout_s=0.1, retries=1)
    started = time.perf_counter()
    try:
        with pytest.raises(ProviderTimeout) as raised:
            await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert time.perf_counter() - started < 0.6
    assert behaviour.requests == 2
    assert "did not answer within 0.1 s" in raised.value.reason


async def test_a_400_raises_provider_rejected_without_retry(stub: StubFactory) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=400)
    provider = openai_provider(url, retries=3)
    try:
        with pytest.raises(ProviderRejected) as raised:
            await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert behaviour.requests == 1
    assert raised.value.status == 400
    assert isinstance(raised.value, RejectedRecord)


async def test_a_malformed_request_is_rejected_with_the_endpoint_message(stub: StubFactory) -> None:
    _, url = await stub()
    provider = openai_provider(url)
    try:
        with pytest.raises(ProviderRejected, match="at least one user message"):
            await provider.complete([{"role": "system", "content": "no question here"}], max_tokens=16)
    finally:
        await provider.aclose()


async def test_a_wrong_api_key_is_transient_and_not_retried_within_the_call(stub: StubFactory) -> None:
    behaviour, url = await stub(fail_rate=1.0, status=401)
    provider = openai_provider(url, retries=3)
    try:
        with pytest.raises(ProviderUnavailable, match="check the provider's api_key_env"):
            await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert behaviour.requests == 1


async def test_a_refused_connection_raises_provider_unavailable() -> None:
    runner, url = await start_stub(0)
    await runner.cleanup()  # the port is free again: nothing listens there
    provider = openai_provider(url, retries=1)
    try:
        with pytest.raises(ProviderUnavailable, match="cannot be reached"):
            await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()


async def test_the_api_key_is_read_from_the_named_env_var_and_sent_as_bearer(
    stub: StubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    behaviour, url = await stub()
    monkeypatch.setenv("SWITCHYARD_TEST_KEY", "sk-test-123")
    provider = openai_provider(url, api_key_env="SWITCHYARD_TEST_KEY")
    try:
        await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert behaviour.last_headers["Authorization"] == "Bearer sk-test-123"


async def test_no_authorization_header_is_sent_without_api_key_env(stub: StubFactory) -> None:
    behaviour, url = await stub()
    provider = openai_provider(url)
    try:
        await provider.complete(QUESTION, max_tokens=16)
    finally:
        await provider.aclose()
    assert "Authorization" not in behaviour.last_headers
