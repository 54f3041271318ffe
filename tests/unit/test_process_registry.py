"""The process registry is the one list of processes: a stage added there, and nowhere else, is consumed by
telemetry, sampled for lag, deployed, scraped, granted its topics and started by `switchyard run`; the registry
agrees with the stage classes, the topic definitions and the committed scrape configuration."""

from __future__ import annotations

import importlib
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.export import scrape
from services.export.deploy import DEAD_LETTER_KEY, render, workloads
from services.infra.topic_specs import load_topics
from services.registry import (
    REGISTRY,
    Kind,
    Launch,
    Process,
    Registry,
    RegistryError,
    Replicas,
    Resources,
    Scaling,
    resolve,
    stage,
    topic_access,
)
from services.runtime.stage import Stage
from services.settings import REPO_ROOT, Settings
from services.stages import build_stage, run_process
from services.telemetry.lag import stage_inputs
from services.telemetry.writer import consumed_topics
from services.wire.schema_registry import SchemaRegistry

TOY_PORT = 9120
SMALL = Resources("50m", "64Mi", "128Mi")


class ToyStage:
    """Stands in for a Stage object: the test checks the registry's factory is what `switchyard run` builds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings


def toy_registry() -> Registry:
    toy = stage(
        "toy",
        input_topic="audited",
        output_topic="toy.enriched",
        factory=ToyStage,
        http_port=TOY_PORT,
        resources=SMALL,
    )
    return REGISTRY.with_process(toy)


def topic_specs() -> dict[str, int]:
    """Each topic defined under topics/, with its partitions."""
    specs = load_topics(REPO_ROOT / "topics", SchemaRegistry.load(REPO_ROOT / "schemas"))
    return {spec.name: spec.partitions for spec in specs}


def manifests(registry: Registry, directory: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        path.relative_to(directory).as_posix(): [d for d in yaml.safe_load_all(text) if d]
        for path, text in render(directory, registry).items()
    }


def test_a_stage_added_in_the_registry_alone_appears_in_every_derived_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = toy_registry()
    # its topics, as topics/ would define them beside the entry (the wire contract is not the registry's)
    monkeypatch.setattr(
        "services.export.deploy._partitions", lambda: {**topic_specs(), "dlq.toy": 3, "toy.enriched": 12}
    )

    assert registry.chain[-1] == "toy"
    assert "dlq.toy" in consumed_topics(registry) and "dlq.toy" not in consumed_topics()
    lag = stage_inputs(registry)
    assert lag["toy"] == ["audited"] and "dlq.toy" in lag["telemetry"]
    assert topic_access(registry)["toy"] == (("audited",), ("dlq.toy", "toy.enriched"))
    assert "dlq.toy" in topic_access(registry)["telemetry"][0]
    targets = [c["targets"] for c in scrape.config(registry)["scrape_configs"][0]["static_configs"]]
    assert [f"127.0.0.1:{TOY_PORT}"] in targets and [f"127.0.0.1:{TOY_PORT}"] not in [
        c["targets"] for c in scrape.config()["scrape_configs"][0]["static_configs"]
    ]

    files = manifests(registry, tmp_path)
    deployment, authentication, scaled, budget = files["kubernetes/toy.yaml"]
    kinds = [deployment["kind"], authentication["kind"], scaled["kind"], budget["kind"]]
    assert kinds == ["Deployment", "TriggerAuthentication", "ScaledObject", "PodDisruptionBudget"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    # it logs in to Kafka as its own principal, whose password the setup holds too (it creates the user)
    assert {"name": "SWITCHYARD_KAFKA_USERNAME", "value": "switchyard-toy"} in container["env"]
    setup = files["kubernetes/02-setup-job.yaml"][0]["spec"]["template"]["spec"]["volumes"][0]["secret"]
    assert "switchyard-toy.password" in [item["key"] for item in setup["items"]]
    assert container["args"] == ["run", "toy", "--http-port", str(TOY_PORT)]
    assert container["resources"] == {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "128Mi"}}
    keys = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "keys")
    assert [item["key"] for item in keys["secret"]["items"]] == [DEAD_LETTER_KEY]  # it seals its dead letters
    trigger = scaled["spec"]["triggers"][0]["metadata"]
    assert (trigger["consumerGroup"], trigger["topic"]) == ("switchyard-toy", "audited")
    partitions = {
        s.name: s.partitions for s in load_topics(REPO_ROOT / "topics", SchemaRegistry.load(REPO_ROOT / "schemas"))
    }
    assert scaled["spec"]["maxReplicaCount"] == partitions["audited"]
    compose = files["docker-compose.yaml"][0]["services"]["toy"]
    assert compose["command"] == ["switchyard", "run", "toy", "--http-port", str(TOY_PORT)]
    assert compose["ports"] == [f"{TOY_PORT}:{TOY_PORT}"]

    settings = Settings()
    built: Any = build_stage("toy", settings, registry)
    assert isinstance(built, ToyStage) and built.settings is settings


def test_switchyard_run_hands_a_service_the_replica_and_the_port_asked_for_else_the_registry_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    launched: list[Launch] = []
    service = Process(
        "toy-service",
        Kind.SERVICE,
        factory=lambda settings, launch: launched.append(launch),
        http_port=TOY_PORT,
        replicas=Replicas(Scaling.FIXED),
        resources=SMALL,
    )
    registry = REGISTRY.with_process(service)
    monkeypatch.setattr("services.stages.configure_logging", lambda level: None)

    run_process("toy-service", replica="r1", registry=registry)
    run_process("toy-service", http_port=0, registry=registry)

    assert [(launch.replica, launch.http_port) for launch in launched] == [("r1", TOY_PORT), (None, 0)]
    with pytest.raises(SystemExit, match="unknown process 'nope'"):
        run_process("nope", registry=registry)


@pytest.mark.parametrize("name", REGISTRY.chain)
def test_each_stage_class_declares_the_topics_and_group_its_registry_entry_gives_it(name: str) -> None:
    module = importlib.import_module(f"services.{name}.stage")
    stage_class = next(
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, Stage) and v.__dict__.get("name") == name
    )
    declared = object.__new__(stage_class)  # the topics and group are class facts: no dependencies needed
    entry = REGISTRY[name]

    assert entry.inputs == (declared.input_topic,)
    assert entry.outputs[0] == declared.output_topic
    assert entry.dead_letter == declared.dead_letter_topic
    assert entry.group == declared.group_id


def test_the_chain_stages_follow_each_other_from_requests_to_audited() -> None:
    stages = [REGISTRY[name] for name in REGISTRY.chain]

    assert stages[0].inputs == ("requests",) and stages[-1].outputs[0] == "audited"
    assert all(before.outputs[0] == after.inputs[0] for before, after in itertools.pairwise(stages))


def test_every_topic_a_process_reads_or_writes_is_defined_under_topics() -> None:
    defined = set(topic_specs())

    used = {topic for reads, writes in topic_access().values() for topic in (*reads, *writes)}

    assert used <= defined, used - defined
    assert topic_access()["telemetry"][0] == tuple(sorted(consumed_topics()))


def test_no_two_processes_share_a_port_nor_take_the_dashboards_own_port() -> None:
    ports = [p.http_port for p in REGISTRY if p.http_port is not None]

    assert len(ports) == len(set(ports))
    assert Settings.model_fields["dashboard_port"].default not in ports


def test_the_registry_refuses_a_duplicate_name_a_taken_port_and_lag_scaling_without_a_group() -> None:
    router = REGISTRY["router"]
    with pytest.raises(RegistryError, match="listed twice: router"):
        REGISTRY.with_process(router)
    with pytest.raises(RegistryError, match="toy: port 9101 is router's"):
        REGISTRY.with_process(
            stage("toy", input_topic="a", output_topic="b", factory=ToyStage, http_port=9101, resources=SMALL)
        )
    with pytest.raises(RegistryError, match="toy: scaling on lag needs a consumer group"):
        REGISTRY.with_process(Process("toy", Kind.SERVICE, factory=ToyStage, resources=SMALL))


def test_the_committed_scrape_config_is_what_the_registry_generates() -> None:
    assert not scrape.stale(), "run `python -m services.export.scrape write`"


def test_prometheus_scrapes_every_process_that_serves_metrics_and_no_other() -> None:
    config = yaml.safe_load(scrape.SCRAPE_FILE.read_text())["scrape_configs"][0]
    scraped = {c["labels"]["process"]: c["targets"] for c in config["static_configs"]}

    assert config["job_name"] == "switchyard"
    assert set(scraped) == set(REGISTRY.names) - {"health", "dashboard"}  # no HTTP; pages without /metrics
    assert {"approvals", "learning", "gateway"} <= set(scraped)
    assert all(scraped[w.name] == [f"127.0.0.1:{w.http_port}"] for w in workloads() if w.name in scraped)


def test_every_factory_the_registry_names_can_be_imported() -> None:
    for process in REGISTRY:
        assert callable(resolve(process.factory)), process.name
    with pytest.raises(AttributeError):
        resolve("services.stages:build_nothing")
