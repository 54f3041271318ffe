"""The learning loop against the real ClickHouse, Kafka and an HTTP model: feedback on the topic, struggle flags,
a deterministic PII-free export, and a model trained on a tiny data set registered, shadowed on live calls,
promoted into a route table, rolled back by hand and by the `learning` process; a router model shadowed,
promoted and rolled back by that process when staff correct its routes; a candidate no better than the incumbent
is not promoted. Each test writes its rows in a time window of its own (in 2031), so nothing else's data mixes in."""

from __future__ import annotations

import dataclasses
import json
import random
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.answerer.memory import KIND, AnswerMemoryProvider
from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import GuardedProvider
from services.dev.stub_model import start_stub
from services.infra.clickhouse import get_client
from services.learning.compare import route_shadow_comparison, shadow_comparison
from services.learning.export import ExportSpec, export_training
from services.learning.feedback import make_feedback
from services.learning.promotion import PromotionPolicy, check_live, promote, rollback
from services.learning.registry import ModelRegistry
from services.learning.router_shadow import RouterShadow
from services.learning.shadow import attach_shadow, shadow_runner
from services.learning.simulation import (
    PII_TAILS,
    SimulatedRequest,
    SimulatedReviewer,
    audited_record,
    insert_audited,
    insert_feedback,
    simulated_governor,
    traffic,
)
from services.learning.switch import ROUTER_KIND
from services.learning.training import train_and_register
from services.learning.watchdog import Watchdog, WatchdogConfig
from services.pos.feedback import PosFeedbackClient
from services.router.intents.classifier import IntentClassifier, ensure_trained
from services.runtime.kafka_clients import confluent_config
from services.settings import REPO_ROOT, Settings
from services.shared.model_artifact import default_artifact_dir as intent_artifact_dir
from services.shared.route_table import load_route_table
from services.wire.codec import AvroCodec
from services.wire.models import Audited, Feedback, FeedbackKind, Finding, Verdict
from tests.integration.conftest import delete_topics, wait_for_topic

INTENTS = ["return_or_refund", "loyalty_account"]


@pytest.fixture
def window(clickhouse: str) -> tuple[datetime, int]:
    """A start time no other test uses: a random hour of 2031."""
    start = datetime(2031, 1, 1, tzinfo=UTC) + timedelta(hours=random.randrange(24 * 360))
    return start, int(start.timestamp() * 1000)


def answered_by_large_model(
    items: list[SimulatedRequest], answer_for: dict[str, str] | None = None, routed: dict[str, str] | None = None
) -> list[Audited]:
    """The records the chain would audit, each routed as `routed` says (default: to its true intent)."""
    routed = routed or {}
    records = []
    for item in items:
        redacted, findings = simulated_governor(item.request.text)
        answer = (answer_for or {}).get(item.request.request_id, f"Stub answer to: {redacted}")
        records.append(
            audited_record(
                item.request,
                intent=routed.get(item.request.request_id, item.intent),
                answer_text=answer,
                redacted_text=redacted,
                findings=findings,
                verdict=Verdict.MASK if findings else Verdict.ALLOW,
                recorded_at_us=item.request.created_at * 1000 + 200_000,
            )
        )
    return records


def reviewed(items: list[SimulatedRequest], records: list[Audited], share: float, seed: int) -> list[Feedback]:
    reviewer = SimulatedReviewer(share=share, seed=seed)
    feedback = []
    for item, record in zip(items, records, strict=True):
        given = reviewer.review_record(item, record)
        if given is not None:
            feedback.append(given)
    return feedback


