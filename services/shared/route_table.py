"""The declarative route table (routes/route_table.yaml): intent and conditions -> a route with ordered fallbacks.

`load_route_table` validates a file with errors that name the file, the key and the fix; `RouteTable.decide` is the
pure routing decision; `RouteTableWatcher` reloads the file when it changes and keeps the last good table.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from services.runtime.watched import WatchedConfig
from services.shared.intents import INTENTS
from services.wire.models import Channel, Request, RouteDecision, RouteKind

log = logging.getLogger("switchyard.router")

DEFAULT_CHECK_EVERY_S: Final = 2.0
ROUTE_ID_PATTERN: Final = r"^[a-z0-9][a-z0-9_.-]*$"
CUSTOMER_TIER_ATTRIBUTE: Final = "customer_tier"
NO_UNHEALTHY_PROVIDERS: Final[Mapping[str, str]] = MappingProxyType({})

# the keys of a Condition that select requests (the rest say where they go)
MATCH_KEYS: Final = ("channels", "store_ids", "customer_tiers", "min_confidence", "min_chars", "max_chars")

KindName = Literal["workflow", "small_model", "large_model", "custom_model"]


class RouteTableError(ValueError):
    """A route table file cannot be used. `problems` holds one line per problem: `file: key: what is wrong: fix`."""

    def __init__(self, path: Path, problems: Sequence[tuple[str, str]]) -> None:
        self.path = path
        self.problems = [f"{path}: {key}: {message}" if key else f"{path}: {message}" for key, message in problems]
        super().__init__(f"invalid route table {path}:\n" + "\n".join(f"  {line}" for line in self.problems))


class Prediction(Protocol):
    """What the route table reads from the intent classifier (services.router.intents.IntentPrediction)."""

    @property
    def intent(self) -> str: ...
    @property
    def confidence(self) -> float: ...
    @property
    def runner_up(self) -> str: ...
    @property
    def runner_up_confidence(self) -> float: ...


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RouteSpec(_Spec):
    """One route: who serves it and where it falls back to, in order (route ids)."""

    route_id: str = Field(pattern=ROUTE_ID_PATTERN)
    kind: KindName
    provider: str | None = Field(None, min_length=1)
    fallbacks: tuple[str, ...] = ()

    @property
    def route_kind(self) -> RouteKind:
        return RouteKind(self.kind.upper())


class Condition(_Spec):
    """Sends an intent's request to `route` when every key given matches; keys left out match anything."""

    route: str
    channels: tuple[Channel, ...] | None = None
    store_ids: tuple[str, ...] | None = None
    customer_tiers: tuple[str, ...] | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    min_chars: int | None = Field(None, ge=0)
    max_chars: int | None = Field(None, ge=1)

    def has_keys(self) -> bool:
        return any(getattr(self, key) is not None for key in MATCH_KEYS)

    def match(self, request: Request, confidence: float) -> str | None:
        """What matched, in words ("channel=KIOSK, chars=312>=240"), or None when a key does not match."""
        found: list[str] = []
        if self.channels is not None:
            if request.channel not in self.channels:
                return None
            found.append(f"channel={request.channel.value}")
        if self.store_ids is not None:
            if request.store_id not in self.store_ids:
                return None
            found.append(f"store_id={request.store_id}")
        if self.customer_tiers is not None:
            tier = request.attributes.get(CUSTOMER_TIER_ATTRIBUTE, "")
            if tier.casefold() not in {wanted.casefold() for wanted in self.customer_tiers}:
                return None
            found.append(f"customer_tier={tier}")
        if self.min_confidence is not None:
            if confidence < self.min_confidence:
                return None
            found.append(f"confidence={confidence:.2f}>={self.min_confidence:g}")
        chars = len(request.text)
        if self.min_chars is not None:
            if chars < self.min_chars:
                return None
            found.append(f"chars={chars}>={self.min_chars}")
        if self.max_chars is not None:
            if chars > self.max_chars:
                return None
            found.append(f"chars={chars}<={self.max_chars}")
        return ", ".join(found)


class IntentRoute(RouteSpec):
    """An intent's own route, and the conditions that send some of its requests elsewhere (first match wins).
    `workflow` names a data workflow route tried first: the intent's own route serves what it cannot answer."""

    conditions: tuple[Condition, ...] = ()
    workflow: str | None = None


class LowConfidenceRule(_Spec):
    """A prediction under `threshold` takes `route`: the safer, more capable one."""

    threshold: float = Field(ge=0.0, le=1.0)
    route: str


