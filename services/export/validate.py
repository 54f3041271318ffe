"""Offline validation of the deployment manifests: every Kubernetes object against the JSON schema of its kind with
kubeconform (built from the Go module proxy by infra/deploy/kubeconform.sh), and the compose file checked for every
service, port and volume it names.

The Kubernetes schemas come from the kubernetes-validate wheel (PyPI, a dev dependency) and KEDA's ScaledObject
schema from the CRD in the KEDA Go module (`go mod download`), so nothing is fetched from GitHub.

`python -m services.export.validate kubernetes [--kubeconform BIN] [FILE...]` and `... compose [FILE]`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from services.settings import REPO_ROOT, get_settings

KUBERNETES_VERSION: Final = "1.37.0"
KEDA_MODULE: Final = "github.com/kedacore/keda/v2"
KEDA_VERSION: Final = "v2.21.0"
KEDA_CRDS: Final = ("keda.sh_scaledobjects.yaml", "keda.sh_triggerauthentications.yaml")
DEPLOY_DIR: Final = REPO_ROOT / "infra" / "deploy"


class ValidationSetupError(RuntimeError):
    """A schema source is missing: says which, and how to get it."""


def cache_dir() -> Path:
    return get_settings().cache_dir


def kubernetes_schema_dir() -> Path:
    """The kubernetes-validate wheel's strict schemas, copied once into the cache with their references made
    file-relative: the wheel gives each schema an https `$id` and refers to `/api/_definitions.json` under it, which
    kubeconform would try to download. kubeconform's template adds the version and the strictness."""
    package = importlib.util.find_spec("kubernetes_validate")
    if package is None or package.origin is None:
        raise ValidationSetupError(
            "the Kubernetes JSON schemas ship in the kubernetes-validate wheel: `make install` (dev dependencies)"
        )
    name = f"v{KUBERNETES_VERSION}-local-strict"
    source = Path(package.origin).parent / "kubernetes-json-schema" / name
    if not source.is_dir():
        raise ValidationSetupError(f"{source.parent} has no schemas for Kubernetes {KUBERNETES_VERSION}")
    target = cache_dir() / "kubernetes-schemas"
    done = target / name / ".complete"
    if not done.is_file():
        (target / name).mkdir(parents=True, exist_ok=True)
        for schema in source.glob("*.json"):
            text = schema.read_text(encoding="utf-8").replace('"/api/_definitions.json#', '"_definitions.json#')
            document = json.loads(text)
            document.pop("$id", None)
            (target / name / schema.name).write_text(json.dumps(document), encoding="utf-8")
        done.touch()
    return target


def keda_schema_dir() -> Path:
    """JSON schemas for KEDA's custom resources, converted once from the CRDs in the KEDA Go module."""
    target = cache_dir() / f"keda-schemas-{KEDA_VERSION}"
    if all((target / _crd_schema_name(crd)).is_file() for crd in KEDA_CRDS):
        return target
    module_dir = _download_go_module(KEDA_MODULE, KEDA_VERSION)
    target.mkdir(parents=True, exist_ok=True)
    for crd_file in KEDA_CRDS:
        crd = yaml.safe_load((module_dir / "config" / "crd" / "bases" / crd_file).read_text(encoding="utf-8"))
        for version in crd["spec"]["versions"]:
            schema = version["schema"]["openAPIV3Schema"]
            kind = crd["spec"]["names"]["kind"].lower()
            group = crd["spec"]["group"].split(".")[0]
            (target / f"{kind}-{group}-{version['name']}.json").write_text(json.dumps(schema), encoding="utf-8")
    return target


def _crd_schema_name(crd_file: str) -> str:
    # keda.sh_scaledobjects.yaml -> scaledobject-keda-v1alpha1.json
    plural = crd_file.split("_", 1)[1].removesuffix(".yaml")
    return f"{plural.removesuffix('s')}-keda-v1alpha1.json"


