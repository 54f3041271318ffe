"""Publishes every provider call the answerer makes to `model.calls`, where the health app turns them into
provider health. Fire and forget, at most once: a lost event costs one sample of a statistic, never an
answer, so the answer path never waits for it."""

from __future__ import annotations

import asyncio
import logging
import uuid

from aiokafka import AIOKafkaProducer

from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import CallRecord
from services.runtime.kafka_clients import aiokafka_config
from services.settings import Settings
from services.wire.codec import AvroCodec

log = logging.getLogger("switchyard.answerer")


class ModelCallPublisher:
    def __init__(self, settings: Settings, codec: AvroCodec) -> None:
        self.topic = settings.topic("model.calls")
        self.codec = codec
        self.bootstrap = settings.kafka_bootstrap
        self._producer: AIOKafkaProducer | None = None
        self.dropped = 0
        self._pending: set[asyncio.Future[object]] = set()

    async def open(self) -> None:
        """Connect the producer (inside the running event loop, as aiokafka requires)."""
        self._producer = AIOKafkaProducer(**aiokafka_config(bootstrap_servers=self.bootstrap, acks=1, linger_ms=20))
        await self._producer.start()

    async def start(self, registry: ProviderRegistry) -> None:
        await self.open()
        for provider in registry.providers.values():
            provider.observers.append(self.publish)

    async def stop(self) -> None:
        if self._pending:
            await asyncio.wait(self._pending, timeout=5)
        if self._producer is not None:
            await self._producer.stop()

    def publish(self, call: CallRecord) -> None:
        record = {
            "call_id": str(uuid.uuid4()),
            "request_id": call.request_id,
            "provider": call.provider,
            "model": call.model,
            "started_at": call.started_at_us,
            "latency_ms": call.latency_ms,
            "ttft_ms": None,
            "tokens_in": call.tokens_in,
            "tokens_out": call.tokens_out,
            "outcome": call.outcome,
            "error": call.error,
        }
        if self._producer is None:
            self.dropped += 1
            return
        sent = asyncio.ensure_future(
            self._producer.send(self.topic, self.codec.encode("ModelCall", record), key=call.provider.encode())
        )
        self._pending.add(sent)
        sent.add_done_callback(self._done)

    def _done(self, sent: asyncio.Future[object]) -> None:
        self._pending.discard(sent)
        if sent.cancelled() or sent.exception() is not None:
            self.dropped += 1
            log.warning(
                "model call event dropped",
                extra={"error": repr(sent.exception() if not sent.cancelled() else "cancelled")},
            )
