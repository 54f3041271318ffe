"""Context stitching: the store's hours, the stock rows the request is about, the customer's tier and (with
consent) history, and knowledge-base passages for the store's region, cleaned, ranked and trimmed to the route's
token budget, then rendered into the route's prompt template. Every item carries its provenance (source, id,
version, score); what was left out is recorded with the reason."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Final, ParamSpec, TypeVar

from services.approvals.signing import ApprovalVerifier
from services.policy.engine import PolicyWatcher
from services.runtime.cache import PENDING_EMBEDDING_BYTES, PENDING_EMBEDDINGS, BoundedCache
from services.runtime.reference import ReferenceTable, TopicTable
from services.runtime.signing_keys import secrets_dir
from services.runtime.stage import Stage, WorkLedger
from services.settings import Settings
from services.shared.route_table import RouteTableWatcher
from services.stitcher import budget, prep
from services.stitcher.budget import EstimatedTokens, TokenCounter, counter_for, fit_to_budget
from services.stitcher.history import (
    CustomerFeedbackTable,
    CustomerHistory,
    CustomerHistoryTable,
    history_context,
)
from services.stitcher.inventory import InventoryTable
from services.stitcher.knowledge import Embedder, Passage
from services.stitcher.prompt import SECTION_SOURCES, PromptTemplate, TemplateSet, render
from services.stitcher.retrieval import (
    INTENT_CATEGORIES,
    KnowledgeRetriever,
    KnowledgeUnavailableError,
    RetrieverConfig,
)
from services.stitcher.store_hours import describe_hours
from services.stitcher.workflows import (
    Declined,
    WorkflowAnswer,
    WorkflowData,
    run_workflow,
    stocked_elsewhere,
    workflow_facts,
)
from services.wire.codec import AvroCodec
from services.wire.models import (
    Context,
    ContextItem,
    Customer,
    DroppedContext,
    Routed,
    RouteDecision,
    RouteKind,
    Store,
    TextEmbedding,
)

KNOWLEDGE_BASE: Final = "knowledge_base"
P = ParamSpec("P")
R = TypeVar("R")


class PrepClock:
    """Time spent preparing raw data for the context: prep.py's cleaning, instruction and duplicate detection,
    and counting each item's tokens. stitch() runs synchronously on the event loop, so the clock's reading
    before and after one stitch is that record's data prep."""

    ms = 0.0

    @classmethod
    def timed(cls, fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def timed_fn(*args: P.args, **kwargs: P.kwargs) -> R:
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                cls.ms += (time.thread_time() - started) * 1000

        return timed_fn


clean = PrepClock.timed(prep.clean)
instruction_like = PrepClock.timed(prep.instruction_like)
near_duplicates = PrepClock.timed(prep.near_duplicates)
with_tokens = PrepClock.timed(budget.with_tokens)
DUPLICATE: Final = "duplicate"
INSTRUCTION_LIKE: Final = "instruction_like"


def store_item(request_store_id: str, store: Store | None, now_utc: datetime) -> ContextItem:
    if store is None:
        return ContextItem(
            source="store_hours",
            source_id=request_store_id,
            version="unknown",
            text=f"Store {request_store_id} is not in the store directory.",
        )
    return ContextItem(
        source="store_hours",
        source_id=store.store_id,
        version=str(store.updated_at),
        text=describe_hours(store, now_utc),
    )


def customer_item(customer: Customer) -> ContextItem:
    preferences = ", ".join(f"{clean(k).replace('_', ' ')} {clean(v)}" for k, v in sorted(customer.preferences.items()))
    offers = "may be offered" if customer.consent_marketing else "must not be offered"
    return ContextItem(
        source="customer",
        source_id=customer.customer_id,
        version=str(customer.updated_at),
        text=f"Loyalty customer {customer.customer_id}: {customer.tier} tier; preferences: {preferences or 'none'}; "
        f"marketing offers {offers}.",
    )


def passage_items(
    passages: Sequence[Passage], count_tokens: Callable[[str], int] = lambda _: 0
) -> tuple[list[ContextItem], list[DroppedContext]]:
    """Passages as items, best first, cleaned of markup and flagged when they read like instructions; a passage
    that repeats a better one is left out as a duplicate. An item carries the injection score stored with its
    passage at ingest (of this same cleaned text), which the governor reads instead of scoring the text again."""
    texts = [clean(p.text) for p in passages]
    repeats = set(near_duplicates(texts))
    items, dropped = [], []
    for index, (passage, text) in enumerate(zip(passages, texts, strict=True)):
        item = ContextItem(
            source=KNOWLEDGE_BASE,
            source_id=passage.passage_id,
            version=passage.content_hash,
            score=round(passage.score, 6),
            text=text,
            flags=[INSTRUCTION_LIKE] if instruction_like(passage.text) else [],
            injection_score=passage.injection,
        )
        if index in repeats:
            dropped.append(
                DroppedContext(
                    source=KNOWLEDGE_BASE, source_id=passage.passage_id, tokens=count_tokens(text), reason=DUPLICATE
                )
            )
        else:
            items.append(item)
    return items, dropped


def stitch(
    record: Routed,
    store: Store | None,
    now_utc: datetime,
    *,
    template: PromptTemplate | None = None,
    inventory: Sequence[ContextItem] = (),
    customer: Customer | None = None,
    history: CustomerHistory | None = None,
    passages: Sequence[Passage] = (),
    degraded: Sequence[str] = (),
    counter: TokenCounter | None = None,
) -> Context:
    """The whole stitch of one record from what the stage looked up: pure, so it is tested without a broker."""
    counter = counter or EstimatedTokens()
    template = template or TemplateSet.load().for_route(record.route.route_id)
    hours = with_tokens([store_item(record.request.store_id, store, now_utc)], counter)
    if record.route.kind == RouteKind.WORKFLOW:
        # a workflow answers from the store's facts and sends no prompt to any model
        return Context(items=hours, token_count=hours[0].tokens, token_budget=template.token_budget)
    found: list[ContextItem] = [*hours, *inventory]
    if customer is not None:
        found.append(customer_item(customer))
    remembered, withheld = history_context(
        record.request.customer_id, customer, history or CustomerHistory(), counter.count
    )
    retrieved, duplicates = passage_items(passages, counter.count)
    found = with_tokens([*found, *remembered, *retrieved], counter)
    kept, over_budget = fit_to_budget(found, template.token_budget, template.priority)
    kept = _in_section_order(kept, template)
    return Context(
        items=kept,
        token_count=sum(i.tokens for i in kept),
        token_budget=template.token_budget,
        prompt=render(template, record.request.text, kept),
        template_id=template.id,
        template_version=template.version,
        dropped=[*withheld, *duplicates, *over_budget],
        degraded=list(degraded),
    )


def workflow_context(
    answer: WorkflowAnswer, customer: Customer | None = None, counter: TokenCounter | None = None
) -> Context:
    """A data workflow's answer as the context: the answer item first (what the answerer sends), then the data
    items it was read from and the customer's tier (which the governor's return-window rule reads), for the
    audit; no prompt, since no model sees the request."""
    sources = [item for item in answer.items() if item.source != "customer"]
    if customer is not None:
        sources.append(customer_item(customer))
    items = with_tokens(sources, counter or EstimatedTokens())
    return Context(
        items=items,
        token_count=sum(i.tokens for i in items),
        token_budget=0,
        template_id=answer.workflow,
        template_version=answer.version,
    )


def _in_section_order(items: list[ContextItem], template: PromptTemplate) -> list[ContextItem]:
    order = [SECTION_SOURCES[s] for s in template.sections if s in SECTION_SOURCES]
    return sorted(items, key=lambda i: order.index(i.source) if i.source in order else len(order))


class Stitcher(Stage[Routed, Context]):
    name: ClassVar[str] = "stitcher"
    input_topic: ClassVar[str] = "routed"
    input_record: ClassVar[str] = "Routed"
    input_model = Routed
    output_topic: ClassVar[str] = "stitched"
    output_record: ClassVar[str] = "Stitched"
    section: ClassVar[str] = "context"

    def __init__(
        self,
        settings: Settings,
        codec: AvroCodec,
        *,
        retriever: KnowledgeRetriever | None = None,
        templates: TemplateSet | None = None,
        counter: TokenCounter | None = None,
    ) -> None:
        bootstrap = settings.kafka_bootstrap
        self.stores: ReferenceTable[Store] = ReferenceTable(
            bootstrap=bootstrap,
            topic=settings.topic("ref.stores"),
            record="Store",
            model=Store,
            codec=codec,
            key_of=lambda store: store.store_id,
        )
        self.inventory = InventoryTable(bootstrap=bootstrap, topic=settings.topic("ref.inventory"), codec=codec)
        self.customers: ReferenceTable[Customer] = ReferenceTable(
            bootstrap=bootstrap,
            topic=settings.topic("ref.customers"),
            record="Customer",
            model=Customer,
            codec=codec,
            key_of=lambda customer: customer.customer_id,
        )
        self.history = CustomerHistoryTable(bootstrap=bootstrap, topic=settings.topic("audited"), codec=codec)
        # corrections, escalation outcomes and ratings, attached to the interactions in the same history
        self.feedback = CustomerFeedbackTable(
            bootstrap=bootstrap, topic=settings.topic("feedback"), codec=codec, history=self.history.history
        )
        self.retriever = retriever or KnowledgeRetriever(
            RetrieverConfig(
                host=settings.weaviate_host,
                http_port=settings.weaviate_http_port,
                grpc_port=settings.weaviate_grpc_port,
                api_key=settings.weaviate_api_key,
            ),
            _default_embedder,
        )
        self.templates = templates or TemplateSet.load()
        self._work = WorkLedger()
        self.counter = counter or counter_for(settings.model_provider, settings.model_name)
        # the data workflows read the policy the governor enforces, and a workflow that cannot answer moves the
        # request to its route's fallback from the router's own table
        self.policy = PolicyWatcher(settings.policies)
        self.route_tables = RouteTableWatcher(settings.route_table)
        self.approvals = ApprovalVerifier(secrets_dir(settings))
        self._rerouted: dict[str, RouteDecision] = {}
        # decided, not yet composed: request id -> the request text's embedding the knowledge search made, for the
        # governor (bounded like the router's: a record that fails between decision and composition leaves one)
        self._embedded: BoundedCache[str, TextEmbedding] = BoundedCache(PENDING_EMBEDDINGS, PENDING_EMBEDDING_BYTES)

    @property
    def tables(self) -> tuple[TopicTable, ...]:
        return self.stores, self.inventory, self.customers, self.history, self.feedback

    async def start(self) -> None:
        # an invalid policy or route table stops the stitcher at start-up, naming the file and the key
        await asyncio.to_thread(self.policy.load)
        await asyncio.to_thread(self.route_tables.load)
        for table in self.tables:
            await table.start()
        await self.retriever.start()
        while not all(table.ready.is_set() for table in self.tables):
            failed = [f"{t.topic}: {t.error}" for t in self.tables if t.error]
            if failed:
                raise RuntimeError(f"a reference table cannot load: {'; '.join(failed)}")
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        for table in self.tables:
            await table.stop()
        await self.retriever.stop()

    async def healthy(self) -> tuple[bool, str]:
        failed = [f"{t.topic}: {t.error}" for t in self.tables if t.error]
        if failed:
            return False, f"tables stopped: {'; '.join(failed)}"
        loading = [t.topic for t in self.tables if not t.ready.is_set()]
        if loading:
            return False, f"tables still loading: {', '.join(loading)}"
        knowledge = "knowledge base up" if self.retriever.available else "knowledge base degraded"
        return True, (
            f"{len(self.stores)} stores, {len(self.inventory)} stock rows, {len(self.customers)} customers, "
            f"{len(self.history)} customer histories loaded; {knowledge}"
        )

    def work(self, record: Routed, section: Context, decide_ms: float) -> dict[str, float]:
        """Stitching and prep time of this record; the wait for Weaviate's answer is not counted."""
        return self._work.pop(record.request.request_id)

    def _measured(self, request_id: str, build: Callable[[], Context]) -> Context:
        prep_before, started = PrepClock.ms, time.thread_time()
        context = build()
        prep_ms = PrepClock.ms - prep_before
        self._work.add(request_id, "data_prep", prep_ms)
        self._work.add(request_id, "context_stitching", (time.thread_time() - started) * 1000 - prep_ms)
        return context

    def passed_on(self, record: Routed, section: Context) -> dict[str, Any]:
        """The route, where a data workflow declined and the request moved to the route's fallback; and the request
        text's embedding, where the knowledge search made it (the router makes none for a workflow)."""
        rerouted = self._rerouted.pop(record.request.request_id, None)
        embedding = self._embedded.pop(record.request.request_id)
        return {
            **({"route": rerouted.model_dump()} if rerouted is not None else {}),
            **({"request_embedding": embedding.model_dump()} if embedding is not None else {}),
        }

    async def decide(self, record: Routed) -> Context:
        request = record.request
        store = self.stores.get(request.store_id)
        if record.route.kind == RouteKind.WORKFLOW:
            context, record = self._workflow(record, store)
            if context is not None:
                return context
        template = self.templates.for_route(record.route.route_id)
        if record.route.kind == RouteKind.WORKFLOW:
            return self._measured(
                request.request_id,
                lambda: stitch(record, store, datetime.now(UTC), template=template, counter=self.counter),
            )
        passages: list[Passage] = []
        degraded: list[str] = []
        try:
            passages = await self.retriever.retrieve(
                request.text,
                store.region if store else None,
                INTENT_CATEGORIES.get(record.route.intent, ()),
                record.request_embedding,
            )
        except KnowledgeUnavailableError:
            degraded.append(KNOWLEDGE_BASE)
        if record.request_embedding is None:
            made = self.retriever.embedding_made(request.text)
            if made is not None:
                self._embedded.put(request.request_id, made)
        routed = record
        return self._measured(
            request.request_id,
            lambda: stitch(
                routed,
                store,
                datetime.now(UTC),
                template=template,
                inventory=self.inventory.items_for(request.store_id, request.text),
                customer=self.customers.get(request.customer_id) if request.customer_id else None,
                history=self.history.history,
                passages=passages,
                degraded=degraded,
                counter=self.counter,
            ),
        )

    def _workflow(self, record: Routed, store: Store | None) -> tuple[Context | None, Routed]:
        """A data workflow's answer as the context; or, where it declines, no context yet and the record moved
        to its route's fallback (remembered for `passed_on`)."""
        request = record.request
        started = time.thread_time()
        outcome = run_workflow(record.route.route_id, self.workflow_data(record, store))
        self._work.add(request.request_id, "context_stitching", (time.thread_time() - started) * 1000)
        if isinstance(outcome, WorkflowAnswer):
            customer = self.customers.get(request.customer_id) if request.customer_id else None
            return workflow_context(outcome, customer, self.counter), record
        if not isinstance(outcome, Declined):
            return None, record
        route = self.route_tables.current().fall_back(record.route, outcome.reason)
        self._rerouted[request.request_id] = route
        return None, record.model_copy(update={"route": route})

    def workflow_data(self, record: Routed, store: Store | None) -> WorkflowData:
        request = record.request
        customer = self.customers.get(request.customer_id) if request.customer_id else None
        sourced = workflow_facts(
            request, record.route.intent, customer, approval_verified=self.approvals.verifies(request)
        )
        return WorkflowData(
            request=request,
            store=store,
            now_utc=datetime.now(UTC),
            facts=sourced.facts,
            fact_variants=sourced.variants,
            policy=self.policy.current(),
            rows=list(self.inventory.group(request.store_id).values()),
            catalogue=list(self.inventory.catalogue.values()),
            vocabulary=self.inventory.vocabulary,
            elsewhere=self._elsewhere,
            customer=customer,
        )

    def _elsewhere(self, store: Store, skus: Sequence[str]) -> list[tuple[Store, int]]:
        return stocked_elsewhere(self.stores.rows, self.inventory.group, store, skus)


def _default_embedder() -> Embedder:
    from services.shared.embedder import SentenceEmbedder

    return SentenceEmbedder(max_tokens=256)
