"""The deployment manifests under infra/deploy: generated from the process registry, one Deployment, KEDA
ScaledObject and PodDisruptionBudget per process scaling on that process's own consumer group, and a compose file
whose services, ports and volumes all hold together."""

from __future__ import annotations

import copy
import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.export.deploy import DEPLOY_DIR, compose, render, stale, workloads
from services.export.validate import check_compose
from services.infra.acls import topic_access
from services.infra.topic_specs import load_topics
from services.runtime.stage import Stage
from services.settings import REPO_ROOT
from services.stages import CHAIN, NO_HTTP, PROCESSES
from services.wire.schema_registry import SchemaRegistry


def kubernetes_objects() -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = []
    for path in sorted((DEPLOY_DIR / "kubernetes").glob("*.yaml")):
        objects.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return objects


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["labels"]["app.kubernetes.io/component"]: o for o in kubernetes_objects() if o["kind"] == kind
    }


def test_the_committed_manifests_are_what_the_process_registry_generates() -> None:
    assert stale() == [], "run `python -m services.export.deploy write`"


def test_every_process_has_a_deployment_and_a_disruption_budget_and_every_consumer_scales_on_lag() -> None:
    for kind in ("Deployment", "PodDisruptionBudget"):
        assert sorted(by_kind(kind)) == sorted(PROCESSES), kind
    consumers = sorted(workload.name for workload in workloads() if workload.group)
    assert sorted(by_kind("ScaledObject")) == consumers
    assert set(PROCESSES) - set(consumers) == {"dashboard", "learning", "gateway"}
    assert set(by_kind("Service")) == {"dashboard", "gateway"}
    assert by_kind("Deployment")["dashboard"]["spec"]["replicas"] == 1
    assert "replicas" not in by_kind("Deployment")["router"]["spec"]  # KEDA owns it


def test_the_gateway_is_reached_through_a_service_and_scales_on_cpu() -> None:
    assert "replicas" not in by_kind("Deployment")["gateway"]["spec"]  # the HPA owns it
    hpa = by_kind("HorizontalPodAutoscaler")
    assert set(hpa) == {"gateway"}
    spec = hpa["gateway"]["spec"]
    assert spec["scaleTargetRef"]["name"] == "switchyard-gateway" and spec["minReplicas"] >= 2
    assert spec["metrics"][0]["resource"]["name"] == "cpu"
    assert by_kind("Service")["gateway"]["spec"]["ports"][0]["targetPort"] == "http"


def test_the_learning_process_runs_once_and_shares_the_model_volume_with_router_and_answerer() -> None:
    deployments = by_kind("Deployment")
    learning = deployments["learning"]["spec"]
    assert learning["replicas"] == 1 and learning["strategy"] == {"type": "Recreate"}  # never two at once
    claims = {o["metadata"]["name"]: o for o in kubernetes_objects() if o["kind"] == "PersistentVolumeClaim"}
    assert claims["switchyard-models"]["spec"]["accessModes"] == ["ReadWriteMany"]
    for name in ("router", "answerer", "learning"):
        pod = deployments[name]["spec"]["template"]["spec"]
        assert {"name": "models", "persistentVolumeClaim": {"claimName": "switchyard-models"}} in pod["volumes"]
        assert {"name": "models", "mountPath": "/app/var/models"} in pod["containers"][0]["volumeMounts"]
    assert all(v["name"] != "models" for v in deployments["governor"]["spec"]["template"]["spec"]["volumes"])


