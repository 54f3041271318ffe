"""`python -m services.tools.bench.governor` (`make bench-governor`): the governor's own cost, as JSON.

Runs the real Governor stage (Presidio + spaCy, toxicity and injection classifiers, the policy, the vault
encryption) in this process on requests with and without PII and a stitched prompt with passages, at a fixed
number of records in flight (as the runtime's max_in_flight would), and prints records per second, the process
CPU per record, the texts MiniLM embedded per record and the latency `decide` adds per record (p50/p95/p99). Kafka
hops are not included: `make bench` measures the chain. Each request carries the router's embedding of its text,
made before the clock as the router makes it in the chain, so the governor's classifiers do not embed it again.

By default each request carries a short prompt of one passage. `--stitched` renders each prompt as the stitcher
does (`services.stitcher.stage.stitch`: the store's hours, stock rows, the customer's tier and history, three
knowledge-base passages, the route's template) from the seeded stores, stock and customers, and makes every
request text unique, so what the governor remembers of texts it saw does not hide the cost of new ones. Each such
request then joins its customer's history, as `audited` adds it in the chain, so the customer's next request
carries a history item the governor has not seen. Knowledge passages and history items carry the injection score
made when they were written (at ingest, and when the request was governed), as the stitcher sets them;
`--unscored` leaves them out (a collection ingested before the scores, audited records of governors before them),
so the governor scores those items itself, as it did before.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.governor.classifiers import BinaryClassifier
from services.governor.stage import Analyzer, Governor
from services.runtime.inflight import run_in_flight
from services.settings import DATA_ROOT, get_settings
from services.shared.embedder import SentenceEmbedder
from services.stitcher.history import EXCERPT_CHARS, CustomerHistory, Interaction
from services.stitcher.inventory import StockRow, inventory_items
from services.stitcher.knowledge import Passage, load_chunks
from services.stitcher.prompt import TemplateSet
from services.stitcher.stage import stitch
from services.tools import seed
from services.wire.models import (
    Channel,
    ClassifierScore,
    Context,
    ContextItem,
    Customer,
    PromptMessage,
    Request,
    Routed,
    RouteDecision,
    RouteKind,
    Stitched,
)

TEXTS = (
    "Hi, I'm {name}, my email is {user}@example.com, can I return the kettle I bought 12 days ago?",
    "Is the waxed field jacket in stock in size M at store {n}?",
    "Can I get 25% off this sofa? Call me on +1 (415) 555-{n:04d}",
    "My card 4111 1111 1111 1111 was charged twice for order {n}",
    "What time do you close today?",
    "Does this blender come with a warranty? My loyalty number is LOY-{n:08d}",
)
NAMES = ("Maria Lopez", "James Smith", "Priya Sharma", "Chen Wei", "Aisha Khan")
PASSAGE = "Returns are accepted within 30 days with a receipt; refunds go back to the original payment method."


def record(n: int) -> Stitched:
    name = NAMES[n % len(NAMES)]
    text = TEXTS[n % len(TEXTS)].format(name=name, user=name.split()[0].lower() + str(n), n=n % 10_000)
    return Stitched(
        request=Request(
            request_id=f"bench-{n}",
            store_id=f"{n % 1600:04d}",
            terminal_id="pos-1",
            channel=Channel.POS,
            text=text,
            created_at=int(time.time() * 1000),
        ),
        route=RouteDecision(
            route_id="model.general",
            kind=RouteKind.SMALL_MODEL,
            intent="return_or_refund",
            confidence=0.9,
            provider="default",
            reason="bench",
            route_table_version="bench",
        ),
        context=Context(
            items=[ContextItem(source="knowledge_base", source_id="kb-1", version="1", score=0.8, text=PASSAGE)],
            token_count=40,
            token_budget=1024,
            prompt=[
                PromptMessage(role="system", content="You help store staff. Answer briefly."),
                PromptMessage(role="user", content=f"Context:\n- {PASSAGE}\n\nQuestion: {text}"),
            ],
        ),
        timings=[],
    )


# (route id, intent, request): the model routes' traffic, with PII in some requests as tills send it
STITCHED_TEXTS = (
    ("model.stock_check", "stock_check", "Is the waxed field jacket in stock in size M? Ticket {n}"),
    ("model.stock_check", "stock_check", "do you have the trailrunner in EU 42 black, ref {n}"),
    ("model.return_or_refund", "return_or_refund", "Hi, I'm {name}, my email is {user}@example.com, can I return "
     "the kettle I bought 12 days ago? Order {n}"),
    ("model.return_or_refund", "return_or_refund", "can I return shoes without a receipt? Receipt lost, order {n}"),
    ("model.large", "complaint", "My card 4111 1111 1111 1111 was charged twice for order {n}, the espresso "
     "machine leaks"),
    ("model.general", "discount_request", "Can I get 25% off this sofa? Call me on +1 (415) 555-{n4}"),
    ("model.general", "loyalty_account", "How many points do gold members earn? My loyalty number is LOY-{n8}"),
    ("model.large", "complaint", "Customer {name} at 42 Harbor Road says the Aurora headphones broke, case {n}"),
)  # fmt: skip
HISTORY_ASKED = (
    "Is the Brewmaster espresso machine in stock?",
    "can I return a jumper bought 40 days ago",
    "do you price match online",
    "My name is <PERSON_1>, can you check order 55123",
)
HISTORY_ANSWERED = (
    "Yes, 3 in stock.",
    "Returns are accepted within 30 days with a receipt; a manager can decide on later returns.",
    "We match other stores' prices, not online marketplaces.",
)


class StitchedRequests:
    """Requests stitched as the stitcher does it, from the seeded reference data (a few stores, their stock, the
    customers with their last interactions) and the knowledge base's passages; no broker, no Weaviate. With
    `injection`, passages and history items carry that classifier's scores as ingest and the governor made them."""

    def __init__(
        self,
        stores: int = 40,
        customers: int = 400,
        seed_value: int = 17,
        injection: BinaryClassifier | None = None,
    ) -> None:
        self.injection = injection
        self.stores = seed.stores(stores, updated_at=1)
        self.stock: dict[str, list[StockRow]] = {}
        for row in seed.inventory_rows(self.stores, updated_at=1):
            self.stock.setdefault(row["store_id"], []).append(StockRow(**row))
        self.customers = [Customer(**row) for row in seed.customer_rows(customers, self.stores, updated_at=1)]
        self.history = CustomerHistory()
        rng = random.Random(seed_value)
        for number, customer in enumerate(self.customers):
            for turn in range(rng.randrange(4)):
                interaction = _interaction(rng, f"h-{number}-{turn}")
                self.history.add(customer.customer_id, self._scored(interaction))
        _, chunks = load_chunks(DATA_ROOT / "knowledge")
        scores = self._scores([c.item_text for c in chunks])
        self.passages = [
            Passage(c.text, c.source, c.heading, c.meta.category, c.meta.region, 0.5, str(c.passage_id), f"v{i}", score)
            for i, (c, score) in enumerate(zip(chunks, scores, strict=True))
        ]
        self.templates = TemplateSet.load()
        self.seed_value = seed_value

    def record(self, n: int) -> Stitched:
        rng = random.Random(self.seed_value * 1_000_003 + n)
        route_id, intent, pattern = STITCHED_TEXTS[n % len(STITCHED_TEXTS)]
        name = NAMES[n % len(NAMES)]
        text = pattern.format(name=name, user=name.split()[0].lower() + str(n), n=n, n4=n % 10_000, n8=n)
        store = rng.choice(self.stores)
        customer = rng.choice(self.customers) if rng.random() < 0.6 else None
        request = Request(
            request_id=f"bench-{n}",
            store_id=store.store_id,
            terminal_id="pos-1",
            customer_id=customer.customer_id if customer else None,
            channel=Channel.POS,
            text=text,
            created_at=int(time.time() * 1000),
        )
        route = _route(route_id, intent)
        passages = [
            dataclasses.replace(p, score=round(0.9 - 0.1 * i, 3)) for i, p in enumerate(rng.sample(self.passages, 3))
        ]
        context = stitch(
            Routed(request=request, route=route, timings=[]),
            store,
            datetime(2026, 11, 25, 14, rng.randrange(60), tzinfo=UTC),
            template=self.templates.for_route(route_id),
            inventory=inventory_items(text, self.stock.get(store.store_id, [])),
            customer=customer,
            history=self.history,
            passages=passages,
        )
        if customer is not None:  # `audited` adds the interaction to the history the next request reads
            asked = Interaction(
                request_id=request.request_id,
                at_ms=request.created_at,
                intent=intent,
                asked=text[:EXCERPT_CHARS],
                answered=rng.choice(HISTORY_ANSWERED),
                outcome="ALLOW",
                store_id=store.store_id,
            )
            self.history.add(customer.customer_id, self._scored(asked))
        return Stitched(request=request, route=route, context=context, timings=[])

    def _scores(self, texts: list[str]) -> list[ClassifierScore | None]:
        """What ingest stores, or the governor records, for these texts: the injection classifier's scores."""
        if self.injection is None:
            return [None] * len(texts)
        version = self.injection.version
        return [ClassifierScore(classifier=version, score=p) for p in self.injection.probabilities(texts)]

    def _scored(self, interaction: Interaction) -> Interaction:
        [score] = self._scores([interaction.asked])
        return dataclasses.replace(interaction, asked_injection=score)


