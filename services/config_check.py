"""`switchyard config check`: routes/, policies/, providers/ and topics/ validated together, each by its own loader,
then the references between them, with one line per problem that names the file, the key and the fix."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from services.answerer.providers import ProviderConfigError
from services.answerer.registry import ProvidersFile, read_providers
from services.infra.topic_specs import TopicSpecError, load_topics
from services.policy.engine import Condition, PolicyEngine, PolicyError, load_policy
from services.shared.intents import INTENTS
from services.shared.route_table import RouteSpec, RouteTable, RouteTableError, load_route_table
from services.wire.errors import SchemaDefinitionError
from services.wire.schema_registry import SchemaRegistry

STORE_AUDIENCE = "store"  # pii_visibility's name for the answer released to the store; every other is a provider
VALUE_OPERATORS = ("equals", "one_of", "not_one_of")
Loaded = TypeVar("Loaded")


@dataclass(frozen=True)
class ConfigPaths:
    """The four configuration sources, and the schemas the topics name."""

    routes: Path
    policies: Path
    providers: Path
    topics: Path
    schemas: Path

    @classmethod
    def under(cls, root: Path) -> ConfigPaths:
        """The layout of a Switchyard tree (the repository, or an imported bundle)."""
        return cls(
            routes=root / "routes" / "route_table.yaml",
            policies=root / "policies",
            providers=root / "providers" / "providers.yaml",
            topics=root / "topics",
            schemas=root / "schemas",
        )


@dataclass
class ConfigReport:
    """What was checked, and every problem found (empty: the four agree)."""

    paths: ConfigPaths
    problems: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        paths = {name: str(getattr(self.paths, name)) for name in ("routes", "policies", "providers", "topics")}
        return {"ok": self.ok, "checked": paths, "counts": self.counts, "problems": self.problems}

    def summary(self) -> str:
        counted = ", ".join(f"{count} {what}" for what, count in self.counts.items())
        return f"config ok: {counted}, checked together"


def configured_paths() -> ConfigPaths:
    """The sources the processes read: the settings' paths, and SWITCHYARD_PROVIDERS_FILE else providers/."""
    from services.answerer.registry import PROVIDERS_FILE_ENV
    from services.settings import DATA_ROOT, get_settings

    settings = get_settings()
    providers = os.environ.get(PROVIDERS_FILE_ENV) or DATA_ROOT / "providers" / "providers.yaml"
    return ConfigPaths(
        settings.route_table, settings.policies, Path(providers), settings.topics_dir, settings.schemas_dir
    )


def process_topics() -> dict[str, tuple[str, ...]]:
    """The topics each process reads or writes (unprefixed, as in topics/), from the process registry."""
    from services.registry import topic_access

    return {name: (*reads, *writes) for name, (reads, writes) in topic_access().items()}


def check_config(paths: ConfigPaths, needed_topics: Mapping[str, tuple[str, ...]] | None = None) -> ConfigReport:
    """Each source through its own loader, then the references across them. `needed_topics`: process -> the
    topics it uses (default: `process_topics()`)."""
    report = ConfigReport(paths)
    table = _loaded(report, "routes", lambda: load_route_table(paths.routes), lambda t: len(t.routes))
    policy = _loaded(report, "rules", lambda: load_policy(paths.policies), lambda p: len(p.rules))
    providers = _loaded(report, "providers", lambda: read_providers(paths.providers), lambda p: len(p.names))
    topics = _loaded(
        report,
        "topics",
        lambda: {spec.name for spec in load_topics(paths.topics, SchemaRegistry.load(paths.schemas))},
        len,
    )
    if table is not None and providers is not None:
        report.problems += _unknown_providers(table, providers)
    if policy is not None:
        report.problems += _unknown_intents(policy)
    if policy is not None and providers is not None:
        report.problems += _unknown_audiences(paths.policies, policy, providers)
    if topics is not None:
        needed = process_topics() if needed_topics is None else needed_topics
        report.problems += _missing_topics(paths.topics, topics, needed)
    return report


def _loaded(
    report: ConfigReport, what: str, load: Callable[[], Loaded], count: Callable[[Loaded], int]
) -> Loaded | None:
    try:
        loaded = load()
    except (RouteTableError, PolicyError, ProviderConfigError) as error:
        source = f"{error.source}: " if isinstance(error, ProviderConfigError) else ""
        report.problems += [f"{source}{problem}" for problem in error.problems]
        return None
    except (TopicSpecError, SchemaDefinitionError, ValueError, OSError) as error:  # topics/, the schemas: one line
        report.problems.append(str(error))
        return None
    report.counts[what] = count(loaded)
    return loaded


def _declared_routes(table: RouteTable) -> Iterator[tuple[str, RouteSpec]]:
    yield from ((f"routes.{intent}", route) for intent, route in table.spec.routes.items())
    yield from ((f"shared_routes[{index}]", route) for index, route in enumerate(table.spec.shared_routes))


def _unknown_providers(table: RouteTable, providers: ProvidersFile) -> list[str]:
    known = ", ".join(sorted(providers.names))
    return [
        f"{table.source}: {key}.provider: provider {route.provider!r} is not in {providers.source}: "
        f"add it there, or name one of {known}"
        for key, route in _declared_routes(table)
        if route.provider is not None and route.provider not in providers.names
    ]


def _conditions(conditions: tuple[Condition, ...]) -> Iterator[Condition]:
    for condition in conditions:
        yield condition
        yield from _conditions(condition.any or ())


def _unknown_intents(policy: PolicyEngine) -> list[str]:
    intents = set(INTENTS)  # the classifier's, which the route table's own check holds its intents to
    problems: list[str] = []
    for rule in policy.rules:
        for condition in _conditions(rule.spec.when):
            if condition.fact != "intent":
                continue
            for operator in VALUE_OPERATORS:
                value = getattr(condition, operator)
                named = (value,) if isinstance(value, str) else value or ()
                problems += [
                    f"{rule.source}: rule {rule.spec.id}: when: intent {operator} {intent!r}: not an intent the "
                    f"router knows: use one of {', '.join(sorted(intents))}"
                    for intent in named
                    if intent not in intents
                ]
    return problems


def _unknown_audiences(policies: Path, policy: PolicyEngine, providers: ProvidersFile) -> list[str]:
    known = ", ".join([STORE_AUDIENCE, *sorted(providers.names)])
    return [
        f"{policies}: pii_visibility.{audience}: not a provider in {providers.source}: use one of {known}"
        for audience in sorted(policy.visibility)
        if audience != STORE_AUDIENCE and audience not in providers.names
    ]


def _missing_topics(topics_dir: Path, defined: set[str], needed: Mapping[str, tuple[str, ...]]) -> list[str]:
    return [
        f"{topics_dir}: topic {topic!r} is used by the {process} process but no {topics_dir}/*.yaml defines it: add it"
        for process, topics in needed.items()
        for topic in dict.fromkeys(topics)
        if topic not in defined
    ]