def _download_go_module(module: str, version: str) -> Path:
    try:
        result = subprocess.run(
            ["go", "mod", "download", "-json", f"{module}@{version}"],
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
            env={**os.environ, "GOFLAGS": "-mod=mod"},
        )
    except FileNotFoundError as error:
        raise ValidationSetupError("the Go toolchain is needed to fetch KEDA's CRDs (go mod download)") from error
    if result.returncode != 0:
        raise ValidationSetupError(f"go mod download {module}@{version} failed: {result.stdout}{result.stderr}")
    return Path(json.loads(result.stdout)["Dir"])


def kubeconform_command(binary: Path, files: Sequence[Path]) -> list[str]:
    kubernetes = kubernetes_schema_dir()
    keda = keda_schema_dir()
    return [
        str(binary),
        "-strict",
        "-summary",
        "-output",
        "json",
        "-kubernetes-version",
        KUBERNETES_VERSION,
        "-schema-location",
        f"{kubernetes}/{{{{ .NormalizedKubernetesVersion }}}}-local{{{{ .StrictSuffix }}}}/"
        "{{ .ResourceKind }}{{ .KindSuffix }}.json",
        "-schema-location",
        f"{keda}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json",
        *map(str, files),
    ]


@dataclass(frozen=True)
class KubeconformResult:
    valid: int
    invalid: int
    errors: int
    skipped: int
    problems: list[str]
    kinds: dict[str, int]

    @property
    def ok(self) -> bool:
        return self.invalid == 0 and self.errors == 0 and self.skipped == 0


def run_kubeconform(binary: Path, files: Sequence[Path]) -> KubeconformResult:
    """kubeconform over the files, strict (unknown fields are errors), every kind required to have a schema."""
    completed = subprocess.run(
        kubeconform_command(binary, files), capture_output=True, text=True, check=False, timeout=300
    )
    try:
        report = json.loads(completed.stdout)
    except json.JSONDecodeError as error:
        raise ValidationSetupError(f"kubeconform printed no report: {completed.stdout}{completed.stderr}") from error
    summary = report.get("summary", {})
    problems: list[str] = []
    kinds: dict[str, int] = {}
    for resource in report.get("resources", []):
        if resource.get("status") != "statusValid":
            problems.append(
                f"{resource.get('filename')}: {resource.get('kind')} {resource.get('name')}: "
                f"{resource.get('status')}: {resource.get('msg')}"
            )
    for path in files:
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict):
                kinds[document["kind"]] = kinds.get(document["kind"], 0) + 1
    return KubeconformResult(
        valid=int(summary.get("valid", 0)),
        invalid=int(summary.get("invalid", 0)),
        errors=int(summary.get("errors", 0)),
        skipped=int(summary.get("skipped", 0)),
        problems=problems,
        kinds=kinds,
    )


# --- compose ------------------------------------------------------------------------------------------------------

# [[IP:]HOST:]CONTAINER[/PROTOCOL], e.g. 127.0.0.1:9110:9110 for a port published on the loopback only
PORT: Final = re.compile(
    r"^(?:(?:(?P<ip>[\d.]+|\[[\da-fA-F:]+\]):)?(?P<host>\d{1,5}):)?(?P<container>\d{1,5})(?:/(tcp|udp))?$"
)
DEPENDENCY_CONDITIONS: Final = {"service_started", "service_healthy", "service_completed_successfully"}