def _interaction(rng: random.Random, request_id: str) -> Interaction:
    return Interaction(
        request_id=request_id,
        at_ms=1_760_000_000_000 + rng.randrange(10**9),
        intent=rng.choice(["stock_check", "return_or_refund", "price_check"]),
        asked=rng.choice(HISTORY_ASKED),
        answered=rng.choice(HISTORY_ANSWERED),
        outcome=rng.choice(["", "resolved"]),
        store_id="0001",
    )


def _route(route_id: str, intent: str) -> RouteDecision:
    kind = RouteKind.LARGE_MODEL if route_id == "model.large" else RouteKind.SMALL_MODEL
    return RouteDecision(
        route_id=route_id,
        kind=kind,
        intent=intent,
        confidence=0.9,
        provider="default",
        reason="bench",
        route_table_version="bench",
    )


def with_router_embedding(record: Stitched, embedder: SentenceEmbedder) -> Stitched:
    """The record as the chain delivers it: with the router's embedding of the request text (a model route)."""
    vectors, tokens = embedder.embed_whole([record.request.text])
    return record.model_copy(update={"request_embedding": embedder.passed_on(vectors[0], tokens[0])})


async def run(
    governor: Governor, make: Callable[[int], Stitched], first: int, count: int, in_flight: int
) -> dict[str, Any]:
    """Records `first` to `first + count`: each run its own requests, as the governor remembers texts it saw."""
    analyzer = governor.analyzer
    assert analyzer is not None, "the bench passes the analyzer in"
    embedder = analyzer.toxicity.embedder
    # made before the clock starts, the router's embedding included
    records = {n: with_router_embedding(make(n), embedder) for n in range(first, first + count)}
    embedded, known = analyzer.embedded_texts, analyzer.known_scores

    async def one(n: int) -> None:
        section = await governor.decide(records[n])
        governor.side_records(records[n], section)  # the vault entry is part of the governor's work

    timed = await run_in_flight(one, first, count, in_flight)
    return {
        "in_flight": in_flight,
        "records": count,
        "records_per_s": round(count / timed.elapsed_s, 1),
        "cpu_ms_per_record": round(timed.cpu_s * 1000 / count, 2),
        "embedded_texts_per_record": round((analyzer.embedded_texts - embedded) / count, 3),
        "known_scores_per_record": round((analyzer.known_scores - known) / count, 3),
        **timed.latency_percentiles(),
    }


