"""Right answers on the labelled POS set: `python -m services.tools.eval.answers` (`make eval-answers`).

Each question of data/answer_set.jsonl goes the chain's way without a broker: the router's intent model and route
table, the stitcher's data workflows on the seeded reference data (a declined workflow moves to its fallback), the
knowledge base in Weaviate for model routes, the policy the governor enforces (escalate, block), and the local
default's grounded answer (the base model is not called: its answers are not deterministic). Scores, per intent
and per final route: the share of answers holding every required value and none of the forbidden ones (an
expected escalation, refusal or hand-off is correct when that is what happened), and the share of junk released.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.answerer.grounded import UNGROUNDED_INTENTS, grounded_answer
from services.answerer.guard import held_reply
from services.answerer.junk import find_junk
from services.answerer.stage import HOLD_REPLY
from services.policy.engine import PolicyEngine
from services.policy.facts import extract_sourced_facts
from services.router.intents.classifier import IntentClassifier, ensure_trained
from services.settings import get_settings
from services.shared.route_table import RouteTable, load_route_table
from services.stitcher.knowledge import DEFAULT_SOURCES_DIR, Embedder, connect, ingest, injection_scorer, search
from services.stitcher.retrieval import INTENT_CATEGORIES
from services.stitcher.stage import customer_item, passage_items, workflow_context
from services.stitcher.workflows import Declined, WorkflowAnswer, run_workflow
from services.tools.seeded import SeededReference
from services.wire.models import Channel, Context, ContextItem, Governance, Request, RouteKind, Verdict

ANSWER_SET: Final = Path(__file__).resolve().parent / "data" / "answer_set.jsonl"
EVAL_NOW: Final = datetime(2026, 12, 4, 16, 0, tzinfo=UTC)  # the clock the labels were written for
PASSAGES: Final = 5
Expect = Literal["answer", "escalate", "handoff", "refuse"]
_THOUSANDS = re.compile(r"(\d)[.,](\d{3})(?!\d)")
_DECIMAL_COMMA = re.compile(r"(\d),(\d{2})(?!\d)")


class LabelledQuestion(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    family: str
    intent: str
    store_id: str
    customer_id: str | None = None
    locale: str = "en-US"
    text: str
    must_contain: list[str] = Field(default_factory=list)
    must_not_contain: list[str] = Field(default_factory=list)
    expect: Expect
    source: str | None = None


@dataclass
class Outcome:
    question: LabelledQuestion
    intent: str
    route_id: str
    answer: str
    verdict: Verdict
    correct: bool
    junk: str | None
    why: str


@dataclass
class Tally:
    questions: int = 0
    correct: int = 0
    junk: int = 0
    misses: list[str] = field(default_factory=list)

    def add(self, outcome: Outcome) -> None:
        self.questions += 1
        self.correct += outcome.correct
        self.junk += outcome.junk is not None
        if not outcome.correct:
            self.misses.append(f"{outcome.question.id}: {outcome.why}")

    def row(self) -> dict[str, Any]:
        return {
            "questions": self.questions,
            "correct": round(self.correct / self.questions, 3) if self.questions else 0.0,
            "junk_released": round(self.junk / self.questions, 3) if self.questions else 0.0,
        }


def load_questions(path: Path = ANSWER_SET) -> list[LabelledQuestion]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [LabelledQuestion.model_validate_json(line) for line in lines if line.strip()]


def normalised(text: str) -> str:
    """Casefolded, with amounts written the same way in every locale (1.099,00 and 1,099.00 -> 1099.00)."""
    return _DECIMAL_COMMA.sub(r"\1.\2", _THOUSANDS.sub(r"\1\2", text)).casefold()


def score(question: LabelledQuestion, answer: str, verdict: Verdict) -> tuple[bool, str]:
    """(correct, why not) for one answer: the expected kind of outcome, then every required value and no forbidden
    one in the answer text."""
    if question.expect == "escalate":
        return verdict == Verdict.ESCALATE, f"expected an escalation, got {verdict.value}: {answer[:80]!r}"
    if question.expect == "refuse":
        return verdict == Verdict.BLOCK, f"expected a refusal, got {verdict.value}: {answer[:80]!r}"
    if question.expect == "handoff":
        return answer == HOLD_REPLY, f"expected the hand-off, got {answer[:80]!r}"
    if verdict != Verdict.ALLOW or answer == HOLD_REPLY:
        return False, f"expected an answer, got {verdict.value}: {answer[:80]!r}"
    text = normalised(answer)
    missing = [value for value in question.must_contain if normalised(value) not in text]
    wrong = [value for value in question.must_not_contain if normalised(value) in text]
    if missing or wrong:
        return False, f"missing {missing} wrong {wrong}: {answer[:120]!r}"
    return True, ""


class AnswerPath:
    """The chain's decisions for one question, in process."""

    def __init__(
        self, table: RouteTable, classifier: IntentClassifier, policy: PolicyEngine, client: Any, embedder: Embedder
    ) -> None:
        self.table, self.classifier, self.policy = table, classifier, policy
        self.client, self.embedder = client, embedder
        self.reference = SeededReference()

    def answer(self, question: LabelledQuestion) -> Outcome:
        request = Request(
            request_id=question.id,
            store_id=question.store_id,
            terminal_id="eval",
            customer_id=question.customer_id,
            channel=Channel.POS,
            locale=question.locale,
            text=question.text,
            created_at=int(EVAL_NOW.timestamp() * 1000),
        )
        prediction = self.classifier.classify_many([request.text])[0]
        route = self.table.decide(request, prediction)
        customer = self.reference.customers.get(request.customer_id or "")
        context: Context | None = None
        if route.kind == RouteKind.WORKFLOW:
            outcome = run_workflow(
                route.route_id, self.reference.workflow_data(request, route.intent, self.policy, EVAL_NOW)
            )
            if isinstance(outcome, WorkflowAnswer):
                context = workflow_context(outcome, customer)
            elif isinstance(outcome, Declined):
                route = self.table.fall_back(route, outcome.reason)
        if context is None:
            context = self._model_context(request, route.kind, route.intent, customer)
        tier = customer.tier if customer is not None else None
        sourced = extract_sourced_facts(request, route.intent, context, reference_tier=tier)
        decision, _ = self.policy.decide_strictest(sourced.variants)
        generated = False
        if decision.verdict in (Verdict.BLOCK, Verdict.ESCALATE):
            governance = Governance(
                verdict=decision.verdict, findings=list(decision.findings), redacted_text=request.text
            )
            answer = held_reply(governance, self.policy)
        elif route.kind == RouteKind.WORKFLOW:
            answer = next((i.text for i in context.items if i.source == "workflow"), HOLD_REPLY)
        else:
            grounded = grounded_answer(request.text, context.items) if route.intent not in UNGROUNDED_INTENTS else None
            answer = grounded.text if grounded is not None else HOLD_REPLY
            generated = grounded is not None
        correct, why = score(question, answer, decision.verdict)
        # fixed replies (workflow, hold, hand-off) are written by us; quoted or generated text is what can be junk
        junk = find_junk(answer, request.text, [i.text for i in context.items]) if generated else None
        return Outcome(
            question, route.intent, route.route_id, answer, decision.verdict, correct, junk.kind if junk else None, why
        )

    def _model_context(self, request: Request, kind: RouteKind, intent: str, customer: Any) -> Context:
        if kind == RouteKind.WORKFLOW:
            return Context(items=[], token_count=0, token_budget=0)
        store = self.reference.stores.get(request.store_id)
        passages = search(
            self.client,
            self.embedder,
            request.text,
            region=store.region if store else None,
            categories=INTENT_CATEGORIES.get(intent, ()),
            k=PASSAGES,
        )
        items, _ = passage_items(passages)
        found: list[ContextItem] = [*items, *([customer_item(customer)] if customer is not None else [])]
        return Context(items=found, token_count=0, token_budget=0)


