"""`make bench-gateway`: the HTTP gateway with the fused chain behind it, driven open loop (request i starts at
t0 + i/R whatever came back before) at each rate, next to the same stub model asked directly; prints one JSON
object: latency percentiles, overhead (gateway p50/p99 less the direct p50/p99, as the peer harness computes
LiteLLM's), the gateway's own share (HTTP in, Kafka both ways, reply out: the stages excluded), losses."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from services.gateway import keys
from services.launcher import Launcher
from services.pos.answers import AnswerReader
from services.settings import Settings, get_settings
from services.tools.bench.chain import stub_chain
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry

TEXT = "Does this blender come with a warranty?"


def pct(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile, as the peer harness's loadgen computes it."""
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, min(len(ordered) - 1, math.ceil(p / 100 * len(ordered)) - 1))], 1)


async def open_loop(
    url: str, rate: float, duration_s: float, headers: dict[str, str], body_of: Any, drain_s: float = 30.0
) -> dict[str, Any]:
    total = math.ceil(rate * duration_s)
    latencies: list[float] = []
    own: list[float] = []
    statuses: Counter[str] = Counter()
    ids: Counter[str] = Counter()
    lags: list[float] = []
    connector = aiohttp.TCPConnector(limit=2000)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None)) as session:

        async def one(index: int, due: float) -> None:
            lags.append((time.perf_counter() - due) * 1000)
            started = time.perf_counter()
            try:
                async with session.post(url, json=body_of(index), headers=headers) as response:
                    await response.read()
                    statuses[str(response.status)] += 1
                    if response.status == 200:
                        latencies.append((time.perf_counter() - started) * 1000)
                        if "x-switchyard-gateway-ms" in response.headers:
                            own.append(float(response.headers["x-switchyard-gateway-ms"]))
                            ids[response.headers["x-switchyard-request-id"]] += 1
            except (aiohttp.ClientError, TimeoutError) as error:
                statuses[type(error).__name__] += 1

        t0 = time.perf_counter()
        tasks = []
        for index in range(total):
            due = t0 + index / rate
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            tasks.append(asyncio.create_task(one(index, due)))
        sent_s = time.perf_counter() - t0
        _done, pending = await asyncio.wait(tasks, timeout=drain_s)
        for task in pending:
            task.cancel()
            statuses["drain_timeout"] += 1
        elapsed = time.perf_counter() - t0
    ok = statuses.get("200", 0)
    return {
        "rate": rate,
        "sent": total,
        "ok": ok,
        "statuses": dict(statuses),
        "achieved_rps": round(ok / elapsed, 1),
        "send_rps": round(total / sent_s, 1),
        "p50_ms": pct(latencies, 50),
        "p95_ms": pct(latencies, 95),
        "p99_ms": pct(latencies, 99),
        "own_p50_ms": pct(own, 50),
        "own_p99_ms": pct(own, 99),
        "answered_twice": sum(1 for count in ids.values() if count > 1),
        "lag_p99_ms": pct(lags, 99),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used (Linux /proc), 0 where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_by_process(launcher: Launcher) -> dict[str, float]:
    return {key.split("/")[0]: cpu_seconds(process.pid) for key, process in launcher.processes.items()}


def body_maker(unique: bool, model: str) -> Any:
    def body_of(index: int) -> dict[str, Any]:
        text = f"{TEXT} (ticket {index})" if unique else TEXT
        return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 16}

    return body_of


