"""How a custom answer model does on questions it never saw: new phrasings of the answers it was taught (it
should give the taught answer, exactly) and questions whose answer it was never taught (it should decline, so
the route's model answers). Written apart from the simulation's traffic (services/learning/simulation.py), which
never sends them, so no export can put them into training data.

Scored by exact answer: a stored answer is returned verbatim, so "right" is the taught text itself, not an
overlap with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from services.answerer.memory import AnswerMemory
from services.learning.simulation import POLICY
from services.shared.embedder import SentenceEmbedder

# new phrasings, per taught answer (keyed by the first words of the answer, checked against POLICY at import)
UNSEEN_PHRASINGS: Final[Mapping[str, tuple[str, ...]]] = {
    "Unworn items can be returned": (
        "up to what point after buying can stuff come back",
        "shopper bought trousers 20 days back, never worn, still returnable?",
    ),
    "Without a receipt we give store credit": (
        "she threw the till slip away, what can we offer her",
        "what happens when somebody returns an item and cannot prove they bought it",
    ),
    "Opened electronics can be returned": (
        "the box of the speaker has been opened, will we still take it back",
        "can an unsealed gadget still come back",
    ),
    "Refunds go back to the original payment method": (
        "how many days until the money shows up again after a refund",
        "will the refund land on a different card or the one he paid with",
    ),
    "Items marked final sale": (
        "the ticket says final sale, can she bring it back",
        "is anything marked final sale exchangeable",
    ),
    "Members earn one point per dollar": (
        "what does a member collect for every dollar",
        "how many points does a basic member get per dollar",
    ),
    "Every 500 points become a 5 dollar reward": (
        "what are five hundred points worth at the till",
        "can someone pay part of the bill with their points balance",
    ),
    "Points expire after 12 months": (
        "are points kept forever",
        "how long until unused points lapse",
    ),
    "Missing points can be claimed": (
        "her points never arrived for last week's shop, what do we do",
        "the purchase is not on his rewards account, can we fix it",
    ),
}
# questions of the same intents whose answers the loop never taught: a custom model must decline them
UNTAUGHT: Final[tuple[str, ...]] = (
    "can a gift receipt be exchanged for cash",
    "do members get anything on their birthday",
    "can points be transferred to a family member",
    "is there a returns limit per year for a customer",
    "can a customer return an item bought in another country",
    "do loyalty points count on gift card purchases",
)


def _taught(prefix: str) -> str:
    answers = [fact.answer for fact in POLICY if fact.answer.startswith(prefix)]
    if len(answers) != 1:
        raise ValueError(f"UNSEEN_PHRASINGS key {prefix!r} names {len(answers)} taught answers, not one")
    return answers[0]


PHRASINGS_BY_ANSWER: Final[Mapping[str, tuple[str, ...]]] = {
    _taught(prefix): questions for prefix, questions in UNSEEN_PHRASINGS.items()
}


def unseen_evaluation(memory: AnswerMemory, embedder: SentenceEmbedder) -> dict[str, Any]:
    """On new phrasings of taught answers: the share answered with the right answer, answered wrongly, and
    declined; on untaught questions: the share declined (the right thing) and answered (wrongly)."""
    phrasings = [(question, answer) for answer, questions in PHRASINGS_BY_ANSWER.items() for question in questions]
    given = _answers(memory, embedder, [question for question, _ in phrasings])
    right = sum(answer == truth for answer, (_, truth) in zip(given, phrasings, strict=True))
    wrong = sum(answer is not None and answer != truth for answer, (_, truth) in zip(given, phrasings, strict=True))
    untaught = _answers(memory, embedder, UNTAUGHT)
    declined = sum(answer is None for answer in untaught)
    return {
        "phrasings": len(phrasings),
        "phrasings_right": round(right / len(phrasings), 3),
        "phrasings_wrong": round(wrong / len(phrasings), 3),
        "phrasings_declined": round(1 - (right + wrong) / len(phrasings), 3),
        "untaught": len(untaught),
        "untaught_declined": round(declined / len(untaught), 3),
        "split": "questions the traffic never sends: new phrasings of taught answers, and untaught questions",
    }


def _answers(memory: AnswerMemory, embedder: SentenceEmbedder, questions: Sequence[str]) -> list[str | None]:
    """The memory's answer to each question, None where it declines (under its threshold)."""
    if not questions:
        return []
    predicted = memory.predict(embedder.embed(list(questions)))
    return [answer if confidence >= memory.threshold else None for answer, confidence, _ in predicted]


def unseen_questions() -> list[tuple[str, str | None, str]]:
    """(question, ground truth, intent) for every unseen question: the new phrasings with their taught answer,
    then the untaught questions (no ground truth here: a custom model should decline them)."""
    intent_of = {fact.answer: fact.intent for fact in POLICY}
    phrasings = [
        (question, answer, intent_of[answer])
        for answer, questions in PHRASINGS_BY_ANSWER.items()
        for question in questions
    ]
    untaught: list[tuple[str, str | None, str]] = [(question, None, "") for question in UNTAUGHT]
    return [*phrasings, *untaught]
