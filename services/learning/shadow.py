"""Shadow mode for answers: a candidate model answers in parallel on live traffic, never released. The incumbent
provider answers as always; after it has, the candidate is asked the same prompt in a background task (off the
critical path: the record does not wait for it), and both answers, with latency and cost, go to
switchyard.shadow_answers, where they are compared by joining the corrections in switchyard.feedback on request_id.

Every provider that could be an incumbent is wrapped when the answerer starts; each call reads the registry's
shadow.json through a ShadowSwitch, so `switchyard shadow start MODEL` and `switchyard shadow stop` take effect on
a running answerer within a second, with no restart.

The incumbent is what answers the request now. Where a custom model is promoted (the deployed answer memory, on
its `custom.<intent>` routes), that is the promoted model: its answers are recorded as the incumbent's whatever
shadow.json lists, and where it declines, the provider or the quoted passages that answer instead are recorded
when listed (the default provider is). So a candidate is compared with the previous custom model, not only with
the configured model on the questions the previous custom model declined.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from services.answerer.memory import AnswerMemoryProvider, default_registry_dir, question_of
from services.answerer.providers import Completion
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.learning.switch import ANSWER_KIND, ClickHouseSink, ShadowSwitch
from services.shared.prompts import ChatMessage

log = logging.getLogger("switchyard.learning")
SHADOW_TABLE: Final = "switchyard.shadow_answers"
SHADOW_COLUMNS: Final = [
    "request_id", "candidate", "candidate_version", "answered", "confidence", "answer", "latency_ms", "cost_usd",
    "incumbent_provider", "incumbent_model", "incumbent_answer", "incumbent_latency_ms", "incumbent_cost_usd",
    "created_at",
]  # fmt: skip


def shadow_sink() -> ClickHouseSink:
    return ClickHouseSink(SHADOW_TABLE, SHADOW_COLUMNS, max_rows=200)


class ShadowRunner:
    """Asks the candidate that shadow.json names after one of its incumbents answered, in the background, and
    records both answers. Candidates are loaded on first use and kept by id."""

    def __init__(
        self,
        registry_dir: Path,
        default_provider: str,
        *,
        switch: ShadowSwitch | None = None,
        sink: ClickHouseSink | None = None,
    ) -> None:
        self.registry_dir = registry_dir
        self.default_provider = default_provider
        self.switch = switch or ShadowSwitch(registry_dir, ANSWER_KIND)
        self.sink = sink or shadow_sink()
        self.candidates: dict[str, AnswerMemoryProvider] = {}
        self.pending: set[asyncio.Task[None]] = set()
        self.promoted: set[str] = set()  # the providers serving the deployed custom model: always incumbents

    def candidate_for(self, provider: str) -> AnswerMemoryProvider | None:
        """The candidate shadowing `provider` now, or None (no shadow, or another incumbent is shadowed). The
        promoted custom model is an incumbent wherever it answers."""
        config = self.switch.current()
        if config is None:
            return None
        if provider not in self.promoted and provider not in (config.get("incumbents") or [self.default_provider]):
            return None
        candidate_id = str(config["candidate"])
        if candidate_id not in self.candidates:
            self.candidates[candidate_id] = AnswerMemoryProvider("shadow", self.registry_dir, model_id=candidate_id)
        return self.candidates[candidate_id]

    def observe(
        self, provider: str, messages: Sequence[ChatMessage], request_id: str | None, incumbent: Completion
    ) -> None:
        candidate = self.candidate_for(provider) if request_id is not None else None
        if candidate is None or request_id is None:
            return
        task = asyncio.get_running_loop().create_task(self._shadow(candidate, list(messages), request_id, incumbent))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)

    async def _shadow(
        self, candidate: AnswerMemoryProvider, messages: list[ChatMessage], request_id: str, incumbent: Completion
    ) -> None:
        candidate_id = str(candidate.pinned)
        try:
            found = await asyncio.to_thread(candidate.lookup, question_of(messages))
        except Exception as error:
            log.warning("shadow candidate failed", extra={"request_id": request_id, "error": repr(error)})
            return
        row = [
            request_id, candidate_id, candidate.model_id or candidate_id, found.answer is not None,
            found.similarity, found.answer or "", found.latency_ms, 0.0, incumbent.provider, incumbent.model,
            incumbent.text, incumbent.latency_ms, incumbent.cost_usd, datetime.now(UTC),
        ]  # fmt: skip
        self.sink.add(row)

    async def drain(self) -> None:
        """Wait for the shadow calls in flight and write what is buffered (shutdown, tests, the demo)."""
        if self.pending:
            await asyncio.wait(set(self.pending), timeout=30)
        await self.sink.aclose()


class ShadowedProvider(GuardedProvider):
    """The incumbent, unchanged for its caller, with the shadow runner told of every answer it gives."""

    def __init__(self, name: str, incumbent: GuardedProvider, runner: ShadowRunner) -> None:
        super().__init__(
            incumbent.provider,
            breaker=incumbent.breaker,
            limit=incumbent.limit,
            price=incumbent.price,
            call_timeout_s=incumbent.call_timeout_s,
        )
        self.observers = incumbent.observers
        self.registered_as = name
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
        self.runner.observe(self.registered_as, messages, request_id, completion)
        return completion

    async def aclose(self) -> None:
        await self.runner.drain()
        await super().aclose()


def attach_shadow(registry: ProviderRegistry, registry_dir: Path | None = None) -> ProviderRegistry:
    """Wraps every provider that can be an incumbent so that whichever candidate shadow.json names, now or later,
    shadows the incumbents it lists (default: the default provider) and the promoted custom model (an answer
    memory serving what the registry deployed; a declined question raises before it is observed, and whoever
    answers it instead is the incumbent there)."""
    runner = ShadowRunner(registry_dir or default_registry_dir(), registry.default)
    for name, provider in list(registry.providers.items()):
        if isinstance(provider, ShadowedProvider):
            continue
        if isinstance(provider.provider, AnswerMemoryProvider):
            if provider.provider.pinned is not None:
                continue  # a fixed model, not the promoted one
            runner.promoted.add(name)
        registry.providers[name] = ShadowedProvider(name, provider, runner)
    return registry


def shadow_runner(registry: ProviderRegistry) -> ShadowRunner | None:
    return next((p.runner for p in registry.providers.values() if isinstance(p, ShadowedProvider)), None)
