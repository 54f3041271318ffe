"""The Router stage in-process: it loads the route table and the trained classifier at start, routes realistic
requests to the expected routes, reports both versions as its health, and follows route table edits."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from services.learning.switch import ROUTER_KIND, ClickHouseSink, ShadowSwitch
from services.router.stage import Classified, RequestTooLong, Router, intent_model_dir
from services.runtime.batcher import MicroBatcher
from services.settings import get_settings
from services.shared import model_artifact as artifact
from services.shared.model_artifact import LinearIntentModel
from services.wire.models import Channel, Request, RouteKind


def request(text: str, request_id: str = "r-1") -> Request:
    return Request(
        request_id=request_id, store_id="0417", terminal_id="pos-1", channel=Channel.POS, text=text, created_at=0
    )


@pytest.fixture(scope="module")
def route_table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("routes") / "route_table.yaml"
    shutil.copyfile(get_settings().route_table, path)
    return path


@pytest.fixture(scope="module")
async def router(tmp_path_factory: pytest.TempPathFactory, route_table_path: Path) -> AsyncIterator[Router]:
    # the repository's trained model when it is current, so the test trains only where var/ has none
    model = tmp_path_factory.mktemp("intent") / "model"
    shipped = intent_model_dir(get_settings())
    if shipped.is_dir():
        shutil.copytree(shipped, model)
    stage = Router(route_table_path=route_table_path, intent_model_path=model, reload_every_s=0.0)
    await stage.start()
    yield stage
    await stage.stop()


ROUTED = [
    ("What time do you close today?", "store_hours", "workflow.store_hours"),
    ("Are you open on Sunday?", "store_hours", "workflow.store_hours"),
    ("Is there any discount if I buy two of these?", "discount_request", "workflow.discount_request"),
    ("Do you have the blue running shoes in size 9 in stock?", "stock_check", "workflow.stock_check"),
    ("I want to return these headphones, I have the receipt", "return_or_refund", "workflow.return_or_refund"),
    ("Where is my online order? It was supposed to arrive Tuesday", "order_status", "workflow.order_status"),
]


@pytest.mark.parametrize(("text", "intent", "route_id"), ROUTED)
async def test_a_realistic_request_is_routed_by_its_intent(
    router: Router, text: str, intent: str, route_id: str
) -> None:
    decision = await router.decide(request(text))
    assert (decision.intent, decision.route_id) == (intent, route_id)
    assert decision.confidence >= router.route_table.spec.low_confidence.threshold
    assert decision.reason.startswith(f"intent {intent} ")
    assert decision.route_table_version == router.route_table.version


async def test_a_text_past_the_request_limit_is_refused_with_its_length_before_any_model_reads_it(
    router: Router,
) -> None:
    limit = router.max_request_chars
    with pytest.raises(RequestTooLong, match=rf"{limit + 1:,} characters, over the {limit:,}"):
        await router.decide(request("x" * (limit + 1)))
    decision = await router.decide(request("Is the field jacket in stock? " + "x" * (limit - 40)))
    assert decision.route_id


async def test_a_store_hours_question_takes_the_workflow_without_a_model(router: Router) -> None:
    decision = await router.decide(request("what are your opening hours tomorrow?"))
    assert decision.kind == RouteKind.WORKFLOW
    assert decision.provider is None


async def test_concurrent_requests_each_get_their_own_decision(router: Router) -> None:
    texts = [text for text, _, _ in ROUTED] * 4
    decisions = await asyncio.gather(*(router.decide(request(text, f"r-{i}")) for i, text in enumerate(texts)))
    expected = [route_id for _, _, route_id in ROUTED] * 4
    assert [decision.route_id for decision in decisions] == expected


async def test_health_reports_the_route_table_and_classifier_versions(router: Router) -> None:
    ok, detail = await router.healthy()
    assert ok
    assert router.classifier is not None
    assert router.route_table.version in detail
    assert router.classifier.version in detail


async def test_an_unhealthy_provider_set_on_the_router_moves_traffic_to_the_fallback(router: Router) -> None:
    router.unhealthy_providers = {"default": "down for 30 s"}
    try:
        # a complaint (a model route; a data workflow runs no model, so no provider's health moves it)
        decision = await router.decide(
            request("The person at the till this morning was rude to me and I want to complain")
        )
    finally:
        router.unhealthy_providers = {}
    assert decision.route_id == "workflow.escalate"
    assert "provider default is unhealthy (down for 30 s)" in decision.reason


@pytest.fixture
def edited_route_table(route_table_path: Path) -> Iterator[None]:
    """The router's route table file with a new version and a renamed discount route, restored afterwards."""
    original = route_table_path.read_text(encoding="utf-8")
    edited = re.sub(r'^version: ".*"$', 'version: "edited"', original, count=1, flags=re.M).replace(
        "workflow.discount_request", "workflow.discount_policy"
    )
    assert edited != original
    route_table_path.write_text(edited, encoding="utf-8")
    os.utime(route_table_path, ns=(1, 1))
    yield
    route_table_path.write_text(original, encoding="utf-8")


