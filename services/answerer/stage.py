"""First answering logic: a workflow route is answered deterministically from the stitched data; a model
route goes to the route's provider and, when it fails, to the next of its fallbacks (registry.py), the Answer
saying who answered and why. The output guard arrives with the governance issue."""

from __future__ import annotations

import hashlib
import json
from typing import ClassVar

from services.answerer.call_events import ModelCallPublisher
from services.answerer.providers import ChatMessage, Completion
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import complete_with_failover
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


# Workflow routes answered from a stitched fact: route id -> context source. Any other workflow route
# (workflow.escalate) hands the request to staff with the hold reply.
FACT_WORKFLOWS = {"workflow.store_hours": "store_hours"}


def workflow_answer(record: Governed) -> Answer:
    """A workflow route: the stitched fact itself, or the hold reply; no model involved."""
    source = FACT_WORKFLOWS.get(record.route.route_id)
    facts = [item.text for item in record.context.items if item.source == source]
    text = facts[0] if facts else HOLD_REPLY
    return answer_without_model(text, "workflow", record.route.route_id, record.route.route_table_version, "workflow")


def held_answer(record: Governed) -> Answer:
    return answer_without_model(HOLD_REPLY, "governance", record.governance.verdict.value, "", "hold")


def answer_without_model(text: str, provider: str, model: str, model_version: str, template: str) -> Answer:
    """An answer no model produced: no prompt, no tokens, no cost, no model latency."""
    return Answer(
        text=text,
        provider=provider,
        model=model,
        model_version=model_version,
        prompt_template_version=template,
        prompt_hash="",
        tokens_in=0,
        tokens_out=0,
        cost_usd=0.0,
        latency_ms=0.0,
    )


def model_answer(completion: Completion, messages: list[ChatMessage], failover: list[str]) -> Answer:
    return Answer(
        text=completion.text.strip() or HOLD_REPLY,
        provider=completion.provider,
        model=completion.model,
        model_version=completion.model_version,
        prompt_template_version=PROMPT_TEMPLATE_VERSION,
        prompt_hash=prompt_hash(messages),
        tokens_in=completion.tokens_in,
        tokens_out=completion.tokens_out,
        cost_usd=completion.cost_usd,
        latency_ms=completion.latency_ms,
        failover=failover,
    )


class Answerer(Stage[Governed, Answer]):
    name: ClassVar[str] = "answerer"
    input_topic: ClassVar[str] = "governed"
    input_record: ClassVar[str] = "Governed"
    input_model = Governed
    output_topic: ClassVar[str] = "answered"
    output_record: ClassVar[str] = "Answered"
    section: ClassVar[str] = "answer"

    def __init__(
        self, providers: ProviderRegistry, *, max_tokens: int = 64, call_events: ModelCallPublisher | None = None
    ):
        self.providers = providers
        self.max_tokens = max_tokens
        self.call_events = call_events

    async def start(self) -> None:
        await self.providers.load()  # local models load before the first record, not during it
        if self.call_events is not None:
            await self.call_events.start(self.providers)

    async def stop(self) -> None:
        if self.call_events is not None:
            await self.call_events.stop()
        await self.providers.aclose()

    async def decide(self, record: Governed) -> Answer:
        if record.governance.verdict in (Verdict.BLOCK, Verdict.ESCALATE):
            return held_answer(record)
        if record.route.kind == RouteKind.WORKFLOW:
            return workflow_answer(record)
        messages = prompt_for(record)
        chain, skipped = self.providers.chain(record.route.provider)
        completion, failover = await complete_with_failover(
            chain,
            messages,
            max_tokens=self.max_tokens,
            temperature=0.0,
            request_id=record.request.request_id,
            skipped=skipped,
        )
        return model_answer(completion, messages, failover)
