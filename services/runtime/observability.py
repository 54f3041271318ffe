"""What every stage process exposes to operators: JSON logs carrying the request id, Prometheus metrics,
and an HTTP server with /healthz (ready only with an assignment and healthy dependencies) and /metrics."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; `extra={"request_id": ...}` and other extras become fields."""

    RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self.RESERVED})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "kafka", "httpx", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class StageMetrics:
    """The Prometheus series of one stage process, in its own registry."""

    def __init__(self, stage: str) -> None:
        self.registry = CollectorRegistry()
        labels = {"stage": stage}
        self.records_in = Counter(
            "switchyard_records_in", "Records consumed", registry=self.registry, labelnames=["stage"]
        ).labels(**labels)
        self.records_out = Counter(
            "switchyard_records_out", "Records produced downstream", registry=self.registry, labelnames=["stage"]
        ).labels(**labels)
        self.dead_lettered = Counter(
            "switchyard_dead_lettered",
            "Records sent to the stage's dead-letter topic, by error type",
            registry=self.registry,
            labelnames=["stage", "error_type"],
        )
        self.errors = Counter(
            "switchyard_errors",
            "Failures, by kind (transient retries included)",
            registry=self.registry,
            labelnames=["stage", "kind"],
        )
        self.processing_seconds = Histogram(
            "switchyard_processing_seconds",
            "Time from a record's fetch to its stage decision",
            registry=self.registry,
            labelnames=["stage"],
            buckets=LATENCY_BUCKETS,
        ).labels(**labels)
        self.batch_seconds = Histogram(
            "switchyard_batch_seconds",
            "Time to process, produce and commit one batch",
            registry=self.registry,
            labelnames=["stage"],
            buckets=LATENCY_BUCKETS,
        ).labels(**labels)
        self.batch_size = Histogram(
            "switchyard_batch_records",
            "Records per transaction (a group commit carries every record finished while the last one committed)",
            registry=self.registry,
            labelnames=["stage"],
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
        ).labels(**labels)
        self.consumer_lag = Gauge(
            "switchyard_consumer_lag",
            "Records behind the high watermark, per partition",
            registry=self.registry,
            labelnames=["stage", "topic", "partition"],
        )
        self.assigned_partitions = Gauge(
            "switchyard_assigned_partitions", "Partitions assigned", registry=self.registry, labelnames=["stage"]
        ).labels(**labels)
        self.stage = stage

    def dead_letter(self, error_type: str) -> None:
        self.dead_lettered.labels(stage=self.stage, error_type=error_type).inc()

    def error(self, kind: str) -> None:
        self.errors.labels(stage=self.stage, kind=kind).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


HealthCheck = Callable[[], Awaitable[tuple[bool, str]]]


async def serve_http(host: str, port: int, metrics: StageMetrics, health: HealthCheck) -> web.AppRunner:
    """Start /healthz and /metrics; returns the runner so the caller can clean it up."""

    async def healthz(_request: web.Request) -> web.Response:
        ok, detail = await health()
        return web.json_response(
            {"status": "ready" if ok else "not ready", "detail": detail, "ts": time.time()}, status=200 if ok else 503
        )

    async def metrics_page(_request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
