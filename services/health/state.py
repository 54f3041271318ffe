"""The health state machine of one provider, pure: figures over a window in, HEALTHY / DEGRADED / DOWN out,
with hysteresis so a provider near its limits does not flap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from services.wire.models import ProviderState


@dataclass(frozen=True)
class HealthPolicy:
    """Limits and hysteresis, in evaluations (one per step of the window)."""

    latency_p95_limit_ms: float = 1500.0
    error_rate_limit: float = 0.5
    min_calls: int = 5
    down_after: int = 2
    recover_after: int = 3


@dataclass(frozen=True)
class WindowFigures:
    calls: int
    errors: int
    p50_ms: float
    p95_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0


def figures(latencies_ms: Sequence[float], errors: int) -> WindowFigures:
    ordered = sorted(latencies_ms)

    def rank(q: float) -> float:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else 0.0

    return WindowFigures(len(ordered), errors, rank(0.5), rank(0.95))


@dataclass
class ProviderHealthState:
    """Evaluated once a step; `state` changes only after `down_after` bad or `recover_after` good steps."""

    policy: HealthPolicy
    state: ProviderState = ProviderState.HEALTHY
    bad_streak: int = 0
    good_streak: int = 0
    reason: str = "no calls yet"
    history: list[ProviderState] = field(default_factory=list)

    def enough_calls(self, window: WindowFigures) -> bool:
        """A DOWN provider gets only the health app's probes (one a step), so while DOWN any call counts."""
        return window.calls >= (1 if self.state == ProviderState.DOWN else self.policy.min_calls)

    def breach(self, window: WindowFigures, window_s: float) -> str | None:
        """Why the window breaches a limit, or None."""
        if not self.enough_calls(window):
            return None
        if window.error_rate >= self.policy.error_rate_limit:
            return (
                f"error rate {window.error_rate:.0%} over {self.policy.error_rate_limit:.0%} limit for {window_s:g} s"
            )
        if window.p95_ms > self.policy.latency_p95_limit_ms:
            return (
                f"p95 {window.p95_ms / 1000:.1f} s over {self.policy.latency_p95_limit_ms / 1000:.1f} s limit "
                f"for {window_s:g} s"
            )
        return None

    def evaluate(self, window: WindowFigures, window_s: float) -> ProviderState:
        problem = self.breach(window, window_s)
        if problem is not None:
            self.bad_streak, self.good_streak = self.bad_streak + 1, 0
            self.reason = problem
            if self.state != ProviderState.DOWN:
                self.state = ProviderState.DOWN if self.bad_streak >= self.policy.down_after else ProviderState.DEGRADED
        elif self.enough_calls(window):
            self.good_streak, self.bad_streak = self.good_streak + 1, 0
            if self.state == ProviderState.DOWN and self.good_streak < self.policy.recover_after:
                self.reason = f"recovering: {self.good_streak} of {self.policy.recover_after} good windows"
            else:
                self.state = ProviderState.HEALTHY
                self.reason = f"p95 {window.p95_ms:.0f} ms, error rate {window.error_rate:.0%} over {window_s:g} s"
        else:
            self.reason = f"only {window.calls} calls in the last {window_s:g} s"
        self.history.append(self.state)
        return self.state