def test_a_correction_from_the_till_reaches_the_feedback_topic_keyed_by_request(
    kafka: str, settings: Settings, codec: AvroCodec
) -> None:
    prefix = f"it.{uuid.uuid4().hex[:8]}."
    admin = AdminClient(confluent_config())
    topic = f"{prefix}feedback"
    admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
    wait_for_topic(admin, topic)
    try:
        till = PosFeedbackClient("staff-17", "0417", settings.model_copy(update={"topic_prefix": prefix}))
        sent = till.correct("req-1", "30 days with the receipt.")
        till.flush()
        consumer = Consumer(confluent_config({"group.id": prefix, "auto.offset.reset": "earliest"}))
        consumer.subscribe([topic])
        message = None
        for _ in range(30):
            message = consumer.poll(1.0)
            if message is not None and message.error() is None:
                break
        consumer.close()
        assert message is not None and message.key() == b"req-1"
        payload = message.value()
        assert payload is not None
        name, value = codec.decode(payload)
        assert name == "switchyard.Feedback" and Feedback.model_validate(value) == sent
        assert sent.attributes["store_id"] == "0417"  # the till's store: a request id names a request per store
    finally:
        delete_topics(admin, [topic])


def test_struggling_requests_are_flagged_with_their_reasons(window: tuple[datetime, int]) -> None:
    _, start_ms = window
    items = list(traffic(6, seed=44, start_ms=start_ms, spacing_ms=60_000, policy_share=1.0, run=uuid.uuid4().hex))
    customer = "C-" + uuid.uuid4().hex[:8]
    items = [SimulatedRequest(i.request.model_copy(update={"customer_id": customer}), i.truth, i.intent) for i in items]
    records = answered_by_large_model(items)
    guard = Finding(rule_id="out.pii", rule_version="1", kind="pii", action="replace", detail="answer leaked a phone")
    records[0] = records[0].model_copy(
        update={"governance": records[0].governance.model_copy(update={"verdict": Verdict.BLOCK})}
    )
    records[1] = records[1].model_copy(
        update={"answer": records[1].answer.model_copy(update={"output_findings": [guard]})}
    )
    records[2] = records[2].model_copy(
        update={"answer": records[2].answer.model_copy(update={"failover": ["default: timeout", "local: answered"]})}
    )
    records[5] = records[5].model_copy(update={"request": records[5].request.model_copy(update={"customer_id": None})})
    insert_audited(records)
    rating = make_feedback(
        items[3].request.request_id, FeedbackKind.RATING, store_id=items[3].request.store_id, author="s", rating=1
    )
    elsewhere = make_feedback(  # another store's rating of a request with the same id flags nothing here
        items[4].request.request_id, FeedbackKind.RATING, store_id="another-store", author="s", rating=1
    )
    insert_feedback([rating, elsewhere])
    ids = [r.request.request_id for r in records]
    client = get_client()
    rows = client.query(
        "SELECT request_id, flags FROM switchyard.struggle_flags WHERE has({ids:Array(String)}, request_id)",
        parameters={"ids": ids},
    ).result_rows
    client.close()
    flags = {request_id: set(found) for request_id, found in rows}
    assert "governance_intervened" in flags[ids[0]]
    assert "output_guard_acted" in flags[ids[1]]
    assert "failed_over" in flags[ids[2]]
    assert "low_rating" in flags[ids[3]]
    assert "asked_again" in flags[ids[0]]  # the same customer asked again a minute later
    assert "asked_again" not in flags[ids[4]]  # the next one has no customer id
    assert "low_rating" not in flags[ids[4]]  # the low rating of that id was another store's


