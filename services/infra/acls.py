"""Least-privilege Kafka ACLs, one principal per process, generated from data: what each process reads and
writes (`topic_access`), plus its own consumer group and transactional id prefix. `python -m services.infra.acls
plan|apply` (apply also creates the SCRAM users that are missing, with the passwords under var/secrets/kafka/)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from services.infra.kafka_secrets import ADMIN, password_file
from services.runtime.kafka_clients import confluent_config
from services.settings import Settings, get_settings

TIMEOUT_S: Final = 15.0
PRINCIPAL_PREFIX: Final = "switchyard-"
SCRAM_ITERATIONS: Final = 8192
# the till: a POS terminal or store app publishing requests and feedback (services.pos), nothing else
TILL: Final = "pos"


def topic_access() -> dict[str, tuple[frozenset[str], frozenset[str]]]:
    """{process: (topics it reads, topics it writes)}, topic names as in topics/: the process registry's facts
    (services.registry.topic_access), the five stages in one process (each one's access), and the till."""
    from services.registry import topic_access as registry_access
    from services.stages import CHAIN, FUSED

    access = {name: (frozenset(reads), frozenset(writes)) for name, (reads, writes) in registry_access().items()}
    access[FUSED] = (
        frozenset().union(*(access[name][0] for name in CHAIN)),
        frozenset().union(*(access[name][1] for name in CHAIN)),
    )
    access[TILL] = (frozenset(), frozenset({"requests", "feedback"}))
    return dict(sorted(access.items()))


def principal(process: str) -> str:
    return f"{PRINCIPAL_PREFIX}{process}"


def all_usernames() -> list[str]:
    """The admin (a super user of the dev broker) and one SCRAM user per process."""
    return [ADMIN, *(principal(name) for name in topic_access())]


@dataclass(frozen=True, order=True)
class Grant:
    """One ACL: principal may `operation` on a resource (literal name or name prefix), from any host."""

    user: str
    resource: str  # topic, group or transactional_id
    name: str
    prefixed: bool
    operation: str  # read, write, describe, create

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType[self.resource.upper()],
            self.name,
            ResourcePatternType.PREFIXED if self.prefixed else ResourcePatternType.LITERAL,
            f"User:{self.user}",
            "*",
            AclOperation[self.operation.upper()],
            AclPermissionType.ALLOW,
        )

    def __str__(self) -> str:
        pattern = f"{self.name}*" if self.prefixed else self.name
        return f"User:{self.user} {self.operation.upper()} {self.resource} {pattern}"


def _group_grants(process: str, user: str, prefix: str) -> list[Grant]:
    """A consuming process's own group(s) and, for a transactional one, its transactional ids."""
    from services.stages import CHAIN, FUSED

    if process in (*CHAIN, FUSED, "approvals"):
        own = f"{prefix}switchyard-{CHAIN[0] if process == FUSED else process}"
        return [Grant(user, "group", own, False, "read"), Grant(user, "transactional_id", f"{own}-", True, "write")]
    if process == "telemetry":
        # its own group; for the consumer-lag sample, each stage's committed offsets and its input's end offsets
        from services.telemetry.lag import stage_inputs

        lag = stage_inputs()
        return [
            Grant(user, "group", f"{prefix}switchyard-telemetry", False, "read"),
            *(Grant(user, "group", f"{prefix}switchyard-{stage}", False, "describe") for stage in lag),
            *(
                Grant(user, "topic", f"{prefix}{topic}", False, "describe")
                for topics in lag.values()
                for topic in topics
            ),
        ]
    if process == "gateway":
        return [Grant(user, "group", f"{prefix}gateway-", True, "read")]
    if process == "health":
        # faust: the app id is its group, its changelog and repartition topics start with it
        app = f"{prefix}switchyard-health"
        return [
            Grant(user, "group", app, False, "read"),
            *(Grant(user, "topic", f"{app}-", True, op) for op in ("create", "read", "write", "describe_configs")),
        ]
    return []


def desired_grants(settings: Settings, access: dict[str, tuple[frozenset[str], frozenset[str]]]) -> set[Grant]:
    """Every ACL the processes need under the settings' topic prefix, and nothing else."""
    grants: set[Grant] = set()
    for process, (reads, writes) in access.items():
        user = principal(process)
        grants |= {Grant(user, "topic", settings.topic(topic), False, "read") for topic in reads}
        grants |= {Grant(user, "topic", settings.topic(topic), False, "write") for topic in writes}
        grants |= set(_group_grants(process, user, settings.topic_prefix))
    return grants


