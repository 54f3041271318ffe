"""Reconcile the broker with topics/: create what is missing, add partitions, align configs.

Prints the plan (a diff) before changing anything, is idempotent, and refuses what Kafka cannot do in
place (fewer partitions, another replication factor) without applying any part of that plan.
usage: python -m services.infra.topics [plan|apply] [--dir topics/] [--bootstrap HOST:PORT]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from confluent_kafka import KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)

from services.infra.topic_specs import TopicSpec, TopicSpecError, load_topics
from services.runtime.kafka_clients import confluent_config
from services.settings import get_settings
from services.wire.schema_registry import SchemaRegistry

TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ConfigChange:
    key: str
    current: str | None
    desired: str


@dataclass(frozen=True)
class TopicChange:
    """What reconciliation would do to one topic."""

    spec: TopicSpec
    create: bool = False
    partitions_from: int | None = None
    configs: tuple[ConfigChange, ...] = ()
    refusals: tuple[str, ...] = ()


@dataclass
class Plan:
    changes: list[TopicChange] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)

    @property
    def refusals(self) -> list[str]:
        return [f"{c.spec.name}: {r}" for c in self.changes for r in c.refusals]

    @property
    def empty(self) -> bool:
        return not self.changes

    def render(self) -> str:
        lines = []
        for change in self.changes:
            spec = change.spec
            if change.create:
                lines.append(
                    f"+ {spec.name}  create: {spec.partitions} partitions, replication {spec.replication_factor}, "
                    f"value {spec.value_schema}, key {spec.key}"
                )
                lines += [f"    {key} = {value}" for key, value in sorted(spec.kafka_configs().items())]
                continue
            lines.append(f"~ {spec.name}")
            if change.partitions_from is not None:
                lines.append(f"    partitions {change.partitions_from} -> {spec.partitions}")
            lines += [
                f"    {c.key}: {c.current if c.current is not None else '(unset)'} -> {c.desired}"
                for c in change.configs
            ]
            lines += [f"  ! refused: {r}" for r in change.refusals]
        lines.append(
            f"{sum(c.create for c in self.changes)} to create, {sum(not c.create for c in self.changes)} to change, "
            f"{len(self.unchanged)} unchanged"
        )
        return "\n".join(lines)


class ReconcileRefused(RuntimeError):
    """The plan holds a change Kafka cannot make in place; nothing was applied."""


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient(confluent_config({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10_000}))


def _current_configs(admin: AdminClient, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    futures = admin.describe_configs(resources, request_timeout=TIMEOUT_S)
    return {
        resource.name: {key: entry.value for key, entry in future.result(TIMEOUT_S).items()}
        for resource, future in futures.items()
    }


def plan(admin: AdminClient, specs: list[TopicSpec]) -> Plan:
    """Compare the broker with the specs; reads only."""
    metadata = admin.list_topics(timeout=TIMEOUT_S).topics
    existing = [spec.name for spec in specs if spec.name in metadata]
    configs = _current_configs(admin, existing)
    result = Plan()
    for spec in specs:
        if spec.name not in metadata:
            result.changes.append(TopicChange(spec, create=True))
            continue
        partitions = metadata[spec.name].partitions
        current_partitions = len(partitions)
        replication = len(next(iter(partitions.values())).replicas) if partitions else 0
        refusals = []
        if spec.partitions < current_partitions:
            refusals.append(
                f"partitions {current_partitions} -> {spec.partitions}: Kafka cannot remove partitions; "
                f"keep {current_partitions} in {spec.source}, or create a new topic and migrate"
            )
        if replication and spec.replication_factor != replication:
            refusals.append(
                f"replication factor {replication} -> {spec.replication_factor}: needs a partition reassignment "
                f"(kafka-reassign-partitions), not a config change; set {replication} in {spec.source}"
            )
        grow = current_partitions if spec.partitions > current_partitions else None
        current = configs.get(spec.name, {})
        changed = tuple(
            ConfigChange(key, current.get(key), value)
            for key, value in sorted(spec.kafka_configs().items())
            if current.get(key) != value
        )
        if grow is None and not changed and not refusals:
            result.unchanged.append(spec.name)
        else:
            result.changes.append(TopicChange(spec, partitions_from=grow, configs=changed, refusals=tuple(refusals)))
    return result


def apply(admin: AdminClient, planned: Plan) -> None:
    """Carry out a plan; refuses the whole plan if any part of it is impossible."""
    if planned.refusals:
        raise ReconcileRefused("nothing applied; refused:\n  " + "\n  ".join(planned.refusals))
    creates = [
        NewTopic(
            c.spec.name,
            num_partitions=c.spec.partitions,
            replication_factor=c.spec.replication_factor,
            config=c.spec.kafka_configs(),
        )
        for c in planned.changes
        if c.create
    ]
    if creates:
        for future in admin.create_topics(creates, request_timeout=TIMEOUT_S).values():
            future.result(TIMEOUT_S)
        wait_for_leaders(admin, [topic.topic for topic in creates])
    grows = [NewPartitions(c.spec.name, c.spec.partitions) for c in planned.changes if c.partitions_from is not None]
    if grows:
        for future in admin.create_partitions(grows, request_timeout=TIMEOUT_S).values():
            future.result(TIMEOUT_S)
    alters = [
        ConfigResource(
            ResourceType.TOPIC,
            c.spec.name,
            incremental_configs=[
                ConfigEntry(cc.key, cc.desired, incremental_operation=AlterConfigOpType.SET) for cc in c.configs
            ],
        )
        for c in planned.changes
        if c.configs and not c.create
    ]
    if alters:
        for future in admin.incremental_alter_configs(alters, request_timeout=TIMEOUT_S).values():
            future.result(TIMEOUT_S)


def wait_for_leaders(admin: AdminClient, names: list[str], timeout_s: float = TIMEOUT_S) -> None:
    """CreateTopics returns before every partition has a leader; a produce or offset lookup in between fails
    with NOT_LEADER_FOR_PARTITION. Wait until each new partition has one."""
    deadline = time.monotonic() + timeout_s
    pending = set(names)
    while pending:
        topics = admin.list_topics(timeout=TIMEOUT_S).topics
        pending = {
            name
            for name in pending
            if name not in topics
            or topics[name].error is not None
            or not topics[name].partitions
            or any(p.leader < 0 for p in topics[name].partitions.values())
        }
        if pending and time.monotonic() > deadline:
            raise KafkaException(f"no leader after {timeout_s:g}s for: {', '.join(sorted(pending))}")
        if pending:
            time.sleep(0.1)


def reconcile(
    topics_dir: Path, bootstrap: str, *, dry_run: bool = False, out: TextIO | None = None, prefix: str = ""
) -> Plan:
    """Load, plan, print the plan, and apply it unless dry_run."""
    specs = load_topics(topics_dir, SchemaRegistry.load(get_settings().schemas_dir))
    if prefix:
        specs = [spec.model_copy(update={"name": prefix + spec.name}) for spec in specs]
    out = out or sys.stdout
    admin = admin_client(bootstrap)
    planned = plan(admin, specs)
    print(planned.render(), file=out)
    if not dry_run and not planned.empty:
        apply(admin, planned)
        print("applied", file=out)
    return planned


def main(argv: list[str] | None = None) -> int:
    settings = get_settings()
    parser = argparse.ArgumentParser(prog="switchyard topics", description=__doc__.splitlines()[0])
    parser.add_argument(
        "action",
        nargs="?",
        choices=["plan", "apply"],
        default="apply",
        help="plan: print the diff only; apply: print it, then make it (default)",
    )
    parser.add_argument("--dir", type=Path, default=settings.topics_dir, help="topic definitions directory")
    parser.add_argument("--bootstrap", default=settings.kafka_bootstrap, help="Kafka bootstrap servers")
    parser.add_argument("--prefix", default=settings.topic_prefix, help="prepend to every topic name")
    args = parser.parse_args(argv)
    try:
        reconcile(args.dir, args.bootstrap, dry_run=args.action == "plan", prefix=args.prefix)
    except TopicSpecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ReconcileRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 3
    except KafkaException as exc:
        print(f"error: Kafka at {args.bootstrap}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
