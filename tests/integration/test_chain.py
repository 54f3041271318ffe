"""The six processes end to end on the real broker and ClickHouse: every request answered exactly once on
`audited`, in order per store, counted once in ClickHouse; through SIGKILL and SIGTERM of any stage, poison
records, and a second replica joining and leaving."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka.admin import AdminClient

from services.infra.clickhouse import get_client
from services.runtime.deadletter import opened_original
from services.runtime.sealing import dead_letter_opener
from services.settings import Settings
from services.tools.seed import publish_stores, stores
from services.wire.codec import AvroCodec
from services.wire.models import Feedback, FeedbackKind
from tests.integration.chain_harness import CHAIN, Chain, duplicates, free_port


@pytest.fixture(scope="module")
def chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    log_dir = tmp_path_factory.mktemp("chain")
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "services.dev.stub_model", "--port", str(port), "--latency-ms", "20"],
        stdout=(log_dir / "stub.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    running = Chain(settings, codec, log_dir, f"http://127.0.0.1:{port}/v1")
    try:
        running.prepare()
        running.start_all()
        yield running
    finally:
        codes = running.stop_all()
        stub.terminate()
        stub.wait(10)
        running.tear_down(admin)
    assert all(code == 0 for code in codes.values()), f"SIGTERM did not exit 0: {codes}; logs in {log_dir}"


def answered_once_in_order(chain: Chain, run: str, expected: int) -> list[dict[str, Any]]:
    audited = chain.read("audited", until=expected, run=run)
    assert not duplicates(audited), f"answered more than once: {duplicates(audited)}"
    assert len(audited) == expected, f"{len(audited)} of {expected} answered; logs in {chain.log_dir}"
    by_store: dict[str, list[int]] = defaultdict(list)
    for record in audited:
        by_store[record["request"]["store_id"]].append(int(record["request"]["attributes"]["seq"]))
    assert all(seqs == sorted(seqs) for seqs in by_store.values()), "a store's requests were reordered"
    return audited


def clickhouse_counts(settings: Settings, request_ids: list[str], timeout_s: float = 30.0) -> tuple[int, int]:
    """(answers, stage_events) rows for these requests, once telemetry caught up (deduplicated: FINAL)."""
    client = get_client(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        counts = client.query(
            "SELECT (SELECT count() FROM switchyard.answers FINAL WHERE request_id IN {ids:Array(String)}),"
            " (SELECT count() FROM switchyard.stage_events FINAL WHERE request_id IN {ids:Array(String)})",
            parameters={"ids": request_ids},
        ).result_rows[0]
        answers, events = int(counts[0]), int(counts[1])
        if answers >= len(request_ids) or time.monotonic() > deadline:
            return answers, events
        time.sleep(0.5)


def test_500_requests_are_answered_exactly_once_in_store_order_and_counted_once_in_clickhouse(
    chain: Chain, settings: Settings
) -> None:
    requests = chain.requests(500, run="e2e")
    chain.publish(requests)
    audited = answered_once_in_order(chain, "e2e", 500)

    assert {r["request"]["request_id"] for r in audited} == {r.request_id for r in requests}
    first = audited[0]
    assert [t["stage"] for t in first["timings"]] == CHAIN
    assert all(t["received_at"] <= t["started_at"] <= t["finished_at"] for t in first["timings"])
    routes = {r["route"]["kind"] for r in audited}
    assert "WORKFLOW" in routes and routes & {"SMALL_MODEL", "LARGE_MODEL"}, routes
    assert all(r["route"]["route_table_version"] and "intent " in r["route"]["reason"] for r in audited)
    hours = next(r for r in audited if r["route"]["route_id"] == "workflow.store_hours")
    assert hours["answer"]["provider"] == "workflow" and "today" in hours["answer"]["text"]
    # a model route the governor let through (the 25% discount request is escalated before any model)
    model = next(r for r in audited if r["route"]["kind"] != "WORKFLOW" and r["governance"]["verdict"] != "ESCALATE")
    assert model["answer"]["provider"] != "workflow" and model["answer"]["tokens_out"] > 0
    # from the governor on, records carry the request text tokenised: the raw text stays in requests..stitched
    assert not any("jane.doe" in json.dumps({k: v for k, v in r.items() if k != "pii_vault"}) for r in audited)
    masked = next(r for r in audited if "<EMAIL_1>" in r["request"]["text"])
    assert masked["request"]["text"] == masked["governance"]["redacted_text"] and masked["pii_vault"] is not None
    # the governor's injection score of each request, with its classifier's version, reaches `audited`, where the
    # stitcher's customer history takes it for the interaction's item instead of the governor embedding it again
    scores = [r["governance"]["request_injection_score"] for r in audited]
    assert all(s and len(s["classifier"]) == 16 and 0.0 <= s["score"] <= 1.0 for s in scores), scores[:3]
    assert len({s["classifier"] for s in scores}) == 1
    # the router's embedding of a (short) request text rides to the governor and no further; it is made for every
    # model route (the knowledge search and the governor read it) and spared where the cheap intent model was sure
    # of a workflow request
    routed = chain.read("routed", until=500, run="e2e")
    model_routed = [r for r in routed if r["route"]["kind"] != "WORKFLOW"]
    assert model_routed and all(r.get("request_embedding") for r in model_routed)
    stitched = chain.read("stitched", until=500, run="e2e")
    passed = [r["request_embedding"] for r in stitched if r.get("request_embedding")]
    assert len(model_routed) <= len(passed) <= 500
    assert all(len(e["vector"]) == 384 * 4 and 0 < e["tokens"] <= 128 for e in passed)
    # a workflow request the workflow declined (the return summary) goes to the model route's knowledge search,
    # which embeds its text (the router made no vector for a workflow) and hands the vector on to the governor
    workflow_ids = {r["request"]["request_id"] for r in routed if r["route"]["kind"] == "WORKFLOW"}
    declined = [r for r in stitched if r["request"]["request_id"] in workflow_ids and r["route"]["kind"] != "WORKFLOW"]
    assert declined and all(r.get("request_embedding") for r in declined), len(declined)
    assert "request_embedding" not in first
    assert clickhouse_counts(settings, [r.request_id for r in requests]) == (500, 500 * len(CHAIN))
    port = chain.launcher.ports["router/0"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    counted = next(
        line for line in metrics.splitlines() if line.startswith('switchyard_records_in_total{stage="router"}')
    )
    assert float(counted.split()[-1]) >= 500
    assert "switchyard_processing_seconds_bucket" in metrics and "switchyard_consumer_lag" in metrics


@pytest.mark.parametrize("stage", CHAIN)
def test_a_stage_killed_mid_stream_loses_nothing_and_answers_nothing_twice(
    chain: Chain, settings: Settings, stage: str
) -> None:
    run = f"crash-{stage}"
    requests = chain.kill_mid_stream(stage, run)
    answered_once_in_order(chain, run, 200)
    assert clickhouse_counts(settings, [r.request_id for r in requests]) == (200, 200 * len(CHAIN))


def test_sigterm_finishes_the_batch_commits_and_exits_zero(chain: Chain) -> None:
    requests = chain.requests(100, run="sigterm")
    publisher = threading.Thread(target=chain.publish, args=(requests, 100.0))
    publisher.start()
    time.sleep(0.5)
    assert chain.kill("governor/0", signal.SIGTERM) == 0
    chain.wait_ready(chain.start("governor", "0"))
    publisher.join()
    answered_once_in_order(chain, "sigterm", 100)


def test_two_replicas_share_a_stage_and_one_leaving_hands_its_partitions_over(chain: Chain) -> None:
    second = chain.start("stitcher", "1")
    chain.wait_ready(second)
    assert chain.healthz("stitcher/0")[0] == 200, "both replicas hold partitions"
    requests = chain.requests(200, run="scale")
    publisher = threading.Thread(target=chain.publish, args=(requests, 100.0))
    publisher.start()
    time.sleep(1.0)
    assert chain.kill(second, signal.SIGTERM) == 0
    publisher.join()
    answered_once_in_order(chain, "scale", 200)
    status, body = chain.healthz("stitcher/0")
    assert status == 200 and "12 partitions assigned" in body


def dead_letters(chain: Chain, stage: str, expected: int) -> list[dict[str, Any]]:
    return chain.read(f"dlq.{stage}", until=expected, timeout_s=60)


def test_poison_records_go_to_the_dead_letter_topic_with_a_reason_and_the_rest_are_answered(
    chain: Chain, codec: AvroCodec, settings: Settings
) -> None:
    before = chain.end_offsets("dlq.router")
    good = chain.requests(20, run="poison")
    chain.publish(good[:10])
    chain.publish_raw("requests", b"\x00\x01 not avro at all")
    feedback = Feedback(
        feedback_id="f-1", request_id="r-1", kind=FeedbackKind.RATING, rating=5, author="test", created_at=0
    )
    chain.publish_raw("requests", codec.encode("Feedback", feedback.model_dump()))
    huge = chain.requests(1, run="poison-huge")[0].model_copy(update={"text": "x" * (5 << 20)})
    chain.publish_raw("requests", codec.encode("Request", huge.model_dump()))
    marker = "\u2603" * 8
    broken = codec.encode("Request", good[10].model_copy(update={"text": marker}).model_dump())
    chain.publish_raw("requests", broken.replace(marker.encode(), b"\xff" * len(marker.encode())))
    chain.publish(good[11:])

    answered_once_in_order(chain, "poison", 19)
    letters = [r for r in dead_letters(chain, "router", before + 4)][before:]
    assert len(letters) == 4, letters
    kinds = {letter["error_type"] for letter in letters}
    assert {"BadMarkerError", "WrongRecordTypeError", "RecordTooLarge"} <= kinds
    assert all(
        letter["reason"] and letter["original"] and letter["topic"] == chain.topic("requests") for letter in letters
    )
    assert any(len(letter["original"]) > 5 << 20 for letter in letters)
    # every original is sealed to the operator's key and opens to the bytes that were consumed
    opener = dead_letter_opener(chain.settings)
    assert all(letter["original_sealed_with"] == opener.key_id for letter in letters)
    assert b"\x00\x01 not avro at all" in [opened_original(letter, opener) for letter in letters]
    # ClickHouse holds the sealed bytes too; `switchyard dead-letters show --open` reads them in clear
    [poison] = [letter for letter in letters if letter["error_type"] == "BadMarkerError"]
    client, deadline = get_client(settings), time.monotonic() + 60
    sql = "SELECT original FROM dead_letters WHERE topic = {t:String} AND offset = {o:UInt64}"
    where = {"t": poison["topic"], "o": poison["offset"]}
    while not (rows := client.query(sql, parameters=where, column_formats={"original": "bytes"}).result_rows):
        assert time.monotonic() < deadline, "the dead letter never reached ClickHouse"
        time.sleep(0.5)
    assert b"not avro at all" not in rows[0][0]
    shown = subprocess.run(
        [sys.executable, "-m", "services.cli", "dead-letters", "show", "--stage", "router", "--limit", "200", "--open"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    opened = [json.loads(line) for line in shown.stdout.splitlines()]
    [entry] = [e for e in opened if e["topic"] == poison["topic"] and e["offset"] == poison["offset"]]
    assert base64.b64decode(entry["original"]["base64"]) == b"\x00\x01 not avro at all"


def test_a_record_that_makes_a_stage_raise_is_dead_lettered_by_that_stage(chain: Chain, codec: AvroCodec) -> None:
    broken_store = stores(1, updated_at=0)[0].model_copy(update={"store_id": "9999", "timezone": "Mars/Olympus_Mons"})
    publish_stores(chain.settings.kafka_bootstrap, codec, [broken_store], chain.topic("ref.stores"))
    time.sleep(1.0)
    before = chain.end_offsets("dlq.stitcher")
    request = chain.requests(1, run="raise")[0].model_copy(update={"store_id": "9999", "text": "When do you open?"})
    chain.publish([request])
    after = chain.requests(3, run="raise-after")
    chain.publish(after)
    letters = dead_letters(chain, "stitcher", before + 1)[before:]
    assert [letter["request_id"] for letter in letters] == [request.request_id]
    assert "ZoneInfoNotFoundError" in letters[0]["reason"] or letters[0]["error_type"] == "ZoneInfoNotFoundError"
    answered_once_in_order(chain, "raise-after", 3)
