"""Promotion and rollback. A candidate is promoted for an intent when it beats the incumbent by the configured
margin (of accuracy as services/learning/metrics.py judges it: the values an answer states) both on the evaluation
split (its registry card) and in shadow (compare.shadow_comparison). The incumbent is the custom model promoted
before it where there is one (training.PromotedIncumbent, shadow.attach_shadow), else the configured model; promotion
writes a new route-table version sending those intents to the custom model (`kind: custom_model`, provider
`answer_memory`, whose fallback is the large-model provider), deploys the model, and records it. `rollback` is
one command; `check_live` rolls back by itself when the promoted model's live metrics degrade (the `learning`
process runs it on a timer: services/learning/watchdog.py). A router model is promoted the same way on its eval
split and its shadow (services/learning/router_shadow.py) and replaces the intent classifier's artifact, which the
running router reloads. Every change is made under the registry's lock.

The route table is edited in place, line by line inside each promoted intent's block, so its comments stay; the
result is validated by the router's own parser before it replaces the file (atomically), and the file as it was
before is kept in the registry for rollback. The router reloads it within seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from services.answerer.memory import KIND as MEMORY_KIND
from services.infra.clickhouse import get_client
from services.learning.compare import Comparison, RouteComparison
from services.learning.records import feedback_by_request
from services.learning.registry import ModelRegistry, live_promotion
from services.learning.switch import ROUTER_KIND
from services.settings import Settings
from services.shared.model_artifact import default_artifact_dir as intent_artifact_dir
from services.shared.route_table import parse_route_table

MEMORY_PROVIDER: Final = "answer_memory"
__all__ = ["ROUTER_KIND"]  # re-exported: promotion is where callers have looked for it
_VERSION_LINE = re.compile(r'^version: "?(?P<version>[^"\n]+)"?\s*$', re.MULTILINE)
_LEARN_SUFFIX = re.compile(r"\.learn\d+$")


class PromotionError(RuntimeError):
    """A promotion or rollback that cannot be done; the message says why and what to do."""


@dataclass(frozen=True)
class PromotionPolicy:
    margin: float = 0.05  # accuracy the candidate must add over the incumbent, on eval and in shadow
    min_eval_examples: int = 10
    min_shadow_examples: int = 10
    require_shadow: bool = True


@dataclass
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)


def decide(card: dict[str, Any], shadow: Comparison | RouteComparison | None, policy: PromotionPolicy) -> Decision:
    """Whether the candidate beats the incumbent by `policy.margin` on the eval split and in shadow."""
    decision = Decision(True)
    evaluation = card.get("evaluation", {})
    checks: list[tuple[str, float, float, int, int]] = [
        (
            "eval split",
            float(evaluation.get("candidate_accuracy", 0.0)),
            float(evaluation.get("incumbent_accuracy", 0.0)),
            int(evaluation.get("examples", evaluation.get("test_examples", 0))),
            policy.min_eval_examples,
        )
    ]
    if shadow is not None:
        checks.append(
            (
                "shadow",
                shadow.candidate_accuracy,
                shadow.incumbent_accuracy,
                shadow.examples,
                policy.min_shadow_examples,
            )
        )
    elif policy.require_shadow:
        decision.promote = False
        decision.reasons.append("no shadow comparison: run `switchyard shadow start` on live traffic first")
    for name, candidate, incumbent, examples, needed in checks:
        verdict = f"{name}: candidate {candidate:.3f} vs incumbent {incumbent:.3f} on {examples} examples"
        if examples < needed:
            decision.promote = False
            decision.reasons.append(f"{verdict}: fewer than {needed} examples")
        elif candidate < incumbent + policy.margin:
            decision.promote = False
            decision.reasons.append(f"{verdict}: gain {candidate - incumbent:+.3f} under the margin {policy.margin}")
        else:
            decision.reasons.append(f"{verdict}: gain {candidate - incumbent:+.3f} >= margin {policy.margin}")
    return decision


def _next_version(text: str, registry: ModelRegistry) -> tuple[str, str]:
    match = _VERSION_LINE.search(text)
    if match is None:
        raise PromotionError("the route table has no `version:` line")
    old = match.group("version")
    changes = sum(1 for e in registry.events() if e["event"] in ("promoted", "rolled_back"))
    return old, f"{_LEARN_SUFFIX.sub('', old)}.learn{changes + 1}"


def _set_version(text: str, version: str) -> str:
    return _VERSION_LINE.sub(f'version: "{version}"', text, count=1)


def route_to_custom(text: str, intent: str, model_id: str) -> str:
    """The route table with `intent` sent to the answer memory; its fallbacks stay the route's own."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == f"  {intent}:"), None)
    if start is None:
        raise PromotionError(f"routes.{intent} not found (expected a line '  {intent}:' under routes)")
    end = next((i for i in range(start + 1, len(lines)) if re.match(r"^ {0,2}\S", lines[i])), len(lines))
    block = lines[start + 1 : end]
    fields = {m.group(1): i for i, line in enumerate(block) if (m := re.match(r"^    (\w+):", line))}
    for key in ("route_id", "kind", "provider"):
        if key not in fields:
            raise PromotionError(f"routes.{intent}.{key} not found: promotion edits only single-line keys")
    was = {key: block[fields[key]].split(":", 1)[1].strip() for key in ("route_id", "kind", "provider")}
    block[fields["route_id"]] = f"    route_id: custom.{intent}\n"
    block[fields["kind"]] = "    kind: custom_model\n"
    block[fields["provider"]] = f"    provider: {MEMORY_PROVIDER}\n"
    note = (
        f"    # promoted by the learning loop: {model_id} "
        f"(was route_id {was['route_id']}, kind {was['kind']}, provider {was['provider']})\n"
    )
    return "".join([*lines[: start + 1], note, *block, *lines[end:]])


