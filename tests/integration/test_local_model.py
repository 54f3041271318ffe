"""The embedded local model for real: the Gemma 3 270M GGUF from its PyPI package, run by llama.cpp."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from services.answerer.local_model import GGUF_MAGIC, LocalGGUFProvider, resolve_packaged
from services.answerer.providers import ProviderMisconfigured, ProviderRejected, provider_from_config
from services.shared.prompts import ChatMessage

GEMMA_SIZE_BYTES = 253_113_024
GEMMA_SHA256_PREFIX = "a5fd3b62230a"
QUESTION: list[ChatMessage] = [
    {"role": "system", "content": "You are a helpful assistant in a grocery store."},
    {"role": "user", "content": "Which aisle has the bread?"},
]


@pytest.fixture(scope="module")
async def gemma() -> AsyncIterator[LocalGGUFProvider]:
    provider = provider_from_config({"kind": "local_gguf", "model": "gemma3-270m", "n_threads": 1})
    assert isinstance(provider, LocalGGUFProvider)
    await provider.load()
    yield provider
    await provider.aclose()


def test_the_package_ships_a_real_gguf_of_the_expected_size() -> None:
    gguf = resolve_packaged("gemma3-270m")
    assert gguf.path.stat().st_size == GEMMA_SIZE_BYTES
    assert gguf.path.read_bytes()[:4] == GGUF_MAGIC
    assert gguf.model_version == f"1.0.0+sha256.{GEMMA_SHA256_PREFIX}"


async def test_the_local_model_answers_with_counted_tokens(gemma: LocalGGUFProvider) -> None:
    completion = await gemma.complete(QUESTION, max_tokens=16)
    assert completion.text
    assert completion.tokens_in > 10
    assert 0 < completion.tokens_out <= 16
    assert completion.finish_reason in ("stop", "length")
    assert (completion.provider, completion.model) == ("local_gguf", "gemma3-270m")
    assert completion.model_version == f"1.0.0+sha256.{GEMMA_SHA256_PREFIX}"


async def test_temperature_zero_gives_the_same_answer_twice(gemma: LocalGGUFProvider) -> None:
    first = await gemma.complete(QUESTION, max_tokens=8)
    second = await gemma.complete(QUESTION, max_tokens=8)
    assert first.text == second.text


async def test_generation_leaves_the_event_loop_free(gemma: LocalGGUFProvider) -> None:
    gaps: list[float] = []

    async def tick() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = asyncio.create_task(tick())
    await gemma.complete(QUESTION, max_tokens=16)
    ticker.cancel()
    assert len(gaps) > 5
    assert max(gaps) < 0.1


async def test_a_prompt_longer_than_the_context_is_rejected(gemma: LocalGGUFProvider) -> None:
    too_long: list[ChatMessage] = [{"role": "user", "content": "bread " * 3000}]
    with pytest.raises(ProviderRejected, match="context window"):
        await gemma.complete(too_long, max_tokens=8, request_id="req-long")


async def test_asking_for_a_chat_template_the_base_model_lacks_fails_at_load() -> None:
    provider = provider_from_config({"kind": "local_gguf", "prompt_format": "chat_template"})
    assert isinstance(provider, LocalGGUFProvider)
    try:
        with pytest.raises(ProviderMisconfigured, match="has no chat template"):
            await provider.load()
    finally:
        await provider.aclose()