@pytest.mark.usefixtures("edited_route_table")
async def test_an_edited_route_table_is_used_without_a_restart(router: Router) -> None:
    decision = await router.decide(request("Is there any discount if I buy two of these?"))
    assert decision.route_id == "workflow.discount_policy"
    assert decision.route_table_version.startswith("edited+")


async def test_a_router_that_has_not_started_is_not_healthy() -> None:
    ok, detail = await Router().healthy()
    assert not ok
    assert "not started" in detail


async def test_an_exact_repeat_reuses_its_intent_without_classifying_again(router: Router) -> None:
    assert router.classifier is not None
    classify_batch = router._classify_batch
    calls: list[list[str]] = []

    def counting(texts: Sequence[str]) -> list[Classified]:
        calls.append(list(texts))
        return classify_batch(texts)

    original, router._classify = router._classify, MicroBatcher(counting)
    try:
        text = "Could you tell me when the Harbor store shuts tonight?"
        first = await router.decide(request(text))
        second = await router.decide(request(text, request_id="r-2"))
    finally:
        router._classify = original
    assert first.intent == second.intent
    assert calls == [[text]]


def biased_copy(source: Path, target: Path, intent: str) -> str:
    """The classifier in `source` with `intent` made far likelier: a model that disagrees; returns its version."""
    card = artifact.read_card(source)
    assert card is not None
    model = artifact.load_model(source)
    intercept = model.intercept.copy()
    intercept[model.classes.index(intent)] += 50.0
    biased = LinearIntentModel(model.classes, model.coef, intercept)
    version = biased.fingerprint(card["embedder"])
    # like a retrained candidate (retrain_with_production), it carries no cheap model: MiniLM decides every text
    artifact.save(
        target, biased, {key: value for key, value in card.items() if key != "cascade"} | {"version": version}
    )
    return version


@pytest.fixture
async def own_router(tmp_path: Path, route_table_path: Path) -> AsyncIterator[Router]:
    model = tmp_path / "intent"
    shipped = intent_model_dir(get_settings())
    if shipped.is_dir():
        shutil.copytree(shipped, model)
    stage = Router(
        route_table_path=route_table_path,
        intent_model_path=model,
        reload_every_s=0.0,
        registry_dir=tmp_path / "registry",
    )
    await stage.start()
    yield stage
    await stage.stop()


async def test_a_promoted_classifier_is_used_without_a_restart_and_named_on_each_decision(
    own_router: Router,
) -> None:
    text = "What time do you close today?"
    before = await own_router.decide(request(text))
    assert before.intent == "store_hours" and before.classifier_version == own_router.classifier.version  # type: ignore[union-attr]
    version = biased_copy(own_router.intent_model_path, own_router.intent_model_path, "loyalty_account")
    after = await own_router.decide(request(text, request_id="r-2"))  # the same text: not from the repeat memory
    assert after.intent == "loyalty_account" and after.classifier_version == version != before.classifier_version


