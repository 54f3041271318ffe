"""`switchyard`: one command for every operation. `switchyard --help` lists them."""

from __future__ import annotations

import argparse
import sys

from services.stages import PROCESSES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description="Switchyard orchestration layer")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run one stage process (or the telemetry writer) until SIGTERM")
    run.add_argument("process", choices=PROCESSES)
    run.add_argument("--replica", help="replica id, unique per running copy (default: $SWITCHYARD_REPLICA or host)")
    run.add_argument("--http-port", type=int, help="port of /healthz and /metrics (0 picks a free one)")

    topics = commands.add_parser("topics", help="reconcile the broker with topics/ (plan or apply)")
    topics.add_argument("args", nargs=argparse.REMAINDER)
    migrate = commands.add_parser("migrate", help="apply infra/clickhouse/*.sql")
    migrate.add_argument("args", nargs=argparse.REMAINDER)
    query = commands.add_parser("query", help="run SQL against ClickHouse")
    query.add_argument("args", nargs=argparse.REMAINDER)
    seed_stores = commands.add_parser("seed-stores", help="publish the store directory to ref.stores")
    seed_stores.add_argument("args", nargs=argparse.REMAINDER)
    commands.add_parser("demo", help="the end-to-end demo")

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