def _current(admin: AdminClient, users: Iterable[str]) -> set[Grant]:
    wanted = {f"User:{user}" for user in users}
    # None matches any name, principal and host (the stubs type them as str)
    every: Any = None
    found = admin.describe_acls(
        AclBindingFilter(
            ResourceType.ANY, every, ResourcePatternType.ANY, every, every, AclOperation.ANY, AclPermissionType.ALLOW
        ),
        request_timeout=TIMEOUT_S,
    ).result()
    return {
        Grant(
            b.principal.removeprefix("User:"),
            b.restype.name.lower(),
            b.name,
            b.resource_pattern_type == ResourcePatternType.PREFIXED,
            b.operation.name.lower(),
        )
        for b in found
        if b.principal in wanted and b.host == "*"
    }


@dataclass
class AclPlan:
    missing_users: list[str]
    to_add: list[Grant]
    extra: list[Grant]  # grants of these principals under this prefix that topic_access no longer asks for

    def render(self) -> str:
        lines = [f"+ SCRAM user {user}" for user in self.missing_users]
        lines += [f"+ {grant}" for grant in self.to_add]
        lines += [f"? {grant} (not asked for; remove it with kafka-acls if it is stale)" for grant in self.extra]
        summary = f"{len(self.missing_users)} users and {len(self.to_add)} ACLs to add, {len(self.extra)} extra"
        return "\n".join([*lines, summary])


def plan(admin: AdminClient, settings: Settings) -> AclPlan:
    access = topic_access()
    desired = desired_grants(settings, access)
    users = [ADMIN, *(principal(name) for name in access)]
    described = admin.describe_user_scram_credentials(request_timeout=TIMEOUT_S)
    assert not isinstance(described, dict)  # asked for every user: one future
    known = described.result()
    current = _current(admin, users)
    prefix = settings.topic_prefix
    return AclPlan(
        missing_users=[user for user in users if user not in known],
        to_add=sorted(desired - current),
        extra=sorted(grant for grant in current - desired if grant.name.startswith(prefix)),
    )


def apply(admin: AdminClient, settings: Settings, planned: AclPlan) -> None:
    if planned.missing_users:
        upserts: list[UserScramCredentialAlteration] = [
            UserScramCredentialUpsertion(
                user,
                ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
                password_file(settings, user).read_text(encoding="utf-8").strip().encode(),
            )
            for user in planned.missing_users
        ]
        for future in admin.alter_user_scram_credentials(upserts, request_timeout=TIMEOUT_S).values():
            future.result()
    if planned.to_add:
        for future in admin.create_acls([g.binding() for g in planned.to_add], request_timeout=TIMEOUT_S).values():
            future.result()


def revoke(admin: AdminClient, settings: Settings) -> None:
    """Removes every ACL `desired_grants` gives under the settings' topic prefix (the SCRAM users stay). Refuses
    the empty prefix: those are the deployment's own ACLs, which every start of the broker applies."""
    if not settings.topic_prefix:
        raise ValueError("no topic prefix: revoking would remove the deployment's own ACLs")
    filters = [
        AclBindingFilter(*_binding_fields(grant.binding())) for grant in desired_grants(settings, topic_access())
    ]
    for future in admin.delete_acls(filters, request_timeout=TIMEOUT_S).values():
        future.result()


def _binding_fields(binding: AclBinding) -> list[Any]:
    return [
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    ]


@contextmanager
def granted(settings: Settings, timeout_s: float = TIMEOUT_S) -> Iterator[None]:
    """Every process's ACLs under the settings' topic prefix while the block runs, revoked after: a chain on
    topics of its own (a test's, a benchmark's) runs each process under its own principal. `settings` is a super
    user's (the admin's); on PLAINTEXT, whose clients are super users, it does nothing."""
    if settings.kafka_security_protocol != "SASL_SSL":
        yield
        return
    if not settings.topic_prefix:
        raise ValueError("no topic prefix: the deployment's own ACLs are `make acls`'s, not a block's")
    admin = AdminClient(confluent_config({"socket.timeout.ms": 10_000, "log_level": 3}, settings))
    apply(admin, settings, plan(admin, settings))
    try:
        # the broker's authorizer takes them from the metadata log a moment after CreateAcls returns
        deadline = time.monotonic() + timeout_s
        while plan(admin, settings).to_add:
            if time.monotonic() > deadline:
                raise TimeoutError(f"ACLs under {settings.topic_prefix!r} not in force after {timeout_s}s")
            time.sleep(0.1)
        yield
    finally:
        revoke(admin, settings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.infra.acls", description=__doc__)
    parser.add_argument("command", choices=["plan", "apply"])
    args = parser.parse_args(argv)
    settings = get_settings()
    admin = AdminClient(confluent_config({"socket.timeout.ms": 10_000, "log_level": 3}, settings))
    planned = plan(admin, settings)
    print(planned.render())
    if args.command == "apply":
        apply(admin, settings, planned)
        print(f"applied: {len(planned.missing_users)} SCRAM users and {len(planned.to_add)} ACLs added")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