def _write_route_table(path: Path, text: str) -> str:
    """Validates with the router's parser, then replaces the file atomically; returns the table's version."""
    table = parse_route_table(text.encode(), path)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)
    return table.version


def _snapshot(registry: ModelRegistry, version: str, text: str) -> Path:
    directory = registry.root / "route_tables"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{version}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def promote(
    model_id: str,
    intents: Sequence[str],
    route_table: Path,
    registry: ModelRegistry,
    *,
    shadow: Comparison | RouteComparison | None,
    policy: PromotionPolicy = PromotionPolicy(),
    router_artifact: Path | None = None,
) -> Decision:
    """Promotes when `decide` says so: new route-table version (a router model: the classifier's artifact),
    model deployed, both recorded; otherwise the refusal is recorded with its reasons and nothing changes."""
    with registry.lock():
        card = registry.card(model_id)
        if card["kind"] == ROUTER_KIND:
            return _promote_router(model_id, card, registry, shadow, policy, router_artifact or intent_artifact_dir())
        if card["kind"] != MEMORY_KIND:
            raise PromotionError(f"{model_id} is a {card['kind']} model: it cannot be promoted")
        return _promote_memory(model_id, card, intents, route_table, registry, shadow, policy)


def _promote_memory(
    model_id: str,
    card: dict[str, Any],
    intents: Sequence[str],
    route_table: Path,
    registry: ModelRegistry,
    shadow: Comparison | RouteComparison | None,
    policy: PromotionPolicy,
) -> Decision:
    decision = decide(card, shadow, policy)
    details = {"reasons": decision.reasons, "shadow": shadow.as_dict() if shadow else None, "margin": policy.margin}
    if not decision.promote:
        registry.record(
            "promotion_refused",
            model_id,
            card["kind"],
            intents=list(intents),
            reason="; ".join(decision.reasons),
            details=details,
        )
        return decision
    before = route_table.read_text(encoding="utf-8")
    old_version, new_version = _next_version(before, registry)
    text = before
    for intent in intents:
        text = route_to_custom(text, intent, model_id)
    text = _set_version(text, new_version)
    _snapshot(registry, old_version, before)
    previous = registry.deployed().get(MEMORY_KIND)
    registry.set_deployed(MEMORY_KIND, model_id)  # the model first: the routes must find it deployed
    table_version = _write_route_table(route_table, text)
    registry.record(
        "promoted",
        model_id,
        card["kind"],
        intents=list(intents),
        route_table_version=table_version,
        reason="; ".join(decision.reasons),
        details={**details, "previous_route_table": old_version, "previous_model": previous},
    )
    _end_shadow(registry, model_id, MEMORY_KIND)
    return decision