def wait_key(base: str, secret: str, timeout_s: float = 30.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        request = urllib.request.Request(f"{base}/v1/models", headers={"Authorization": f"Bearer {secret}"})
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError("the gateway did not see the bench key")


@dataclass
class RunningGateway:
    launcher: Launcher
    base: str
    secret: str
    model_url: str
    settings: Settings
    codec: AvroCodec
    prefix: str


@contextmanager
def running_gateway(model_latency_ms: float, extra_env: dict[str, str] | None = None) -> Iterator[RunningGateway]:
    """The fused chain and a gateway on topics of their own, a key for store 0001 without limits, the stub model
    answering; everything stopped and the topics deleted after."""
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    unlimited = {
        "SWITCHYARD_GATEWAY_TOKENS_PER_DAY": str(10**12),
        "SWITCHYARD_GATEWAY_COST_PER_DAY_USD": str(10**9),
        **(extra_env or {}),
    }
    with stub_chain("bench-gw", codec, store_count=20, model_latency_ms=model_latency_ms, extra_env=unlimited) as chain:
        made = keys.new_key("0001", name="bench", requests_per_minute=10**8)
        keys.KeyPublisher(settings.model_copy(update={"topic_prefix": chain.prefix}), codec).publish(made.record)
        chain.launcher.start_all(fused=True)
        base = chain.launcher.url("gateway/0").rstrip("/")
        wait_key(base, made.secret)
        yield RunningGateway(chain.launcher, base, made.secret, chain.model_url, settings, codec, chain.prefix)


def bench(rates: list[float], duration_s: float, model_latency_ms: float, unique: bool) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    with running_gateway(model_latency_ms) as running:
        headers = {"Authorization": f"Bearer {running.secret}"}
        for rate in rates:
            direct = asyncio.run(
                open_loop(f"{running.model_url}/chat/completions", rate, duration_s, {}, body_maker(unique, "stub"))
            )
            before = cpu_by_process(running.launcher)
            through = asyncio.run(
                open_loop(
                    f"{running.base}/v1/chat/completions", rate, duration_s, headers, body_maker(unique, "switchyard")
                )
            )
            after = cpu_by_process(running.launcher)
            answered = max(1, through["ok"])
            # CPU per answered request, by process: what each costs on this box, whatever the queueing
            through["cpu_ms_per_request"] = {
                name: round((after[name] - before.get(name, 0.0)) * 1000 / answered, 2)
                for name in ("gateway", "chain", "telemetry")
                if name in after
            }
            rows.append(
                {
                    "rate": rate,
                    "direct": direct,
                    "gateway": through,
                    "overhead_p50_ms": _minus(through["p50_ms"], direct["p50_ms"]),
                    "overhead_p99_ms": _minus(through["p99_ms"], direct["p99_ms"]),
                }
            )
            print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "stages": "fused in one process, behind `switchyard run gateway`",
        "model": {"kind": "openai-compatible stub", "fixed_latency_ms": model_latency_ms},
        "unique_texts": unique,
        "duration_s": duration_s,
        "rates": rows,
    }


async def _flood(base: str, secret: str, count: int) -> tuple[Counter[str], list[str], float]:
    statuses: Counter[str] = Counter()
    accepted: list[str] = []
    headers = {"Authorization": f"Bearer {secret}", "x-switchyard-wait-s": "0"}
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:

        async def one(index: int) -> None:
            body = {"model": "switchyard", "messages": [{"role": "user", "content": f"{TEXT} ({index})"}]}
            try:
                async with session.post(f"{base}/v1/chat/completions", json=body, headers=headers) as response:
                    payload = await response.json()
                    error = payload.get("error") if isinstance(payload, dict) else None
                    statuses[f"{response.status} {error['code']}" if error else str(response.status)] += 1
                    if response.status in (200, 202):
                        accepted.append(response.headers["x-switchyard-request-id"])
            except (aiohttp.ClientError, TimeoutError) as error:
                statuses[type(error).__name__] += 1

        started = time.perf_counter()
        await asyncio.gather(*(one(index) for index in range(count)))
        return statuses, accepted, time.perf_counter() - started


def flood(count: int, max_pending: int, model_latency_ms: float) -> dict[str, Any]:
    """`count` POSTs at once: each must get an answer, a 202 or a clear 503, and every accepted request must be
    answered once on `audited`."""
    extra = {"SWITCHYARD_GATEWAY_MAX_PENDING": str(max_pending)}
    with running_gateway(model_latency_ms, extra) as running:
        reader = AnswerReader(running.settings.kafka_bootstrap, f"{running.prefix}audited", running.codec)
        reader.start()
        reader.assigned.wait(30)
        try:
            statuses, accepted, took_s = asyncio.run(_flood(running.base, running.secret, count))
            missing = reader.wait_for(set(accepted), timeout_s=180)
        finally:
            reader.stop()
        alive = running.launcher.healthz("gateway/0")[0]
    return {
        "concurrent_posts": count,
        "max_pending": max_pending,
        "statuses": dict(statuses),
        "all_responses_in_s": round(took_s, 1),
        "accepted": len(accepted),
        "accepted_ids_unique": len(set(accepted)),
        "accepted_not_answered_after_180_s": len(missing),
        "answered_twice_on_audited": reader.duplicates,
        "gateway_healthz_after": alive,
    }


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard bench-gateway", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rates", type=float, nargs="+", default=[25, 50, 100, 200, 400], help="offered requests/s, one run each"
    )
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of offered load per rate")
    parser.add_argument("--model-latency-ms", type=float, default=50.0, help="the stub model's fixed latency")
    parser.add_argument("--unique-texts", action="store_true", help="a ticket number makes every text new")
    parser.add_argument("--flood", type=int, help="instead: this many POSTs at once (e.g. 10000), then count them")
    parser.add_argument("--max-pending", type=int, default=500, help="the gateway's pending cap during --flood")
    args = parser.parse_args(argv)
    if args.flood:
        result = flood(args.flood, args.max_pending, args.model_latency_ms)
    else:
        result = bench(args.rates, args.duration, args.model_latency_ms, args.unique_texts)
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
