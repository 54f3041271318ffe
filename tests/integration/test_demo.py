"""`make demo` as this issue defines it: one POS request goes through Kafka into ClickHouse, exactly once,
and the sink's consumer group commits past it only after the insert."""

from __future__ import annotations

import pytest
from confluent_kafka import Consumer, TopicPartition

from services import demo
from services.infra.clickhouse import get_client
from services.settings import Settings


def test_demo_moves_one_request_from_kafka_into_clickhouse_and_commits_after_the_insert(
    settings: Settings, kafka: str, clickhouse: str, capsys: pytest.CaptureFixture[str]
) -> None:
    row = demo.run(settings)

    assert row["store_id"] == "0417"
    assert row["channel"] == "POS"
    count = get_client(settings).command(
        "SELECT count() FROM switchyard.requests FINAL WHERE request_id = {rid:String}",
        parameters={"rid": row["request_id"]},
    )
    assert count == 1
    check = Consumer({"bootstrap.servers": kafka, "group.id": demo.SINK_GROUP})
    committed = check.committed([TopicPartition(demo.REQUESTS_TOPIC, row["partition"])], timeout=10)
    check.close()
    assert committed[0].offset == row["offset"] + 1
    printed = capsys.readouterr().out
    assert "produced" in printed and "stored" in printed and row["request_id"] in printed