def _end_shadow(registry: ModelRegistry, model_id: str, kind: str) -> None:
    """A promoted candidate stops shadowing: it is the incumbent now."""
    if (registry.shadow(kind) or {}).get("candidate") == model_id:
        registry.set_shadow(None, kind)
        registry.record("shadow_stopped", model_id, kind, reason="promoted")


def _promote_router(
    model_id: str,
    card: dict[str, Any],
    registry: ModelRegistry,
    shadow: Comparison | RouteComparison | None,
    policy: PromotionPolicy,
    live: Path,
) -> Decision:
    """A router model replaces the intent classifier's artifact (kept aside for rollback) when it beats the
    current one on the held-out production split and in shadow; a running router reloads it within seconds."""
    decision = decide(card, shadow, policy)
    details: dict[str, Any] = {
        "reasons": decision.reasons,
        "shadow": shadow.as_dict() if shadow else None,
        "margin": policy.margin,
    }
    if not decision.promote:
        registry.record("promotion_refused", model_id, ROUTER_KIND, reason="; ".join(decision.reasons), details=details)
        return decision
    backup = registry.root / "router_backups" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    if live.is_dir():
        shutil.copytree(live, backup)
    _install_router(registry.model_dir(model_id), live)
    previous = registry.deployed().get(ROUTER_KIND)
    registry.set_deployed(ROUTER_KIND, model_id)
    details |= {"backup": str(backup), "previous_model": previous, "artifact": str(live)}
    registry.record("promoted", model_id, ROUTER_KIND, reason="; ".join(decision.reasons), details=details)
    _end_shadow(registry, model_id, ROUTER_KIND)
    return decision


def _install_router(source: Path, live: Path) -> None:
    """Weights first, card last, each by atomic rename: the router never reads a card without its weights."""
    live.mkdir(parents=True, exist_ok=True)
    for name in ("intent_model.npz", "card.json"):
        partial = live / f".{name}.{os.getpid()}.tmp"
        shutil.copyfile(source / name, partial)
        os.replace(partial, live / name)


def rollback(route_table: Path, registry: ModelRegistry, *, reason: str = "operator", kind: str | None = None) -> str:
    """Undoes the latest promotion: the route table as it was before it (as a new version), and the model that
    was deployed before; returns the new route-table version (for a router model: the artifact restored)."""
    with registry.lock():
        return _rollback(route_table, registry, reason=reason, kind=kind)


def _rollback(route_table: Path, registry: ModelRegistry, *, reason: str, kind: str | None) -> str:
    events = registry.events()
    promotion = live_promotion(events, kind)
    if promotion is None:
        raise PromotionError("nothing to roll back: no promotion in the registry's events")
    if promotion["kind"] == ROUTER_KIND:
        _install_router(Path(promotion["details"]["backup"]), Path(promotion["details"]["artifact"]))
        registry.set_deployed(ROUTER_KIND, promotion["details"].get("previous_model"))
        details = {"promotion_event": promotion["event_id"]}
        registry.record("rolled_back", promotion["model_id"], ROUTER_KIND, reason=reason, details=details)
        return f"router artifact restored from {promotion['details']['backup']}"
    snapshot = registry.root / "route_tables" / f"{promotion['details']['previous_route_table']}.yaml"
    current = route_table.read_text(encoding="utf-8")
    current_version, new_version = _next_version(current, registry)
    _snapshot(registry, current_version, current)
    table_version = _write_route_table(route_table, _set_version(snapshot.read_text(encoding="utf-8"), new_version))
    registry.set_deployed(MEMORY_KIND, promotion["details"].get("previous_model"))
    registry.record(
        "rolled_back",
        promotion["model_id"],
        promotion["kind"],
        intents=promotion["intents"],
        route_table_version=table_version,
        reason=reason,
        details={"promotion_event": promotion["event_id"]},
    )
    return table_version


