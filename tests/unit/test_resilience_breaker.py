"""The guards around a provider, without HTTP: the circuit breaker's states, the concurrency limit, the call
deadline and the price of a completion."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from services.answerer.providers import (
    CircuitBreakerConfig,
    Completion,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    TokenPrice,
    parse_provider_config,
)
from services.answerer.resilience import (
    BreakerState,
    CircuitBreaker,
    CircuitOpen,
    ConcurrencyLimit,
    GuardedProvider,
)
from services.runtime.faults import TransientError
from services.shared.prompts import ChatMessage

QUESTION: list[ChatMessage] = [{"role": "user", "content": "Is the blue kettle in stock?"}]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ScriptedProvider:
    """Answers after `delay_s`, or raises the next scripted fault; counts calls and the most at once."""

    def __init__(self, name: str = "primary", *, delay_s: float = 0.0, faults: Sequence[Exception] = ()) -> None:
        self.name = name
        self.model = "scripted"
        self.delay_s = delay_s
        self.faults = list(faults)
        self.calls = 0
        self.in_flight = 0
        self.most_in_flight = 0

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        self.calls += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            if self.faults:
                raise self.faults.pop(0)
            return Completion("ok", self.name, self.model, "1", 1200, 300, 1.0, "stop")
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        return None


def breaker(clock: FakeClock, **overrides: float) -> CircuitBreaker:
    settings = {"failure_threshold": 3, "error_rate": 0.5, "window_s": 30, "min_calls": 10, "cooldown_s": 5}
    return CircuitBreaker("primary", CircuitBreakerConfig.model_validate({**settings, **overrides}), clock=clock)


def guarded(provider: ScriptedProvider, **config: object) -> GuardedProvider:
    parsed = parse_provider_config({"kind": "local_gguf", **config})
    return GuardedProvider(
        provider,
        breaker=CircuitBreaker(provider.name, parsed.breaker),
        limit=ConcurrencyLimit(parsed.max_concurrency),
        price=parsed.price,
        call_timeout_s=parsed.call_timeout_s,
    )


def unavailable() -> ProviderUnavailable:
    return ProviderUnavailable("HTTP 500", provider="primary", status=500)


def test_the_breaker_opens_after_the_consecutive_failure_threshold() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    for _ in range(2):
        circuit.record_failure(circuit.admit())
    assert circuit.state is BreakerState.CLOSED
    circuit.record_failure(circuit.admit())
    stats = circuit.stats()
    assert (stats.state, stats.times_opened, stats.open_reason) == (BreakerState.OPEN, 1, "3 consecutive failures")


def test_a_success_resets_the_consecutive_failure_count() -> None:
    circuit = breaker(FakeClock())
    for outcome in [False, False, True, False, False]:
        probe = circuit.admit()
        circuit.record_success(probe) if outcome else circuit.record_failure(probe)
    assert circuit.state is BreakerState.CLOSED
    assert circuit.stats().consecutive_failures == 2


def test_the_breaker_opens_when_the_error_rate_over_the_window_is_reached() -> None:
    clock = FakeClock()
    circuit = breaker(clock, failure_threshold=100)
    for index in range(10):
        probe = circuit.admit()
        circuit.record_failure(probe) if index % 2 else circuit.record_success(probe)
    assert circuit.state is BreakerState.OPEN
    assert circuit.stats().open_reason == "5 of 10 calls failed in 30 s"


def test_failures_older_than_the_window_do_not_count_toward_the_error_rate() -> None:
    clock = FakeClock()
    circuit = breaker(clock, failure_threshold=100)
    for _ in range(4):
        circuit.record_failure(circuit.admit())
    clock.now += 31
    for index in range(9):
        probe = circuit.admit()
        circuit.record_failure(probe) if index < 4 else circuit.record_success(probe)
    assert circuit.state is BreakerState.CLOSED
    assert (circuit.stats().window_calls, circuit.stats().window_failures) == (9, 4)


def test_an_open_breaker_rejects_calls_fast_with_the_time_to_the_next_probe() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.record_failure(circuit.admit())
    clock.now += 2
    with pytest.raises(CircuitOpen) as raised:
        circuit.admit("req-1")
    assert isinstance(raised.value, TransientError)
    assert raised.value.retry_after_s == pytest.approx(3.0)
    assert "circuit is open (3 consecutive failures); next probe in 3.0 s" in raised.value.reason
    assert circuit.stats().rejected == 1


def test_after_the_cooldown_one_probe_goes_through_and_its_success_closes_the_circuit() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.record_failure(circuit.admit())
    clock.now += 5
    assert circuit.state is BreakerState.HALF_OPEN
    assert circuit.admit() is True
    with pytest.raises(CircuitOpen, match="probe call is in flight"):
        circuit.admit()
    circuit.record_success(True)
    assert circuit.stats().state is BreakerState.CLOSED
    assert circuit.admit() is False
    assert circuit.stats().consecutive_failures == 0


def test_a_failed_probe_reopens_the_circuit_for_another_cooldown() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.record_failure(circuit.admit())
    clock.now += 5
    circuit.record_failure(circuit.admit())
    stats = circuit.stats()
    assert (stats.state, stats.times_opened, stats.open_reason) == (BreakerState.OPEN, 2, "its half-open probe failed")
    clock.now += 4.9
    with pytest.raises(CircuitOpen):
        circuit.admit()
    clock.now += 0.1
    assert circuit.admit() is True


def test_a_probe_released_without_a_verdict_lets_the_next_call_probe() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    for _ in range(3):
        circuit.record_failure(circuit.admit())
    clock.now += 5
    circuit.release(circuit.admit())
    assert circuit.state is BreakerState.HALF_OPEN
    assert circuit.admit() is True


def test_late_failures_of_calls_admitted_before_the_circuit_opened_do_not_extend_it() -> None:
    clock = FakeClock()
    circuit = breaker(clock)
    early = [circuit.admit() for _ in range(5)]
    for probe in early[:3]:
        circuit.record_failure(probe)
    clock.now += 5
    for probe in early[3:]:
        circuit.record_failure(probe)
    assert circuit.state is BreakerState.HALF_OPEN
    assert circuit.stats().times_opened == 1


async def test_the_guarded_provider_fails_fast_while_its_circuit_is_open() -> None:
    provider = ScriptedProvider(faults=[unavailable(), unavailable()])
    guard = guarded(provider, breaker={"failure_threshold": 2, "cooldown_s": 60})
    for _ in range(2):
        with pytest.raises(ProviderUnavailable):
            await guard.complete(QUESTION, max_tokens=8)
    with pytest.raises(CircuitOpen):
        await guard.complete(QUESTION, max_tokens=8)
    assert provider.calls == 2
    assert guard.breaker.stats().rejected == 1


async def test_a_rejected_request_does_not_count_against_the_provider() -> None:
    provider = ScriptedProvider(faults=[ProviderRejected("HTTP 400", provider="primary", status=400)] * 3)
    guard = guarded(provider, breaker={"failure_threshold": 1})
    for _ in range(3):
        with pytest.raises(ProviderRejected):
            await guard.complete(QUESTION, max_tokens=8)
    assert guard.breaker.state is BreakerState.CLOSED


async def test_the_concurrency_limit_makes_the_call_beyond_it_wait_for_a_slot() -> None:
    provider = ScriptedProvider(delay_s=0.05)
    guard = guarded(provider, max_concurrency=2)
    calls = [asyncio.create_task(guard.complete(QUESTION, max_tokens=8)) for _ in range(3)]
    await asyncio.sleep(0.02)
    assert (guard.limit.in_flight, guard.limit.waiting) == (2, 1)
    completions = await asyncio.gather(*calls)
    assert provider.most_in_flight == 2
    assert max(c.latency_ms for c in completions) >= 100  # the third waited out one call, then made its own


async def test_waiting_for_a_slot_counts_toward_the_call_deadline_but_not_against_the_provider() -> None:
    provider = ScriptedProvider()
    guard = guarded(provider, max_concurrency=1, call_timeout_s=0.05, breaker={"failure_threshold": 1})
    async with guard.limit.slot():  # another call holds the only slot past the deadline
        with pytest.raises(ProviderTimeout, match=r"had none of its 1 call slots free within 0\.05 s"):
            await guard.complete(QUESTION, max_tokens=8)
    assert provider.calls == 0
    assert guard.breaker.state is BreakerState.CLOSED


async def test_a_call_past_its_deadline_is_a_timeout_that_counts_against_the_provider() -> None:
    provider = ScriptedProvider(delay_s=1.0)
    guard = guarded(provider, call_timeout_s=0.05, breaker={"failure_threshold": 1})
    with pytest.raises(ProviderTimeout, match=r"did not answer within its call deadline of 0\.05 s"):
        await guard.complete(QUESTION, max_tokens=8)
    assert guard.breaker.state is BreakerState.OPEN


async def test_every_completion_carries_its_cost_from_usage_and_prices() -> None:
    per_million = guarded(ScriptedProvider(), price={"input_usd": 0.15, "output_usd": 0.60})
    per_thousand = guarded(ScriptedProvider(), price={"input_usd": 0.5, "output_usd": 1.5, "per_tokens": 1000})
    free = guarded(ScriptedProvider())
    assert (await per_million.complete(QUESTION, max_tokens=8)).cost_usd == pytest.approx(
        1200 * 0.15 / 1e6 + 300 * 0.60 / 1e6
    )
    assert (await per_thousand.complete(QUESTION, max_tokens=8)).cost_usd == pytest.approx(0.6 + 0.45)
    assert (await free.complete(QUESTION, max_tokens=8)).cost_usd == 0.0


def test_a_price_per_other_than_1k_or_1m_tokens_is_refused() -> None:
    assert TokenPrice(input_usd=2.0, per_tokens=1000).cost_usd(500, 0) == 1.0
    with pytest.raises(ValueError, match="per_tokens"):
        parse_provider_config({"kind": "local_gguf", "price": {"per_tokens": 100}})