def evaluate(path: AnswerPath, questions: Sequence[LabelledQuestion]) -> dict[str, Any]:
    overall = Tally()
    by_intent: defaultdict[str, Tally] = defaultdict(Tally)
    by_route: defaultdict[str, Tally] = defaultdict(Tally)
    answers = []
    for question in questions:
        outcome = path.answer(question)
        for tally in (overall, by_intent[question.intent], by_route[outcome.route_id]):
            tally.add(outcome)
        answers.append(
            {"id": question.id, "route": outcome.route_id, "correct": outcome.correct, "answer": outcome.answer}
        )
    return {
        "questions": len(questions),
        "overall": overall.row(),
        "by_intent": {intent: tally.row() for intent, tally in sorted(by_intent.items())},
        "by_route": {route: tally.row() for route, tally in sorted(by_route.items())},
        "misses": overall.misses,
        "answers": answers,
    }


def run_eval(questions: Sequence[LabelledQuestion] | None = None) -> dict[str, Any]:
    """The whole evaluation against the configured Weaviate (the knowledge base is ingested first: idempotent)."""
    from services.shared.embedder import SentenceEmbedder

    settings = get_settings()
    embedder = SentenceEmbedder(max_tokens=256)
    client = connect(
        settings.weaviate_host,
        settings.weaviate_http_port,
        settings.weaviate_grpc_port,
        api_key=settings.weaviate_api_key,
    )
    try:
        ingest(client, embedder, DEFAULT_SOURCES_DIR, injection=injection_scorer())  # as `make seed` does
        path = AnswerPath(
            load_route_table(settings.route_table),
            ensure_trained(settings.var_dir / "models" / "intent"),  # as the router does on its first start
            PolicyEngine.from_file(settings.policies),
            client,
            embedder,
        )
        return evaluate(path, questions if questions is not None else load_questions())
    finally:
        client.close()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard eval-answers", description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the whole result, each answer included, as JSON")
    args = parser.parse_args(argv)
    result = run_eval()
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"[eval-answers] {result['questions']} labelled POS questions")
    print(f"{'':<34} {'n':>4} {'correct':>8} {'junk':>6}")
    table = [("all", result["overall"])]
    for title, rows in (("intent", result["by_intent"]), ("route", result["by_route"])):
        table += [(f"{title} {name}", row) for name, row in rows.items()]
    for name, row in table:
        print(f"{name:<34} {row['questions']:>4} {row['correct']:>8.3f} {row['junk_released']:>6.3f}")
    for miss in result["misses"]:
        print(f"  miss {miss}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
