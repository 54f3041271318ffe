"""Shadow mode: a candidate model answers in parallel on live traffic, never released. The incumbent provider
answers as always; after it has, the candidate is asked the same prompt in a background task (off the critical
path: the record does not wait for it), and both answers, with latency and cost, go to switchyard.shadow_answers,
where they are compared by joining the corrections in switchyard.feedback on request_id.

Started by `switchyard shadow start MODEL` (the registry's shadow.json), picked up when the answerer starts, and
stopped at once by `switchyard shadow stop` (each call re-reads the file's state).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from services.answerer.memory import AnswerMemoryProvider, default_registry_dir, question_of
from services.answerer.providers import ChatMessage, Completion
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider

log = logging.getLogger("switchyard.learning")
SHADOW_FILE: Final = "shadow.json"
SHADOW_COLUMNS: Final = [
    "request_id", "candidate", "candidate_version", "answered", "confidence", "answer", "latency_ms", "cost_usd",
    "incumbent_provider", "incumbent_model", "incumbent_answer", "incumbent_latency_ms", "incumbent_cost_usd",
    "created_at",
]  # fmt: skip


class ShadowSink:
    """Batches shadow rows into ClickHouse from a thread, by size or age; a failed insert is logged and dropped
    (a lost shadow sample costs a statistic, never an answer)."""

    def __init__(self, max_rows: int = 200, max_wait_s: float = 1.0) -> None:
        self.rows: list[list[Any]] = []
        self.max_rows = max_rows
        self.max_wait_s = max_wait_s
        self.opened_at = 0.0
        self.written = 0
        self.dropped = 0
        self._lock = asyncio.Lock()

    async def add(self, row: list[Any]) -> None:
        if not self.rows:
            self.opened_at = time.monotonic()
        self.rows.append(row)
        if len(self.rows) >= self.max_rows or time.monotonic() - self.opened_at >= self.max_wait_s:
            await self.flush()

    async def flush(self) -> None:
        async with self._lock:
            rows, self.rows = self.rows, []
            if not rows:
                return
            try:
                await asyncio.to_thread(_insert, rows)
                self.written += len(rows)
            except Exception as error:
                self.dropped += len(rows)
                log.warning("shadow answers not written", extra={"rows": len(rows), "error": repr(error)})


def _insert(rows: list[list[Any]]) -> None:
    from services.infra.clickhouse import get_client

    client = get_client()
    try:
        client.insert("switchyard.shadow_answers", rows, column_names=SHADOW_COLUMNS)
    finally:
        client.close()


class ShadowRunner:
    """Asks the candidate after the incumbent answered, in the background, and records both."""

    def __init__(self, registry_dir: Path, candidate_id: str, sink: ShadowSink | None = None) -> None:
        self.registry_dir = registry_dir
        self.candidate_id = candidate_id
        self.candidate = AnswerMemoryProvider("shadow", registry_dir, model_id=candidate_id)
        self.sink = sink or ShadowSink()
        self.pending: set[asyncio.Task[None]] = set()
        self._stat: tuple[int, int] | None = None
        self._active = True

    def active(self) -> bool:
        """Whether shadow.json still names this candidate (re-read only when the file changed)."""
        path = self.registry_dir / SHADOW_FILE
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return False
        key = (stat.st_mtime_ns, stat.st_size)
        if key != self._stat:
            import json

            self._stat = key
            self._active = json.loads(path.read_text(encoding="utf-8")).get("candidate") == self.candidate_id
        return self._active

    def observe(self, messages: Sequence[ChatMessage], request_id: str | None, incumbent: Completion) -> None:
        if request_id is None or not self.active():
            return
        task = asyncio.get_running_loop().create_task(self._shadow(list(messages), request_id, incumbent))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _shadow(self, messages: list[ChatMessage], request_id: str, incumbent: Completion) -> None:
        try:
            found = await asyncio.to_thread(self.candidate.lookup, question_of(messages))
        except Exception as error:
            log.warning("shadow candidate failed", extra={"request_id": request_id, "error": repr(error)})
            return
        row = [
            request_id, self.candidate_id, self.candidate.model_id or self.candidate_id, found.answer is not None,
            found.similarity, found.answer or "", found.latency_ms, 0.0, incumbent.provider, incumbent.model,
            incumbent.text, incumbent.latency_ms, incumbent.cost_usd, datetime.now(UTC),
        ]  # fmt: skip
        await self.sink.add(row)

    async def drain(self) -> None:
        """Wait for the shadow calls in flight and write what is buffered (shutdown, tests, the demo)."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=30)
        await self.sink.flush()


class ShadowedProvider(GuardedProvider):
    """The incumbent, unchanged for its caller, with the shadow runner told of every answer it gives."""

    def __init__(self, incumbent: GuardedProvider, runner: ShadowRunner) -> None:
        super().__init__(
            incumbent.provider,
            breaker=incumbent.breaker,
            limit=incumbent.limit,
            price=incumbent.price,
            call_timeout_s=incumbent.call_timeout_s,
        )
        self.observers = incumbent.observers
        self.runner = runner

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        completion = await super().complete(
            messages, max_tokens=max_tokens, temperature=temperature, request_id=request_id
        )
        self.runner.observe(messages, request_id, completion)
        return completion


def attach_shadow(registry: ProviderRegistry, registry_dir: Path | None = None) -> ProviderRegistry:
    """Wraps the incumbents that shadow.json names (default: the default provider) so the candidate shadows
    them; the registry is returned unchanged when no shadow is configured."""
    import json

    registry_dir = registry_dir or default_registry_dir()
    path = registry_dir / SHADOW_FILE
    if not path.is_file():
        return registry
    config = json.loads(path.read_text(encoding="utf-8"))
    runner = ShadowRunner(registry_dir, str(config["candidate"]))
    for name in config.get("incumbents") or [registry.default]:
        if name in registry.providers and not isinstance(registry.providers[name], ShadowedProvider):
            registry.providers[name] = ShadowedProvider(registry.providers[name], runner)
    log.info("shadow mode on", extra={"candidate": runner.candidate_id, "incumbents": config.get("incumbents")})
    return registry


def shadow_runner(registry: ProviderRegistry) -> ShadowRunner | None:
    return next((p.runner for p in registry.providers.values() if isinstance(p, ShadowedProvider)), None)
