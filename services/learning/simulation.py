"""The learning loop's simulated world (a simulation, stated as one): retail policy questions with the ground-truth
answers store staff would give, a reviewer who corrects a share of answers from that ground truth, and the audit
and feedback rows as the audit and feedback writers insert them. Used by `make demo-learning` and the tests."""

from __future__ import annotations

import functools
import hashlib
import random
import re
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

from services.learning.feedback import make_feedback
from services.learning.metrics import is_correct, normalise
from services.learning.pii import EMAIL, PHONE_OR_CARD
from services.learning.records import AUDIT_RECORD_COLUMNS, FEEDBACK_COLUMNS, audit_row, feedback_row
from services.wire.models import (
    Answer,
    Audited,
    AuditInfo,
    Channel,
    Context,
    Feedback,
    FeedbackKind,
    Finding,
    Governance,
    Request,
    RouteDecision,
    RouteKind,
    StageTiming,
    Verdict,
)


@dataclass(frozen=True)
class PolicyFact:
    intent: str
    answer: str
    questions: tuple[str, ...]
    # what a right answer must state, each as the knowledge base words it ("a|b": either spelling)
    facts: tuple[str, ...]


# The chain's written policy (knowledge/policies), as store staff would state it; the questions are how customers
# and staff ask. Every answer states what the knowledge base says, so an answer quoted from it is judged on the
# same facts as one the custom model learnt.
POLICY: Final = (
    PolicyFact(
        "return_or_refund",
        "Unworn items can be returned within 30 days with the receipt for a refund to the original payment method.",
        (
            "what is the return policy",
            "how many days do customers have to return something",
            "can a customer return a jacket they bought three weeks ago",
            "how long is the return window",
            "customer wants to bring back unworn shoes, is that ok within a month",
            "whats the time limit on returns",
        ),
        ("30 days|30-day", "receipt"),
    ),
    PolicyFact(
        "return_or_refund",
        "Without a receipt we give store credit at the lowest selling price of the last 30 days, with a photo ID.",
        (
            "customer has no receipt, can they return it",
            "return without receipt policy",
            "what do we do if the customer lost the receipt",
            "can I refund an item with no proof of purchase",
            "no receipt return, cash or credit?",
            "customer wants money back but has no receipt",
        ),
        ("store credit", "lowest"),
    ),
    PolicyFact(
        "return_or_refund",
        "Opened electronics can be returned within 30 days if they are complete and undamaged, with the receipt.",
        (
            "can an opened blender be returned",
            "return policy for opened electronics",
            "can a customer return electronics with a broken seal",
            "customer opened the headphones and wants to return them",
            "how long for electronics returns",
        ),
        ("30 days|30-day", "undamaged"),
    ),
    PolicyFact(
        "return_or_refund",
        "Refunds go back to the original payment method and take three to five business days to appear.",
        (
            "how long does a refund take",
            "when will the customer see the refund on their card",
            "refund processing time",
            "customer asks when the money comes back",
            "does the refund go to the same card",
        ),
        ("original payment method", "three to five business days"),
    ),
    PolicyFact(
        "return_or_refund",
        "Items marked final sale cannot be returned or exchanged unless they are faulty.",
        (
            "can a final sale item come back if nothing is wrong with it",
            "is a final sale item refundable",
            "customer wants to return something marked final sale",
            "return policy on final sale",
            "can we exchange a final-sale sweater",
        ),
        ("final sale", "cannot be returned"),
    ),
    PolicyFact(
        "loyalty_account",
        "Members earn one point per dollar spent; Silver members earn 1.25 and Gold members 1.5 points per dollar.",
        (
            "how many points per dollar",
            "how do customers earn loyalty points",
            "do members earn points on sale items",
            "how many points does a member get for spending 50 dollars",
            "points earning rate for the rewards program",
        ),
        ("one point per dollar|1 point per dollar",),
    ),
    PolicyFact(
        "loyalty_account",
        "Every 500 points become a 5 dollar reward, which can be used in store and online.",
        (
            "how do I redeem loyalty points",
            "what are 500 points worth",
            "customer wants to use their points to pay",
            "how many points make a reward",
            "how much is a reward worth in points",
        ),
        ("500 points", "5 dollar"),
    ),
    PolicyFact(
        "loyalty_account",
        "Points expire after 12 months without any earning or redeeming activity on the account.",
        (
            "do loyalty points expire",
            "when do reward points run out",
            "customer lost points, why did they expire",
            "how long are points valid",
            "points expiry policy",
        ),
        ("12 months",),
    ),
    PolicyFact(
        "loyalty_account",
        "Missing points can be claimed within 60 days by scanning the receipt in the app or at the service desk.",
        (
            "customer says points are missing from a purchase",
            "how do we add missing points",
            "points did not show up after shopping",
            "how long does a member have to claim missing points",
            "can a member claim points for an old receipt",
        ),
        ("60 days", "receipt"),
    ),
)
_FACTS_BY_ANSWER: Final = {fact.answer: fact.facts for fact in POLICY}


