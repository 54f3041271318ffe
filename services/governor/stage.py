"""The governor (stitched → governed): keeps PII, abuse, prompt injection and policy breaches away from every model.

Per request: PII in the request text and the stitched prompt becomes typed tokens (the mapping goes, encrypted, to
the `pii.vault` topic in the same transaction, and rides sealed in the governed record); from here on every record
carries the request text tokenised, never raw (the raw text stays in requests, routed and stitched); an abusive
request or one carrying an injection is blocked; instruction-like passages are dropped from the prompt; the policy
rules run on the extracted facts. The CPU work (spaCy, embeddings) runs in one worker thread, batched across
requests (`MicroBatcher`); `govern` is pure. Knowledge passages and history items arrive with the injection score
made when their text was written (`known_score`): the governor embeds the request text (not even that where the
router passed its embedding on) and only those items that carry no score of its own classifier's version.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from services.approvals.signing import ApprovalVerifier
from services.governor.char_ngram import RequestCascade, request_cascade
from services.governor.classifiers import INJECTION, TOXICITY, BinaryClassifier, ensure_trained
from services.governor.injection import injection_signals
from services.policy.engine import PolicyEngine, PolicyWatcher
from services.policy.facts import extract_sourced_facts
from services.runtime.batcher import MicroBatcher
from services.runtime.cache import BoundedCache
from services.runtime.signing_keys import secrets_dir
from services.runtime.stage import SideRecord, Stage, WorkLedger
from services.settings import Settings
from services.shared.embedder import SentenceEmbedder
from services.shared.pii import PiiDetector, PiiSpan, Tokeniser, segments
from services.shared.prompts import fallback_prompt
from services.shared.vault import VAULT_RECORD, VAULT_TOPIC, VaultCipher, vault_key_for
from services.wire.models import (
    ClassifierScore,
    Finding,
    Governance,
    PromptMessage,
    Stitched,
    TextEmbedding,
    Verdict,
)

log = logging.getLogger("switchyard.governor")

GOVERNOR_VERSION: Final = "governor-2"
WITHHELD: Final = "[passage withheld: it contained instructions addressed to the model]"
VERDICT_RANK: Final = {Verdict.ALLOW: 0, Verdict.MASK: 1, Verdict.ESCALATE: 2, Verdict.BLOCK: 3}
PENDING_VAULT_LIMIT: Final = 10_000
TEXT_MEMORY: Final = 10_000  # texts per memory of what the models found in them
# per memory: a prompt text is 1 to 3 KB (the count binds first), a request text can be up to 1 MiB
TEXT_MEMORY_BYTES: Final = 32 << 20
# Items whose text comes from documents or from earlier requests get the injection classifier as well as the
# patterns; reference rows (store hours, inventory) are the store's own structured data and get the patterns
# only. Embedding every per-store row capped the governor near 20 records/s on 2 cores. Most of these items carry
# the classifier's score made when their text was written (ContextItem.injection_score): see `known_score`.
CLASSIFIED_SOURCES: Final = frozenset({"knowledge_base", "customer_history"})


@dataclass(frozen=True)
class TextAnalysis:
    """What the models found in one request: PII spans per text, and classifier scores."""

    request_spans: list[PiiSpan]
    prompt_spans: list[list[PiiSpan]]
    toxicity: float
    request_injection: float
    passage_injection: list[float]
    injection_classifier: str = ""  # the version of the injection classifier that made request_injection


@dataclass(frozen=True)
class AnalysisInput:
    request_text: str
    prompt_texts: list[str]
    passage_texts: list[str | None]  # None: an item the classifier does not score (see CLASSIFIED_SOURCES)
    request_embedding: TextEmbedding | None = None  # the router's, used where it is what our embedder would make
    # per item, the injection score made when its text was written (ContextItem.injection_score), or None
    known_injection: list[ClassifierScore | None] | None = None


class Analyzer:
    """The governor's models: Presidio + spaCy, and the toxicity and injection classifiers over one embedding."""

    def __init__(
        self,
        detector: PiiDetector,
        toxicity: BinaryClassifier,
        injection: BinaryClassifier,
        prompt_detector: PiiDetector | None = None,
        cascade: RequestCascade | None = None,
    ) -> None:
        self.detector, self.toxicity, self.injection = detector, toxicity, injection
        # A request text is scored by the cheap models first (char_ngram.RequestCascade) where the router passed on
        # no embedding of it: MiniLM runs only on the texts they are not sure of. Without a cascade, MiniLM scores
        # every request text.
        self.cascade = cascade
        # what the record names as the scorer of a request's injection score: MiniLM's classifier, or the cascade in
        # front of it (a fingerprint of the cheap models' versions and MiniLM's); fixed for this analyzer's life
        self.request_injection_version = (
            injection.version
            if cascade is None
            else hashlib.sha256(f"{cascade.version};{injection.version}".encode()).hexdigest()[:16]
        )
        self._known_versions = frozenset({injection.version, self.request_injection_version})
        # The request text is the untrusted part and gets the full NER pass. The rest of the prompt is built from
        # the store's own data (reference rows, curated passages, history already redacted here), so it gets the
        # pattern recognizers only, as a safety net, and every value found in the request is replaced in it too
        # (Tokeniser.replace_known). NER over the whole ~2 KB prompt cost ~10x the request alone on 2 cores.
        self.prompt_detector = prompt_detector or (detector if not detector.use_ner else PiiDetector(use_ner=False))
        # Texts repeat across requests: the same policy page answers many questions, the same system prompt opens
        # every prompt, and tills send the same few questions all day. What the models found in a text is
        # remembered (the most recently used, bounded), so a text is embedded or scanned once, not once per request.
        # A prompt is new with every request (it holds the request), but is made of pieces seen before: it is
        # remembered piece by piece (pii.segments), so only its new pieces are scanned.
        # Each memory is used by one thread at a time: the governor's batchers run one batch of each kind at once.
        self._scores: BoundedCache[str, tuple[float, float]] = text_memory()  # text -> (toxicity, injection)
        self._request_spans: BoundedCache[str, list[PiiSpan]] = text_memory()
        self._prompt_spans: BoundedCache[str, list[PiiSpan]] = text_memory()  # prompt piece -> its spans
        self.reused_embeddings = 0  # request texts scored from the router's embedding
        self.embedded_texts = 0  # texts this analyzer embedded (MiniLM calls' rows)
        self.known_scores = 0  # passage and history items whose injection score was known ahead (not embedded)
        self.cascade_decided = 0  # request texts the cheap models decided (not embedded)

    @classmethod
    def load(cls, *, use_ner: bool = True) -> Analyzer:
        embedder = SentenceEmbedder()  # shared: the two classifiers read the same embedding of a text
        return cls(
            PiiDetector(use_ner=use_ner),
            ensure_trained(TOXICITY, embedder=embedder),
            ensure_trained(INJECTION, embedder=embedder),
            cascade=request_cascade(),
        )

    @property
    def version(self) -> str:
        cascade = f";cascade {self.cascade.version}" if self.cascade is not None else ""
        return f"{self.detector.version};toxicity {self.toxicity.version};injection {self.injection.version}{cascade}"

    def analyse(self, inputs: Sequence[AnalysisInput]) -> list[TextAnalysis]:
        """Blocking: everything the models find in a batch (the governor runs the two halves in two threads)."""
        return [
            combined(spans, scores, self.request_injection_version)
            for spans, scores in zip(self.find_pii(inputs), self.classify(inputs), strict=True)
        ]

    def find_pii(self, inputs: Sequence[AnalysisInput]) -> list[tuple[list[PiiSpan], list[list[PiiSpan]]]]:
        """Blocking: PII spans of each request text (NER and patterns, one spaCy pass over the batch) and of its
        prompt texts (patterns, piece by piece); texts and pieces scanned before are not scanned again."""
        requests = iter(
            _remembered(self.detector.detect_many, [item.request_text for item in inputs], self._request_spans)
        )
        prompts = iter(self._prompt_pii([text for item in inputs for text in item.prompt_texts]))
        return [(list(next(requests)), [next(prompts) for _ in item.prompt_texts]) for item in inputs]

    def _prompt_pii(self, texts: Sequence[str]) -> list[list[PiiSpan]]:
        """Each text's spans, found piece by piece; with NER (whose view spans the pieces) the texts whole."""
        if self.prompt_detector.use_ner:
            return [list(spans) for spans in _remembered(self.prompt_detector.detect_many, texts, self._prompt_spans)]
        pieces = [segments(text) for text in texts]
        found = iter(
            _remembered(self.prompt_detector.detect_many, [p for each in pieces for _, p in each], self._prompt_spans)
        )
        return [[_shifted(span, offset) for offset, _ in each for span in next(found)] for each in pieces]

    def classify(self, inputs: Sequence[AnalysisInput]) -> list[tuple[float, float, list[float]]]:
        """Blocking: (toxicity, request injection, passage injections) per input, one embedding pass serving both
        classifiers; texts already scored, now or when they were written (`known_score`), are not embedded."""
        requests = [item.request_text for item in inputs]
        known = [self._known_scores(item) for item in inputs]
        passages = [
            text
            for item, scores in zip(inputs, known, strict=True)
            for text, score in zip(item.passage_texts, scores, strict=True)
            if text is not None and score is None
        ]
        given: dict[str, NDArray[np.float32]] = {}
        for item in inputs:
            vector = self.toxicity.embedder.reusable(item.request_embedding)
            if vector is not None:
                given[item.request_text] = vector
        found = _remembered(lambda texts: self._score(texts, given, set(requests)), requests + passages, self._scores)
        passage_scores = dict(zip(passages, found[len(requests) :], strict=True))

        def passage_score(text: str | None, score: float | None) -> float:
            if score is not None:
                return score
            return 0.0 if text is None else passage_scores[text][1]

        return [
            (toxicity, injection, [passage_score(t, s) for t, s in zip(item.passage_texts, scores, strict=True)])
            for item, scores, (toxicity, injection) in zip(inputs, known, found[: len(requests)], strict=True)
        ]

    def _known_scores(self, item: AnalysisInput) -> list[float | None]:
        """Per classified item, the injection score made when its text was written, where this classifier made it."""
        known = item.known_injection or [None] * len(item.passage_texts)
        scores = [
            None if text is None else known_score(given, self._known_versions)
            for text, given in zip(item.passage_texts, known, strict=True)
        ]
        self.known_scores += sum(score is not None for score in scores)
        return scores

    def _score(
        self, texts: Sequence[str], given: Mapping[str, NDArray[np.float32]], requests: Collection[str] = ()
    ) -> list[tuple[float, float]]:
        """Both classifiers' scores; texts in `given` (the router's embeddings) are not embedded again, and request
        texts the cascade is sure of are not embedded at all."""
        decided: dict[str, tuple[float, float]] = {}
        if self.cascade is not None:
            for text in texts:
                sure = self.cascade.sure(text) if text in requests and text not in given else None
                if sure is not None:
                    decided[text] = sure
        self.cascade_decided += len(decided)
        rest = [text for text in texts if text not in decided]
        scored = dict(zip(rest, self._minilm_scores(rest, given), strict=True))
        return [decided[text] if text in decided else scored[text] for text in texts]

    def _minilm_scores(
        self, texts: Sequence[str], given: Mapping[str, NDArray[np.float32]]
    ) -> list[tuple[float, float]]:
        """Both MiniLM classifiers' scores, one embedding pass; texts in `given` are not embedded again."""
        if not texts:
            return []
        missing = [text for text in texts if text not in given]
        embedded = dict(zip(missing, self.toxicity.embed(missing), strict=True)) if missing else {}
        self.reused_embeddings += len(texts) - len(missing)
        self.embedded_texts += len(missing)
        embeddings = np.stack([given[text] if text in given else embedded[text] for text in texts])
        toxicity, injection = self.toxicity.probabilities_of(embeddings), self.injection.probabilities_of(embeddings)
        return list(zip(toxicity, injection, strict=True))