def test_each_pod_mounts_only_its_own_keys_read_only() -> None:
    """The approvals signing key only in the approvals pod, the audit checkpoint key only in the auditor's; the PII
    vault key where entries are sealed or opened; the approvals public key where approvals are verified; no key
    where none is read."""
    deployments = by_kind("Deployment")

    def keys_of(name: str) -> set[str]:
        pod = deployments[name]["spec"]["template"]["spec"]
        volumes = [v for v in pod.get("volumes", []) if v["name"] == "keys"]
        if not volumes:
            return set()
        mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "keys"]
        assert mounts == [{"name": "keys", "mountPath": "/app/var/secrets", "readOnly": True}]
        assert volumes[0]["secret"]["secretName"] == "switchyard-keys" and volumes[0]["secret"]["defaultMode"] == 0o400
        return {item["key"] for item in volumes[0]["secret"]["items"]}

    sealing = "dead_letters_x25519.pub.pem"  # every writer of dead letters seals them; the private key is nobody's
    assert keys_of("approvals") == {"pii_vault.key", "approvals_ed25519.pem", "approvals_ed25519.pub.pem", sealing}
    assert keys_of("governor") == {"pii_vault.key", "approvals_ed25519.pub.pem", sealing}
    assert keys_of("stitcher") == {"approvals_ed25519.pub.pem", sealing}
    assert keys_of("answerer") == {"pii_vault.key", sealing}
    assert keys_of("auditor") == {"auditor_ed25519.pem", "auditor_ed25519.pub.pem", sealing}  # checkpoint signing
    assert keys_of("router") == keys_of("telemetry") == {sealing}
    assert all(not keys_of(name) for name in ("dashboard", "learning", "health"))
    assert all("dead_letters_x25519.pem" not in keys_of(name) for name in deployments)


