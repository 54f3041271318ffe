"""Monitoring in ClickHouse: the per-minute materialized views agree with a direct aggregate over the raw rows
they were fed, and the lag sampler reads each stage's committed offsets against the topic's end."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.infra.clickhouse import get_client
from services.runtime.kafka_clients import confluent_config
from services.settings import Settings
from services.telemetry.lag import LagSampler, stage_inputs
from services.telemetry.rows import (
    ANSWER_COLUMNS,
    FEEDBACK_COLUMNS,
    RULE_VERDICT_COLUMNS,
    STAGE_EVENT_COLUMNS,
    answer_row,
    feedback_row,
    rule_verdict_rows,
    stage_event_rows,
)
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import running_chain
from tests.integration.conftest import delete_topics, wait_for_topic
from tests.unit.chain_records import answered

STAGES = ["router", "stitcher", "governor", "answerer", "auditor"]
WORK_CATEGORIES = {"routing", "context_stitching", "data_prep", "governance", "policy", "audit"}
VIEW_AND_RAW_WORK_SQL = """
    SELECT
        (SELECT groupArray((category, round(ms, 6))) FROM (
            SELECT category, sum(work_ms) AS ms FROM switchyard.orchestration_work
            WHERE minute >= {since:DateTime} AND minute < {until:DateTime} GROUP BY category ORDER BY category)),
        (SELECT groupArray((category, round(ms, 6))) FROM (
            SELECT category, sum(ms) AS ms FROM (
                SELECT category, ms FROM switchyard.stage_events
                ARRAY JOIN mapKeys(work_ms) AS category, mapValues(work_ms) AS ms
                WHERE started_at >= {since:DateTime} AND started_at < {until:DateTime}
                UNION ALL
                SELECT 'monitoring' AS category, decode_ms + insert_ms AS ms FROM switchyard.telemetry_batches
                WHERE flushed_at >= {since:DateTime} AND flushed_at < {until:DateTime})
            GROUP BY category ORDER BY category))"""


def audited(n: int, store: str, minute_us: int) -> dict[str, Any]:
    """An audited record with varied latencies, routes, verdicts and findings, timed inside one minute."""
    record = answered(f"{store}-{n}", store_id=store).model_dump(mode="json")
    record["route"]["route_id"] = ["model.general", "workflow.store_hours", "model.large"][n % 3]
    record["answer"].update(tokens_in=10 + n, tokens_out=n % 7, cost_usd=0.0001 * n, latency_ms=3.0 * n)
    record["answer"]["failover"] = ["primary: timeout", "backup"] if n % 5 == 0 else []
    record["governance"]["verdict"] = ["ALLOW", "MASK", "ESCALATE", "BLOCK"][n % 4]
    record["governance"]["findings"] = [
        {"rule_id": f"{store}.rule{n % 2}", "rule_version": "1", "kind": "policy.x", "action": "escalate",
         "detail": "d", "inputs": {}}
    ] if n % 3 else []  # fmt: skip
    start = minute_us + (n % 50) * 1_000_000
    record["request"]["created_at"] = start // 1000
    record["timings"] = [
        {"stage": stage, "received_at": start + k * 10_000, "started_at": start + k * 10_000 + 100 * n,
         "finished_at": start + k * 10_000 + 100 * n + 1000 * ((n * (k + 3)) % 17 + 1)}
        for k, stage in enumerate(STAGES)
    ]  # fmt: skip
    record["audit"] = {"audit_id": "a", "chain_key": store, "prev_hash": "", "hash": f"h{n}", "seq": n,
                       "recorded_at": start + 900_000}  # fmt: skip
    return record


@pytest.fixture(scope="module")
def fed(settings: Settings, clickhouse: str) -> Iterator[tuple[Client, str]]:
    """Three inserts (as three telemetry batches would be) of 120 requests for a store of this test only."""
    client = get_client(settings)
    store = f"mv-{uuid.uuid4().hex[:8]}"
    minute_us = (int(time.time()) // 60 - 3 * 24 * 60) * 60 * 1_000_000  # three days ago: off the live dashboard
    records = [audited(n, store, minute_us + (n % 2) * 60_000_000) for n in range(1, 121)]
    for batch in (records[:40], records[40:90], records[90:]):
        client.insert("stage_events", [r for a in batch for r in stage_event_rows(a)], column_names=STAGE_EVENT_COLUMNS)
        client.insert("answers", [answer_row(a) for a in batch], column_names=ANSWER_COLUMNS)
        client.insert("rule_verdicts", [r for a in batch for r in rule_verdict_rows(a)],
                      column_names=RULE_VERDICT_COLUMNS)  # fmt: skip
        feedback = [
            {"feedback_id": f"{a['request']['request_id']}-f", "request_id": a["request"]["request_id"],
             "kind": "RATING", "rating": 1 + n % 5, "corrected_text": None, "corrected_intent": None,
             "outcome": store, "author": "staff", "created_at": a["request"]["created_at"], "attributes": {}}
            for n, a in enumerate(batch)
        ]  # fmt: skip
        client.insert("feedback", [feedback_row(f) for f in feedback], column_names=FEEDBACK_COLUMNS)
    yield client, store


def rows(client: Client, sql: str, store: str) -> list[tuple[Any, ...]]:
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in row)
            for row in client.query(sql, parameters={"store": store}).result_rows]  # fmt: skip


def test_stage_latency_tokens_and_cost_per_minute_agree_with_the_raw_stage_events(fed: tuple[Client, str]) -> None:
    client, store = fed
    view = rows(client, """
        SELECT minute, stage, route, sum(events), sum(failed), sum(duration_ms_sum), sum(prep_ms_sum),
               quantilesMerge(0.5, 0.9, 0.95, 0.99)(duration_ms_q), sum(tokens_in), sum(tokens_out), sum(cost_usd)
        FROM stage_minute WHERE store_id = {store:String} GROUP BY minute, stage, route
        ORDER BY minute, stage, route""",
        store)  # fmt: skip
    raw = rows(client, """
        SELECT toStartOfMinute(started_at) AS minute, stage, route, count(), countIf(outcome != 'ok'), sum(duration_ms),
               sum(greatest(dateDiff('microsecond', received_at, started_at), 0) / 1000.0),
               quantiles(0.5, 0.9, 0.95, 0.99)(duration_ms), sum(tokens_in), sum(tokens_out), sum(cost_usd)
        FROM stage_events WHERE store_id = {store:String} GROUP BY minute, stage, route
        ORDER BY minute, stage, route""",
        store)  # fmt: skip
    assert len(view) == 2 * len(STAGES) * 3 and view == raw


def test_answers_per_minute_agree_with_the_raw_answers_by_route_provider_and_verdict(fed: tuple[Client, str]) -> None:
    client, store = fed
    view = rows(client, """
        SELECT route, verdict, sum(answers), sum(failovers), sum(end_to_end_ms_sum),
               quantilesMerge(0.5, 0.99)(end_to_end_ms_q), sum(model_ms_sum), sum(cost_usd)
        FROM answer_minute WHERE store_id = {store:String} GROUP BY route, verdict ORDER BY route, verdict""",
        store)  # fmt: skip
    raw = rows(client, """
        SELECT route, verdict, count(), countIf(length(failover) > 0), sum(end_to_end_ms),
               quantiles(0.5, 0.99)(end_to_end_ms), sum(model_ms), sum(cost_usd)
        FROM answers WHERE store_id = {store:String} GROUP BY route, verdict ORDER BY route, verdict""",
        store)  # fmt: skip
    assert view == raw and sum(r[3] for r in view) == 24  # every fifth request failed over


def test_verdicts_by_rule_and_feedback_per_minute_agree_with_their_raw_rows(fed: tuple[Client, str]) -> None:
    client, store = fed
    rules_view = rows(
        client,
        """SELECT rule_id, action, sum(matches) FROM rule_minute
        WHERE startsWith(rule_id, {store:String}) GROUP BY rule_id, action ORDER BY rule_id""",
        store,
    )
    rules_raw = rows(
        client,
        """SELECT rule_id, action, count() FROM rule_verdicts
        WHERE startsWith(rule_id, {store:String}) GROUP BY rule_id, action ORDER BY rule_id""",
        store,
    )
    assert rules_view == rules_raw and sum(r[2] for r in rules_view) == 80
    feedback_view = rows(
        client,
        """SELECT sum(events), sum(rated), sum(rating_sum), sum(low_ratings)
        FROM feedback_minute WHERE outcome = {store:String}""",
        store,
    )
    feedback_raw = rows(
        client,
        """SELECT count(), countIf(rating IS NOT NULL), sum(rating), countIf(rating <= 2)
        FROM feedback WHERE outcome = {store:String}""",
        store,
    )
    assert feedback_view == feedback_raw == [(120, 120, 360, 48)]


def test_the_lag_sampler_reports_each_stage_behind_the_end_of_its_input(
    settings: Settings, admin: AdminClient, kafka: str
) -> None:
    prefix = f"lag-{uuid.uuid4().hex[:8]}."
    topic = f"{prefix}requests"
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(30)
    wait_for_topic(admin, topic)
    try:
        producer = Producer(confluent_config())
        for n in range(7):
            producer.produce(topic, value=b"x", partition=n % 2)
        assert producer.flush(30) == 0
        consumer = Consumer(confluent_config({"group.id": f"{prefix}switchyard-router"}))
        consumer.commit(offsets=[TopicPartition(topic, 0, 3), TopicPartition(topic, 1, 1)], asynchronous=False)
        consumer.close()
        sampler = LagSampler(settings.model_copy(update={"topic_prefix": prefix}), stage_inputs())
        sample = {(row[1], row[4]): (row[5], row[6], row[7]) for row in sampler.sample()}
        assert sample == {("router", 0): (3, 4, 1), ("router", 1): (1, 3, 2)}  # (committed, end, lag)
    finally:
        delete_topics(admin, [topic])


def test_real_traffic_measures_every_orchestration_category_and_the_split_view_agrees_with_the_raw_work(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path: Path
) -> None:
    client = get_client(settings)
    since = datetime.now(UTC).replace(second=0, microsecond=0)
    with running_chain(settings, codec, admin, tmp_path) as chain:
        run = uuid.uuid4().hex[:8]
        requests = chain.requests(30, run)
        chain.publish(requests)
        assert len(chain.read("audited", until=len(requests), run=run)) == len(requests)
        ids = [r.request_id for r in requests]
        deadline = time.monotonic() + 30
        while True:  # until telemetry wrote every stage's row of this run
            written = client.query(
                "SELECT count() FROM switchyard.stage_events WHERE request_id IN {ids:Array(String)}",
                parameters={"ids": ids},
            ).result_rows[0][0]
            if written >= len(ids) * len(STAGES) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    measured_by_run = client.query(
        "SELECT category, sum(ms) FROM switchyard.stage_events FINAL"
        " ARRAY JOIN mapKeys(work_ms) AS category, mapValues(work_ms) AS ms"
        " WHERE request_id IN {ids:Array(String)} GROUP BY category",
        parameters={"ids": ids},
    ).result_rows
    per_category = {str(category): float(ms) for category, ms in measured_by_run}
    assert set(per_category) == WORK_CATEGORIES and all(ms > 0 for ms in per_category.values()), per_category
    until = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
    window = {"since": since.replace(tzinfo=None), "until": until.replace(tzinfo=None)}
    deadline = time.monotonic() + 30
    while True:  # other writers may be mid-insert: the view and the raw rows agree once they settle
        view, raw = client.query(VIEW_AND_RAW_WORK_SQL, parameters=window).result_rows[0]
        if view == raw or time.monotonic() > deadline:
            break
        time.sleep(1)
    measured = dict(view)
    assert all(measured.get(category, 0) > 0 for category in [*WORK_CATEGORIES, "monitoring"]), measured
    assert view == raw


def test_two_stores_rows_for_one_request_id_are_both_kept(settings: Settings, clickhouse: str) -> None:
    """Clients choose request ids: store B's request with store A's id must not replace A's stage and verdict rows
    when ClickHouse merges (the tables deduplicate on the store and the request id)."""
    client = get_client(settings)
    request_id, minute_us = f"shared-{uuid.uuid4().hex[:8]}", (int(time.time()) // 60 - 3 * 24 * 60) * 60_000_000
    stores = [f"mv-a-{uuid.uuid4().hex[:6]}", f"mv-b-{uuid.uuid4().hex[:6]}"]
    for store in stores:
        record = audited(1, store, minute_us)
        record["request"]["request_id"] = request_id
        client.insert("stage_events", stage_event_rows(record), column_names=STAGE_EVENT_COLUMNS)
        client.insert("rule_verdicts", rule_verdict_rows(record), column_names=RULE_VERDICT_COLUMNS)
    client.command("OPTIMIZE TABLE switchyard.stage_events FINAL")
    client.command("OPTIMIZE TABLE switchyard.rule_verdicts FINAL")
    for table in ("stage_events", "rule_verdicts"):
        kept = client.query(
            f"SELECT DISTINCT store_id FROM switchyard.{table} FINAL WHERE request_id = {{id:String}}"
            " ORDER BY store_id",
            parameters={"id": request_id},
        ).result_rows
        assert [store for (store,) in kept] == sorted(stores), table