def test_an_export_of_a_fixed_range_is_deterministic_and_pii_free(window: tuple[datetime, int], tmp_path: Path) -> None:
    start, start_ms = window
    items = list(traffic(40, seed=42, start_ms=start_ms, run=uuid.uuid4().hex))
    records = answered_by_large_model(items)
    insert_audited(records)
    insert_feedback(reviewed(items, records, share=0.6, seed=3))
    spec = ExportSpec(task="answers", since=start, until=start + timedelta(hours=1))
    first = export_training(spec, tmp_path / "a")
    second = export_training(spec, tmp_path / "b")
    for name in ("train.jsonl", "eval.jsonl", "train.parquet", "eval.parquet", "card.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    assert first.card["counts"]["all"]["per_outcome"].get("corrected", 0) > 0
    assert first.card["content_sha256"] == second.card["content_sha256"]
    written = "".join((tmp_path / "a" / n).read_text() for n in ("train.jsonl", "eval.jsonl"))
    for tail in PII_TAILS:
        for raw in tail.split()[-1:]:
            if "@" in raw:
                assert raw not in written
    assert "415 555 0199" not in written and "jo.park@example.com" not in written
    chat = [json.loads(line) for line in written.splitlines()]
    assert chat and all(c["messages"][-1]["role"] == "assistant" for c in chat)


@pytest.fixture
def route_table(tmp_path: Path) -> Path:
    path = tmp_path / "route_table.yaml"
    shutil.copyfile(REPO_ROOT / "routes" / "route_table.yaml", path)
    return path


@pytest.fixture
async def stub_default() -> Iterator[GuardedProvider]:  # type: ignore[misc]
    runner, url = await start_stub(latency_ms=5)
    config = parse_provider_config({"kind": "openai", "name": "default", "base_url": url, "model": "switchyard-stub"})
    provider = GuardedProvider.from_config(config)
    yield provider
    await provider.aclose()
    await runner.cleanup()


def export_and_train(start: datetime, out: Path, registry: ModelRegistry, *, salt: str) -> str:
    result = export_training(ExportSpec(task="answers", since=start, until=start + timedelta(hours=1)), out)
    assert result.train
    # a salt in one answer keeps the model id (a hash of its weights) this test's own
    model_id = train_and_register("answers", out, registry, intents=INTENTS)
    memory_json = registry.model_dir(model_id) / "memory.json"
    meta = json.loads(memory_json.read_text())
    meta["answers"][0] += salt
    salted = out / "salted"
    salted.mkdir()
    shutil.copyfile(registry.model_dir(model_id) / "memory.npz", salted / "memory.npz")
    (salted / "memory.json").write_text(json.dumps(meta))
    card = registry.card(model_id)
    salted_id = registry.register(
        KIND, salted, {"intents": INTENTS}, dataset=card["dataset"], evaluation=card["evaluation"], parent=None
    )
    return salted_id


async def test_a_model_from_a_tiny_data_set_is_registered_shadowed_promoted_and_rolled_back(
    window: tuple[datetime, int], tmp_path: Path, route_table: Path, stub_default: GuardedProvider
) -> None:
    start, start_ms = window
    seed, run = 41, uuid.uuid4().hex
    # 1. production traffic on the large-model route; a simulated reviewer corrects what it gets wrong
    items = list(traffic(200, seed=seed, run=run, start_ms=start_ms, policy_share=0.9))
    records = answered_by_large_model(items)
    insert_audited(records)
    insert_feedback(reviewed(items, records, share=0.8, seed=seed))
    # 2. export, train, register
    registry = ModelRegistry(tmp_path / "registry")
    model_id = export_and_train(start, tmp_path / "data", registry, salt=f" ({uuid.uuid4().hex[:6]})")
    card = registry.card(model_id)
    assert card["evaluation"]["candidate_accuracy"] > card["evaluation"]["incumbent_accuracy"]
    assert card["dataset"]["version"].startswith("answers-") and card["files"]
    # 3. shadow: the candidate answers beside the incumbent on live calls, never released
    providers = attach_shadow(ProviderRegistry({"default": stub_default}), registry.root)  # an answerer running
    runner = shadow_runner(providers)
    assert runner is not None
    registry.set_shadow({"candidate": model_id, "incumbents": ["default"]})  # `switchyard shadow start`, no restart
    live = list(traffic(40, seed=seed + 1, run=run, start_ms=start_ms + 1_800_000, policy_share=1.0))
    released = {}
    for item in live:
        redacted, _ = simulated_governor(item.request.text)
        messages = [{"role": "system", "content": "s"}, {"role": "user", "content": redacted}]
        completion = await providers["default"].complete(messages, max_tokens=64, request_id=item.request.request_id)  # type: ignore[arg-type]
        released[item.request.request_id] = completion.text
    await runner.drain()
    assert all(text.startswith("Stub answer") for text in released.values())  # the shadow was never released
    live_records = answered_by_large_model(live, released)
    insert_audited(live_records)
    insert_feedback(reviewed(live, live_records, share=1.0, seed=seed))
    shadow = shadow_comparison(model_id, INTENTS)
    assert shadow.examples == 40 and shadow.candidate_accuracy > shadow.incumbent_accuracy
    # 4. promotion: a new route-table version sends the intents to the custom model
    decision = promote(model_id, INTENTS, route_table, registry, shadow=shadow, policy=PromotionPolicy(margin=0.1))
    assert decision.promote, decision.reasons
    table = load_route_table(route_table)
    assert table.spec.routes["return_or_refund"].provider == "answer_memory" and ".learn1" in table.version
    assert registry.deployed()[KIND] == model_id
    served = AnswerMemoryProvider("answer_memory", registry.root)
    assert served.lookup("how long is the return window").answer is not None
    # 5. rollback is one call, and brings the previous routes back as a new version
    version = rollback(route_table, registry)
    table = load_route_table(route_table)
    assert table.spec.routes["return_or_refund"].route_id == "model.return_or_refund" and ".learn2" in version
    assert registry.deployed()[KIND] is None
    assert served.lookup("how long is the return window").answer is None
    # 6. promoted again, its live answers are corrected: it is rolled back by itself
    promote(model_id, INTENTS, route_table, registry, shadow=shadow, policy=PromotionPolicy(margin=0.1))
    assert check_live(route_table, registry, min_reviewed=10) is None  # no live answers yet
    served_items = list(traffic(12, seed=seed + 2, run=run, start_ms=start_ms + 2_400_000, policy_share=1.0))
    served_records = [
        r.model_copy(
            update={
                "answer": r.answer.model_copy(update={"provider": "answer_memory", "model_version": f"{model_id}@0.91"})
            }
        )
        for r in answered_by_large_model(served_items, {i.request.request_id: "wrong" for i in served_items})
    ]
    insert_audited(served_records)
    insert_feedback(reviewed(served_items, served_records, share=1.0, seed=seed))
    done = Watchdog(WatchdogConfig(min_reviewed=10), registry, route_table).check()  # the `learning` process
    assert done and done[0].startswith("answer_memory: rolled back")
    assert load_route_table(route_table).spec.routes["loyalty_account"].kind == "small_model"
    assert [e["event"] for e in registry.events()][-3:] == ["rolled_back", "promoted", "rolled_back"]
    assert "automatic" in registry.events()[-1]["reason"]


def test_a_candidate_no_better_than_the_incumbent_is_not_promoted(
    window: tuple[datetime, int], tmp_path: Path, route_table: Path
) -> None:
    start, start_ms = window
    items = list(traffic(60, seed=43, start_ms=start_ms, policy_share=1.0, run=uuid.uuid4().hex))
    # the large model already answers with the policy: the reviewer approves, the memory cannot add anything
    records = answered_by_large_model(items, {i.request.request_id: i.truth or "" for i in items})
    insert_audited(records)
    insert_feedback(reviewed(items, records, share=1.0, seed=5))
    registry = ModelRegistry(tmp_path / "registry")
    model_id = export_and_train(start, tmp_path / "data", registry, salt=f" ({uuid.uuid4().hex[:6]})")
    before = route_table.read_bytes()
    decision = promote(
        model_id, INTENTS, route_table, registry, shadow=None, policy=PromotionPolicy(require_shadow=False)
    )
    assert not decision.promote and "under the margin" in " ".join(decision.reasons)
    assert route_table.read_bytes() == before and registry.deployed().get(KIND) is None
    assert registry.events()[-1]["event"] == "promotion_refused"


async def test_a_router_retrained_on_route_corrections_is_shadowed_promoted_and_rolled_back_when_it_degrades(
    window: tuple[datetime, int], tmp_path: Path, route_table: Path
) -> None:
    start, start_ms = window
    run = uuid.uuid4().hex
    items = list(traffic(160, seed=45, start_ms=start_ms, policy_share=0.0, jargon_share=1.0, run=run))
    # one text unique to this run, so this run trains a classifier of its own: chDB keeps the 2031 rows of earlier
    # runs, and the router's live health counts the rows its classifier version routed since its promotion
    first = items[0].request
    items[0] = dataclasses.replace(items[0], request=first.model_copy(update={"text": f"{first.text} (ref {run[:8]})"}))
    current = ensure_trained()  # the model the router ships (trained here on a fresh clone)
    routed = {i.request.request_id: current.classify(i.request.text).intent for i in items}
    records = answered_by_large_model(items, routed=routed)
    insert_audited(records)
    insert_feedback(reviewed(items, records, share=1.0, seed=6))
    export_training(ExportSpec(task="router", since=start, until=start + timedelta(minutes=30)), tmp_path / "data")
    registry = ModelRegistry(tmp_path / "registry")
    model_id = train_and_register("router", tmp_path / "data", registry)
    evaluation = registry.card(model_id)["evaluation"]
    assert evaluation["candidate_accuracy"] > evaluation["incumbent_accuracy"] + 0.2
    # shadow: the candidate classifies live requests from the incumbent's embedding, as the router does
    registry.set_shadow({"candidate": model_id}, ROUTER_KIND)
    shadow = RouterShadow(registry.root, current.embedder)
    candidate = shadow.candidate()
    assert candidate is not None and candidate[0] == model_id
    live = list(traffic(60, seed=46, start_ms=start_ms + 1_800_000, policy_share=0.0, jargon_share=1.0, run=run))
    embeddings = current.embedder.embed([i.request.text for i in live])
    incumbent = current.classify_embeddings(embeddings)
    for item, mine, theirs in zip(live, incumbent, candidate[1].classify_embeddings(embeddings), strict=True):
        shadow.record(item.request.request_id, candidate, theirs, mine, current.version)
    await shadow.aclose()
    routes = {i.request.request_id: p.intent for i, p in zip(live, incumbent, strict=True)}
    live_records = answered_by_large_model(live, routed=routes)
    insert_audited(live_records)
    insert_feedback(reviewed(live, live_records, share=1.0, seed=7))
    comparison = route_shadow_comparison(model_id)
    assert comparison.examples >= 20 and comparison.candidate_accuracy > comparison.incumbent_accuracy + 0.1
    # promotion on the eval split and the shadow: the router's artifact is replaced, the shadow ends
    artifact = tmp_path / "intent"
    shutil.copytree(intent_artifact_dir(), artifact)
    before = (artifact / "intent_model.npz").read_bytes()
    policy = PromotionPolicy(min_eval_examples=5)
    decision = promote(model_id, [], route_table, registry, shadow=comparison, policy=policy, router_artifact=artifact)
    assert decision.promote, decision.reasons
    assert registry.shadow(ROUTER_KIND) is None
    promoted = IntentClassifier.load(artifact)
    assert promoted.classify("how many stars do I have left").intent == "loyalty_account"
    # its live routes are corrected by staff: the learning process rolls it back by itself
    watchdog = Watchdog(WatchdogConfig(min_reviewed=10), registry, route_table)
    assert watchdog.check() == []  # nothing routed by it yet
    served = list(traffic(15, seed=47, start_ms=start_ms + 2_700_000, policy_share=1.0, run=run))
    served_records = [
        r.model_copy(update={"route": r.route.model_copy(update={"classifier_version": promoted.version})})
        for r in answered_by_large_model(served, routed={i.request.request_id: "store_hours" for i in served})
    ]
    insert_audited(served_records)
    insert_feedback(reviewed(served, served_records, share=1.0, seed=8))
    done = watchdog.check()
    assert len(done) == 1 and done[0].startswith("router: rolled back"), done
    assert (artifact / "intent_model.npz").read_bytes() == before
    assert "automatic" in registry.events()[-1]["reason"] and registry.deployed()[ROUTER_KIND] is None
