"""First answering logic: a workflow route is answered deterministically from the stitched data; a model
route goes to the configured provider (the local GGUF model by default, any OpenAI-compatible endpoint in
production). The output guard and provider failover arrive with the governance and routing issues."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, ClassVar

from services.answerer.local_model import LocalGGUFProvider
from services.answerer.providers import ChatMessage, Completion, Provider, provider_from_config
from services.runtime.models import Answer, Governed, RouteKind, Verdict
from services.runtime.stage import Stage

PROMPT_TEMPLATE_VERSION = "answer-v1"
SYSTEM_PROMPT = (
    "You are a helpful assistant for store staff at a retail chain. Answer in one or two short sentences, "
    "using only the context given. If the context does not say, say you will check with a colleague."
)
HOLD_REPLY = "Thanks for your patience: a colleague will help you with this request shortly."


# Context a model route gets; store hours are answered by the workflow route, and a small base model
# given them for an unrelated question tends to repeat them back.
MODEL_CONTEXT_SOURCES = frozenset({"inventory", "knowledge_base", "customer_history"})


def prompt_for(record: Governed) -> list[ChatMessage]:
    items = [item for item in record.context.items if item.source in MODEL_CONTEXT_SOURCES]
    question = record.governance.redacted_text
    user = (
        question if not items else "Context:\n" + "\n".join(f"- {i.text}" for i in items) + f"\n\nQuestion: {question}"
    )
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def prompt_hash(messages: list[ChatMessage]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def workflow_answer(record: Governed) -> Answer:
    """Store hours and other workflow routes: the answer is the stitched fact itself, no model involved."""
    facts = [item.text for item in record.context.items if item.source == "store_hours"]
    return Answer(
        text=facts[0] if facts else HOLD_REPLY,
        provider="workflow",
        model=record.route.route_id,
        model_version=record.route.route_table_version,
        prompt_template_version="workflow",
        prompt_hash="",
        tokens_in=0,
        tokens_out=0,
        cost_usd=0.0,
        latency_ms=0.0,
    )


def held_answer(record: Governed) -> Answer:
    return Answer(
        text=HOLD_REPLY,
        provider="governance",
        model=record.governance.verdict.value,
        model_version="",
        prompt_template_version="hold",
        prompt_hash="",
        tokens_in=0,
        tokens_out=0,
        cost_usd=0.0,
        latency_ms=0.0,
    )


def model_answer(completion: Completion, messages: list[ChatMessage], cost_per_1k_tokens: float) -> Answer:
    return Answer(
        text=completion.text.strip() or HOLD_REPLY,
        provider=completion.provider,
        model=completion.model,
        model_version=completion.model_version,
        prompt_template_version=PROMPT_TEMPLATE_VERSION,
        prompt_hash=prompt_hash(messages),
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        cost_usd=(completion.tokens_in + completion.tokens_out) / 1000 * cost_per_1k_tokens,
        latency_ms=completion.latency_ms,
    )


class Answerer(Stage[Governed, Answer]):
    name: ClassVar[str] = "answerer"
    input_topic: ClassVar[str] = "governed"
    input_record: ClassVar[str] = "Governed"
    input_model = Governed
    output_topic: ClassVar[str] = "answered"
    output_record: ClassVar[str] = "Answered"
    section: ClassVar[str] = "answer"

    def __init__(self, provider_config: Mapping[str, Any], *, max_tokens: int = 64, cost_per_1k_tokens: float = 0.0):
        self.provider_config = dict(provider_config)
        self.max_tokens = max_tokens
        self.cost_per_1k_tokens = cost_per_1k_tokens
        self.provider: Provider | None = None

    async def start(self) -> None:
        self.provider = provider_from_config(self.provider_config, source="answerer model settings")
        if isinstance(self.provider, LocalGGUFProvider):
            await self.provider.load()  # before the first record, not during it

    async def stop(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()

    async def decide(self, record: Governed) -> Answer:
        if record.governance.verdict in (Verdict.BLOCK, Verdict.ESCALATE):
            return held_answer(record)
        if record.route.kind == RouteKind.WORKFLOW:
            return workflow_answer(record)
        assert self.provider is not None, "start() loads the provider"
        messages = prompt_for(record)
        completion = await self.provider.complete(
            messages, max_tokens=self.max_tokens, temperature=0.0, request_id=record.request.request_id
        )
        return model_answer(completion, messages, self.cost_per_1k_tokens)