Found = TypeVar("Found")


def known_score(given: ClassifierScore | None, classifier_versions: Collection[str]) -> float | None:
    """A score made ahead of time (at ingest, or when the request the text quotes was governed), where one of
    `classifier_versions` made it (MiniLM's classifier, or the cascade in front of it for a request); None where there
    is none or another version made it (then the text is scored here).

    Trusted because only stage principals write the records that carry it: the stitcher sets
    ContextItem.injection_score (from the knowledge base's stored score, or from the `audited` record the governor
    itself scored) and no client can (requests carry no context; the `stitched` topic is the stitcher's alone)."""
    if given is None or given.classifier not in classifier_versions:
        return None
    return given.score


def _shifted(span: PiiSpan, offset: int) -> PiiSpan:
    return dataclasses.replace(span, start=span.start + offset, end=span.end + offset)


def text_memory() -> BoundedCache[str, Found]:
    """One memory of what a model found in texts: the most recently used TEXT_MEMORY texts, TEXT_MEMORY_BYTES."""
    return BoundedCache(TEXT_MEMORY, TEXT_MEMORY_BYTES)


def _remembered(
    find: Callable[[Sequence[str]], Sequence[Found]], texts: Sequence[str], memory: BoundedCache[str, Found]
) -> list[Found]:
    """`find` over the texts not in `memory` (each once), the rest from it. `find` must be deterministic: a
    remembered result stands for a new call's. The results are collected before the new ones are remembered, as
    remembering one can evict another of the same batch (or not keep a text too big for the memory)."""
    known: dict[str, Found] = {}
    for text in dict.fromkeys(texts):
        found = memory.get(text)
        if found is not None:
            known[text] = found
    new = [text for text in dict.fromkeys(texts) if text not in known]
    known.update(zip(new, find(new) if new else [], strict=True))
    for text in new:
        memory.put(text, known[text])
    return [known[text] for text in texts]


