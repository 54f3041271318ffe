"""`make demo` end to end: the six processes come up, a mix of POS requests is answered from `audited`,
and the summary reports every request answered once, none dead-lettered, and the latency percentiles."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

from confluent_kafka.admin import AdminClient

from services.infra import acls
from services.launcher import free_port
from services.settings import Settings
from tests.integration.conftest import delete_topics


def test_the_demo_answers_every_request_once_and_prints_a_summary(
    settings: Settings, kafka: str, clickhouse: str, admin: AdminClient
) -> None:
    port = free_port()
    stub = subprocess.Popen(
        [sys.executable, "-m", "services.dev.stub_model", "--port", str(port), "--latency-ms", "20"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prefix = f"it-demo-{uuid.uuid4().hex[:6]}."
    env = {
        **os.environ,
        "SWITCHYARD_TOPIC_PREFIX": prefix,
        "SWITCHYARD_MODEL_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "SWITCHYARD_MODEL_NAME": "stub",
    }
    try:
        # the demo's processes log in as their own principals on SASL_SSL: their ACLs under the test's prefix
        with acls.granted(settings.model_copy(update={"topic_prefix": prefix})):
            demo = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "services.tools.demo.chain",
                    "--requests",
                    "40",
                    "--rate",
                    "20",
                    "--model",
                    "openai",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=240,
            )
    finally:
        stub.terminate()
        stub.wait(10)
        delete_topics(admin, [t for t in admin.list_topics(timeout=10).topics if t.startswith(prefix)])
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output[-4000:]
    assert "sent 40, answered 40, unanswered 0, dead-lettered 0, answered twice 0" in output
    assert "WORKFLOW" in output and "SMALL_MODEL" in output
    assert "end to end ms: {'p50'" in output
    split = next(line for line in output.splitlines() if line.strip().startswith("orchestration work split"))
    assert "routing" in split and "policy" in split and "audit" in split, split
    assert '"router/0": 0' in output, "every process exits 0 on SIGTERM"
