"""Provider health, pure: window figures, and the state machine's hysteresis (no flapping)."""

from __future__ import annotations

from services.health.state import HealthPolicy, ProviderHealthState, WindowFigures, figures
from services.wire.models import ProviderState

POLICY = HealthPolicy(latency_p95_limit_ms=1500, error_rate_limit=0.5, min_calls=5, down_after=2, recover_after=3)
FAST = WindowFigures(calls=50, errors=0, p50_ms=40, p95_ms=60)
SLOW = WindowFigures(calls=50, errors=0, p50_ms=2000, p95_ms=2400)
FAILING = WindowFigures(calls=50, errors=30, p50_ms=40, p95_ms=60)


def run(windows: list[WindowFigures]) -> ProviderHealthState:
    state = ProviderHealthState(POLICY)
    for window in windows:
        state.evaluate(window, 30)
    return state


def test_figures_are_nearest_rank_percentiles_and_an_error_rate() -> None:
    window = figures([float(n) for n in range(1, 101)], errors=10)
    assert (window.calls, window.p50_ms, window.p95_ms, window.error_rate) == (100, 50.0, 95.0, 0.1)


def test_a_latency_spike_degrades_first_then_takes_the_provider_down_with_the_reason() -> None:
    state = ProviderHealthState(POLICY)
    assert state.evaluate(SLOW, 30) == ProviderState.DEGRADED
    assert state.evaluate(SLOW, 30) == ProviderState.DOWN
    assert state.reason == "p95 2.4 s over 1.5 s limit for 30 s"


def test_errors_take_a_provider_down_too() -> None:
    assert run([FAILING, FAILING]).state == ProviderState.DOWN
    assert "error rate 60% over 50% limit" in run([FAILING, FAILING]).reason


def test_recovery_needs_several_good_windows_in_a_row() -> None:
    assert run([SLOW, SLOW, FAST, FAST]).state == ProviderState.DOWN
    assert run([SLOW, SLOW, FAST, FAST, FAST]).state == ProviderState.HEALTHY
    assert run([SLOW, SLOW, FAST, FAST, SLOW, FAST, FAST]).state == ProviderState.DOWN


def test_a_single_bad_window_between_good_ones_never_takes_it_down() -> None:
    state = run([FAST, SLOW, FAST, SLOW, FAST])
    assert ProviderState.DOWN not in state.history


def test_too_few_calls_change_nothing() -> None:
    quiet = WindowFigures(calls=2, errors=2, p50_ms=9000, p95_ms=9000)
    assert run([quiet, quiet, quiet]).state == ProviderState.HEALTHY


def test_a_down_provider_recovers_on_probes_alone() -> None:
    probe = WindowFigures(calls=1, errors=0, p50_ms=30, p95_ms=30)
    assert run([SLOW, SLOW, probe, probe, probe]).state == ProviderState.HEALTHY
    failing_probe = WindowFigures(calls=1, errors=1, p50_ms=30, p95_ms=30)
    assert run([SLOW, SLOW, failing_probe, failing_probe, failing_probe]).state == ProviderState.DOWN