def states_facts(answer: str, facts: Sequence[str]) -> bool:
    """Whether the answer states every fact (after normalisation; "a|b" is either spelling), as the knowledge base
    words it: judged on what it says, so an answer quoted from the passages and one the custom model learnt are
    held to the same standard."""
    said = f" {normalise(answer)} "
    return all(any(f" {normalise(way)} " in said for way in fact.split("|")) for fact in facts)


def is_right(answer: str, truth: str) -> bool:
    """The simulation's judgement of an answer to a question whose ground truth is `truth`: for a policy question,
    whether it states the policy's facts; otherwise the stated answer metric, the values the truth states
    (services/learning/metrics.py: is_correct)."""
    facts = _FACTS_BY_ANSWER.get(truth)
    return states_facts(answer, facts) if facts is not None else is_correct(answer, truth)


OTHER_TRAFFIC: Final = (
    ("is the waxed field jacket in stock in size M", "stock_check"),
    ("do you have trail running shoes in 42", "stock_check"),
    ("what time do you close today", "store_hours"),
    ("can I give this customer 15% off the blender", "discount_request"),
    ("where is my online order", "order_status"),
    ("what is the merino sweater made of", "product_question"),
)
# store jargon the seed set never saw, which the router gets wrong until staff correct its routes
JARGON: Final = (
    ("how many stars do I have", "loyalty_account"),
    ("stars balance please", "loyalty_account"),
    ("how many stars until my next reward", "loyalty_account"),
    ("check my stars", "loyalty_account"),
    ("OOS on the merino sweater?", "stock_check"),
    ("is the blender OOS", "stock_check"),
    ("trail running shoes OOS at this store?", "stock_check"),
    ("OOS check kids rain boots", "stock_check"),
)
# how people wrap the same question at a till: the same policy asked in many surface forms
OPENINGS: Final = ("", "", "hi, ", "quick question: ", "customer asking ", "hey, ", "can you tell me ")
CLOSINGS: Final = ("", "", "?", " please", " thanks", " for a customer", " - asking for my mum")
PII_TAILS: Final = (
    "", "", "", "", "", "", "", "", " - customer email is jo.park@example.com", " - call them back on +1 415 555 0199",
)  # fmt: skip


def simulated_governor(text: str) -> tuple[str, list[Finding]]:
    """A stand-in for the governor's PII tokeniser in the simulation: e-mails and phone numbers become typed
    tokens, with one finding each (the real governor is services/governor)."""
    findings: list[Finding] = []

    def token(kind: str) -> Any:
        def replace(match: re.Match[str]) -> str:
            if kind == "PHONE" and sum(c.isdigit() for c in match.group(0)) < 7:
                return match.group(0)
            findings.append(
                Finding(rule_id=f"pii.{kind.lower()}", rule_version="sim", kind="pii", action="mask", detail=kind)
            )
            return f"<{kind}_{len(findings)}>"

        return replace

    text = EMAIL.sub(token("EMAIL"), text)
    return PHONE_OR_CARD.sub(token("PHONE"), text), findings


@dataclass(frozen=True)
class SimulatedRequest:
    request: Request
    truth: str | None  # the ground-truth answer; None outside the policy intents
    intent: str  # the ground-truth intent


def traffic(
    count: int,
    *,
    seed: int,
    start_ms: int,
    spacing_ms: int = 1000,
    policy_share: float = 0.7,
    jargon_share: float = 0.3,
    run: str = "",
) -> Iterator[SimulatedRequest]:
    """`count` requests, deterministic for `seed`: `policy_share` of them policy questions (with their ground
    truth), the rest other retail traffic (`jargon_share` of it in store jargon); some carry an e-mail or phone
    number, and 40% a loyalty customer. `run` makes the request ids unique to one run of the same traffic."""
    rng = random.Random(seed)
    for index in range(count):
        if rng.random() < policy_share:
            fact = rng.choice(POLICY)
            text, truth, intent = rng.choice(fact.questions), fact.answer, fact.intent
            text = rng.choice(OPENINGS) + text + rng.choice(CLOSINGS)
        else:
            text, intent = rng.choice(JARGON if rng.random() < jargon_share else OTHER_TRAFFIC)
            text, truth = rng.choice(OPENINGS) + text + rng.choice(CLOSINGS), None
        request_id = str(uuid.UUID(bytes=hashlib.sha256(f"{run}:{seed}:{index}".encode()).digest()[:16]))
        yield SimulatedRequest(
            Request(
                request_id=request_id,
                store_id=f"{rng.randint(1, 1600):04d}",
                terminal_id=f"pos-{rng.randint(1, 12):02d}",
                customer_id=f"C-{rng.randint(100000, 999999)}" if rng.random() < 0.4 else None,
                channel=Channel.POS,
                text=text + rng.choice(PII_TAILS),
                created_at=start_ms + index * spacing_ms,
            ),
            truth,
            intent,
        )