def combined(
    spans: tuple[list[PiiSpan], list[list[PiiSpan]]],
    scores: tuple[float, float, list[float]],
    injection_classifier: str = "",
) -> TextAnalysis:
    (request_spans, prompt_spans), (toxicity, request_injection, passage_injection) = spans, scores
    return TextAnalysis(
        request_spans, prompt_spans, toxicity, request_injection, passage_injection, injection_classifier
    )


def analysis_input(record: Stitched) -> AnalysisInput:
    return AnalysisInput(
        request_text=record.request.text,
        request_embedding=record.request_embedding,
        prompt_texts=[message.content for message in prompt_of(record)],
        passage_texts=[item.text if item.source in CLASSIFIED_SOURCES else None for item in record.context.items],
        known_injection=[item.injection_score for item in record.context.items],
    )


def prompt_of(record: Stitched) -> list[PromptMessage]:
    """The stitched prompt, or the answerer's own template where the stitcher rendered none."""
    if record.context.prompt:
        return list(record.context.prompt)
    rendered = fallback_prompt(record.context.items, record.request.text)
    return [PromptMessage(role=m["role"], content=m["content"]) for m in rendered]


@dataclass(frozen=True)
class GovernorResult:
    """The governor's section and the token mapping to seal in the vault (empty when nothing was tokenised)."""

    governance: Governance
    tokens: dict[str, str]
    # time spent in the policy part (fact extraction and the rule engine): measured, not part of the decision
    policy_ms: float = 0.0