def check_compose(document: dict[str, Any], project_dir: Path) -> list[str]:
    """Every problem of a compose document a `docker compose up` would trip on: unknown dependencies or
    conditions, malformed or clashing host ports, undeclared named volumes and secrets, build contexts and
    Dockerfiles that do not exist, health conditions on services without a healthcheck."""
    problems: list[str] = []
    services: dict[str, Any] = document.get("services") or {}
    declared_volumes = set((document.get("volumes") or {}).keys())
    used_volumes: set[str] = set()
    declared_secrets = set((document.get("secrets") or {}).keys())
    used_secrets: set[str] = set()
    host_ports: dict[int, str] = {}
    if not services:
        return ["no services"]
    for name, service in services.items():
        if "image" not in service and "build" not in service:
            problems.append(f"{name}: neither image nor build")
        problems.extend(_check_build(name, service.get("build"), project_dir))
        for spec in service.get("ports", []):
            match = PORT.match(str(spec))
            if not match:
                problems.append(f"{name}: port {spec!r} is not [IP:]HOST:CONTAINER")
                continue
            if match["host"]:
                host = int(match["host"])
                if host in host_ports:
                    problems.append(f"{name}: host port {host} is taken by {host_ports[host]}")
                host_ports[host] = name
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if not source.startswith((".", "/")):
                used_volumes.add(source)
                if source not in declared_volumes:
                    problems.append(f"{name}: volume {source!r} is not declared under volumes")
        for secret in service.get("secrets", []):
            source = str(secret["source"] if isinstance(secret, dict) else secret)
            used_secrets.add(source)
            if source not in declared_secrets:
                problems.append(f"{name}: secret {source!r} is not declared under secrets")
        for dependency, condition in (service.get("depends_on") or {}).items():
            if dependency not in services:
                problems.append(f"{name}: depends on unknown service {dependency!r}")
                continue
            wanted = condition.get("condition", "service_started") if isinstance(condition, dict) else "service_started"
            if wanted not in DEPENDENCY_CONDITIONS:
                problems.append(f"{name}: unknown condition {wanted!r} on {dependency}")
            if wanted == "service_healthy" and "healthcheck" not in services[dependency]:
                problems.append(f"{name}: waits for {dependency} to be healthy, which has no healthcheck")
    problems.extend(f"volume {volume!r} is declared and never used" for volume in declared_volumes - used_volumes)
    problems.extend(f"secret {secret!r} is declared and never used" for secret in declared_secrets - used_secrets)
    return problems


def _check_build(name: str, build: Any, project_dir: Path) -> list[str]:
    if build is None:
        return []
    context = project_dir / (build if isinstance(build, str) else build.get("context", "."))
    dockerfile = context / (build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else "Dockerfile")
    if not context.is_dir():
        return [f"{name}: build context {context} does not exist"]
    if not dockerfile.is_file():
        return [f"{name}: Dockerfile {dockerfile} does not exist"]
    return []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard validate-manifests", description=__doc__)
    parser.add_argument("what", choices=["kubernetes", "compose"], help="which manifests to validate")
    parser.add_argument("--kubeconform", type=Path, help="the kubeconform binary (infra/deploy/kubeconform.sh path)")
    parser.add_argument("files", nargs="*", type=Path, help="the files to validate (default: those under infra/deploy)")
    args = parser.parse_args(argv)
    if args.what == "compose":
        path = args.files[0] if args.files else DEPLOY_DIR / "docker-compose.yaml"
        problems = check_compose(yaml.safe_load(path.read_text(encoding="utf-8")), path.parent)
        for problem in problems:
            print(f"{path}: {problem}", file=sys.stderr)
        print(f"{path}: {'invalid' if problems else 'valid'}")
        return 1 if problems else 0
    if args.kubeconform is None:
        parser.error("--kubeconform BIN is needed (bash infra/deploy/kubeconform.sh path prints it)")
    files = args.files or sorted((DEPLOY_DIR / "kubernetes").glob("*.yaml"))
    result = run_kubeconform(args.kubeconform, files)
    for problem in result.problems:
        print(problem, file=sys.stderr)
    kinds = ", ".join(f"{count} {kind}" for kind, count in sorted(result.kinds.items()))
    print(
        f"kubeconform (Kubernetes {KUBERNETES_VERSION}, KEDA {KEDA_VERSION}, strict): {result.valid} valid, "
        f"{result.invalid} invalid, {result.errors} errors, {result.skipped} skipped ({kinds})"
    )
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
