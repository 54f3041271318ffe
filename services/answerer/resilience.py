"""Guards around a provider (a circuit breaker, a concurrency limit, a call deadline and a price) and the
failover that asks the next provider when one times out, fails or has its circuit open."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from services.answerer.providers import (
    AnyProviderConfig,
    CircuitBreakerConfig,
    Completion,
    Provider,
    ProviderError,
    ProviderMalformed,
    ProviderMisconfigured,
    ProviderRejected,
    ProviderTimeout,
    ProviderUnavailable,
    TokenPrice,
    build_provider,
)
from services.runtime.faults import RejectedRecord, StageError, TransientError
from services.shared.prompts import ChatMessage

log = logging.getLogger(__name__)


class CircuitOpen(ProviderError, TransientError):
    """The provider's circuit is open (or half-open with its one probe in flight): the call was not made."""


class ProvidersExhausted(TransientError):
    """Every provider of the chain failed and at least one only for now: the runtime retries the record."""


class ProvidersRejected(RejectedRecord):
    """Every provider of the chain refused the request itself: no retry can help, so it is dead-lettered."""


class BreakerState(enum.StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls fail fast until the cool-down ends
    HALF_OPEN = "half_open"  # one probe goes through; its outcome closes or reopens the circuit


@dataclass(frozen=True)
class BreakerStats:
    """A breaker's state and counters, for /metrics, logs and tests."""

    state: BreakerState
    consecutive_failures: int
    window_calls: int
    window_failures: int
    times_opened: int
    rejected: int  # calls refused while open or half-open
    open_reason: str  # why it last opened; empty while it never did


class CircuitBreaker:
    """Per-provider circuit: opens after `failure_threshold` consecutive failures, or when the share of failed
    calls over the last `window_s` reaches `error_rate` (given `min_calls`), rejects calls for `cooldown_s`,
    then lets one probe through. Event-loop code only: no locks, every method runs without awaiting."""

    def __init__(
        self, provider: str, config: CircuitBreakerConfig, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.provider = provider
        self.config = config
        self._clock = clock
        self._state = BreakerState.CLOSED
        self._opened_at = 0.0
        self._probe_in_flight = False
        self._consecutive_failures = 0
        self._outcomes: deque[tuple[float, bool]] = deque()  # (when, failed), oldest first
        self._times_opened = 0
        self._rejected = 0
        self._open_reason = ""

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.config.cooldown_s:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def stats(self) -> BreakerStats:
        self._forget_old()
        return BreakerStats(
            state=self.state,
            consecutive_failures=self._consecutive_failures,
            window_calls=len(self._outcomes),
            window_failures=sum(failed for _, failed in self._outcomes),
            times_opened=self._times_opened,
            rejected=self._rejected,
            open_reason=self._open_reason,
        )

    def admit(self, request_id: str | None = None) -> bool:
        """Let a call through or raise CircuitOpen; True when the call is the half-open circuit's probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return False
        if state is BreakerState.HALF_OPEN and not self._probe_in_flight:
            self._probe_in_flight = True
            return True
        self._rejected += 1
        if state is BreakerState.HALF_OPEN:
            reason = f"{self.provider} circuit is half-open and its probe call is in flight"
            raise CircuitOpen(reason, provider=self.provider, request_id=request_id)
        retry_in_s = max(0.0, self.config.cooldown_s - (self._clock() - self._opened_at))
        reason = f"{self.provider} circuit is open ({self._open_reason}); next probe in {retry_in_s:.1f} s"
        raise CircuitOpen(reason, provider=self.provider, retry_after_s=retry_in_s, request_id=request_id)

    def record_success(self, probe: bool) -> None:
        if probe:
            self._close()
        elif self._state is BreakerState.CLOSED:
            self._consecutive_failures = 0
            self._outcomes.append((self._clock(), False))

    def record_failure(self, probe: bool) -> None:
        if probe:
            self._open("its half-open probe failed")
            return
        if self._state is not BreakerState.CLOSED:
            return  # admitted before the circuit opened: it says nothing new
        self._consecutive_failures += 1
        self._outcomes.append((self._clock(), True))
        self._forget_old()
        failures = sum(failed for _, failed in self._outcomes)
        calls = len(self._outcomes)
        if self._consecutive_failures >= self.config.failure_threshold:
            self._open(f"{self._consecutive_failures} consecutive failures")
        elif calls >= self.config.min_calls and failures / calls >= self.config.error_rate:
            self._open(f"{failures} of {calls} calls failed in {self.config.window_s:g} s")

    def release(self, probe: bool) -> None:
        """An admitted call ended without a verdict on the provider (cancelled, or no slot in time)."""
        if probe:
            self._probe_in_flight = False

    def _open(self, reason: str) -> None:
        self._state = BreakerState.OPEN
        self._opened_at = self._clock()
        self._probe_in_flight = False
        self._times_opened += 1
        self._open_reason = reason
        log.warning("provider circuit opened", extra={"provider": self.provider, "reason": reason})

    def _close(self) -> None:
        self._state = BreakerState.CLOSED
        self._probe_in_flight = False
        self._consecutive_failures = 0
        self._outcomes.clear()  # the failures that opened it must not reopen it at once
        log.info("provider circuit closed", extra={"provider": self.provider})

    def _forget_old(self) -> None:
        horizon = self._clock() - self.config.window_s
        while self._outcomes and self._outcomes[0][0] < horizon:
            self._outcomes.popleft()


class ConcurrencyLimit:
    """At most `limit` calls in flight (None: no limit); the rest wait in arrival order."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit) if limit is not None else None
        self.in_flight = 0
        self.waiting = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._semaphore is not None:
            self.waiting += 1
            try:
                await self._semaphore.acquire()
            finally:
                self.waiting -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            if self._semaphore is not None:
                self._semaphore.release()


@dataclass(frozen=True)
class CallRecord:
    """One call that reached a provider, as health monitoring sees it (calls refused by an open circuit or
    our own full queue never reached it and are not recorded)."""

    provider: str
    model: str
    request_id: str | None
    started_at_us: int
    latency_ms: float
    tokens_in: int
    tokens_out: int
    outcome: str  # OK, TIMEOUT, ERROR or REJECTED (schemas/switchyard.ModelCall.avsc)
    error: str


CallObserver = Callable[[CallRecord], None]


class GuardedProvider:
    """A provider behind its circuit breaker, concurrency limit and call deadline, whose completions carry
    their cost. Implements the Provider protocol, so the answerer need not know it is guarded. Each call
    that reaches the provider is reported to `observers` (the answerer publishes them to model.calls)."""

    def __init__(
        self,
        provider: Provider,
        *,
        breaker: CircuitBreaker,
        limit: ConcurrencyLimit,
        price: TokenPrice,
        call_timeout_s: float | None = None,
    ) -> None:
        self.provider = provider
        self.name = provider.name
        self.model = provider.model
        self.breaker = breaker
        self.limit = limit
        self.price = price
        self.call_timeout_s = call_timeout_s
        self.observers: list[CallObserver] = []

    def _report(self, started: float, started_at_us: int, request_id: str | None, outcome: str, **extra: Any) -> None:
        record = CallRecord(
            provider=self.name,
            model=self.model,
            request_id=request_id,
            started_at_us=started_at_us,
            latency_ms=(time.perf_counter() - started) * 1000,
            tokens_in=int(extra.get("tokens_in", 0)),
            tokens_out=int(extra.get("tokens_out", 0)),
            outcome=outcome,
            error=str(extra.get("error", ""))[:500],
        )
        for observe in self.observers:
            observe(record)

    @classmethod
    def from_config(
        cls,
        config: AnyProviderConfig,
        *,
        source: str = "provider config",
        environ: Mapping[str, str] = os.environ,
    ) -> GuardedProvider:
        provider = build_provider(config, source=source, environ=environ)
        return cls(
            provider,
            breaker=CircuitBreaker(provider.name, config.breaker),
            limit=ConcurrencyLimit(config.max_concurrency),
            price=config.price,
            call_timeout_s=config.call_timeout_s,
        )

    async def load(self) -> None:
        """Load an in-process model now, so the first record does not wait for it."""
        from services.answerer.local_model import LocalGGUFProvider  # local_model is heavy; only it needs it

        if isinstance(self.provider, LocalGGUFProvider):
            await self.provider.load()

    async def complete(
        self,
        messages: Sequence[ChatMessage],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        request_id: str | None = None,
    ) -> Completion:
        started = time.perf_counter()
        started_at_us = time.time_ns() // 1000
        probe = self.breaker.admit(request_id)
        calling = False
        try:
            async with asyncio.timeout(self.call_timeout_s), self.limit.slot():
                calling = True
                completion = await self.provider.complete(
                    messages, max_tokens=max_tokens, temperature=temperature, request_id=request_id
                )
        except TimeoutError as exc:  # our call deadline; the provider turns its own timeouts into ProviderTimeout
            fault = self._deadline_passed(probe, calling, request_id)
            if calling:
                self._report(started, started_at_us, request_id, "TIMEOUT", error=fault.reason)
            raise fault from exc
        except TransientError as fault:
            self.breaker.record_failure(probe)
            outcome = "TIMEOUT" if isinstance(fault, ProviderTimeout) else "ERROR"
            self._report(started, started_at_us, request_id, outcome, error=fault.reason)
            raise
        except RejectedRecord as fault:
            self.breaker.record_success(probe)  # it answered: the request was bad, not the provider
            self._report(started, started_at_us, request_id, "REJECTED", error=fault.reason)
            raise
        except BaseException:
            self.breaker.release(probe)
            raise
        self.breaker.record_success(probe)
        self._report(
            started, started_at_us, request_id, "OK", tokens_in=completion.tokens_in, tokens_out=completion.tokens_out
        )
        return dataclasses.replace(
            completion,
            cost_usd=self.price.cost_usd(completion.tokens_in, completion.tokens_out),
            latency_ms=(time.perf_counter() - started) * 1000,
        )

    async def aclose(self) -> None:
        await self.provider.aclose()

    def _deadline_passed(self, probe: bool, calling: bool, request_id: str | None) -> ProviderTimeout:
        if not calling:  # our own queue was full: says nothing about the provider's health
            self.breaker.release(probe)
            reason = f"{self.name} had none of its {self.limit.limit} call slots free within {self.call_timeout_s} s"
            return ProviderTimeout(reason, provider=self.name, request_id=request_id)
        self.breaker.record_failure(probe)
        reason = f"{self.name} did not answer within its call deadline of {self.call_timeout_s} s"
        return ProviderTimeout(reason, provider=self.name, request_id=request_id)


def failure_summary(fault: StageError) -> str:
    """A few words on why a provider did not answer, for an Answer's `failover` list."""
    status = f" (HTTP {fault.status})" if isinstance(fault, ProviderError) and fault.status else ""
    if isinstance(fault, CircuitOpen):
        return "circuit open"
    if isinstance(fault, ProviderTimeout):
        return "timeout" + status
    if isinstance(fault, ProviderMisconfigured):
        return "misconfigured" + status
    if isinstance(fault, ProviderMalformed):
        return "malformed answer"
    if isinstance(fault, ProviderUnavailable):
        return f"HTTP {fault.status}" if fault.status else "unreachable"
    if isinstance(fault, ProviderRejected):
        return "rejected" + status
    return "rejected" if isinstance(fault, RejectedRecord) else "unavailable"


async def complete_with_failover(
    chain: Sequence[Provider],
    messages: Sequence[ChatMessage],
    *,
    max_tokens: int,
    temperature: float = 0.0,
    request_id: str | None = None,
    skipped: Sequence[str] = (),
) -> tuple[Completion, list[str]]:
    """Ask each provider in turn until one answers; returns its completion and the failover record
    (["default: circuit open", "local: answered"]; empty when the first answered and nothing was `skipped`).

    A rejection moves on too: a prompt too long for a small model may fit the next. When all fail, the record
    is retried if any failure was transient, and dead-lettered only if every provider rejected it."""
    failover = list(skipped)
    transient = False
    for provider in chain:
        try:
            completion = await provider.complete(
                messages, max_tokens=max_tokens, temperature=temperature, request_id=request_id
            )
        except (TransientError, RejectedRecord) as fault:
            transient = transient or isinstance(fault, TransientError)
            failover.append(f"{provider.name}: {failure_summary(fault)}")
            log.warning(
                "provider failed, trying the next",
                extra={"request_id": request_id, "provider": provider.name, "reason": fault.reason},
            )
            continue
        if failover:
            failover.append(f"{provider.name}: answered")
        return completion, failover
    reason = "no provider answered: " + "; ".join(failover)
    if transient or not chain:
        raise ProvidersExhausted(reason, request_id=request_id)
    raise ProvidersRejected(reason, request_id=request_id)
