"""The learning demo's incumbent is what a fresh install answers with (the knowledge passages quoted, the model only
where they do not answer), not the echoing stub; its answers and the custom model's are judged by the same facts,
and the before column of the demo's table is the incumbent's."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.learning.incumbent import LocalKnowledge
from services.learning.registry import ModelRegistry
from services.learning.simulation import POLICY, is_right, states_facts
from services.learning.training import NARROW_INTENTS
from services.shared.embedder import SentenceEmbedder
from services.tools.demo.learning import (
    GROUNDED_PROVIDER,
    Loop,
    Served,
    print_table,
    start_model_stand_in,
    summary,
    unseen_items,
    unseen_summary,
)

REFUNDS = next(fact for fact in POLICY if fact.answer.startswith("Refunds go back"))


@pytest.fixture(scope="module")
def knowledge() -> LocalKnowledge:
    return LocalKnowledge(SentenceEmbedder(max_tokens=256))


def test_every_policy_answer_states_its_own_facts() -> None:
    assert all(states_facts(fact.answer, fact.facts) and is_right(fact.answer, fact.answer) for fact in POLICY)


def test_an_answer_is_judged_by_the_facts_it_states_not_by_its_words() -> None:
    quoted = (
        "We pay it back to the original payment method; on a card that can take three to five business days to "
        "show on the statement, depending on the bank."
    )
    assert is_right(quoted, REFUNDS.answer)  # other words, both facts: right
    assert not is_right("We pay it back to the original payment method.", REFUNDS.answer)  # one fact missing
    assert not is_right(REFUNDS.answer.replace("three to five", "five to seven"), REFUNDS.answer)  # a wrong figure
    assert not is_right("Stub answer to: how long does a refund take", REFUNDS.answer)  # the echo


def test_retrieval_keeps_to_the_intents_categories_and_the_stores_region(knowledge: LocalKnowledge) -> None:
    passages = knowledge.search("how long is the return window", "return_or_refund", "us-east")
    assert len(passages) == 4
    assert all(p.category in ("returns", "faq") and p.region in ("all", "us-east") for p in passages)
    assert passages[0].source == "policies/returns.md"


async def test_the_incumbent_answers_held_out_policy_questions_from_the_knowledge_base_and_fills_the_before_column(
    knowledge: LocalKnowledge, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    runner, url = await start_model_stand_in(latency_ms=1.0)
    try:
        loop = Loop(tmp_path, url, ModelRegistry(tmp_path / "registry", clickhouse=False), 16, 1000.0, knowledge)
        served, _ = await loop.run(unseen_items("test", 1_700_000_000_000), record=False)
    finally:
        await runner.cleanup()
    phrasings = [s for s in served if s.truth is not None]
    right = [s for s in phrasings if s.correct]
    # the unseen phrasings are held out of all traffic; the incumbent quotes the passages that state the facts
    assert len(phrasings) == 18 and right
    assert any(s.provider == GROUNDED_PROVIDER for s in right)
    assert not any(s.correct for s in phrasings if s.provider == "default")  # the model's stand-in never is
    before = unseen_summary(served)
    assert before["phrasings_right"] == pytest.approx(len(right) / 18)

    after = [Served(s.intent, s.route, "answer_memory", 1.0, 0.0, s.truth is not None, s.truth) for s in served]
    alone = {"phrasings_right": 1.0, "phrasings_wrong": 0.0, "phrasings_declined": 0.0}
    evaluation = {"examples": 1, "incumbent_accuracy": 0.0, "candidate_accuracy": 1.0, "unseen": alone}
    live = summary(served, NARROW_INTENTS)
    print_table(live, summary(after, NARROW_INTENTS), evaluation, NARROW_INTENTS, (before, unseen_summary(after)))
    row = next(line for line in capsys.readouterr().out.splitlines() if "unseen phrasings" in line)
    assert row.split()[-2:] == [f"{before['phrasings_right']:.3f}", "1.000"]