def test_each_pod_logs_in_to_kafka_over_sasl_ssl_as_its_own_principal_with_only_its_own_password() -> None:
    config = by_kind("ConfigMap")["config"]["data"]
    assert config["SWITCHYARD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert config["SWITCHYARD_KAFKA_BOOTSTRAP"].endswith(":9094")
    for name, deployment in by_kind("Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = {item["name"]: item.get("value") for item in container["env"]}
        user = f"switchyard-{name}"
        assert env["SWITCHYARD_KAFKA_USERNAME"] == user
        assert env["SWITCHYARD_KAFKA_PASSWORD_FILE"] == f"/etc/switchyard/kafka/{user}.password"
        assert env["SWITCHYARD_KAFKA_CA_FILE"] == "/etc/switchyard/kafka/ca.pem"
        mounts = [m for m in container["volumeMounts"] if m["name"] == "kafka"]
        assert mounts == [{"name": "kafka", "mountPath": "/etc/switchyard/kafka", "readOnly": True}]
        [volume] = [v["secret"] for v in pod["volumes"] if v["name"] == "kafka"]
        assert volume["secretName"] == "switchyard-kafka" and volume["defaultMode"] == 0o400
        assert {item["key"] for item in volume["items"]} == {"ca.pem", f"{user}.password"}, name


def test_the_setup_job_logs_in_as_the_admin_and_creates_the_users_and_acls_first() -> None:
    job = by_kind("Job")["setup"]["spec"]["template"]["spec"]
    [container] = job["containers"]
    assert container["command"][-1].startswith("python -m services.infra.acls apply && ")
    assert {"name": "SWITCHYARD_KAFKA_USERNAME", "value": "admin"} in container["env"]
    [volume] = [v["secret"] for v in job["volumes"] if v["name"] == "kafka"]
    keys = {item["key"] for item in volume["items"]}
    assert keys == {"ca.pem", "admin.password", *(f"switchyard-{name}.password" for name in topic_access())}
    assert {"name": "kafka", "mountPath": "/app/var/secrets/kafka", "readOnly": True} in container["volumeMounts"]


def test_keda_reads_each_groups_lag_over_sasl_ssl_as_that_process() -> None:
    """The parameter names are those of KEDA's kafka scaler (kedacore/keda pkg/scalers/kafka_scaler.go, checked on
    2026-12-05): `sasl` and `tls` from the trigger metadata or the authentication, `username`, `password` and `ca`
    from the TriggerAuthentication only; `sasl` one of none, plaintext, scram_sha256, scram_sha512, oauthbearer,
    gssapi."""
    authentications = by_kind("TriggerAuthentication")
    for name, scaled in by_kind("ScaledObject").items():
        [trigger] = scaled["spec"]["triggers"]
        assert trigger["metadata"]["sasl"] == "scram_sha512" and trigger["metadata"]["tls"] == "enable"
        assert trigger["metadata"]["bootstrapServers"].endswith(":9094")
        authentication = authentications[name]
        assert trigger["authenticationRef"] == {"name": authentication["metadata"]["name"]}
        spec = authentication["spec"]
        assert spec["env"] == [{"parameter": "username", "name": "SWITCHYARD_KAFKA_USERNAME", "containerName": name}]
        assert {(ref["parameter"], ref["key"]) for ref in spec["secretTargetRef"]} == {
            ("password", f"switchyard-{name}.password"),
            ("ca", "ca.pem"),
        }


def test_compose_runs_kafka_on_sasl_ssl_alone_and_each_process_gets_only_its_own_password() -> None:
    document = yaml.safe_load((DEPLOY_DIR / "docker-compose.yaml").read_text())
    services = document["services"]
    kafka = services["kafka"]
    assert kafka["ports"] == ["9094:9094"]
    start = kafka["command"][-1]
    assert "SASL_SSL://:9094,CONTROLLER://kafka:9093" in start and "PLAINTEXT://" not in start
    assert "--add-scram" in start and "User:ANONYMOUS" not in start
    assert {s["target"] for s in kafka["secrets"]} == {
        "/run/secrets/kafka/ca.pem",
        "/run/secrets/kafka/broker.pem",
        "/run/secrets/kafka/admin.password",
    }
    for name in PROCESSES:
        environment = services[name]["environment"]
        user = f"switchyard-{name}"
        assert environment["SWITCHYARD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
        assert environment["SWITCHYARD_KAFKA_BOOTSTRAP"] == "kafka:9094"
        assert environment["SWITCHYARD_KAFKA_USERNAME"] == user
        targets = {s["target"] for s in services[name]["secrets"]}
        assert targets == {"/etc/switchyard/kafka/ca.pem", f"/etc/switchyard/kafka/{user}.password"}, name
        assert environment["SWITCHYARD_KAFKA_PASSWORD_FILE"] in targets
    # the setup, as admin, holds every password: it creates the SCRAM users that are missing
    assert services["setup"]["environment"]["SWITCHYARD_KAFKA_USERNAME"] == "admin"
    assert len(services["setup"]["secrets"]) == len(topic_access()) + 2  # every process, the admin, the CA
    assert all(secret["file"].startswith("./secrets/kafka/") for secret in document["secrets"].values())


def test_each_deployment_probes_healthz_on_its_stage_port_and_requests_resources() -> None:
    for name, deployment in by_kind("Deployment").items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"].keys() == {"cpu", "memory"}
        assert container["readinessProbe"] and container["livenessProbe"]
        if name in NO_HTTP:
            continue
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        port = container["ports"][0]["containerPort"]
        assert container["args"] == ["run", name, "--http-port", str(port)]


@pytest.mark.parametrize("name", CHAIN)
def test_each_stage_scales_on_the_lag_of_its_own_consumer_group_and_input_topic(name: str) -> None:
    module = importlib.import_module(f"services.{name}.stage")
    stage_class = next(
        v for v in vars(module).values() if isinstance(v, type) and issubclass(v, Stage) and v is not Stage
    )
    stage = object.__new__(stage_class)  # the group and topic are class facts: no dependencies needed
    trigger = by_kind("ScaledObject")[name]["spec"]["triggers"][0]

    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["consumerGroup"] == stage.group_id
    assert trigger["metadata"]["topic"] == stage.input_topic


def test_no_process_scales_past_the_partitions_of_the_topics_it_reads() -> None:
    partitions = {
        spec.name: spec.partitions
        for spec in load_topics(REPO_ROOT / "topics", SchemaRegistry.load(REPO_ROOT / "schemas"))
    }
    scaled = by_kind("ScaledObject")
    for workload in (workload for workload in workloads() if workload.group):
        most = max(partitions[topic] for topic in workload.topics)
        assert scaled[workload.name]["spec"]["maxReplicaCount"] == most, workload.name


def test_secrets_are_only_referenced_never_written_into_the_manifests() -> None:
    assert not [o for o in kubernetes_objects() if o["kind"] == "Secret"]
    env = by_kind("Deployment")["answerer"]["spec"]["template"]["spec"]["containers"][0]["env"]
    references = {
        item["valueFrom"]["secretKeyRef"]["key"]: item["valueFrom"]["secretKeyRef"]
        for item in env
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    # the ClickHouse password is required: every process signs in; the model key is optional
    assert not references.pop("SWITCHYARD_CLICKHOUSE_PASSWORD")["optional"]
    assert references and all(reference["optional"] for reference in references.values())


def test_compose_clickhouse_takes_the_password_every_process_sends_and_is_not_published_beyond_the_loopback() -> None:
    document = yaml.safe_load((DEPLOY_DIR / "docker-compose.yaml").read_text())
    server = document["services"]["clickhouse"]
    assert server["ports"] == ["127.0.0.1:8123:8123"]
    assert server["environment"]["CLICKHOUSE_PASSWORD"].startswith("${SWITCHYARD_CLICKHOUSE_PASSWORD:?")
    for name in ("router", "gateway", "setup"):
        password = document["services"][name]["environment"]["SWITCHYARD_CLICKHOUSE_PASSWORD"]
        assert password.startswith("${SWITCHYARD_CLICKHOUSE_PASSWORD:?"), name


def test_the_compose_file_runs_the_infrastructure_every_process_and_the_dashboard() -> None:
    document = yaml.safe_load((DEPLOY_DIR / "docker-compose.yaml").read_text())

    assert "dashboard" in PROCESSES
    assert set(document["services"]) == {"kafka", "clickhouse", "weaviate", "setup", *PROCESSES}
    assert all(
        service["environment"]["SWITCHYARD_HOST"] == "0.0.0.0" for service in map(document["services"].get, PROCESSES)
    )
    assert check_compose(document, DEPLOY_DIR) == []
    ports = [p.split(":")[-2] for service in document["services"].values() for p in service.get("ports", [])]
    assert len(ports) == len(set(ports))
    # the broker runs the dev broker's own configuration (KRaft, broker and controller in one process)
    kafka = document["services"]["kafka"]
    assert "../kafka/server.properties.in:/opt/switchyard/server.properties.in:ro" in kafka["volumes"]
    assert "process.roles=broker,controller" in (REPO_ROOT / "infra" / "kafka" / "server.properties.in").read_text()


def test_the_compose_check_names_each_broken_service_port_and_volume() -> None:
    document = copy.deepcopy(compose())
    document["services"]["router"]["ports"] = ["9102:9101"]  # the stitcher's host port
    document["services"]["auditor"]["volumes"] = ["audit-state:/app/var"]
    document["services"]["governor"]["depends_on"] = {"policy-server": {"condition": "service_started"}}
    document["services"]["dashboard"]["depends_on"] = {"router": {"condition": "service_healthy"}}
    document["services"]["router"].pop("healthcheck")
    del document["volumes"]["health-state"]
    document["services"]["router"]["secrets"].append({"source": "kafka-switchyard-admin", "target": "/x"})
    del document["secrets"]["kafka-switchyard-pos"]
    document["secrets"]["kafka-stale"] = {"file": "./secrets/kafka/stale.password"}

    problems = check_compose(document, DEPLOY_DIR)

    assert sorted(problems) == sorted(
        [
            "stitcher: host port 9102 is taken by router",
            "auditor: volume 'audit-state' is not declared under volumes",
            "governor: depends on unknown service 'policy-server'",
            "dashboard: waits for router to be healthy, which has no healthcheck",
            "health: volume 'health-state' is not declared under volumes",
            "router: secret 'kafka-switchyard-admin' is not declared under secrets",
            "setup: secret 'kafka-switchyard-pos' is not declared under secrets",
            "secret 'kafka-stale' is declared and never used",
        ]
    )


def test_the_image_build_file_installs_the_code_where_the_settings_look_for_it() -> None:
    dockerfile = (DEPLOY_DIR / "Dockerfile").read_text()
    assert "pip install -e ." in dockerfile
    for directory in ("schemas", "topics", "routes", "providers", "policies", "var/models"):
        assert f"COPY {directory} ./{directory}" in dockerfile


def test_rendering_into_another_directory_writes_the_same_set_of_files(tmp_path: Path) -> None:
    names = sorted(path.relative_to(tmp_path).as_posix() for path in render(tmp_path))
    assert names == sorted(
        [
            "docker-compose.yaml",
            "kubernetes/00-namespace.yaml",
            "kubernetes/01-config.yaml",
            "kubernetes/02-setup-job.yaml",
            "kubernetes/03-models-volume.yaml",
        ]
        + [f"kubernetes/{name}.yaml" for name in PROCESSES]
    )


def test_the_dashboard_needs_its_token_from_the_secret_and_only_the_dashboard_reads_it() -> None:
    deployments = by_kind("Deployment")

    def secret_refs(name: str) -> dict[str, dict[str, Any]]:
        env = deployments[name]["spec"]["template"]["spec"]["containers"][0]["env"]
        return {i["name"]: i["valueFrom"]["secretKeyRef"] for i in env if "secretKeyRef" in i.get("valueFrom", {})}

    token = secret_refs("dashboard")["SWITCHYARD_DASHBOARD_TOKEN"]
    assert token == {"name": "switchyard-secrets", "key": "SWITCHYARD_DASHBOARD_TOKEN", "optional": False}
    assert [name for name in PROCESSES if "SWITCHYARD_DASHBOARD_TOKEN" in secret_refs(name)] == ["dashboard"]
    assert [name for name in PROCESSES if "SWITCHYARD_WEAVIATE_API_KEY" in secret_refs(name)] == ["stitcher"]
    assert secret_refs("stitcher")["SWITCHYARD_WEAVIATE_API_KEY"]["optional"] is True


def test_the_setup_job_presents_the_weaviate_key_when_it_ingests_the_knowledge_base() -> None:
    job = next(o for o in kubernetes_objects() if o["kind"] == "Job")
    container = job["spec"]["template"]["spec"]["containers"][0]

    assert "knowledge ingest" in container["command"][-1]
    secrets = [item["valueFrom"]["secretKeyRef"]["key"] for item in container["env"] if "valueFrom" in item]
    assert secrets == ["SWITCHYARD_WEAVIATE_API_KEY"]


def test_the_dashboard_answers_its_service_names_and_no_other_host_by_default() -> None:
    config = next(o for o in kubernetes_objects() if o["kind"] == "ConfigMap")["data"]
    hosts = json.loads(config["SWITCHYARD_DASHBOARD_ALLOWED_HOSTS"])

    assert "switchyard-dashboard.switchyard.svc" in hosts
    assert all(host.startswith("switchyard-dashboard") for host in hosts)


def test_compose_publishes_the_dashboard_and_weaviate_on_the_loopback_only() -> None:
    services = yaml.safe_load((DEPLOY_DIR / "docker-compose.yaml").read_text())["services"]

    assert services["dashboard"]["ports"] == ["127.0.0.1:9108:9108"]
    assert services["weaviate"]["ports"] == ["127.0.0.1:8080:8080", "127.0.0.1:50051:50051"]


def test_compose_refuses_to_start_without_the_dashboard_token_and_the_weaviate_key() -> None:
    services = yaml.safe_load((DEPLOY_DIR / "docker-compose.yaml").read_text())["services"]
    required = re.compile(r"^\$\{(SWITCHYARD_[A-Z_]+):\?[^}]+\}$")  # compose stops, naming the variable

    def variable(value: str) -> str:
        match = required.match(value)
        assert match, value
        return match[1]

    assert variable(services["dashboard"]["environment"]["SWITCHYARD_DASHBOARD_TOKEN"]) == "SWITCHYARD_DASHBOARD_TOKEN"
    weaviate = services["weaviate"]["environment"]
    assert weaviate["AUTHENTICATION_ANONYMOUS_ACCESS_ENABLED"] == "false"
    assert weaviate["AUTHENTICATION_APIKEY_ENABLED"] == "true"
    assert weaviate["GO_PROFILING_DISABLE"] == "true"
    for value in (weaviate["AUTHENTICATION_APIKEY_ALLOWED_KEYS"], weaviate["CLUSTER_BASIC_AUTH_PASSWORD"]):
        assert variable(value) == "SWITCHYARD_WEAVIATE_API_KEY"
    for name in ("stitcher", "setup"):
        assert variable(services[name]["environment"]["SWITCHYARD_WEAVIATE_API_KEY"]) == "SWITCHYARD_WEAVIATE_API_KEY"
    readers = {
        name for name, service in services.items() if "SWITCHYARD_WEAVIATE_API_KEY" in service.get("environment", {})
    }
    assert readers == {"stitcher", "setup"}
