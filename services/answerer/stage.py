"""The answerer (governed → answered): a workflow route is answered deterministically from the stitched data; a
model route goes to the route's provider with the governor's redacted prompt and, when it fails, to the next of
its fallbacks (registry.py). The output guard (guard.py) checks what the model wrote before the store sees it;
a request the governor held gets its fixed reply without any model call. The answer stays PII-tokenised, as the
request text is: the sealed vault entry rides on in the answered record, and the store's tokens are restored only
where the answer leaves Switchyard (services.gateway.restore).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

from prometheus_client import CollectorRegistry

from services.answerer.call_events import ModelCallPublisher
from services.answerer.grounded import GROUNDED_VERSION, UNGROUNDED_INTENTS, Grounded, grounded_answer
from services.answerer.guard import (
    BLOCK_REPLY,
    GUARD_VERSION,
    GuardResult,
    check_commitments,
    held_reply,
    screen_answer,
    visible_for_chain,
)
from services.answerer.junk import JUNK_GUARD_VERSION, find_junk
from services.answerer.provider_metrics import ProviderMetrics
from services.answerer.providers import Completion
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import (
    BreakerState,
    GuardedProvider,
    ProvidersExhausted,
    ProvidersRejected,
    complete_with_failover,
)
from services.governor import char_ngram
from services.governor.char_ngram import CheapToxicity
from services.governor.classifiers import TOXICITY, BinaryClassifier, ensure_trained
from services.policy.engine import PolicyEngine, PolicyWatcher
from services.runtime.batcher import MicroBatcher
from services.runtime.cache import BoundedCache
from services.runtime.stage import Stage, WorkLedger
from services.settings import get_settings
from services.shared.embedder import SentenceEmbedder
from services.shared.pii import restore
from services.shared.prompts import ChatMessage

# re-exported for the governor, which redacts this template's output too
from services.shared.prompts import fallback_prompt as fallback_prompt
from services.shared.vault import VaultCipher, VaultError, vault_key_for
from services.stitcher.workflows import WORKFLOW_SOURCE
from services.wire.models import Answer, Finding, Governed, RouteKind, Verdict

log = logging.getLogger("switchyard.answerer")

PROMPT_TEMPLATE_VERSION = "answer-v1"
HOLD_REPLY = BLOCK_REPLY
# degrading instead of stalling: the hand-off when no provider can answer, and a cut prompt where every provider
# refused a long one
DEGRADE_VERSION = "degrade-1"
PROVIDERS_UNAVAILABLE = "providers.unavailable"
INPUT_TRUNCATED = "input.truncated"
CUT_MARK = "\n[…]\n"


SCORED_ANSWERS = 10_000  # answers whose toxicity score is remembered
SCORED_ANSWER_BYTES = 16 << 20  # a 64-token answer is under 1 KB: the count binds first, not a runaway model's
# Answers are asked for at most 64 tokens; the toxicity embedding reads their first 48 words, not the embedder's
# 128 pieces: ~21 ms of CPU per answer instead of ~32 ms on 2 cores, and this check is most of the answerer's CPU.
SCORED_WORDS = 48


def prompt_for(record: Governed) -> list[ChatMessage]:
    """What a model may see: the governor's redacted prompt (PII tokenised, injected passages withheld)."""
    if record.governance.redacted_prompt:
        return [{"role": m.role, "content": m.content} for m in record.governance.redacted_prompt]
    return fallback_prompt(record.context.items, record.governance.redacted_text)