LIVE_QUERY: Final = f"""\
SELECT count() AS answers,
       countIf(fb.correction IS NOT NULL) AS corrected,
       countIf(fb.rating IS NOT NULL AND fb.rating <= 2) AS low_rated,
       countIf(fb.rating IS NOT NULL OR fb.correction IS NOT NULL) AS reviewed
FROM switchyard.audit_records AS a FINAL
LEFT JOIN
(
{feedback_by_request()}
) AS fb ON fb.request_id = a.request_id AND fb.store_id = a.store_id
WHERE a.provider = {{provider:String}}
  AND startsWith(JSONExtractString(a.record, 'answer', 'model_version'), {{model:String}})
  AND a.recorded_at >= {{since:DateTime64(3, 'UTC')}}
SETTINGS join_use_nulls = 1"""


@dataclass(frozen=True)
class LiveHealth:
    answers: int
    reviewed: int
    bad: int  # corrected or rated 2 or less

    @property
    def bad_rate(self) -> float:
        return self.bad / self.reviewed if self.reviewed else 0.0


def live_health(model_id: str, since: datetime, settings: Settings | None = None) -> LiveHealth:
    client = get_client(settings)
    try:
        parameters = {"provider": MEMORY_PROVIDER, "model": f"{model_id}@", "since": since}
        answers, corrected, low_rated, reviewed = client.query(LIVE_QUERY, parameters=parameters).result_rows[0]
    finally:
        client.close()
    return LiveHealth(int(answers), int(reviewed), int(corrected) + int(low_rated))


ROUTER_LIVE_QUERY: Final = f"""\
SELECT count() AS routed,
       countIf(fb.corrected_intent IS NOT NULL AND fb.corrected_intent != a.intent) AS rerouted,
       countIf(fb.corrected_intent IS NOT NULL OR fb.rating IS NOT NULL OR fb.correction IS NOT NULL
               OR fb.escalation_outcome IS NOT NULL) AS reviewed
FROM switchyard.audit_records AS a FINAL
LEFT JOIN
(
{feedback_by_request()}
) AS fb ON fb.request_id = a.request_id AND fb.store_id = a.store_id
WHERE JSONExtractString(a.record, 'route', 'classifier_version') = {{version:String}}
  AND a.recorded_at >= {{since:DateTime64(3, 'UTC')}}
SETTINGS join_use_nulls = 1"""


def router_live_health(classifier_version: str, since: datetime, settings: Settings | None = None) -> LiveHealth:
    """The requests routed by the classifier `classifier_version` since `since`: reviewed ones (any feedback) and
    bad ones (staff corrected the route to another intent)."""
    client = get_client(settings)
    try:
        parameters = {"version": classifier_version, "since": since}
        routed, rerouted, reviewed = client.query(ROUTER_LIVE_QUERY, parameters=parameters).result_rows[0]
    finally:
        client.close()
    return LiveHealth(int(routed), int(reviewed), int(rerouted))


def _classifier_version(registry: ModelRegistry, model_id: str) -> str:
    card = json.loads((registry.model_dir(model_id) / "card.json").read_text(encoding="utf-8"))
    return str(card["version"])


def check_live(
    route_table: Path,
    registry: ModelRegistry,
    *,
    kind: str = MEMORY_KIND,
    max_bad_rate: float = 0.2,
    min_reviewed: int = 10,
    settings: Settings | None = None,
) -> str | None:
    """Rolls the live promotion of `kind` back when the share of its reviewed live work that staff found wrong
    exceeds `max_bad_rate` (given `min_reviewed`): for an answer memory, answers corrected or rated 2 or less; for
    a router, requests whose route staff corrected. Returns what the rollback did, or None."""
    with registry.lock():
        live = live_promotion(registry.events(), kind)
        if live is None:
            return None
        since = datetime.fromisoformat(live["created_at"])
        if kind == ROUTER_KIND:
            health = router_live_health(_classifier_version(registry, live["model_id"]), since, settings)
            wrong = "routes corrected"
        else:
            health = live_health(live["model_id"], since, settings)
            wrong = "answers corrected or rated <= 2"
        if health.reviewed < min_reviewed or health.bad_rate <= max_bad_rate:
            return None
        reason = (
            f"automatic: {health.bad} of {health.reviewed} reviewed live {wrong} "
            f"({health.bad_rate:.0%} > {max_bad_rate:.0%})"
        )
        return _rollback(route_table, registry, reason=reason, kind=kind)


def now() -> datetime:
    return datetime.now(UTC)
