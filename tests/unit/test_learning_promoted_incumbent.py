"""Where a custom model is already promoted, it is the incumbent a candidate must beat, offline (on the eval split
of an exported set) and in shadow (the promoted model's answers are recorded as the incumbent's); where none is,
the configured model's recorded answers are. No ClickHouse: data sets are written from rows shaped as it returns
them, and the registry keeps its events in its own file."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from services.answerer.memory import KIND as MEMORY_KIND
from services.answerer.memory import AnswerMemory, shared_embedder
from services.answerer.providers import Completion
from services.answerer.registry import load_providers
from services.answerer.stage import Answerer
from services.learning.export import ExportSpec, build_examples, split_by_time, write_dataset
from services.learning.promotion import PromotionPolicy, decide, promote
from services.learning.records import tokenised_json
from services.learning.registry import ModelRegistry
from services.learning.shadow import SHADOW_COLUMNS, attach_shadow, shadow_runner
from services.learning.simulation import audited_record, simulated_governor, traffic
from services.learning.switch import ANSWER_KIND, ClickHouseSink, ShadowSwitch
from services.learning.training import NARROW_INTENTS, PromotedIncumbent, evaluate_memory, train_and_register
from services.settings import REPO_ROOT
from services.wire.models import (
    Channel,
    Context,
    ContextItem,
    Governance,
    Governed,
    Request,
    RouteDecision,
    RouteKind,
    Verdict,
)
from tests.unit.conftest import StubFactory

PASSAGE = (
    "Most items can be returned within 30 days of purchase with the original receipt. The Aurora headphones "
    "battery lasts 30 hours with noise cancelling on."
)
CONFIGURED_REPLY = "I will check with a colleague."  # what the configured model answered: never right
SPEC = ExportSpec(task="answers", since=datetime(2031, 1, 1, tzinfo=UTC), until=datetime(2031, 1, 2, tzinfo=UTC))
POLICY = PromotionPolicy(require_shadow=False)


def exported(out: Path, seed: int, start_ms: int) -> Path:
    """A data set as `export-training` writes it: policy questions the configured model answered with
    CONFIGURED_REPLY, every one corrected by staff with the policy's answer."""
    rows: list[tuple[Any, ...]] = []
    for item in traffic(120, seed=seed, start_ms=start_ms, policy_share=1.0, run=f"promoted-{seed}"):
        record = audited_record(
            item.request,
            intent=item.intent,
            answer_text=CONFIGURED_REPLY,
            redacted_text=simulated_governor(item.request.text)[0],
            recorded_at_us=item.request.created_at * 1000 + 500,
        )
        recorded = datetime.fromtimestamp(record.audit.recorded_at / 1e6, tz=UTC)
        rows.append((item.request.request_id, recorded, tokenised_json(record), item.truth, None, None, None))
    examples, _ = build_examples("answers", rows)
    train, evaluation, cut = split_by_time(examples, SPEC.eval_fraction)
    write_dataset(out, SPEC, train, evaluation, split={"cut": cut})
    return out


@pytest.fixture(scope="module")
def promoted(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelRegistry, str, Path]:
    """A registry whose first custom model, trained on the staff's corrections, is promoted for both intents."""
    root = tmp_path_factory.mktemp("promoted")
    registry = ModelRegistry(root / "registry", clickhouse=False)
    first = train_and_register("answers", exported(root / "first", 1, 1_924_992_000_000), registry)
    route_table = root / "route_table.yaml"
    shutil.copyfile(REPO_ROOT / "routes" / "route_table.yaml", route_table)
    assert promote(first, NARROW_INTENTS, route_table, registry, shadow=None, policy=POLICY).promote
    return registry, first, root


def test_the_promoted_model_is_the_incumbent_and_the_configured_model_where_none_is(
    promoted: tuple[ModelRegistry, str, Path], tmp_path: Path
) -> None:
    registry, first, _ = promoted
    incumbent = PromotedIncumbent.of(registry)
    assert incumbent is not None and incumbent.model_id == first
    assert incumbent.intents == frozenset(NARROW_INTENTS)
    assert PromotedIncumbent.of(ModelRegistry(tmp_path / "fresh", clickhouse=False)) is None


