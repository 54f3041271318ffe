"""The learning loop's commands, reached through `switchyard <command>`:

feedback          rate, correct, reroute or close an escalation for one request
export-training   a versioned training set from ClickHouse for a time range
train             train, evaluate and register a custom model from an exported set
shadow            start / stop / report a candidate answering in shadow on live traffic
promote           route intents to a candidate that beats the incumbent on eval and in shadow
rollback          undo the latest promotion (or only when its live metrics degraded: --if-degraded)
models            list the registered models, what is deployed and what is in shadow
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from services.learning import export, feedback, training
from services.learning.compare import Comparison, RouteComparison, route_shadow_comparison, shadow_comparison
from services.learning.promotion import PromotionPolicy, check_live, promote, rollback
from services.learning.registry import ModelRegistry, format_models
from services.learning.switch import ANSWER_KIND, ROUTER_KIND, SHADOW_FILES
from services.settings import get_settings

SHADOW_KINDS: Final = tuple(SHADOW_FILES)
COMMANDS: Final = ("feedback", "export-training", "train", "shadow", "promote", "rollback", "models")


def _route_table(path: Path | None) -> Path:
    return path or get_settings().route_table


def shadow_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchyard shadow", description="a candidate in shadow on live traffic")
    actions = parser.add_subparsers(dest="action", required=True)
    start = actions.add_parser("start", help="shadow the incumbent with a registered candidate (answers or router)")
    start.add_argument("model_id", help="the registered candidate (switchyard models)")
    start.add_argument("--incumbents", default="", help="answer models: providers to shadow (default: the default)")
    stop = actions.add_parser("stop", help="stop shadowing (running processes see it within a second)")
    stop.add_argument("--kind", choices=SHADOW_KINDS, help="only this kind (default: every kind)")
    report = actions.add_parser("report", help="compare the candidate with the incumbent in ClickHouse")
    report.add_argument("model_id", help="the candidate in shadow")
    report.add_argument("--intents", default=",".join(training.NARROW_INTENTS), help="answer models: intents")
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    if args.action == "start":
        card = registry.card(args.model_id)
        kind = card["kind"]
        if kind not in SHADOW_KINDS:
            raise SystemExit(f"{args.model_id} is a {kind} model: shadow mode is for {', '.join(SHADOW_KINDS)}")
        config = {"candidate": args.model_id, "started_at": datetime.now(UTC).isoformat(timespec="seconds")}
        if kind == ANSWER_KIND:
            config["incumbents"] = [n for n in args.incumbents.split(",") if n]
        registry.set_shadow(config, kind)
        registry.record("shadow_started", args.model_id, kind, intents=card.get("intents", []))
        print(f"{args.model_id} shadows the {'router' if kind == ROUTER_KIND else 'answers'} from now on")
        return 0
    if args.action == "stop":
        stopped = []
        for kind in [args.kind] if args.kind else SHADOW_KINDS:
            current = registry.shadow(kind)
            registry.set_shadow(None, kind)
            if current:
                registry.record("shadow_stopped", current["candidate"], kind)
                stopped.append(current["candidate"])
        print(f"shadow stopped: {', '.join(stopped)}" if stopped else "no shadow was running")
        return 0
    print(json.dumps(_shadow_comparison(registry, args.model_id, args.intents.split(",")).as_dict(), indent=2))
    return 0


def _shadow_comparison(registry: ModelRegistry, model_id: str, intents: Sequence[str]) -> Comparison | RouteComparison:
    if registry.card(model_id)["kind"] == ROUTER_KIND:
        return route_shadow_comparison(model_id)
    return shadow_comparison(model_id, [i for i in intents if i])


def promote_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchyard promote", description="promote a candidate for intents")
    parser.add_argument("model_id", help="the candidate to promote (switchyard models)")
    parser.add_argument("--intents", help="comma separated (default: the intents the model was trained for)")
    parser.add_argument(
        "--margin",
        type=float,
        default=PromotionPolicy.margin,
        help="how much it must beat the incumbent by (default %(default)s)",
    )
    parser.add_argument("--no-shadow", action="store_true", help="promote on the eval split alone")
    parser.add_argument("--route-table", type=Path, help="default: $SWITCHYARD_ROUTE_TABLE")
    args = parser.parse_args(argv)
    registry = ModelRegistry()
    card = registry.card(args.model_id)
    intents = [i for i in (args.intents or ",".join(card.get("intents", []))).split(",") if i]
    shadow = None if args.no_shadow else _shadow_comparison(registry, args.model_id, intents)
    policy = PromotionPolicy(margin=args.margin, require_shadow=not args.no_shadow)
    decision = promote(args.model_id, intents, _route_table(args.route_table), registry, shadow=shadow, policy=policy)
    what = f" for {', '.join(intents)}" if intents else ""
    print(("promoted " if decision.promote else "not promoted ") + args.model_id + what)
    for reason in decision.reasons:
        print(f"  {reason}")
    return 0 if decision.promote else 2


def rollback_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchyard rollback", description="undo the latest promotion")
    parser.add_argument(
        "--if-degraded",
        action="store_true",
        help="only when its live metrics degraded (the `learning` process does this by itself on a timer)",
    )
    parser.add_argument("--kind", choices=SHADOW_KINDS, help="the latest promotion of this kind")
    parser.add_argument("--max-bad-rate", type=float, default=0.2, help="share of reviewed live work found wrong")
    parser.add_argument("--min-reviewed", type=int, default=10, help="reviewed live requests needed to judge")
    parser.add_argument("--route-table", type=Path, help="default: $SWITCHYARD_ROUTE_TABLE")
    args = parser.parse_args(argv)
    registry, table = ModelRegistry(), _route_table(args.route_table)
    if args.if_degraded:
        for kind in [args.kind] if args.kind else SHADOW_KINDS:
            version = check_live(
                table, registry, kind=kind, max_bad_rate=args.max_bad_rate, min_reviewed=args.min_reviewed
            )
            print(f"{kind}: rolled back: {version}" if version else f"{kind}: live metrics within limits")
        return 0
    print(f"rolled back: {rollback(table, registry, kind=args.kind)}")
    return 0


def models_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="switchyard models", description="the model registry")
    parser.add_argument("--json", action="store_true", help="every card in full")
    args = parser.parse_args(argv)
    registry = ModelRegistry(clickhouse=False)
    print(json.dumps(registry.models(), indent=2) if args.json else format_models(registry))
    return 0


def main(command: str, argv: Sequence[str]) -> int:
    if command == "feedback":
        return feedback.main(argv)
    if command == "export-training":
        return export.main(argv)
    if command == "train":
        return training.main(argv)
    if command == "shadow":
        return shadow_main(argv)
    if command == "promote":
        return promote_main(argv)
    if command == "rollback":
        return rollback_main(argv)
    return models_main(argv)
