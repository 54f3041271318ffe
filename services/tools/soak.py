"""`make soak DURATION=1800`: steady load on the whole chain for a stated time, with the resident memory and
open file descriptors of every process sampled each minute; a flat line is the pass.

The chain (five stage processes and the side processes) runs on topics of its own with the stub model; the
components `make up` started (Kafka, ClickHouse, Weaviate) are sampled too. The first sample is taken after
a warm-up minute (caches and pools fill first); a process passes when its last sample is within the stated
growth of that one. Every request sent must be answered once.

usage: python -m services.tools.soak [--duration 1800] [--rate 25] [--every 60]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.pos.answers import AnswerReader
from services.settings import get_settings
from services.tools.bench.chain import StubChain, stub_chain
from services.tools.chaos import STORES, Load, Supervisor, component_pid
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry

COMPONENTS = ["kafka", "clickhouse", "weaviate"]


@dataclass(frozen=True)
class Limits:
    """How much a process may grow from its first sample to its last and still count as flat."""

    rss_growth: float = 0.15  # of the first sample
    rss_slack_mib: float = 32.0  # allocator noise on small processes
    fd_growth: int = 16


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def sample(pids: dict[str, int]) -> dict[str, dict[str, float | None]]:
    return {name: {"rss_mib": rss_mib(pid), "fds": open_fds(pid)} for name, pid in pids.items()}


def verdicts(samples: list[dict[str, Any]], limits: Limits) -> list[dict[str, Any]]:
    """Per process: first and last sample, growth, and whether it stayed flat. A process whose pid changed
    during the run (restarted) is compared from its restart on, and says so."""
    rows = []
    for name in samples[0]["processes"]:
        series = [s["processes"][name] for s in samples if s["processes"].get(name, {}).get("rss_mib") is not None]
        if len(series) < 2:
            rows.append({"process": name, "flat": None, "why": "fewer than two samples"})
            continue
        first, last = series[0], series[-1]
        rss_limit = first["rss_mib"] * (1 + limits.rss_growth) + limits.rss_slack_mib
        flat = last["rss_mib"] <= rss_limit and last["fds"] <= first["fds"] + limits.fd_growth
        rows.append(
            {
                "process": name,
                "rss_mib_first": round(first["rss_mib"], 1),
                "rss_mib_last": round(last["rss_mib"], 1),
                "rss_mib_peak": round(max(s["rss_mib"] for s in series), 1),
                "fds_first": first["fds"],
                "fds_last": last["fds"],
                "flat": flat,
            }
        )
    return rows


def soak(duration_s: float, rate: float, every_s: float, limits: Limits) -> dict[str, Any]:
    settings = get_settings()
    codec = AvroCodec(SchemaRegistry.load(settings.schemas_dir))
    with stub_chain("soak", codec, store_count=STORES, model_latency_ms=50) as chain:
        return run_soak(chain, codec, duration_s, rate, every_s, limits)


def run_soak(
    chain: StubChain, codec: AvroCodec, duration_s: float, rate: float, every_s: float, limits: Limits
) -> dict[str, Any]:
    settings, prefix, launcher = get_settings(), chain.prefix, chain.launcher
    supervisor = Supervisor(launcher)
    reader = AnswerReader(settings.kafka_bootstrap, f"{prefix}audited", codec)
    load = Load(settings.kafka_bootstrap, f"{prefix}requests", codec, rate)
    samples: list[dict[str, Any]] = []
    try:
        launcher.start_all()
        reader.start()
        reader.assigned.wait(30)
        supervisor.thread.start()
        load.start()
        started = time.monotonic()
        time.sleep(min(60.0, duration_s / 4))  # warm-up
        while True:
            pids = {key: process.pid for key, process in launcher.processes.items()}
            pids |= {name: pid for name in COMPONENTS if (pid := component_pid(name)) is not None}
            samples.append({"minute": round((time.monotonic() - started) / 60, 1), "processes": sample(pids)})
            print(json.dumps(samples[-1]), flush=True)
            if time.monotonic() - started >= duration_s:
                break
            time.sleep(min(every_s, max(0.0, duration_s - (time.monotonic() - started))))
        load.stop()
        sent = {request.request_id for _, request in load.sent}
        missing = reader.wait_for(sent, timeout_s=120)
    finally:
        supervisor.stopping.set()
        reader.stop()
    return {
        "duration_s": duration_s,
        "rate_per_s": rate,
        "sent": len(sent),
        "answered": len(sent) - len(missing),
        "lost": len(missing),
        "answered_twice": reader.duplicates,
        "restarts": dict(supervisor.restarts),
        "limits": limits.__dict__,
        "processes": verdicts(samples, limits),
        "samples": len(samples),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard soak", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of steady load")
    parser.add_argument("--rate", type=float, default=25.0, help="requests per second, the POS mix")
    parser.add_argument("--every", type=float, default=60.0, help="seconds between samples")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    result = soak(args.duration, args.rate, args.every, Limits())
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    flat = all(row["flat"] is not False for row in result["processes"])
    return 0 if flat and not result["lost"] and not result["answered_twice"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