def test_a_candidate_that_beats_the_configured_model_but_not_the_promoted_one_is_not_promoted(
    promoted: tuple[ModelRegistry, str, Path],
) -> None:
    registry, first, root = promoted
    later = exported(root / "later", 2, 1_925_092_000_000)
    retrained = registry.card(train_and_register("answers", later, registry))["evaluation"]
    assert retrained["incumbent"] == first and retrained["incumbent_custom_share"] > 0.5
    assert retrained["incumbent_accuracy"] > 0.5  # the promoted model's answers, not the configured model's
    # a copy of the promoted model under another id: it answers exactly as the model it would replace
    copy = root / "copy"
    shutil.copytree(registry.model_dir(first), copy)
    (copy / "registry_card.json").unlink()
    meta = json.loads((copy / "memory.json").read_text())
    (copy / "memory.json").write_text(json.dumps({**meta, "note": "a copy"}))
    memory = AnswerMemory.load(copy)
    evaluation = evaluate_memory(memory, later, NARROW_INTENTS, shared_embedder(), PromotedIncumbent.of(registry))
    candidate = registry.register(
        MEMORY_KIND, copy, {"intents": list(NARROW_INTENTS)}, dataset={}, evaluation=evaluation, parent=first
    )
    card = registry.card(candidate)
    assert candidate != first and card["evaluation"]["candidate_accuracy"] == card["evaluation"]["incumbent_accuracy"]
    assert not decide(card, None, POLICY).promote
    against_configured = evaluate_memory(memory, later, NARROW_INTENTS, shared_embedder(), incumbent=None)
    assert against_configured["incumbent_accuracy"] == 0.0  # the configured model's reply is never right
    assert decide({"evaluation": against_configured}, None, POLICY).promote  # the old incumbent let it through


async def test_in_shadow_the_promoted_models_answers_are_the_incumbents(
    promoted: tuple[ModelRegistry, str, Path], tmp_path: Path
) -> None:
    registry, first, _ = promoted
    providers_file = tmp_path / "providers.yaml"
    providers_file.write_text(
        "default_provider: default\nproviders:\n"
        "  default: {kind: openai, base_url: 'http://127.0.0.1:9/v1', model: m}\n"
        f"  answer_memory: {{kind: answer_memory, registry: '{registry.root}', fallback: [default]}}\n"
    )
    providers = attach_shadow(load_providers(providers_file), registry.root)  # as an answerer starts
    runner = shadow_runner(providers)
    assert runner is not None and runner.promoted == {"answer_memory"}
    written: list[list[Any]] = []
    runner.registry_dir, runner.switch = registry.root, ShadowSwitch(registry.root, ANSWER_KIND, check_every_s=0.0)
    runner.sink = ClickHouseSink("t", SHADOW_COLUMNS, insert=lambda table, rows, columns: written.extend(rows))
    registry.set_shadow({"candidate": first, "incumbents": ["default"]})  # the promoted model shadows itself here
    try:
        question = [{"role": "user", "content": "how long is the return window"}]
        completion = await providers["answer_memory"].complete(question, max_tokens=64, request_id="r-1")  # type: ignore[arg-type]
        await runner.drain()
    finally:
        registry.set_shadow(None)
    row = dict(zip(SHADOW_COLUMNS, written[0], strict=True))
    assert registry.deployed()[MEMORY_KIND] == first
    assert (row["request_id"], row["incumbent_provider"], row["incumbent_answer"]) == (
        "r-1",
        "answer_memory",
        completion.text,
    )


def on_custom_route(question: str, passage: str) -> Governed:
    return Governed(
        request=Request(request_id="c-1", store_id="0412", terminal_id="t", channel=Channel.POS, text=question,
                        created_at=1),
        route=RouteDecision(route_id="custom.return_or_refund", kind=RouteKind.CUSTOM_MODEL, intent="return_or_refund",
                            confidence=0.9, provider="answer_memory", reason="test", route_table_version="t"),
        context=Context(items=[ContextItem(source="knowledge_base", source_id="p-1", version="h", score=0.8,
                                           text=passage)], token_count=10, token_budget=100),
        governance=Governance(verdict=Verdict.ALLOW, findings=[], redacted_text=question),
        timings=[],
    )  # fmt: skip


async def test_on_the_local_default_the_promoted_model_or_where_it_declines_the_passages_are_the_incumbent(
    promoted: tuple[ModelRegistry, str, Path],
    tmp_path: Path,
    stub: StubFactory,
    answerers: list[Answerer],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry, _, _ = promoted
    _, url = await stub()
    providers_file = tmp_path / "providers.yaml"
    providers_file.write_text(
        "default_provider: default\nproviders:\n"
        f"  default: {{kind: openai, base_url: '{url}', model: m}}\n"
        f"  answer_memory: {{kind: answer_memory, registry: '{registry.root}', fallback: [default]}}\n"
    )
    stage = Answerer(load_providers(providers_file), grounded_first=True)
    answerers.append(stage)
    runner = shadow_runner(stage.providers)
    assert runner is not None
    seen: list[tuple[str, str]] = []

    def observe(provider: str, messages: object, request_id: str | None, incumbent: Completion) -> None:
        seen.append((provider, incumbent.text))

    monkeypatch.setattr(runner, "observe", observe)  # what the shadow would compare the candidate with
    taught = await stage.decide(on_custom_route("how long is the return window", PASSAGE))
    declined = await stage.decide(on_custom_route("How long does the Aurora headphones battery last?", PASSAGE))
    assert (taught.provider, declined.provider) == ("answer_memory", "grounded")
    assert seen == [("answer_memory", taught.text), ("grounded", declined.text)]