async def test_a_router_candidate_in_shadow_is_recorded_beside_the_incumbent_and_never_obeyed(
    own_router: Router, tmp_path: Path
) -> None:
    rows: list[list[object]] = []
    assert own_router.shadow is not None
    own_router.shadow.sink = ClickHouseSink("t", ["c"], insert=lambda table, batch, columns: rows.extend(batch))
    own_router.shadow.switch = ShadowSwitch(tmp_path / "registry", ROUTER_KIND, check_every_s=0.0)
    candidate_dir = tmp_path / "registry" / "models" / "router-candidate"
    version = biased_copy(own_router.intent_model_path, candidate_dir, "loyalty_account")
    text = "Are you open on Sunday?"
    unshadowed = await own_router.decide(request(text, request_id="r-0"))
    (tmp_path / "registry" / "shadow.router.json").write_text('{"candidate": "router-candidate"}')
    shadowed = await own_router.decide(request(text, request_id="r-1"))  # a repeat, but the shadow needs its own
    assert shadowed.intent == unshadowed.intent == "store_hours"  # the candidate is never obeyed
    await own_router.shadow.sink.flush()
    assert len(rows) == 1
    request_id, candidate, candidate_version, intent, _, incumbent_version, incumbent_intent, _, _ = rows[0]
    assert (request_id, candidate, candidate_version, intent) == ("r-1", "router-candidate", version, "loyalty_account")
    assert (incumbent_version, incumbent_intent) == (shadowed.classifier_version, "store_hours")
    (tmp_path / "registry" / "shadow.router.json").unlink()
    await own_router.decide(request(text, request_id="r-2"))
    await own_router.shadow.sink.flush()
    assert len(rows) == 1  # stopped: nothing more recorded


async def test_a_routed_request_passes_on_its_embedding_and_a_cut_one_passes_none(router: Router) -> None:
    assert router.classifier is not None
    embedder = router.classifier.embedder
    text = "Is the waxed field jacket waterproof enough for hiking in heavy rain?"
    record = request(text, request_id="r-embedding")
    decision = await router.decide(record)
    assert decision.kind != RouteKind.WORKFLOW  # a model route: the stitcher and the governor read the vector
    passed = router.passed_on(record, decision)["request_embedding"]
    assert passed is not None and passed["model"] == embedder.model_version
    vector = np.frombuffer(passed["vector"], dtype="<f4")
    assert vector == pytest.approx(embedder.embed([text])[0], abs=1e-5)
    assert router.passed_on(record, decision) == {"request_embedding": None}  # handed over once
    essay = request("please check the stock of this item " * 40, request_id="r-essay")
    assert router.passed_on(essay, await router.decide(essay)) == {"request_embedding": None}


async def test_the_cheap_model_decides_a_sure_workflow_request_without_an_embedding(router: Router) -> None:
    assert router.classifier is not None and router.classifier.cheap is not None
    candidates = ["what time do you close on saturday evening", "when does this store close tonight", "opening hours?"]
    sure_texts = [t for t, p in zip(candidates, router.classifier.classify_cheaply(candidates), strict=True) if p]
    assert sure_texts, "the cheap model is sure of at least one plain store-hours question"
    text = sure_texts[0]  # asked nowhere else in this module: not from the router's repeat memory
    before = router.intent_deciders["cheap"]
    record = request(text, request_id="r-cheap")
    decision = await router.decide(record)
    assert decision.kind == RouteKind.WORKFLOW and decision.intent == "store_hours"
    assert router.intent_deciders["cheap"] == before + 1
    assert router.passed_on(record, decision) == {"request_embedding": None}  # no model reads a workflow's text