def govern(
    record: Stitched,
    analysis: TextAnalysis,
    engine: PolicyEngine,
    *,
    toxicity_threshold: float = 0.5,
    approval_verified: bool = False,
) -> GovernorResult:
    """The whole decision for one request, given what the models found. Pure and deterministic."""
    request = record.request
    findings: list[Finding] = []
    verdicts: list[Verdict] = [Verdict.ALLOW]

    if analysis.toxicity >= toxicity_threshold:
        findings.append(_toxicity_finding(analysis.toxicity))
        verdicts.append(Verdict.BLOCK)
    request_signals = injection_signals(request.text)
    if request_signals or analysis.request_injection >= INJECTION.threshold:
        findings.append(_injection_finding("request", request.request_id, request_signals, analysis.request_injection))
        verdicts.append(Verdict.BLOCK)

    withheld: list[str] = []
    for item, score in zip(record.context.items, analysis.passage_injection, strict=True):
        signals = injection_signals(item.text)
        if "instruction_like" in item.flags:
            signals = ["flagged instruction_like by the stitcher", *signals]
        if signals or score >= INJECTION.threshold:
            withheld.append(item.text)
            finding = _injection_finding(f"{item.source}:{item.source_id}", request.request_id, signals, score)
            findings.append(finding.model_copy(update={"action": "drop", "rule_id": "injection.passage"}))

    tokeniser = Tokeniser()
    redacted_text = tokeniser.apply(request.text, analysis.request_spans)
    prompt = [
        PromptMessage(role=message.role, content=tokeniser.apply(message.content, spans))
        for message, spans in zip(prompt_of(record), analysis.prompt_spans, strict=True)
    ]
    # a value found in one text is replaced in all of them, whatever the NER saw in each
    redacted_text = tokeniser.replace_known(redacted_text)
    prompt = [PromptMessage(role=m.role, content=tokeniser.replace_known(m.content)) for m in prompt]
    prompt = _without_passages(prompt, withheld, record, redacted_text, tokeniser)
    pii_findings = _pii_findings(tokeniser, analysis)
    if pii_findings:
        findings += pii_findings
        verdicts.append(Verdict.MASK)

    policy_started = time.thread_time()  # CPU time: not the wait for the GIL held by the model threads
    # a manager's approval counts only with its verified signature, the tier is the customer table's, and what the
    # client claims (attributes, the text's purchase date) can only tighten the outcome
    sourced = extract_sourced_facts(request, record.route.intent, record.context, approval_verified=approval_verified)
    outcome, decided_on = engine.decide_strictest(sourced.variants)
    facts = dict(decided_on)
    policy_ms = (time.thread_time() - policy_started) * 1000
    findings += outcome.findings
    verdicts.append(outcome.verdict)
    for fact, cap in sorted(outcome.caps.items()):
        facts[f"cap_{fact}"] = f"{cap:g}"
        prompt.insert(
            1 if prompt and prompt[0].role == "system" else 0,
            PromptMessage(role="system", content=f"Store policy: never offer more than {cap:g} for {fact}."),
        )
    verdict = max(verdicts, key=VERDICT_RANK.__getitem__)
    return GovernorResult(
        governance=Governance(
            verdict=verdict,
            findings=findings,
            redacted_text=redacted_text,
            request_text_chars=len(request.text),
            redacted_prompt=prompt,
            vault_key=vault_key_for(request.store_id, request.request_id) if tokeniser.tokens else "",
            facts=facts,
            fact_sources=sourced.sources(decided_on),
            policy_version=engine.version,
            request_injection_score=_request_injection_score(analysis),
        ),
        tokens=dict(tokeniser.tokens),
        policy_ms=policy_ms,
    )