async def bench(
    count: int, in_flight: Sequence[int], use_ner: bool, stitched: bool = False, scored: bool = True
) -> dict[str, Any]:
    settings = get_settings()
    with tempfile.TemporaryDirectory() as scratch:
        bench_settings = settings.model_copy(update={"var_dir": Path(scratch)})
        started = time.perf_counter()
        analyzer = await asyncio.to_thread(Analyzer.load, use_ner=use_ner)
        load_s = time.perf_counter() - started
        governor = Governor(bench_settings, analyzer=analyzer)
        make = StitchedRequests(injection=analyzer.injection if scored else None).record if stitched else record
        await governor.start()
        try:
            await run(governor, make, 0, 32, 8)  # warm-up
            results = [await run(governor, make, 32 + i * count, count, level) for i, level in enumerate(in_flight)]
        finally:
            await governor.stop()
    return {
        "bench": "governor decide (in process, no Kafka)",
        "models": analyzer.version,
        "ner": use_ner,
        "prompts": "stitched, unique request texts" if stitched else "one passage",
        "scores_known_ahead": stitched and scored,
        "model_load_s": round(load_s, 2),
        "runs": results,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench-governor", description=__doc__)
    parser.add_argument("--records", type=int, default=600, help="records per run")
    parser.add_argument("--in-flight", type=int, nargs="+", default=[1, 16, 64], help="records in flight per run")
    parser.add_argument("--no-ner", action="store_true", help="Presidio pattern recognizers only, no spaCy NER")
    parser.add_argument(
        "--stitched",
        action="store_true",
        help="prompts rendered as the stitcher renders them (hours, stock, customer, history, passages), every "
        "request text unique",
    )
    parser.add_argument(
        "--unscored",
        action="store_true",
        help="with --stitched: passages and history items without the injection scores made ahead of time, so the "
        "governor embeds and scores them (as before the scores were stored)",
    )
    args = parser.parse_args(argv)
    result = bench(args.records, args.in_flight, not args.no_ner, args.stitched, not args.unscored)
    print(json.dumps(asyncio.run(result), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
