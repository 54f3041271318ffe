"""Shared by the in-process stage benches (`make bench-governor`, `make bench-answerer`): call a stage's work for a
range of items with a fixed number in flight, and report the wall time, the process CPU and each call's latency."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class InFlightRun:
    elapsed_s: float
    cpu_s: float
    latencies_ms: list[float]  # sorted

    def latency_percentiles(self) -> dict[str, float]:
        """latency_ms_p50 (the median), _p95 and _p99 (the sorted value at that fraction of the way), in ms."""
        ordered = self.latencies_ms
        return {
            "latency_ms_p50": round(statistics.median(ordered), 2),
            "latency_ms_p95": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
            "latency_ms_p99": round(ordered[int(0.99 * (len(ordered) - 1))], 2),
        }


async def run_in_flight(call: Callable[[int], Awaitable[None]], first: int, count: int, in_flight: int) -> InFlightRun:
    """`call(n)` for n in first..first+count, at most `in_flight` at once, each one timed."""
    latencies: list[float] = []
    slots = asyncio.Semaphore(in_flight)

    async def one(n: int) -> None:
        async with slots:
            started = time.perf_counter()
            await call(n)
            latencies.append((time.perf_counter() - started) * 1000)

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one(n) for n in range(first, first + count)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    return InFlightRun(elapsed, cpu, sorted(latencies))
