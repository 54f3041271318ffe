"""`switchyard replay REQUEST_ID`: re-runs the decisions recorded in an audit record with the recorded versions
and inputs, and shows that they come out the same or where they differ.

- routing: the route table at the recorded version (working tree or git history) decides again on the recorded
  request and intent prediction (intent, confidence and runner-up as recorded; the classifier read the raw
  text, which the audit record keeps only tokenised) with the providers the router had recorded as unhealthy.
- context selection: services.stitcher.budget.fit_to_budget on the recorded items and budget keeps exactly the
  recorded items in the recorded order, and no item dropped as over budget would have fitted in the room left.
- policy: services.policy.engine.PolicyEngine at the recorded policy version evaluates the recorded facts
  again (input rules) and gives the same findings (rule, rule version, action, reason).

The model's text is not replayed: it is the one decision that is not deterministic.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.auditor.versions import VersionNotFound, at_version
from services.settings import Settings, get_settings
from services.wire.models import ContextItem, Request

_PREDICTION = re.compile(r"^intent (?P<intent>\S+) (?P<conf>[\d.]+) \(runner-up (?P<runner>\S+) (?P<rconf>[\d.]+)\)")
_SKIPPED = re.compile(r"skipped (?P<route>\S+): provider (?P<provider>\S+) is unhealthy \((?P<why>[^)]*)\)")
_ROUTE_FIELDS = ("route_id", "kind", "intent", "provider", "fallbacks", "reason", "route_table_version")
_DECLINED = re.compile(r"; (?P<route>[\w.-]+) declined \((?P<why>[^()]*)\): took [\w.-]+")


@dataclass
class Check:
    decision: str
    same: bool | None  # None: not replayable from this record (say why in `summary`)
    summary: str
    differences: list[str] = field(default_factory=list)

    def render(self) -> str:
        status = {True: "same", False: "DIFFERENT", None: "skipped"}[self.same]
        lines = [f"{self.decision:<18} {status:<9} {self.summary}"]
        lines += [f"{'':<28}{line}" for line in self.differences]
        return "\n".join(lines)


@dataclass(frozen=True)
class RecordedPrediction:
    intent: str
    confidence: float
    runner_up: str
    runner_up_confidence: float


def replay_routing(record: dict[str, Any], route_table: Path) -> Check:
    from services.shared.route_table import load_route_table

    recorded = record["route"]
    version = recorded["route_table_version"]
    try:
        table, where = at_version(route_table, version, load_route_table, lambda t: t.version)
    except VersionNotFound as error:
        return Check("routing", None, str(error))
    match = _PREDICTION.match(recorded["reason"])
    if match is None:
        return Check("routing", None, f"the recorded reason does not state the prediction: {recorded['reason']!r}")
    # The confidence as recorded (float32 on the wire); the reason's two decimals only break a tie at a threshold.
    prediction = RecordedPrediction(
        match["intent"], float(recorded["confidence"]), match["runner"], float(match["rconf"])
    )
    unhealthy = {m["provider"]: m["why"] for m in _SKIPPED.finditer(recorded["reason"])}
    request = _request(record["request"])
    decision = table.decide(request, prediction, unhealthy_providers=unhealthy)
    for declined in _DECLINED.finditer(recorded["reason"]):
        # the stitcher moved the request on when the route's data workflow could not answer it
        decision = table.fall_back(decision, declined["why"])
    decided = decision.model_dump(mode="json")
    # the reason prints the confidence with two decimals: recorded and replayed agree on it when the inputs do
    differences = [
        f"{name}: recorded {recorded[name]!r}, replayed {decided[name]!r}"
        for name in _ROUTE_FIELDS
        if recorded.get(name) != decided[name]
    ]
    summary = f"route {decided['route_id']} by route table {version} ({where})"
    return Check("routing", not differences, summary, differences)


def _request(recorded: dict[str, Any]) -> Request:
    """The request as the router saw it, as far as routing reads it: the tokenised text padded back to its
    recorded length (route conditions read only the length)."""
    values = {k: v for k, v in recorded.items() if k in Request.model_fields}
    text = values["text"]
    chars = int(recorded.get("text_chars", len(text)))
    values["text"] = text[:chars].ljust(chars)
    return Request.model_validate(values)


def replay_stitching(record: dict[str, Any]) -> Check:
    try:
        from services.stitcher.budget import OVER_BUDGET, fit_to_budget
    except ImportError:
        return Check("context selection", None, "services.stitcher.budget is not available")
    context = record["context"]
    items = [ContextItem.model_validate(item) for item in context["items"]]
    budget = int(context["token_budget"])
    if not items and not context.get("dropped"):
        return Check("context selection", True, "no context was selected (none found)")
    kept, dropped = fit_to_budget(items, budget)
    differences = []
    if [i.source_id for i in kept] != [i.source_id for i in items]:
        differences.append(f"kept {[i.source_id for i in kept]}, recorded {[i.source_id for i in items]}")
    if dropped:
        differences.append(f"would now drop {[d.source_id for d in dropped]} of the recorded items")
    used = sum(item.tokens for item in items)
    if used != int(context["token_count"]):
        differences.append(f"recorded token_count {context['token_count']}, the items add up to {used}")
    room = budget - used
    for item in context.get("dropped", []):
        if item["reason"] == OVER_BUDGET and item["tokens"] <= room:
            differences.append(f"{item['source']}:{item['source_id']} ({item['tokens']} tokens) was dropped as "
                               f"over budget but fits in the {room} tokens left")  # fmt: skip
    summary = f"{len(items)} items kept, {len(context.get('dropped', []))} dropped, {used}/{budget} tokens"
    return Check("context selection", not differences, summary, differences)


def replay_policy(record: dict[str, Any], policies: Path) -> Check:
    governance = record["governance"]
    version, facts = governance.get("policy_version", ""), governance.get("facts", {})
    if not version:
        return Check("policy", None, "no policy version recorded: no policy rules were evaluated for this request")
    try:
        from services.policy.engine import PolicyEngine
    except ImportError:
        return Check("policy", None, "services.policy.engine is not available")
    try:
        engine, where = at_version(policies, version, PolicyEngine.from_file, lambda e: e.version)
    except VersionNotFound as error:
        return Check("policy", None, str(error))
    replayed = [_finding_key(f.model_dump(mode="json")) for f in engine.evaluate(facts)]
    recorded = [_finding_key(f) for f in governance["findings"] if str(f["kind"]).startswith("policy.")]
    differences = []
    if replayed != recorded:
        differences += [f"recorded only:  {f}" for f in recorded if f not in replayed]
        differences += [f"replayed only:  {f}" for f in replayed if f not in recorded]
        if not differences:
            differences.append("the same findings in another order")
    summary = f"{len(replayed)} findings on {len(facts)} facts by policy {version} ({where})"
    return Check("policy", not differences, summary, differences)


def _finding_key(finding: dict[str, Any]) -> str:
    return f"{finding['rule_id']}@{finding['rule_version']} {finding['action']}: {finding['detail']}"


def replay(record: dict[str, Any], settings: Settings) -> list[Check]:
    return [
        replay_routing(record, settings.route_table),
        replay_stitching(record),
        replay_policy(record, settings.policies),
    ]


def recorded(request_id: str, settings: Settings) -> dict[str, Any] | None:
    from services.infra.clickhouse import get_client

    client = get_client(settings)
    rows = client.query(
        "SELECT record FROM audit_records FINAL WHERE request_id = {id:String} ORDER BY recorded_at DESC LIMIT 1",
        parameters={"id": request_id},
    ).result_rows
    return json.loads(rows[0][0]) if rows else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("request_id", nargs="?", help="the request whose audit record to replay (from ClickHouse)")
    parser.add_argument("--record", type=Path, help="replay an exported audit record (a JSON file) instead")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    settings = get_settings()
    if args.record is not None:
        record: dict[str, Any] | None = json.loads(args.record.read_text(encoding="utf-8"))
    elif args.request_id:
        record = recorded(args.request_id, settings)
    else:
        parser.error("give a REQUEST_ID or --record FILE")
    if record is None:
        print(f"no audit record for request {args.request_id}", file=sys.stderr)
        return 2
    checks = replay(record, settings)
    if args.json:
        print(json.dumps([check.__dict__ for check in checks], indent=2))
    else:
        audit = record["audit"]
        print(f"replay of request {record['request']['request_id']} (chain {audit['chain_key']}, seq {audit['seq']})")
        for check in checks:
            print(check.render())
    return 1 if any(check.same is False for check in checks) else 0