class RouteTableSpec(_Spec):
    """The file, as written."""

    version: str = Field(min_length=1)
    default_route: str
    low_confidence: LowConfidenceRule
    routes: dict[str, IntentRoute]
    shared_routes: tuple[RouteSpec, ...] = ()


@dataclass(frozen=True)
class RouteTable:
    """A validated route table; `decide` is pure and cheap, so it runs on the event loop."""

    spec: RouteTableSpec
    source: Path
    version: str
    routes: Mapping[str, RouteSpec]

    def decide(
        self,
        request: Request,
        prediction: Prediction,
        *,
        unhealthy_providers: Mapping[str, str] = NO_UNHEALTHY_PROVIDERS,
        classifier_version: str = "",
    ) -> RouteDecision:
        """The route for a classified request. `unhealthy_providers` (provider -> why) is the failover hook: a
        route whose provider is listed is skipped for the first fallback whose provider is not, and the reason
        says so. `classifier_version` names the intent classifier that made `prediction`, for the audit."""
        chosen, why = self._choose(request, prediction)
        served, position, skipped = self._skip_unhealthy(chosen, unhealthy_providers)
        reason = (
            f"intent {prediction.intent} {prediction.confidence:.2f} "
            f"(runner-up {prediction.runner_up} {prediction.runner_up_confidence:.2f}); "
            f"route {chosen.route_id} {why}"
        )
        if skipped:
            reason += f"; {skipped}"
        return RouteDecision(
            route_id=served.route_id,
            kind=served.route_kind,
            intent=prediction.intent,
            confidence=prediction.confidence,
            provider=served.provider,
            fallbacks=list(chosen.fallbacks[position:]),
            reason=reason,
            route_table_version=self.version,
            classifier_version=classifier_version,
        )

    def fall_back(self, decision: RouteDecision, why: str) -> RouteDecision:
        """The decision moved to its first fallback because its route could not serve the request (a data
        workflow with no data to answer from), the reason saying why; unchanged but for the reason when it has
        no fallback, or the fallback is not in this table."""
        spec = self.routes.get(decision.fallbacks[0]) if decision.fallbacks else None
        if spec is None:
            return decision.model_copy(update={"reason": f"{decision.reason}; {decision.route_id}: {why}"})
        return decision.model_copy(
            update={
                "route_id": spec.route_id,
                "kind": spec.route_kind,
                "provider": spec.provider,
                "fallbacks": list(decision.fallbacks[1:]),
                "reason": f"{decision.reason}; {decision.route_id} declined ({why}): took {spec.route_id}",
            }
        )

    def _choose(self, request: Request, prediction: Prediction) -> tuple[RouteSpec, str]:
        rule = self.spec.low_confidence
        intent_route = self.spec.routes.get(prediction.intent)
        if prediction.confidence < rule.threshold:
            low = self.routes[rule.route]
            why = f"by the low-confidence rule ({prediction.confidence:.2f} < {rule.threshold:g})"
            runner_up = self.spec.routes.get(prediction.runner_up)
            data_route = next((r for r in (intent_route, runner_up) if r is not None and r.workflow is not None), None)
            if data_route is not None and data_route.workflow is not None:
                # a data workflow answers only what its data answers and declines the rest, so the guess's (or the
                # runner-up's) is tried even on a low-confidence guess; what it declines goes to the safer route
                workflow = self.routes[data_route.workflow]
                fallbacks = (low.route_id, *low.fallbacks)
                return workflow.model_copy(update={"fallbacks": fallbacks}), f"(data workflow first) {why}"
            return low, why
        if intent_route is None:
            return self.routes[self.spec.default_route], "as the default route: the intent has no route of its own"
        for condition in intent_route.conditions:
            matched = condition.match(request, prediction.confidence)
            if matched is not None:
                return self.routes[condition.route], f"via condition {matched}"
        if intent_route.workflow is not None:
            # the data workflow first; what it cannot answer goes to the intent's route, then that route's fallbacks
            workflow = self.routes[intent_route.workflow]
            fallbacks = (intent_route.route_id, *intent_route.fallbacks)
            return workflow.model_copy(update={"fallbacks": fallbacks}), f"(data workflow of {intent_route.route_id})"
        return intent_route, "for the intent"

    def _skip_unhealthy(self, chosen: RouteSpec, unhealthy: Mapping[str, str]) -> tuple[RouteSpec, int, str]:
        """The first of the route and its fallbacks whose provider is healthy, how many were passed over, and
        what was skipped, in words (empty when nothing was)."""
        candidates = [chosen, *(self.routes[route_id] for route_id in chosen.fallbacks)]
        for position, candidate in enumerate(candidates):
            if candidate.provider is None or candidate.provider not in unhealthy:
                return candidate, position, _skipped(candidates[:position], unhealthy, f"took {candidate.route_id}")
        return chosen, 0, _skipped(candidates, unhealthy, f"kept {chosen.route_id}: no healthy fallback")


