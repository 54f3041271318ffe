"""The learning loop's pure parts: the answer metric, the learned threshold, the promotion rule, the route-table
edit, feedback validation and the answer memory provider."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from services.answerer.memory import KIND as MEMORY_KIND
from services.answerer.memory import AnswerMemory, AnswerMemoryProvider, MemoryDeclined, question_of, shared_embedder
from services.answerer.registry import load_providers
from services.learning.compare import compare, compare_routes, route_label
from services.learning.feedback import FeedbackError, make_feedback
from services.learning.metrics import exact_match, is_correct, token_f1
from services.learning.promotion import PromotionPolicy, decide, route_to_custom
from services.learning.registry import ModelRegistry, RegistryError
from services.learning.shadow import attach_shadow, shadow_runner
from services.learning.switch import ANSWER_KIND, ROUTER_KIND, ClickHouseSink, ShadowSwitch
from services.learning.training import NEVER, learn_threshold
from services.settings import REPO_ROOT
from services.shared.route_table import parse_route_table
from services.wire.models import FeedbackKind


def test_exact_match_ignores_case_punctuation_and_articles() -> None:
    assert exact_match("The refund takes 5 days.", "refund takes 5 days")


def test_token_f1_gives_partial_credit_but_correct_needs_every_value() -> None:
    assert token_f1("returns within 30 days", "returns within 30 days with receipt") == pytest.approx(0.8)
    assert not is_correct("returns within 30 days", "returns within 30 days with receipt")  # the receipt left out
    assert is_correct("with the receipt, returns within thirty days", "returns within 30 days with receipt")
    assert not is_correct("Stub answer to: returns?", "returns within 30 days with receipt")


def test_the_threshold_is_the_lowest_similarity_that_keeps_precision() -> None:
    # three pairs of phrasings with the same answer (similar, but not near-twins that would be held out together),
    # two loose neighbours with different answers
    vectors = np.eye(8, dtype=np.float32)[:8]
    pairs = [(0, 1), (2, 3), (4, 5)]
    embeddings = np.zeros((8, 8), dtype=np.float32)
    for a, b in pairs:
        embeddings[a] = vectors[a]
        embeddings[b] = 0.8 * vectors[a] + 0.6 * vectors[b]
    embeddings[6] = 0.6 * vectors[0] + 0.8 * vectors[6]
    embeddings[7] = 0.6 * vectors[2] + 0.8 * vectors[7]
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    answers = ["a", "a", "b", "b", "c", "c", "x", "y"]
    threshold = learn_threshold(embeddings, answers, target_precision=0.9, min_support=4)
    assert 0.6 < threshold <= 0.96


def test_no_threshold_is_learned_when_neighbours_disagree() -> None:
    embeddings = np.eye(6, dtype=np.float32)
    assert learn_threshold(embeddings, ["a", "b", "c", "d", "e", "f"]) == NEVER


def test_the_candidate_falls_back_to_the_incumbent_where_it_declines() -> None:
    result = compare(["r1", "r2", "r3", "r4"], ["r1", "bad", "bad", "bad"], [None, "r2", "r3", None])
    assert (result.incumbent_accuracy, result.candidate_accuracy, result.coverage) == (0.25, 0.75, 0.5)


CARD_BETTER = {"evaluation": {"candidate_accuracy": 0.9, "incumbent_accuracy": 0.2, "examples": 40}}
CARD_WORSE = {"evaluation": {"candidate_accuracy": 0.15, "incumbent_accuracy": 0.2, "examples": 40}}


def test_a_candidate_worse_than_the_incumbent_is_not_promoted() -> None:
    shadow = compare(["r"] * 20, ["r"] * 20, ["bad"] * 20)
    decision = decide(CARD_WORSE, shadow, PromotionPolicy())
    assert not decision.promote and "under the margin" in decision.reasons[0]


def test_a_better_candidate_on_eval_is_not_promoted_when_shadow_disagrees() -> None:
    shadow = compare(["r"] * 20, ["r"] * 20, ["bad"] * 20)
    assert not decide(CARD_BETTER, shadow, PromotionPolicy()).promote


def test_a_candidate_better_on_eval_and_in_shadow_is_promoted() -> None:
    shadow = compare(["r"] * 20, ["bad"] * 20, ["r"] * 20)
    assert decide(CARD_BETTER, shadow, PromotionPolicy()).promote


def test_no_shadow_means_no_promotion_unless_waived() -> None:
    assert not decide(CARD_BETTER, None, PromotionPolicy()).promote
    assert decide(CARD_BETTER, None, PromotionPolicy(require_shadow=False)).promote


def test_promotion_sends_the_intent_to_the_custom_route_and_keeps_the_table_valid() -> None:
    text = (REPO_ROOT / "routes" / "route_table.yaml").read_text()
    edited = route_to_custom(text, "return_or_refund", "answer_memory-abc")
    table = parse_route_table(edited.encode(), Path("edited.yaml"))
    route = table.spec.routes["return_or_refund"]
    assert (route.route_id, route.kind, route.provider) == ("custom.return_or_refund", "custom_model", "answer_memory")
    assert route.fallbacks == ("model.large", "workflow.escalate")
    assert edited.count("\n") == text.count("\n") + 1  # one note line; every comment kept


def test_feedback_needs_the_field_its_kind_names() -> None:
    with pytest.raises(FeedbackError, match="needs corrected_text"):
        make_feedback("r1", FeedbackKind.CORRECTION, store_id="0417", author="s1")
    with pytest.raises(FeedbackError, match="1 to 5"):
        make_feedback("r1", FeedbackKind.RATING, store_id="0417", author="s1", rating=9)
    with pytest.raises(FeedbackError, match="unknown intent"):
        make_feedback("r1", FeedbackKind.ROUTE_CORRECTION, store_id="0417", author="s1", corrected_intent="weather")
    assert make_feedback("r1", FeedbackKind.RATING, store_id="0417", author="s1", rating=4).rating == 4
    with pytest.raises(FeedbackError, match="must name the store"):
        make_feedback("r1", FeedbackKind.RATING, store_id=" ", author="s1", rating=4)
    scoped = make_feedback("r1", FeedbackKind.RATING, store_id="0417", author="s1", rating=4, attributes={"n": "1"})
    assert scoped.attributes == {"n": "1", "store_id": "0417"}


def test_the_question_is_read_from_behind_the_context() -> None:
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "Context:\n- x\n\nQuestion: why?"}]
    assert question_of(messages) == "why?"  # type: ignore[arg-type]


def test_the_registry_refuses_pickled_weights(tmp_path: Path) -> None:
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "model.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(RegistryError, match="no pickles"):
        ModelRegistry(tmp_path / "r", clickhouse=False).register(
            "x", tmp_path / "w", {}, dataset={}, evaluation={}, parent=None
        )


def test_the_memory_answers_above_its_threshold_and_declines_below(tmp_path: Path) -> None:
    embedder = shared_embedder()
    questions = ("how long is the return window", "do loyalty points expire")
    memory = AnswerMemory(
        embeddings=embedder.embed(list(questions)),
        questions=questions,
        answers=("30 days with the receipt.", "After 12 months without activity."),
        intents=("return_or_refund", "loyalty_account"),
        threshold=0.75,
        embedder=embedder.version,
    )
    memory.save(tmp_path / "models" / "m1")
    provider = AnswerMemoryProvider("answer_memory", tmp_path, model_id="m1")
    near = [{"role": "user", "content": "Context:\n- policy\n\nQuestion: how long is our return window?"}]
    completion = asyncio.run(provider.complete(near, max_tokens=64))  # type: ignore[arg-type]
    assert completion.text == "30 days with the receipt." and completion.tokens_in == 0
    with pytest.raises(MemoryDeclined):
        asyncio.run(provider.complete([{"role": "user", "content": "is the blender in stock?"}], max_tokens=64))


def test_providers_yaml_registers_the_answer_memory_with_its_fallback(tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "default_provider: default\nproviders:\n"
        "  default: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        f"  answer_memory: {{kind: answer_memory, registry: '{tmp_path}', fallback: [default]}}\n"
    )
    chain, _ = load_providers(providers).chain("answer_memory")
    assert [p.name for p in chain] == ["answer_memory", "default"]
    assert chain[0].price.cost_usd(1000, 1000) == 0.0


def test_a_shadow_started_after_the_answerer_is_picked_up_and_stopping_takes_effect(tmp_path: Path) -> None:
    providers = tmp_path / "providers.yaml"
    providers.write_text(
        "providers:\n  default: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        "  other: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
    )
    registry = attach_shadow(load_providers(providers), tmp_path)  # no shadow file yet
    runner = shadow_runner(registry)
    assert runner is not None
    runner.switch = ShadowSwitch(tmp_path, ANSWER_KIND, check_every_s=0.0)
    assert registry.chain("default")[0][0].name == "default"  # who answers is unchanged
    assert runner.candidate_for("default") is None
    models = ModelRegistry(tmp_path, clickhouse=False)
    models.set_shadow({"candidate": "answer_memory-x", "incumbents": []})
    candidate = runner.candidate_for("default")
    assert candidate is not None and candidate.pinned == "answer_memory-x"
    assert runner.candidate_for("other") is None  # only the listed incumbents (none listed: the default)
    models.set_shadow({"candidate": "answer_memory-y", "incumbents": ["other"]})
    assert runner.candidate_for("default") is None
    assert runner.candidate_for("other").pinned == "answer_memory-y"  # type: ignore[union-attr]
    models.set_shadow(None)
    assert runner.candidate_for("other") is None


def test_a_shadow_file_that_is_not_valid_turns_shadow_off(tmp_path: Path) -> None:
    switch = ShadowSwitch(tmp_path, ROUTER_KIND, check_every_s=0.0)
    (tmp_path / "shadow.router.json").write_text("{not json")
    assert switch.current() is None
    (tmp_path / "shadow.router.json").write_text('{"candidate": "router-1"}')
    assert switch.current() == {"candidate": "router-1"}
    (tmp_path / "shadow.router.json").write_text('{"model": "router-1"}')
    assert switch.current() is None


def test_the_answer_kind_of_the_switch_is_the_answer_memorys() -> None:
    assert ANSWER_KIND == MEMORY_KIND


async def test_the_shadow_sink_writes_by_size_and_at_close_and_counts_what_it_could_not_write() -> None:
    written: list[list[object]] = []
    sink = ClickHouseSink("t", ["a"], max_rows=3, flush_every_s=60, insert=lambda t, rows, c: written.extend(rows))
    for value in range(3):
        sink.add([value])
    await asyncio.sleep(0.05)
    assert written == [[0], [1], [2]]  # full: written without waiting for the timer
    sink.add([3])
    await asyncio.sleep(0.05)
    assert len(written) == 3
    await sink.aclose()
    assert written == [[0], [1], [2], [3]] and sink.written == 4

    def failing(table: str, rows: list[list[object]], columns: object) -> None:
        raise ConnectionError("ClickHouse is down")

    broken = ClickHouseSink("t", ["a"], insert=failing)
    broken.add([1])
    await broken.aclose()
    assert broken.dropped == 1 and broken.written == 0


def test_a_route_label_is_the_correction_or_a_confirmed_route_and_nothing_else() -> None:
    assert route_label("store_hours", "stock_check", None, None, None) == "stock_check"
    assert route_label("store_hours", None, 5, None, None) == "store_hours"
    assert route_label("store_hours", None, None, "fixed answer", None) == "store_hours"
    assert route_label("store_hours", None, None, None, "approved") == "store_hours"
    assert route_label("store_hours", None, 2, None, None) is None
    assert route_label("store_hours", None, None, None, None) is None


def test_route_comparison_scores_both_classifiers_on_the_labelled_requests_only() -> None:
    rows = [
        ("stock_check", "store_hours", "stock_check"),  # the candidate was right, the incumbent corrected
        ("store_hours", "store_hours", "store_hours"),
        ("loyalty_account", "store_hours", "store_hours"),
        ("stock_check", "store_hours", None),  # unlabelled: left out
    ]
    result = compare_routes(rows)
    assert result.examples == 3
    assert result.incumbent_accuracy == pytest.approx(2 / 3) and result.candidate_accuracy == pytest.approx(2 / 3)
    assert result.agreement == pytest.approx(1 / 3)
    assert compare_routes([]).examples == 0
    policy = PromotionPolicy(margin=0.05, min_shadow_examples=3)
    card = {"evaluation": {"candidate_accuracy": 0.9, "incumbent_accuracy": 0.7, "examples": 20}}
    assert not decide(card, result, policy).promote  # no gain in shadow
