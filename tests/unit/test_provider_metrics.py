"""The answerer's providers on /metrics: calls by outcome, latency, tokens and cost, and each breaker's state."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from services.answerer.provider_metrics import ProviderMetrics
from services.answerer.providers import parse_provider_config
from services.answerer.registry import ProviderRegistry
from services.answerer.resilience import CallRecord, GuardedProvider


def registry_of(*names: str) -> ProviderRegistry:
    providers = {
        name: GuardedProvider.from_config(
            parse_provider_config(
                {
                    "kind": "openai",
                    "name": name,
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": f"{name}-model",
                    "price": {"input_usd": 1.0, "output_usd": 2.0, "per_tokens": 1000},
                }
            ),
            environ={},
        )
        for name in names
    }
    return ProviderRegistry(providers, default=names[0], source="test providers")


def call(provider: str, outcome: str, tokens_in: int = 0, tokens_out: int = 0) -> CallRecord:
    return CallRecord(provider, f"{provider}-model", "r-1", 0, 120.0, tokens_in, tokens_out, outcome, "")


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_every_call_that_reaches_a_provider_is_counted_with_its_tokens_and_cost() -> None:
    providers, registry = registry_of("default", "backup"), CollectorRegistry()
    ProviderMetrics(providers, registry)
    for observe in providers["default"].observers:
        observe(call("default", "OK", tokens_in=1000, tokens_out=500))
        observe(call("default", "TIMEOUT"))
    labels = {"provider": "default", "model": "default-model"}
    assert sample(registry, "switchyard_provider_calls_total", **labels, outcome="OK") == 1
    assert sample(registry, "switchyard_provider_calls_total", **labels, outcome="TIMEOUT") == 1
    assert sample(registry, "switchyard_provider_tokens_total", **labels, direction="out") == 500
    # 1,000 tokens in at $1 and 500 out at $2, per 1,000
    assert sample(registry, "switchyard_provider_cost_usd_total", **labels) == 1.0 + 1.0
    assert sample(registry, "switchyard_provider_seconds_count", **labels) == 2


def test_the_breaker_state_is_read_at_scrape_time() -> None:
    providers, registry = registry_of("default", "backup"), CollectorRegistry()
    ProviderMetrics(providers, registry)
    labels = {"provider": "default", "model": "default-model"}
    assert sample(registry, "switchyard_provider_breaker_state", **labels) == 0
    breaker = providers["default"].breaker
    for _ in range(breaker.config.failure_threshold):
        breaker.record_failure(probe=False)
    assert sample(registry, "switchyard_provider_breaker_state", **labels) == 2
    assert sample(registry, "switchyard_provider_breaker_state", provider="backup", model="backup-model") == 0