def mask_pii(text: str, detector: PiiDetector | None = None) -> tuple[str, list[Finding]]:
    """One text tokenised as the governor does it, with findings; by default with the pattern recognizers only
    (no spaCy NER), for tools that need the governor's masking without loading its models."""
    detector = detector or _pattern_detector()
    spans = detector.detect(text)
    tokeniser = Tokeniser()
    masked = tokeniser.apply(text, spans)
    found = TextAnalysis(spans, prompt_spans=[], toxicity=0.0, request_injection=0.0, passage_injection=[])
    return masked, _pii_findings(tokeniser, found)


@functools.cache
def _pattern_detector() -> PiiDetector:
    return PiiDetector(use_ner=False)


def _without_passages(
    prompt: list[PromptMessage], withheld: Sequence[str], record: Stitched, question: str, tokeniser: Tokeniser
) -> list[PromptMessage]:
    """The prompt with each withheld passage replaced by a notice. A passage the stitcher rendered in another
    form (cut, escaped) cannot be found verbatim: then the prompt is rebuilt from the passages kept, with the
    answerer's own template, so an injected passage never stays in by accident."""
    if not withheld:
        return prompt
    forms = [(text, tokeniser.replace_known(text)) for text in withheld]
    if not all(any(raw in m.content or red in m.content for m in prompt) for raw, red in forms):
        kept = [item for item in record.context.items if item.text not in set(withheld)]
        rebuilt = fallback_prompt(kept, question)
        return [PromptMessage(role=m["role"], content=tokeniser.replace_known(m["content"])) for m in rebuilt]
    withheld_prompt: list[PromptMessage] = []
    for message in prompt:
        content = message.content
        for raw, redacted in forms:
            content = content.replace(raw, WITHHELD).replace(redacted, WITHHELD)
        withheld_prompt.append(PromptMessage(role=message.role, content=content))
    return withheld_prompt


