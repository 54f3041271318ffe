"""Failover end to end, with real HTTP model servers on loopback: the primary provider's latency spikes;
the answerer fails over at once (call deadline), the health app marks the provider DOWN within its window,
and the router sends new traffic to the fallback route; when the primary recovers, traffic returns. No
request is lost or answered twice, and the decision reasons land in ClickHouse."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.admin import AdminClient

from services.infra.clickhouse import get_client
from services.launcher import free_port
from services.settings import REPO_ROOT, Settings
from services.wire.codec import AvroCodec
from tests.integration.chain_harness import Chain, duplicates

SPIKE_MS = 2500


def stub(port: int, log: Path) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "services.dev.stub_model", "--port", str(port), "--latency-ms", "20"]
    return subprocess.Popen(command, stdout=log.open("wb"), stderr=subprocess.STDOUT)


def set_latency(port: int, latency_ms: float) -> None:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/stub/behaviour",
        data=json.dumps({"latency_ms": latency_ms}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request, timeout=5).close()


def write_config(directory: Path, primary: int, backup: int) -> tuple[Path, Path]:
    http = {"kind": "openai", "model": "stub", "timeout_s": 1.0, "retries": 0, "call_timeout_s": 1.2}
    providers = {
        "default_provider": "primary",
        "providers": {
            "primary": {**http, "base_url": f"http://127.0.0.1:{primary}/v1", "fallback": ["backup"]},
            "backup": {**http, "base_url": f"http://127.0.0.1:{backup}/v1"},
        },
    }
    table = yaml.safe_load((REPO_ROOT / "routes" / "route_table.yaml").read_text())
    for route in [*table["routes"].values(), *table["shared_routes"]]:
        if route.get("provider") == "default":
            route["provider"] = "primary"
    large = next(r for r in table["shared_routes"] if r["route_id"] == "model.large")
    large["provider"] = "backup"
    providers_file, table_file = directory / "providers.yaml", directory / "route_table.yaml"
    providers_file.write_text(yaml.safe_dump(providers))
    table_file.write_text(yaml.safe_dump(table, sort_keys=False))
    return providers_file, table_file


@pytest.fixture(scope="module")
def failover_chain(
    settings: Settings, codec: AvroCodec, admin: AdminClient, clickhouse: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Chain, int]]:
    log_dir = tmp_path_factory.mktemp("failover")
    primary, backup = free_port(), free_port()
    stubs = [stub(primary, log_dir / "primary.log"), stub(backup, log_dir / "backup.log")]
    providers_file, table_file = write_config(log_dir, primary, backup)
    chain = Chain(
        settings,
        codec,
        log_dir,
        model_url=f"http://127.0.0.1:{primary}/v1",
        extra_env={
            "SWITCHYARD_PROVIDERS_FILE": str(providers_file),
            "SWITCHYARD_ROUTE_TABLE": str(table_file),
            "SWITCHYARD_HEALTH_WINDOW_S": "4",
            "SWITCHYARD_HEALTH_STEP_S": "1",
            "SWITCHYARD_HEALTH_P95_LIMIT_MS": "800",
        },
    )
    try:
        chain.prepare()
        chain.start_all()
        yield chain, primary
    finally:
        chain.stop_all()
        for process in stubs:
            process.terminate()
            process.wait(10)
        chain.tear_down(admin)


def model_routed(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records a model answers: a model route the governor let through (the 25% discount request is escalated
    to a manager before any model)."""
    return [
        r
        for r in records
        if r["route"]["kind"] != "WORKFLOW" and r["governance"]["verdict"] not in ("BLOCK", "ESCALATE")
    ]


def routed_at(record: dict[str, Any]) -> float:
    """When the router took the request (seconds since the epoch)."""
    return float(record["timings"][0]["started_at"]) / 1e6


def test_a_latency_spike_moves_traffic_to_the_fallback_and_recovery_brings_it_back(
    failover_chain: tuple[Chain, int], settings: Settings
) -> None:
    chain, primary = failover_chain
    requests = chain.requests(600, run="failover")
    publisher = threading.Thread(target=chain.publish, args=(requests, 15.0))  # 40 s of traffic
    publisher.start()
    time.sleep(8)
    spike_at = time.time()
    set_latency(primary, SPIKE_MS)
    time.sleep(12)
    set_latency(primary, 20)
    recovered_at = time.time()
    publisher.join()

    audited = chain.read("audited", until=600, run="failover", timeout_s=120)
    assert not duplicates(audited) and len(audited) == 600, f"{len(audited)} answered; logs in {chain.log_dir}"
    model = sorted(model_routed(audited), key=routed_at)
    rerouted = [r for r in model if "unhealthy" in r["route"]["reason"]]
    assert rerouted, "the router never moved traffic away from the slow provider"
    first = rerouted[0]
    reaction_s = routed_at(first) - spike_at
    print(f"failover reaction: {reaction_s:.1f} s from spike to the first rerouted request")
    assert reaction_s < 10, f"took {reaction_s:.1f} s"
    assert "skipped" in first["route"]["reason"] and "primary" in first["route"]["reason"]
    assert first["answer"]["provider"] == "backup"
    during = [r for r in model if spike_at + 1 < routed_at(r) < recovered_at]
    assert all(r["answer"]["provider"] == "backup" for r in during), "answers kept coming, from the backup"
    late = [r for r in model if routed_at(r) > recovered_at + 10]
    assert late and all("unhealthy" not in r["route"]["reason"] for r in late), "traffic returned after recovery"
    assert any(r["answer"]["provider"] == "primary" for r in late)

    client = get_client(settings)
    deadline = time.monotonic() + 30
    reasons: list[str] = []
    while time.monotonic() < deadline and not reasons:
        reasons = [
            row[0]
            for row in client.query(
                "SELECT route_reason FROM switchyard.answers FINAL WHERE request_id = {rid:String}",
                parameters={"rid": first["request"]["request_id"]},
            ).result_rows
        ]
        time.sleep(0.5)
    assert reasons and "unhealthy" in reasons[0]
