"""A minimal faust-streaming worker for the integration test: counts records per key in a table (backed by
a changelog topic on the real broker) and publishes 'key:count' for each record it sees.
Topic names and the app id come from the environment so each test run is isolated."""

from __future__ import annotations

import os
from typing import Any

import faust

from services.runtime.kafka_clients import faust_credentials

app = faust.App(
    os.environ["FAUST_APP_ID"],
    broker=f"kafka://{os.environ['FAUST_BROKER']}",
    broker_credentials=faust_credentials(),
    store="memory://",
    topic_partitions=1,
    topic_replication_factor=1,
    web_enabled=False,
)
source = app.topic(os.environ["FAUST_IN"], key_serializer="raw", value_serializer="raw")
sink = app.topic(os.environ["FAUST_OUT"], key_serializer="raw", value_serializer="raw")
counts = app.Table("counts", default=int, partitions=1)


@app.agent(source)
async def count(stream: Any) -> None:
    async for key, _value in stream.items():
        counts[key] += 1
        await sink.send(key=key, value=f"{key.decode()}:{counts[key]}".encode())


if __name__ == "__main__":
    app.main()