def audited_record(
    request: Request,
    *,
    intent: str,
    answer_text: str,
    redacted_text: str,
    recorded_at_us: int,
    seq: int = 1,
    route_id: str = "model.large",
    route_kind: RouteKind = RouteKind.LARGE_MODEL,
    provider: str = "default",
    model: str = "switchyard-stub",
    verdict: Verdict = Verdict.ALLOW,
    findings: Sequence[Finding] = (),
    output_findings: Sequence[Finding] = (),
    failover: Sequence[str] = (),
    cost_usd: float = 0.0001,
    latency_ms: float = 50.0,
) -> Audited:
    """An Audited record as the chain releases it (the fields the learning loop reads filled in)."""
    created_us = request.created_at * 1000
    return Audited(
        request=request,
        route=RouteDecision(
            route_id=route_id,
            kind=route_kind,
            intent=intent,
            confidence=0.9,
            provider=provider if route_kind != RouteKind.WORKFLOW else None,
            reason="simulated",
            route_table_version="sim+000000000000",
        ),
        context=Context(items=[], token_count=0, token_budget=512),
        governance=Governance(verdict=verdict, findings=list(findings), redacted_text=redacted_text),
        answer=Answer(
            text=answer_text,
            provider=provider,
            model=model,
            model_version=f"{model}@sim",
            prompt_template_version="answer-v1",
            prompt_hash=hashlib.sha256(redacted_text.encode()).hexdigest(),
            tokens_in=40,
            tokens_out=20,
            cost_usd=cost_usd,
            latency_ms=latency_ms,
            failover=list(failover),
            output_findings=list(output_findings),
        ),
        audit=AuditInfo(
            audit_id=str(uuid.uuid4()),
            chain_key=request.store_id,
            prev_hash="0" * 64,
            hash=hashlib.sha256(f"{request.request_id}:{seq}".encode()).hexdigest(),
            recorded_at=recorded_at_us,
            seq=seq,
        ),
        timings=[StageTiming(stage="router", received_at=created_us, started_at=created_us, finished_at=created_us)],
    )


@dataclass(frozen=True)
class SimulatedReviewer:
    """Store staff reviewing answers, simulated: reviews `share` of the policy answers; corrects a wrong one with
    the ground truth, rates a right one 5. Deterministic for `seed`."""

    share: float = 0.5
    seed: int = 7
    author: str = "reviewer-sim"

    def review_record(self, item: SimulatedRequest, record: Audited) -> Feedback | None:
        """`review` of one audited answer, given a millisecond after it was recorded."""
        at_ms = record.audit.recorded_at // 1000 + 1
        answer, routed = record.answer.text, record.route.intent
        request = item.request
        return self.review(
            request.store_id, request.request_id, answer, item.truth, at_ms, routed=routed, intent=item.intent
        )

    def review(
        self,
        store_id: str,
        request_id: str,
        answer: str,
        truth: str | None,
        at_ms: int,
        *,
        routed: str = "",
        intent: str = "",
    ) -> Feedback | None:
        """A route correction where the router got the intent wrong; else, for a policy question, a correction
        of a wrong answer or a rating of 5 for a right one."""
        rng = random.Random(f"{self.seed}:{request_id}")
        if rng.random() >= self.share:
            return None
        given = functools.partial(make_feedback, request_id, store_id=store_id, author=self.author, created_at_ms=at_ms)
        if routed and intent and routed != intent:
            return given(FeedbackKind.ROUTE_CORRECTION, corrected_intent=intent)
        if truth is None:
            return None
        if is_right(answer, truth):
            return given(FeedbackKind.RATING, rating=5)
        return given(FeedbackKind.CORRECTION, corrected_text=truth)


def insert_audited(records: Sequence[Audited], settings: Any = None) -> None:
    """Inserts into switchyard.audit_records exactly as the audit writer does (until it runs here)."""
    if not records:
        return
    from services.infra.clickhouse import get_client

    client = get_client(settings)
    try:
        client.insert("switchyard.audit_records", [audit_row(r) for r in records], column_names=AUDIT_RECORD_COLUMNS)
    finally:
        client.close()


def insert_feedback(records: Sequence[Feedback], settings: Any = None) -> None:
    """Inserts into switchyard.feedback exactly as the feedback writer does (deduplicated on feedback_id)."""
    if not records:
        return
    from services.infra.clickhouse import get_client

    client = get_client(settings)
    try:
        client.insert("switchyard.feedback", [feedback_row(f) for f in records], column_names=FEEDBACK_COLUMNS)
    finally:
        client.close()
