"""The learning loop on the running chain (real Kafka, ClickHouse, every process): a router candidate put in
shadow while the router runs is picked up without a restart, classifies every request beside the classifier in
force, is recorded in ClickHouse and never obeyed; the learning process is up and ready."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from services.infra.clickhouse import get_client
from services.learning.registry import ModelRegistry
from services.learning.switch import ROUTER_KIND
from services.router.intents.classifier import ensure_trained
from services.settings import Settings
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import Chain, running_chain
from tests.unit.test_router_stage import biased_copy


@pytest.fixture(scope="module")
def registry_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("registry")


@pytest.fixture(scope="module")
def chain(
    settings: Settings,
    codec: AvroCodec,
    admin: AdminClient,
    clickhouse: str,
    registry_dir: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Chain]:
    ensure_trained()  # the router's own model, trained once before its process starts
    env = {"SWITCHYARD_MODEL_REGISTRY_DIR": str(registry_dir)}
    with running_chain(settings, codec, admin, tmp_path_factory.mktemp("learning-chain"), extra_env=env) as running:
        for key in ("router/0", "auditor/0", "learning/0"):
            running.wait_ready(key, timeout_s=120)
        yield running


def shadow_rows(request_ids: list[str], timeout_s: float = 30.0) -> list[tuple[str, str, str, str]]:
    client = get_client()
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            rows = client.query(
                "SELECT request_id, candidate, intent, incumbent_intent FROM switchyard.shadow_routes FINAL "
                "WHERE has({ids:Array(String)}, request_id) ORDER BY request_id",
                parameters={"ids": request_ids},
            ).result_rows
            if len(rows) >= len(request_ids) or time.monotonic() > deadline:
                return [tuple(row) for row in rows]
            time.sleep(0.5)
    finally:
        client.close()


def test_a_router_candidate_started_in_shadow_on_the_running_chain_is_recorded_and_never_obeyed(
    chain: Chain, registry_dir: Path, tmp_path: Path
) -> None:
    status, detail = chain.healthz("learning/0")
    assert status == 200, detail
    # a candidate that disagrees: the shipped classifier made far likelier to say loyalty_account
    weights = tmp_path / "candidate"
    biased_copy(ensure_trained_dir(), weights, "loyalty_account")
    registry = ModelRegistry(registry_dir)
    model_id = registry.register(
        ROUTER_KIND, weights, {"intents": []}, dataset={"version": "test"}, evaluation={}, parent=None
    )
    run = uuid.uuid4().hex
    before = chain.requests(4, run)
    chain.publish(before)
    assert len(chain.read("routed", until=4, run=run)) == 4
    registry.set_shadow({"candidate": model_id}, ROUTER_KIND)  # `switchyard shadow start`: no restart
    time.sleep(2.5)  # the router re-reads the shadow file at most once a second
    during = chain.requests(6, run)
    chain.publish(during)
    routed = chain.read("routed", until=10, run=run)
    assert len(routed) == 10
    assert all(r["route"]["intent"] != "loyalty_account" for r in routed)  # the candidate is never obeyed
    assert all(r["route"]["classifier_version"] for r in routed)  # each decision names its classifier
    rows = shadow_rows([r.request_id for r in during])
    assert len(rows) == 6 and {(c, i) for _, c, i, _ in rows} == {(model_id, "loyalty_account")}
    assert not shadow_rows([r.request_id for r in before], timeout_s=0)  # before the shadow started: none
    registry.set_shadow(None, ROUTER_KIND)


def ensure_trained_dir() -> Path:
    from services.shared.model_artifact import default_artifact_dir

    ensure_trained()
    return default_artifact_dir()