def _request_injection_score(analysis: TextAnalysis) -> ClassifierScore | None:
    """The request's injection score for the record, which the stitcher's customer history carries on to the
    interaction's item (so it is not embedded again there); none where no classifier version is known."""
    if not analysis.injection_classifier:
        return None
    return ClassifierScore(classifier=analysis.injection_classifier, score=analysis.request_injection)


def _toxicity_finding(score: float) -> Finding:
    return Finding(
        rule_id="toxicity.request",
        rule_version=TOXICITY.name,
        kind="toxicity",
        action="block",
        detail=f"the request reads as abusive (classifier {score:.2f} >= {TOXICITY.threshold:g}); answered with "
        "the calm fixed reply, not forwarded to a model",
        inputs={"toxicity_score": f"{score:.3f}", "threshold": f"{TOXICITY.threshold:g}"},
    )


def _injection_finding(where: str, request_id: str, signals: Sequence[str], score: float) -> Finding:
    return Finding(
        rule_id="injection.request" if where == "request" else "injection.passage",
        rule_version=INJECTION.name,
        kind="injection",
        action="block",
        detail=f"instructions addressed to the model in the {where}"
        + (f" ({', '.join(signals)})" if signals else f" (classifier {score:.2f})"),
        inputs={"where": where, "signals": ",".join(signals), "injection_score": f"{score:.3f}"},
    )


def _pii_findings(tokeniser: Tokeniser, analysis: TextAnalysis) -> list[Finding]:
    """One finding per entity type, naming its tokens and the recognizers, never the values."""
    recognizers: dict[str, set[str]] = {}
    for span in [*analysis.request_spans, *(s for spans in analysis.prompt_spans for s in spans)]:
        recognizers.setdefault(span.kind, set()).add(span.recognizer)
    by_kind: dict[str, list[str]] = {}
    for token in tokeniser.tokens:
        by_kind.setdefault(token[1 : token.rindex("_")], []).append(token)
    return [
        Finding(
            rule_id=f"pii.{kind.lower()}",
            rule_version=GOVERNOR_VERSION,
            kind=f"pii.{kind.lower()}",
            action="mask",
            detail=f"{len(tokens)} {kind.lower()} value(s) replaced by {', '.join(tokens)}",
            inputs={"count": str(len(tokens)), "recognizers": ",".join(sorted(recognizers.get(kind, set())))},
        )
        for kind, tokens in sorted(by_kind.items())
    ]