def _skipped(passed: Sequence[RouteSpec], unhealthy: Mapping[str, str], outcome: str) -> str:
    if not passed:
        return ""
    notes = "; ".join(
        f"skipped {route.route_id}: provider {route.provider} is unhealthy ({unhealthy[route.provider or '']})"
        for route in passed
    )
    return f"{notes}; {outcome}"


def load_route_table(path: Path) -> RouteTable:
    """Reads and validates a route table file; raises RouteTableError listing every problem found."""
    try:
        content = path.read_bytes()
    except OSError as error:
        raise RouteTableError(path, [("", f"cannot be read ({error.strerror}): check the path")]) from None
    return parse_route_table(content, path)


def parse_route_table(content: bytes, path: Path) -> RouteTable:
    """Validates a route table's bytes; `path` is named in errors and kept as the table's source."""
    try:
        data = yaml.load(content, Loader=_StrictLoader)  # a SafeLoader subclass
    except yaml.YAMLError as error:
        raise RouteTableError(path, [("", f"is not valid YAML ({_yaml_problem(error)}): fix the syntax")]) from None
    if not isinstance(data, dict):
        raise RouteTableError(
            path, [("", "must be a mapping with keys version, default_route, low_confidence, routes, shared_routes")]
        )
    try:
        spec = RouteTableSpec.model_validate(data)
    except ValidationError as error:
        raise RouteTableError(path, [_describe(detail) for detail in error.errors()]) from None
    routes, problems = _check(spec)
    if problems:
        raise RouteTableError(path, problems)
    version = f"{spec.version}+{hashlib.sha256(content).hexdigest()[:12]}"
    return RouteTable(spec=spec, source=path, version=version, routes=MappingProxyType(routes))


# -- validation beyond the shape: references, kinds, duplicates, cycles -----------------------------------------


def _check(spec: RouteTableSpec) -> tuple[dict[str, RouteSpec], list[tuple[str, str]]]:
    problems: list[tuple[str, str]] = []
    defined: dict[str, tuple[str, RouteSpec]] = {}
    declared: list[tuple[str, RouteSpec]] = [(f"routes.{intent}", route) for intent, route in spec.routes.items()]
    declared += [(f"shared_routes[{index}]", route) for index, route in enumerate(spec.shared_routes)]
    for key, route in declared:
        if route.route_id in defined:
            problems.append(
                (
                    f"{key}.route_id",
                    f"duplicate route id {route.route_id!r} (also at {defined[route.route_id][0]}): "
                    "give each route its own id",
                )
            )
        else:
            defined[route.route_id] = (key, route)
    for intent in spec.routes:
        if intent not in INTENTS:
            problems.append((f"routes.{intent}", f"unknown intent {intent!r}: use one of {', '.join(INTENTS)}"))
    for intent in INTENTS:
        if intent not in spec.routes:
            problems.append(("routes", f"intent {intent!r} has no route: add routes.{intent}"))

    def refer(key: str, route_id: str) -> None:
        if route_id not in defined:
            problems.append(
                (
                    key,
                    f"unknown route id {route_id!r}: use a route_id defined under routes or shared_routes "
                    f"({', '.join(sorted(defined))})",
                )
            )

    refer("default_route", spec.default_route)
    for intent, route in spec.routes.items():
        if route.workflow is None:
            continue
        key = f"routes.{intent}.workflow"
        refer(key, route.workflow)
        target = defined.get(route.workflow)
        if target is not None and target[1].kind != "workflow":
            problems.append((key, f"{route.workflow!r} is a {target[1].kind} route: name a route of kind workflow"))
    refer("low_confidence.route", spec.low_confidence.route)
    for key, route in declared:
        problems += _check_route(key, route, refer)
    problems += _fallback_cycles(defined)
    return {route_id: route for route_id, (_, route) in defined.items()}, problems


