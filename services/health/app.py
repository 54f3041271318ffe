"""The provider health app: a faust-streaming worker over `model.calls`.

Per provider it keeps a sliding window of step-long buckets (calls, errors, a bounded latency sample) in a
changelogged table; every step it reads the buckets covering the last window,
evaluates the window with hysteresis (services.health.state) and publishes the provider's ProviderHealth to
the compacted `model.health` topic. Providers that are DOWN receive no traffic, so the app probes them
itself (one small completion per step, through the same provider layer) until they recover.

usage: python -m services.health   (SWITCHYARD_HEALTH_WINDOW_S, _STEP_S, _P95_LIMIT_MS tune it)
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import faust

from services.health.state import HealthPolicy, ProviderHealthState, WindowFigures, figures
from services.runtime.kafka_clients import faust_credentials
from services.runtime.stage import now_us
from services.settings import get_settings
from services.wire.codec import AvroCodec
from services.wire.models import ModelCall, ProviderHealth, ProviderState
from services.wire.schema_registry import SchemaRegistry

log = logging.getLogger("switchyard.health")
Prober = Callable[[str], Awaitable[None]]


settings = get_settings()
codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
WINDOW_S = settings.health_window_s
STEP_S = settings.health_step_s
POLICY = HealthPolicy(
    latency_p95_limit_ms=settings.health_p95_limit_ms,
    error_rate_limit=settings.health_error_rate_limit,
    min_calls=settings.health_min_calls,
)

DATA_DIR = settings.var_dir / "health" / settings.topic("switchyard-health")
DATA_DIR.parent.mkdir(parents=True, exist_ok=True)  # faust creates only the last level

app = faust.App(
    settings.topic("switchyard-health"),
    broker=f"kafka://{settings.kafka_bootstrap}",
    broker_credentials=faust_credentials(settings),
    store="memory://",
    topic_partitions=3,  # co-partitioned with model.calls (topics/side.yaml)
    topic_replication_factor=1,
    web_enabled=False,
    datadir=str(DATA_DIR),
)
calls_topic = app.topic(settings.topic("model.calls"), key_serializer="raw", value_serializer="raw")
health_topic = app.topic(settings.topic("model.health"), key_serializer="raw", value_serializer="raw")


# provider -> {bucket start (s, as text): [calls, errors, latency sample]}: a sliding window made of buckets of
# one step, in a changelogged table. (Faust's own windowed tables read windows only inside a stream
# iteration, and the timer that evaluates health has none.)
window_stats = app.Table("provider_window_stats", default=dict, partitions=3)
SAMPLES_PER_BUCKET = 100


def add_call(stats: dict[str, list[Any]], at: float, latency_ms: float, failed: bool) -> dict[str, list[Any]]:
    """A copy of a provider's buckets with one call added and buckets older than the window dropped."""
    bucket = str(int(at // STEP_S * STEP_S))
    kept = {start: values for start, values in stats.items() if float(start) > at - WINDOW_S - STEP_S}
    calls, errors, samples = kept.get(bucket, [0, 0, []])
    kept[bucket] = [calls + 1, errors + int(failed), [*samples, latency_ms][-SAMPLES_PER_BUCKET:]]
    return kept


def window_of(stats: dict[str, list[Any]], now: float) -> WindowFigures:
    """Figures over the buckets that started within the last WINDOW_S seconds."""
    recent = [values for start, values in stats.items() if float(start) > now - WINDOW_S]
    samples = [latency for _calls, _errors, bucket in recent for latency in bucket]
    calls = sum(values[0] for values in recent)
    errors = sum(values[1] for values in recent)
    window = figures(samples, errors)
    return WindowFigures(calls, errors, window.p50_ms, window.p95_ms)


states: dict[str, ProviderHealthState] = {}
models: dict[str, str] = {}
probers: list[Prober] = []
probing: dict[str, asyncio.Future[None]] = {}


@app.agent(calls_topic)
async def observe(stream: Any) -> None:
    async for raw in stream:
        try:
            call = ModelCall.model_validate(codec.decode(raw, reader="ModelCall")[1])
        except Exception as error:  # a bad event is skipped and logged; health goes on
            log.warning("model call event rejected", extra={"error": str(error)})
            continue
        provider = call.provider
        models[provider] = call.model
        states.setdefault(provider, ProviderHealthState(POLICY))
        failed = call.outcome.value != "OK"
        window_stats[provider] = add_call(dict(window_stats[provider]), time.time(), call.latency_ms, failed)


def current_window(provider: str) -> WindowFigures:
    return window_of(dict(window_stats.get(provider) or {}), time.time())


def health_record(provider: str, state: ProviderHealthState, window: WindowFigures) -> ProviderHealth:
    return ProviderHealth(
        provider=provider,
        model=models.get(provider, ""),
        healthy=state.state != ProviderState.DOWN,
        state=state.state,
        p50_ms=window.p50_ms,
        p95_ms=window.p95_ms,
        error_rate=window.error_rate,
        window_seconds=int(WINDOW_S),
        observed_at=now_us(),
        reason=state.reason,
    )


def forget_probe(provider: str, _done: asyncio.Future[None]) -> None:
    probing.pop(provider, None)


@app.timer(STEP_S)  # type: ignore[untyped-decorator]
async def publish_health() -> None:
    for provider, state in list(states.items()):
        if state.state == ProviderState.DOWN and provider not in probing:
            # in the background: a slow provider must not stall every other provider's evaluation
            for probe in probers:
                probing[provider] = asyncio.ensure_future(probe(provider))
                probing[provider].add_done_callback(functools.partial(forget_probe, provider))
        window = current_window(provider)
        before = state.state
        state.evaluate(window, WINDOW_S)
        record = health_record(provider, state, window)
        await health_topic.send(key=provider.encode(), value=codec.encode("ProviderHealth", record.model_dump()))
        if state.state != before:
            log.warning(
                "provider state changed",
                extra={"provider": provider, "from": before.value, "to": state.state.value, "reason": state.reason},
            )


@app.task  # type: ignore[untyped-decorator]
async def start_probes() -> None:
    """Probe DOWN providers through the answerer's own provider configuration: one tiny completion each step,
    bypassing the circuit breaker, reported to model.calls like any call. In-process models are not probed:
    they do not go down over a network."""
    from services.answerer.call_events import ModelCallPublisher
    from services.answerer.local_model import LocalGGUFProvider
    from services.answerer.registry import answerer_registry
    from services.answerer.resilience import CallRecord
    from services.runtime.faults import StageError

    registry = answerer_registry(settings)
    publisher = ModelCallPublisher(settings, codec)
    await publisher.open()

    async def probe(name: str) -> None:
        if name not in registry.providers:
            return
        guarded = registry[name]
        if isinstance(guarded.provider, LocalGGUFProvider):
            return
        started, started_at = time.perf_counter(), now_us()
        outcome, error, tokens = "OK", "", (0, 0)
        try:
            answer = await guarded.provider.complete([{"role": "user", "content": "health probe"}], max_tokens=1)
            tokens = (answer.tokens_in, answer.tokens_out)
        except StageError as fault:
            outcome, error = "ERROR", fault.reason
        latency_ms = (time.perf_counter() - started) * 1000
        publisher.publish(CallRecord(name, guarded.model, None, started_at, latency_ms, *tokens, outcome, error))

    probers.append(probe)


def main() -> None:
    log.info("health app starting", extra={"window_s": WINDOW_S, "step_s": STEP_S, "at": time.time()})
    app.main()