class Governor(Stage[Stitched, Governance]):
    name: ClassVar[str] = "governor"
    input_topic: ClassVar[str] = "stitched"
    input_record: ClassVar[str] = "Stitched"
    input_model = Stitched
    output_topic: ClassVar[str] = "governed"
    output_record: ClassVar[str] = "Governed"
    section: ClassVar[str] = "governance"

    def __init__(self, settings: Settings, *, analyzer: Analyzer | None = None) -> None:
        self.settings = settings
        self.policy = PolicyWatcher(settings.policies)
        self.cipher = VaultCipher.from_settings(settings)
        self.approvals = ApprovalVerifier(secrets_dir(settings))
        self.analyzer = analyzer
        self._pii: MicroBatcher[AnalysisInput, tuple[list[PiiSpan], list[list[PiiSpan]]]] | None = None
        self._classifiers: MicroBatcher[AnalysisInput, tuple[float, float, list[float]]] | None = None
        self._vault: OrderedDict[str, dict[str, object]] = OrderedDict()
        self._work = WorkLedger()

    async def start(self) -> None:
        self.policy.load()  # an invalid policy stops the governor at start-up, naming the file and the rule
        if self.analyzer is None:
            self.analyzer = await asyncio.to_thread(Analyzer.load, use_ner=self.settings.pii_ner)
        # Two worker threads, one per model family, each used by one thread at a time (spaCy is not documented
        # as thread-safe): the ONNX embedding releases the GIL, so it runs beside Presidio's Python on 2 cores.
        self._pii = MicroBatcher(self.analyzer.find_pii, concurrency=1, max_batch=64)
        self._classifiers = MicroBatcher(self.analyzer.classify, concurrency=1, max_batch=64)
        log.info(
            "governor ready",
            extra={"policy_version": self.policy.engine.version, "models": self.analyzer.version},
        )

    async def stop(self) -> None:
        for batcher in (self._pii, self._classifiers):
            if batcher is not None:
                await batcher.aclose()

    async def decide(self, record: Stitched) -> Governance:
        assert self.analyzer is not None and self._pii is not None and self._classifiers is not None, (
            "start() loads the models"
        )
        item = analysis_input(record)
        (spans, pii_ms), (scores, classify_ms) = await asyncio.gather(
            self._pii.submit_timed(item), self._classifiers.submit_timed(item)
        )
        request_id = record.request.request_id
        started = time.thread_time()
        analysis = combined(spans, scores, self.analyzer.request_injection_version)
        verified = self.approvals.verifies(record.request)
        result = govern(record, analysis, self.policy.current(), approval_verified=verified)
        if result.tokens:
            entry = self.cipher.seal(result.governance.vault_key, result.tokens)
            self._vault[result.governance.vault_key] = entry.model_dump()
            while len(self._vault) > PENDING_VAULT_LIMIT:  # decided but dead-lettered later: never collected
                self._vault.popitem(last=False)
        governing_ms = (time.thread_time() - started) * 1000
        # the models' share of their batches' compute, not the time this record waited for a batch
        self._work.add(request_id, "governance", pii_ms + classify_ms + governing_ms - result.policy_ms)
        self._work.add(request_id, "policy", result.policy_ms)
        return result.governance

    def work(self, record: Stitched, section: Governance, decide_ms: float) -> dict[str, float]:
        """PII, toxicity and injection screening and redaction (governance); facts and rules (policy)."""
        return self._work.pop(record.request.request_id)

    def passed_on(self, record: Stitched, section: Governance) -> dict[str, Any]:
        """The request text and the stitched prompt (which quotes it) tokenised, as every record from here on
        carries them; and the sealed vault entry, so the answerer and the edge open it without reading `pii.vault`
        (and without waiting for it); side_records still writes it there for the approvals process."""
        prompt = [message.model_dump() for message in section.redacted_prompt]
        return {
            "request": {**record.request.model_dump(), "text": section.redacted_text},
            "context": {**record.context.model_dump(), "prompt": prompt},
            "pii_vault": self._vault.get(section.vault_key) if section.vault_key else None,
        }

    def side_records(self, record: Stitched, section: Governance) -> list[SideRecord]:
        value = self._vault.pop(section.vault_key, None) if section.vault_key else None
        if value is None:
            return []
        return [SideRecord(topic=VAULT_TOPIC, record=VAULT_RECORD, key=section.vault_key, value=value)]