def _check_route(key: str, route: RouteSpec, refer: Callable[[str, str], None]) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if route.kind == "workflow" and route.provider is not None:
        problems.append(
            (
                f"{key}.provider",
                f"a workflow runs no model, yet names provider {route.provider!r}: "
                "set provider: null, or give the route a model kind",
            )
        )
    if route.kind != "workflow" and route.provider is None:
        problems.append((f"{key}.provider", f"a {route.kind} route needs a provider: name one, e.g. default"))
    for index, fallback in enumerate(route.fallbacks):
        fallback_key = f"{key}.fallbacks[{index}]"
        if fallback == route.route_id:
            problems.append((fallback_key, f"{route.route_id!r} falls back to itself: remove it"))
        elif fallback in route.fallbacks[:index]:
            problems.append((fallback_key, f"{fallback!r} is listed twice: remove the repeat"))
        else:
            refer(fallback_key, fallback)
    if isinstance(route, IntentRoute):
        for index, condition in enumerate(route.conditions):
            condition_key = f"{key}.conditions[{index}]"
            refer(f"{condition_key}.route", condition.route)
            if not condition.has_keys():
                problems.append(
                    (
                        condition_key,
                        f"a condition needs at least one of {', '.join(MATCH_KEYS)}: add one, "
                        "or make its route the intent's own",
                    )
                )
            low, high = condition.min_chars, condition.max_chars
            if low is not None and high is not None and low > high:
                problems.append((condition_key, "min_chars is above max_chars, so it never matches: swap them"))
    return problems


def _fallback_cycles(defined: Mapping[str, tuple[str, RouteSpec]]) -> list[tuple[str, str]]:
    """Each cycle in the fallback graph once, reported at the fallbacks of the route where it closes."""
    problems: list[tuple[str, str]] = []
    finished: set[str] = set()

    def visit(route_id: str, path: list[str]) -> None:
        key, route = defined[route_id]
        for fallback in route.fallbacks:
            if fallback not in defined or fallback == route_id or fallback in finished:
                continue
            if fallback in path:
                cycle = " -> ".join([*path[path.index(fallback) :], fallback])
                problems.append((f"{key}.fallbacks", f"fallbacks form a cycle {cycle}: remove one of them"))
                continue
            visit(fallback, [*path, fallback])
        finished.add(route_id)

    for route_id in defined:
        if route_id not in finished:
            visit(route_id, [route_id])
    return problems


_HINTS: Final = {
    "missing": "required key is missing: add it",
    "string_pattern_mismatch": "route ids are lower-case letters, digits, '.', '_' and '-', e.g. model.stock_check",
}


def _describe(detail: ErrorDetails) -> tuple[str, str]:
    key = _key_path(detail["loc"])
    kind = detail["type"]
    if kind in _HINTS:
        return key, _HINTS[kind]
    if kind == "extra_forbidden":
        return (
            key,
            f"unknown key: remove it or fix its spelling (allowed here: {', '.join(_allowed_keys(detail['loc']))})",
        )
    message = f"{detail['msg']}, got {detail['input']!r}"
    if kind == "string_type" and isinstance(detail["input"], int | float):
        message += ": quote it in YAML"
    return key, message


def _key_path(loc: tuple[int | str, ...]) -> str:
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key


def _allowed_keys(loc: tuple[int | str, ...]) -> list[str]:
    model: type[BaseModel] = RouteTableSpec
    if len(loc) > 1 and loc[0] == "low_confidence":
        model = LowConfidenceRule
    elif len(loc) > 1 and loc[0] == "shared_routes":
        model = RouteSpec
    elif len(loc) > 1 and loc[0] == "routes":
        model = Condition if "conditions" in loc else IntentRoute
    return list(model.model_fields)


class _StrictLoader(yaml.SafeLoader):
    """Safe loading that refuses a key given twice in one mapping (plain YAML keeps the last one silently)."""


def _unique_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} is given twice in one mapping: keep one", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error)
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


# -- reload without a restart --------------------------------------------------------------------------------


class RouteTableWatcher(WatchedConfig[RouteTable]):
    """The route table in force for a file. `current()` re-reads the file when it changed (inode, size or mtime),
    looking at most every `check_every_s`: one stat, so it runs on the event loop. An invalid new file is logged
    once and the last good table stays in force."""

    def __init__(
        self,
        path: Path,
        *,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            path,
            load_route_table,
            invalid=RouteTableError,
            what="route table",
            version=lambda table: table.version,
            version_field="route_table_version",
            logger=log,
            check_every_s=check_every_s,
            clock=clock,
        )

    def load(self) -> RouteTable:
        """Reads the file now; raises RouteTableError when it is invalid (at start-up, a bad table stops the router)."""
        return super().load()

    @property
    def table(self) -> RouteTable:
        return self.value