def cut_prompt(messages: Sequence[ChatMessage], limit: int) -> list[ChatMessage] | None:
    """The prompt with its user messages cut to fit `limit` characters in all (at most half of what was sent,
    so a provider whose window is smaller than the limit gets a smaller prompt each time), keeping each user
    message's start and its end (where the question is); None when there is nothing left to cut."""
    total = sum(len(message["content"]) for message in messages)
    fixed = sum(len(message["content"]) for message in messages if message["role"] != "user")
    budget = min(limit, total // 2) - fixed
    users = [message for message in messages if message["role"] == "user"]
    if not users or budget < 16 * len(users):
        return None
    share = budget // len(users)
    cut: list[ChatMessage] = []
    for message in messages:
        content = message["content"]
        if message["role"] == "user" and len(content) > share:
            head = share // 3
            tail = share - head - len(CUT_MARK)
            content = content[:head] + CUT_MARK + content[-tail:]
        cut.append({"role": message["role"], "content": content})
    return cut


def load_toxicity() -> BinaryClassifier:
    """The governor's toxicity classifier, for the answer (trained first where missing: seconds)."""
    return ensure_trained(TOXICITY, embedder=SentenceEmbedder())


def prompt_hash(messages: list[ChatMessage]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def workflow_answer(record: Governed) -> Answer:
    """A workflow route: the data workflow's answer the stitcher put first in the context, or, for a route with
    none (workflow.escalate), the hold reply; no model involved. The answer names the workflow and its version."""
    answer = next((item for item in record.context.items if item.source == WORKFLOW_SOURCE), None)
    if answer is None:
        return answer_without_model(HOLD_REPLY, "workflow", record.route.route_id, "", "workflow")
    return answer_without_model(answer.text, "workflow", answer.source_id, answer.version, "workflow")


def grounded_reply(grounded: Grounded) -> Answer:
    """An answer quoted from the knowledge passages, no model called; the passages are its provenance."""
    answer = answer_without_model(grounded.text, "grounded", "extractive", GROUNDED_VERSION, "grounded")
    source = Finding(
        rule_id="grounded.source",
        rule_version=GROUNDED_VERSION,
        kind="grounded.source",
        action="allow",
        detail=f"quoted from {len(grounded.passage_ids)} knowledge passage(s)",
        inputs={"passages": ",".join(grounded.passage_ids)},
    )
    return answer.model_copy(update={"output_findings": [source]})


def held_answer(record: Governed, engine: PolicyEngine | None = None) -> Answer:
    """A request the governor blocked or escalated: its fixed reply (an escalation says a manager must approve)."""
    text = held_reply(record.governance, engine)
    return answer_without_model(text, "governance", record.governance.verdict.value, "", "hold")


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
        self,
        providers: ProviderRegistry,
        *,
        max_tokens: int = 64,
        call_events: ModelCallPublisher | None = None,
        policies: Path | None = None,
        vault: VaultCipher | None = None,
        toxicity: BinaryClassifier | None = None,
        output_toxicity: bool = True,
        sure_clean: CheapToxicity | None = None,
        grounded_first: bool = False,
        outage_deadline_s: float = 15.0,
        max_prompt_chars: int = 6_000,
    ):
        self.providers = providers
        self.max_tokens = max_tokens
        self.call_events = call_events
        self.policy = PolicyWatcher(policies or get_settings().policies)
        self.policy.load()  # an invalid policy stops the answerer at start-up, naming the file and the rule
        self.vault = vault
        self.toxicity = toxicity
        self.output_toxicity = output_toxicity
        self._toxicity_scores: MicroBatcher[str, float] | None = None
        self._scored: BoundedCache[str, float] = BoundedCache(SCORED_ANSWERS, SCORED_ANSWER_BYTES)
        # the toxicity cascade's first model, and which path decided each scored answer (char_ngram, minilm or
        # remembered): the stage has no metrics object of its own, so the bench and tests read this counter
        self.sure_clean = sure_clean
        self.toxicity_deciders: Counter[str] = Counter()
        # a base model continues text rather than following instructions: answer from the passages where they
        # answer, and call it only where they do not
        self.grounded_first = grounded_first
        self.junk_found: Counter[str] = Counter()
        self._work = WorkLedger()
        # how long a request waits for a provider to come back (the runtime retries it meanwhile) before the
        # hand-off is released instead: a store hears back within this, and no partition stalls behind it
        self.outage_deadline_s = outage_deadline_s
        self.max_prompt_chars = max_prompt_chars
        self._first_failure: OrderedDict[str, float] = OrderedDict()
        self.degraded: Counter[str] = Counter()

    def register_metrics(self, registry: CollectorRegistry) -> None:
        ProviderMetrics(self.providers, registry)

    async def start(self) -> None:
        if self.output_toxicity and self.toxicity is None:
            self.toxicity = await asyncio.to_thread(load_toxicity)
        if self.toxicity is not None:
            # One worker thread, batched across in-flight answers: an embedding per answer on its own thread
            # oversubscribed 2 cores (84% of the answerer's CPU at 40 requests/s in `make bench`).
            self._toxicity_scores = MicroBatcher(self.toxicity.probabilities, concurrency=1, max_batch=64)
        if self.toxicity is not None and self.sure_clean is None:
            self.sure_clean = await asyncio.to_thread(char_ngram.ensure_trained)  # trained when stale: seconds
        await self.providers.load()  # local models load before the first record, not during it
        if self.call_events is not None:
            await self.call_events.start(self.providers)

    async def stop(self) -> None:
        if self._toxicity_scores is not None:
            await self._toxicity_scores.aclose()
        if self.call_events is not None:
            await self.call_events.stop()
        await self.providers.aclose()

    async def decide(self, record: Governed) -> Answer:
        engine = self.policy.current()
        if record.governance.verdict in (Verdict.BLOCK, Verdict.ESCALATE):
            return held_answer(record, engine)
        if record.route.kind == RouteKind.WORKFLOW:
            return workflow_answer(record)
        grounded = None
        if self.grounded_first and record.route.intent not in UNGROUNDED_INTENTS:
            grounded = grounded_answer(record.governance.redacted_text, record.context.items)
        # a custom model was promoted because it beat the grounded answers on its intents: it answers first, and
        # where it declines the passages answer instead of its fallbacks
        custom_first = grounded is not None and record.route.kind == RouteKind.CUSTOM_MODEL
        if grounded is not None and not custom_first:
            reply = grounded_reply(grounded)
            self._observe_grounded(record, reply)
            return reply
        request_id = record.request.request_id
        tokens, findings = await self._tokens(record)
        chain, skipped = self.providers.chain(record.route.provider)
        if custom_first:
            chain = chain[:1]
        with self._work.measure(request_id, "governance"):
            visible = visible_for_chain(engine, [provider.name for provider in chain])
            messages: list[ChatMessage] = [
                {"role": m["role"], "content": restore(m["content"], tokens, visible)} for m in prompt_for(record)
            ]
        try:
            completion, failover, messages, cut = await self._complete(chain, messages, request_id, skipped)
        except (ProvidersExhausted, ProvidersRejected) as failed:
            if grounded is not None:  # the custom model declined: the passages answer, and are its shadow's incumbent
                reply = grounded_reply(grounded)
                self._observe_grounded(record, reply)
                return reply
            degraded = self._degraded(request_id, chain, failed)
            if degraded is None:
                raise  # retried by the runtime until the deadline
            return degraded
        self._first_failure.pop(request_id, None)
        if cut is not None:
            findings = [*findings, cut]
        answer = model_answer(completion, messages, failover)
        guarded = await self.guard(record, answer.text, engine, tokens, messages)
        return answer.model_copy(update={"text": guarded.text, "output_findings": findings + guarded.findings})

    def _observe_grounded(self, record: Governed, reply: Answer) -> None:
        """A grounded answer told to the shadow runner, if any, as the answer of the incumbent named "grounded": on
        the local default the passages answer most policy questions, so a candidate must be compared with them."""
        from services.learning.shadow import shadow_runner  # the learning loop imports the answerer, not the reverse

        runner = shadow_runner(self.providers)
        if runner is None:
            return
        completion = Completion(
            text=reply.text,
            provider=reply.provider,
            model=reply.model,
            model_version=reply.model_version,
            tokens_in=0,
            tokens_out=0,
            latency_ms=0.0,
            finish_reason="stop",
        )
        runner.observe(reply.provider, prompt_for(record), record.request.request_id, completion)

    async def _complete(
        self, chain: Sequence[GuardedProvider], messages: list[ChatMessage], request_id: str, skipped: list[str]
    ) -> tuple[Completion, list[str], list[ChatMessage], Finding | None]:
        """The model's completion; where every provider refused the prompt (too long for its window), the prompt
        cut (up to three times, each at most half the last) with a finding saying so: a long question is
        answered, not dead-lettered."""

        def ask(prompt: list[ChatMessage]) -> Awaitable[tuple[Completion, list[str]]]:
            return complete_with_failover(
                chain, prompt, max_tokens=self.max_tokens, temperature=0.0, request_id=request_id, skipped=skipped
            )

        try:
            completion, failover = await ask(messages)
            return completion, failover, messages, None
        except ProvidersRejected as rejected:
            first_refusal = refusal = rejected
        shorter = messages
        for _ in range(3):  # each cut at most half the last: a window far smaller than the limit is reached too
            cut = cut_prompt(shorter, self.max_prompt_chars)
            if cut is None:
                break
            shorter = cut
            try:
                completion, failover = await ask(shorter)
            except ProvidersRejected as again:
                refusal = again
                continue
            sent = sum(len(message["content"]) for message in messages)
            kept = sum(len(message["content"]) for message in shorter)
            finding = Finding(
                rule_id=INPUT_TRUNCATED,
                rule_version=DEGRADE_VERSION,
                kind=INPUT_TRUNCATED,
                action="allow",
                detail=f"every provider refused the prompt ({first_refusal.reason[:200]}); cut from {sent} to {kept} "
                "characters, the start and the end of the question kept",
                inputs={"sent_chars": str(sent), "kept_chars": str(kept)},
            )
            return completion, failover, shorter, finding
        raise refusal

    def _degraded(
        self, request_id: str, chain: Sequence[GuardedProvider], failed: ProvidersExhausted | ProvidersRejected
    ) -> Answer | None:
        """The hand-off to staff when no provider can answer: at once where every provider refused the request or
        every circuit is open, else once the request has waited `outage_deadline_s`; None: retry it."""
        now = time.monotonic()
        first = self._first_failure.setdefault(request_id, now)
        while len(self._first_failure) > 10_000:
            self._first_failure.popitem(last=False)
        all_open = bool(chain) and all(provider.breaker.state is BreakerState.OPEN for provider in chain)
        waited = now - first
        if isinstance(failed, ProvidersExhausted) and not all_open and waited < self.outage_deadline_s:
            return None
        self._first_failure.pop(request_id, None)
        why = "rejected" if isinstance(failed, ProvidersRejected) else "circuits open" if all_open else "deadline"
        self.degraded[why] += 1
        finding = Finding(
            rule_id=PROVIDERS_UNAVAILABLE,
            rule_version=DEGRADE_VERSION,
            kind=PROVIDERS_UNAVAILABLE,
            action="escalate",
            detail=f"no provider answered ({why}, after {waited:.1f} s): {failed.reason[:300]}; handed to staff",
            inputs={"why": why, "waited_s": f"{waited:.1f}"},
        )
        answer = answer_without_model(HOLD_REPLY, "none", "degraded", DEGRADE_VERSION, "degraded")
        return answer.model_copy(update={"output_findings": [finding]})

    def _junk(self, record: Governed, text: str, messages: list[ChatMessage]) -> tuple[str, Finding] | None:
        """A junk model answer (empty, looping, echoing the prompt or its markup, off the topic) replaced, before
        anyone sees it, by the grounded answer from the knowledge passages or else the hand-off to staff."""
        with self._work.measure(record.request.request_id, "governance"):
            found = find_junk(
                text,
                record.governance.redacted_text,
                [item.text for item in record.context.items],
                [message["content"] for message in messages],
            )
            if found is None:
                return None
            grounded = grounded_answer(record.governance.redacted_text, record.context.items)
        self.junk_found[found.kind] += 1
        replaced_with = "grounded" if grounded is not None else "handoff"
        finding = Finding(
            rule_id=found.kind,
            rule_version=JUNK_GUARD_VERSION,
            kind=found.kind,
            action="block",
            detail=f"{found.detail}; replaced with the {replaced_with} answer",
            inputs={"replaced_with": replaced_with, "passages": ",".join(grounded.passage_ids) if grounded else ""},
        )
        return (grounded.text if grounded is not None else HOLD_REPLY), finding

    async def guard(
        self,
        record: Governed,
        text: str,
        engine: PolicyEngine,
        tokens: Mapping[str, str],
        messages: list[ChatMessage] | None = None,
    ) -> GuardResult:
        """check_answer on a model's answer, with its toxicity scored in a batch and only where it is read: the
        policy's output rules run first (their reply says what the model may not promise), then the junk guard,
        and an answer either replaces is not embedded (most of the guard's CPU)."""
        request_id = record.request.request_id
        with self._work.measure(request_id, "governance"):
            checked = check_commitments(record, text, engine)
        if checked.replaced:
            return checked
        junk = self._junk(record, text, messages or [])
        if junk is not None:
            return GuardResult(text=junk[0], findings=[*checked.findings, junk[1]], replaced=True)
        score = await self._toxicity_score(request_id, text)
        with self._work.measure(request_id, "governance"):
            return screen_answer(text, checked.findings, engine, tokens=tokens, toxicity=score)

    def span_attributes(self, record: Governed, section: Answer) -> dict[str, str | int | float | bool]:
        """OpenTelemetry's GenAI attributes on the answerer's span, where a model answered (held, workflow and
        grounded answers call none); gen_ai.system is the provider's name as configured (openai, local_gguf, ...)."""
        if section.prompt_template_version != PROMPT_TEMPLATE_VERSION:
            return {}
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": section.provider,
            "gen_ai.request.model": section.model,
            "gen_ai.request.max_tokens": self.max_tokens,
            "gen_ai.usage.input_tokens": section.tokens_in,
            "gen_ai.usage.output_tokens": section.tokens_out,
        }

    def work(self, record: Governed, section: Answer, decide_ms: float) -> dict[str, float]:
        """The output guard and the PII restore into the prompt around the model call (governance); the call itself is
        execution, not orchestration work, and held or workflow answers do none of it."""
        return self._work.pop(record.request.request_id)

    async def _toxicity_score(self, request_id: str, text: str) -> float | None:
        """The answer's toxicity: the cheap model's score where it is sure the answer is clean, else MiniLM's,
        batched; recent answers are remembered (models repeat themselves)."""
        if self._toxicity_scores is None:
            return None
        remembered = self._scored.get(text)
        if remembered is not None:
            self.toxicity_deciders["remembered"] += 1
            return remembered
        scored = " ".join(text.split()[:SCORED_WORDS])
        score, decider = self._sure_clean_score(request_id, scored), "char_ngram"
        if score is None:
            score, score_ms = await self._toxicity_scores.submit_timed(scored)
            self._work.add(request_id, "governance", score_ms)
            decider = "minilm"
        self.toxicity_deciders[decider] += 1
        self._scored.put(text, score)
        return score

    def _sure_clean_score(self, request_id: str, text: str) -> float | None:
        """The cheap model's score where it decides the answer is clean (tens of µs, on the loop), else None."""
        if self.sure_clean is None:
            return None
        with self._work.measure(request_id, "governance"):
            score = self.sure_clean.score(text)
        return score if self.sure_clean.sure_clean(score) else None

    async def _tokens(self, record: Governed) -> tuple[dict[str, str], list[Finding]]:
        """The request's token mapping, opened from the sealed entry the governed record carries; without it
        (no key here, or a record from a governor that did not pass it on) the answer keeps neutral words. Only
        the entry of this store's request opens, whatever key the record names."""
        key = record.governance.vault_key
        if not key or self.vault is None:
            return {}, []
        try:
            if record.pii_vault is None:
                raise VaultError(f"governed record {key} carries no vault entry")
            own = vault_key_for(record.request.store_id, record.request.request_id)
            return self.vault.open(record.pii_vault, own), []
        except VaultError as error:
            log.warning("PII vault entry unavailable", extra={"request_id": record.request.request_id})
            finding = Finding(
                rule_id="pii.vault_unavailable",
                rule_version=GUARD_VERSION,
                kind="pii.vault",
                action="mask",
                detail=f"tokens not restored: {error}",
                inputs={"vault_key": key},
            )
            return {}, [finding]
