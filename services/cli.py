"""`switchyard`: one command for every operation. `switchyard --help` lists them."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from services.stages import FUSED, PROCESSES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard orchestration layer")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help=f"run one stage process (or the telemetry writer; `{FUSED}`: the five stages fused) until SIGTERM"
    )
    run.add_argument("process", choices=[*PROCESSES, FUSED])
    run.add_argument("--replica", help="replica id, unique per running copy (default: $SWITCHYARD_REPLICA or host)")
    run.add_argument("--http-port", type=int, help="port of /healthz and /metrics (0 picks a free one)")

    topics = commands.add_parser("topics", help="reconcile the broker with topics/ (plan or apply)")
    topics.add_argument("args", nargs=argparse.REMAINDER)
    migrate = commands.add_parser("migrate", help="apply infra/clickhouse/*.sql")
    migrate.add_argument("args", nargs=argparse.REMAINDER)
    query = commands.add_parser("query", help="run SQL against ClickHouse")
    query.add_argument("args", nargs=argparse.REMAINDER)
    seed_stores = commands.add_parser("seed-stores", help="publish stores, staff, stock and customers to ref.*")
    seed_stores.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("demo", help="the end-to-end demo")
    export = commands.add_parser("export", help="write the system as one hash-signed bundle (dir and .tar.gz)")
    export.add_argument("args", nargs=argparse.REMAINDER)
    import_ = commands.add_parser("import", help="check a bundle and lay it out in a fresh directory")
    import_.add_argument("args", nargs=argparse.REMAINDER)
    bundle_arguments = sys.argv[1:] if argv is None else argv
    if bundle_arguments and bundle_arguments[0] in ("export", "import"):  # before argparse: it drops leading --flags
        from services.export import cli as export_cli

        return export_cli.main(list(bundle_arguments))
    learning_help = {
        "feedback": "rate, correct, reroute or close an escalation (to the feedback topic)",
        "export-training": "a versioned training set (JSONL chat + Parquet + card) from ClickHouse",
        "train": "train, evaluate and register a custom model from an exported set",
        "shadow": "start / stop / report a candidate answering in shadow on live traffic",
        "promote": "route intents to a candidate that beats the incumbent on eval and in shadow",
        "rollback": "undo the latest promotion (--if-degraded: only when its live metrics degraded)",
        "models": "the model registry: models, data sets, evaluations, what is deployed",
    }
    for name, text in learning_help.items():
        commands.add_parser(name, help=text, add_help=False).add_argument("args", nargs=argparse.REMAINDER)

    arguments = sys.argv[1:] if argv is None else argv
    if arguments and arguments[0] in learning_help:  # before argparse, which keeps a leading --flag from REMAINDER
        from services.learning import cli as learning_cli

        return learning_cli.main(arguments[0], arguments[1:])
    approval_help = {
        "approve": "a manager approves an escalated request: it runs through the chain again, released",
        "reject": "a manager rejects an escalated request: the held answer stands",
    }
    for name, text in approval_help.items():
        commands.add_parser(name, help=text, add_help=False).add_argument("args", nargs=argparse.REMAINDER)
    if arguments and arguments[0] in approval_help:
        from services.approvals import cli as approvals_cli

        return approvals_cli.main(arguments[0], arguments[1:])
    audit_commands = {  # name: (module with main(argv), help)
        "verify": (
            "services.auditor.verify",
            "walk the audit hash chains in ClickHouse, report the first broken link and any signed checkpoint "
            "they no longer match",
        ),
        "export-checkpoints": (
            "services.auditor.checkpoint_log",
            "add the auditor's signed chain heads (audit.checkpoints) to a JSON lines file kept offline",
        ),
        "replay": (
            "services.auditor.replay",
            "re-run a request's routing, context and policy decisions from its record",
        ),
        "export-audit": ("services.auditor.export", "audit records of a period as JSON lines or Parquet"),
        "work-split": ("services.dashboard.queries", "the orchestration-work split, measured, next to the reference"),
        "bench-audit": ("services.auditor.bench", "audit write throughput: records/s through decide and the insert"),
        "dashboard": ("services.dashboard.app", "serve the live monitoring dashboard (ClickHouse over HTTP)"),
        "keys": ("services.gateway.keys", "the HTTP gateway's API keys: create (bound to a store), revoke, list"),
        "vault": ("services.governor.vault", "the PII vault's key ring: status (key ids), rotate"),
        "dead-letters": (
            "services.telemetry.dead_letters",
            "dead letters in ClickHouse (--open: in clear)",
        ),
        "staff": ("services.approvals.staff", "who may approve or reject, for which stores: add, deactivate, list"),
    }
    for name, (_, text) in audit_commands.items():
        commands.add_parser(name, help=text, add_help=False).add_argument("args", nargs=argparse.REMAINDER)
    if arguments and arguments[0] in audit_commands:
        import importlib

        command: Any = importlib.import_module(audit_commands[arguments[0]][0])
        return int(command.main(arguments[1:]))
    args = parser.parse_args(argv)
    if args.command == "run":
        from services.stages import run_process

        run_process(args.process, replica=args.replica, http_port=args.http_port)
        return 0
    if args.command == "topics":
        from services.infra import topics as topics_cli

        return topics_cli.main(args.args)
    if args.command in ("migrate", "query"):
        from services.infra import clickhouse

        return clickhouse.main([args.command, *args.args])
    if args.command == "seed-stores":
        from services.stitcher import seed

        return seed.main(args.args)
    from services import demo

    return demo.main()


if __name__ == "__main__":
    sys.exit(main())
