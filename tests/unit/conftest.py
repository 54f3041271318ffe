"""Fixtures the unit tests share: stub models on free loopback ports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from services.answerer.stub_model import STUB_BEHAVIOUR, StubBehaviour, start_stub

StubFactory = Callable[..., Awaitable[tuple[StubBehaviour, str]]]


@pytest.fixture
async def stub() -> AsyncIterator[StubFactory]:
    """Starts stub models (`await stub(latency_ms, fail_rate=..., status=..., malformed_rate=...)`) and
    returns each one's behaviour, whose knobs a test may turn, and base URL; stops them after the test."""
    runners: list[web.AppRunner] = []

    async def start(latency_ms: float = 20.0, **faults: Any) -> tuple[StubBehaviour, str]:
        runner, url = await start_stub(0, latency_ms, **faults)
        runners.append(runner)
        return runner.app[STUB_BEHAVIOUR], url

    yield start
    for runner in runners:
        await runner.cleanup()
