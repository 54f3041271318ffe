"""The Router stage in-process: it loads the route table and the trained classifier at start, routes realistic
requests to the expected routes, reports both versions as its health, and follows route table edits."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest

from services.router.intents.classifier import IntentPrediction
from services.router.stage import Router, intent_model_dir
from services.runtime.batcher import MicroBatcher
from services.runtime.models import Channel, Request, RouteKind
from services.settings import get_settings


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
    ("Is there any discount if I buy two of these?", "discount_request", "model.discount_request"),
    ("Do you have the blue running shoes in size 9 in stock?", "stock_check", "model.stock_check"),
    ("I want to return these headphones, I have the receipt", "return_or_refund", "model.return_or_refund"),
    ("Where is my online order? It was supposed to arrive Tuesday", "order_status", "model.order_status"),
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
        decision = await router.decide(request("Is there any discount if I buy two of these?"))
    finally:
        router.unhealthy_providers = {}
    assert decision.route_id == "workflow.escalate"
    assert "provider default is unhealthy (down for 30 s)" in decision.reason


@pytest.fixture
def edited_route_table(route_table_path: Path) -> Iterator[None]:
    """The router's route table file with a new version and a renamed discount route, restored afterwards."""
    original = route_table_path.read_text(encoding="utf-8")
    edited = original.replace('version: "2025.06-1"', 'version: "edited"').replace(
        "route_id: model.discount_request", "route_id: model.discount_policy"
    )
    assert edited != original
    route_table_path.write_text(edited, encoding="utf-8")
    os.utime(route_table_path, ns=(1, 1))
    yield
    route_table_path.write_text(original, encoding="utf-8")


@pytest.mark.usefixtures("edited_route_table")
async def test_an_edited_route_table_is_used_without_a_restart(router: Router) -> None:
    decision = await router.decide(request("Is there any discount if I buy two of these?"))
    assert decision.route_id == "model.discount_policy"
    assert decision.route_table_version.startswith("edited+")


async def test_a_router_that_has_not_started_is_not_healthy() -> None:
    ok, detail = await Router().healthy()
    assert not ok
    assert "not started" in detail


async def test_an_exact_repeat_reuses_its_intent_without_classifying_again(router: Router) -> None:
    assert router.classifier is not None
    classify_many = router.classifier.classify_many
    calls: list[list[str]] = []

    def counting(texts: Sequence[str]) -> list[IntentPrediction]:
        calls.append(list(texts))
        return classify_many(texts)

    original, router._classify = router._classify, MicroBatcher(counting)
    try:
        text = "Could you tell me when the Harbor store shuts tonight?"
        first = await router.decide(request(text))
        second = await router.decide(request(text, request_id="r-2"))
    finally:
        router._classify = original
    assert first.intent == second.intent
    assert calls == [[text]]
