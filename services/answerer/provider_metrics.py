"""The answerer's providers on its /metrics: calls by outcome, latency, tokens and cost per provider and model,
and each circuit breaker's state, so an SRE's alerting sees a failing provider without a SQL query."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import BreakerState, CallRecord, GuardedProvider
from services.runtime.observability import LATENCY_BUCKETS

BREAKER_VALUES = {BreakerState.CLOSED: 0.0, BreakerState.HALF_OPEN: 1.0, BreakerState.OPEN: 2.0}


class BreakerStates(Collector):
    """Read at scrape time: a breaker turns half-open by the clock, not by a call."""

    def __init__(self, providers: ProviderRegistry) -> None:
        self.providers = providers

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "switchyard_provider_breaker_state",
            "Circuit breaker per provider: 0 closed, 1 half-open (one probe), 2 open (calls refused)",
            labels=["provider", "model"],
        )
        for provider in self.providers.providers.values():
            family.add_metric([provider.name, provider.model], BREAKER_VALUES[provider.breaker.state])
        yield family


class ProviderMetrics:
    """Observes every call that reaches a provider (GuardedProvider observers) into Prometheus series."""

    def __init__(self, providers: ProviderRegistry, registry: CollectorRegistry) -> None:
        labels = ["provider", "model"]
        self.calls = Counter(
            "switchyard_provider_calls",
            "Calls that reached a provider, by outcome",
            [*labels, "outcome"],
            registry=registry,
        )
        self.seconds = Histogram(
            "switchyard_provider_seconds", "Provider call latency", labels, registry=registry, buckets=LATENCY_BUCKETS
        )
        self.tokens = Counter(
            "switchyard_provider_tokens",
            "Tokens billed, by direction (in, out)",
            [*labels, "direction"],
            registry=registry,
        )
        self.cost = Counter(
            "switchyard_provider_cost_usd", "Cost of the calls in US dollars", labels, registry=registry
        )
        registry.register(BreakerStates(providers))
        self._providers = providers.providers
        for provider in providers.providers.values():
            provider.observers.append(self.observe)

    def observe(self, call: CallRecord) -> None:
        self.calls.labels(call.provider, call.model, call.outcome).inc()
        self.seconds.labels(call.provider, call.model).observe(call.latency_ms / 1000)
        if call.tokens_in or call.tokens_out:
            self.tokens.labels(call.provider, call.model, "in").inc(call.tokens_in)
            self.tokens.labels(call.provider, call.model, "out").inc(call.tokens_out)
            provider = self._providers.get(call.provider)
            if provider is not None:
                self.cost.labels(call.provider, call.model).inc(_cost(provider, call))


def _cost(provider: GuardedProvider, call: CallRecord) -> float:
    return provider.price.cost_usd(call.tokens_in, call.tokens_out)
