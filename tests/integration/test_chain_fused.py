"""The five stages fused in one process (`switchyard run chain`) on the real broker and ClickHouse: the same
answers as five processes, every stage's record still on its topic exactly once, nothing lost or answered twice
through SIGKILL, and a stage that raises dead-letters the record on its own dead-letter topic."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from confluent_kafka.admin import AdminClient

from services.settings import Settings
from services.tools.seed import publish_stores, stores
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import CHAIN, Chain, running_chain
from tests.integration.test_chain import answered_once_in_order, clickhouse_counts


@pytest.fixture(scope="module")
def fused(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Chain]:
    log_dir = tmp_path_factory.mktemp("fused")
    with running_chain(settings, codec, admin, log_dir, model_latency_ms=20, fused=True) as running:
        yield running
    assert all(code == 0 for code in running.exit_codes.values()), f"SIGTERM: {running.exit_codes}; logs in {log_dir}"


def test_fused_stages_answer_once_in_order_and_write_every_stages_record_once(fused: Chain, settings: Settings) -> None:
    assert "router/0" not in fused.launcher.processes and "chain/0" in fused.launcher.processes
    requests = fused.requests(300, run="fused")
    fused.publish(requests)
    audited = answered_once_in_order(fused, "fused", 300)
    assert [t["stage"] for t in audited[0]["timings"]] == CHAIN
    for topic in ("routed", "stitched", "governed", "answered"):
        counts = Counter(r["request"]["request_id"] for r in fused.read(topic, until=300, run="fused"))
        assert set(counts) == {r.request_id for r in requests} and max(counts.values()) == 1, topic
    governed = fused.read("governed", until=300, run="fused")
    # from the governor on the request text is tokenised; the sealed entry rides on to audited, for the edge
    assert not any("jane.doe" in r["request"]["text"] for r in governed)
    masked = next(r for r in governed if "<EMAIL_1>" in r["request"]["text"])
    assert masked["pii_vault"] is not None, "the sealed entry rides in the governed record"
    [masked_audited] = [r for r in audited if r["request"]["request_id"] == masked["request"]["request_id"]]
    assert masked_audited["pii_vault"] == masked["pii_vault"] and "request_embedding" not in audited[0]
    assert clickhouse_counts(settings, [r.request_id for r in requests]) == (300, 300 * len(CHAIN))


def test_the_fused_process_killed_mid_stream_loses_nothing_and_answers_nothing_twice(fused: Chain) -> None:
    fused.kill_mid_stream("chain", "fused-crash")
    answered_once_in_order(fused, "fused-crash", 200)


def test_a_stage_that_raises_inside_the_fused_process_dead_letters_on_its_own_topic(
    fused: Chain, codec: AvroCodec
) -> None:
    broken_store = stores(1, updated_at=0)[0].model_copy(update={"store_id": "9999", "timezone": "Mars/Olympus_Mons"})
    publish_stores(fused.settings.kafka_bootstrap, codec, [broken_store], fused.topic("ref.stores"))
    time.sleep(1.0)
    before = fused.end_offsets("dlq.stitcher")
    request = fused.requests(1, run="fused-raise")[0].model_copy(
        update={"store_id": "9999", "text": "When do you open?"}
    )
    fused.publish([request])
    fused.publish(fused.requests(3, run="fused-after"))
    letters = fused.read("dlq.stitcher", until=before + 1, timeout_s=60)[before:]
    assert [letter["request_id"] for letter in letters] == [request.request_id]
    assert letters[0]["topic"] == fused.topic("routed"), "the letter holds what the stitcher read: the routed record"
    routed = [r for r in fused.read("routed", until=1, run="fused-raise")]
    assert [r["request"]["request_id"] for r in routed] == [request.request_id], "the router's record is kept"
    answered_once_in_order(fused, "fused-after", 3)
