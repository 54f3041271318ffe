"""Fixtures the unit tests share: stub models on free loopback ports."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from services.answerer.stage import Answerer
from services.dev.stub_model import STUB_BEHAVIOUR, StubBehaviour, start_stub
from services.governor.stage import Analyzer, Governor
from services.settings import REPO_ROOT, Settings, get_settings

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


@pytest.fixture(scope="session")
def analyzer() -> Analyzer:
    """The governor's models (PII, toxicity, injection), loaded once for every test that governs."""
    return Analyzer.load()


@pytest.fixture
async def governor(analyzer: Analyzer, tmp_path: Path) -> Governor:
    """A started governor stage on the repository's policies, with its keys in the test's own folder."""
    stage = Governor(Settings(var_dir=tmp_path, policies=REPO_ROOT / "policies"), analyzer=analyzer)
    await stage.start()
    return stage


@pytest.fixture
async def answerers() -> AsyncIterator[list[Answerer]]:
    """Answerer stages a test builds, stopped when it ends."""
    built: list[Answerer] = []
    yield built
    for stage in built:
        await stage.stop()


@pytest.fixture(autouse=True)
def plaintext_kafka(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Unit tests run without a broker's secrets: `make test` exports the SASL_SSL listener's settings for the
    integration suite in the same run, so each unit test sees the plaintext defaults instead."""
    if os.environ.get("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT") == "PLAINTEXT":
        yield
        return
    monkeypatch.setenv("SWITCHYARD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    monkeypatch.setenv("SWITCHYARD_KAFKA_BOOTSTRAP", f"127.0.0.1:{os.environ.get('SWITCHYARD_KAFKA_PORT', '9092')}")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
