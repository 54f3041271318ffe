"""`switchyard export` and `switchyard import`: the command lines of bundle.py, importer.py and equivalence.py."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from services.export.bundle import ExportError, ExportOptions, export_bundle
from services.export.equivalence import DEFAULT_REQUESTS, ReplayFailed, compare
from services.export.importer import BundleRefused, import_bundle
from services.export.secrets import LiteralSecretError
from services.settings import REPO_ROOT, get_settings


def export_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchyard export",
        description="write the whole system as one versioned bundle (a directory and a .tar.gz) signed by hash",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "dist", help="where the bundle goes (default dist/)")
    parser.add_argument("--name", help="bundle directory name (default switchyard-<version>-<UTC time>)")
    parser.add_argument("--with-data", action="store_true", help="also export the ClickHouse tables (production data)")
    parser.add_argument(
        "--redact-secrets",
        action="store_true",
        help="replace literal secrets by ${NAME} references instead of refusing",
    )
    parser.add_argument(
        "--data-tables", default="", help="with --with-data, only these tables (comma separated; default all)"
    )
    parser.add_argument("--no-tarball", action="store_true", help="write the directory only")
    args = parser.parse_args(argv)
    options = ExportOptions(
        root=REPO_ROOT,
        var_dir=get_settings().var_dir,
        out_dir=args.out,
        with_data=args.with_data,
        data_tables=tuple(name for name in args.data_tables.split(",") if name),
        redact_secrets=args.redact_secrets,
        tarball=not args.no_tarball,
        name=args.name,
    )
    try:
        result = export_bundle(options)
    except (ExportError, LiteralSecretError, ValueError) as error:
        print(f"switchyard export: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0


def import_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchyard import",
        description="check a bundle (hashes, versions, schema compatibility) and lay it out where `make up` runs",
    )
    parser.add_argument("bundle", type=Path, help="a bundle directory or .tar.gz")
    parser.add_argument("--into", type=Path, required=True, help="a fresh directory for the imported system")
    parser.add_argument("--expect-hash", help="the bundle's sha256 as published by whoever exported it")
    parser.add_argument(
        "--schemas", type=Path, help="the schemas the running topics carry (default: this installation's schemas/)"
    )
    parser.add_argument("--bootstrap", help="also check the bundle's topics against this running broker")
    parser.add_argument(
        "--topic-prefix", help="the running system's SWITCHYARD_TOPIC_PREFIX (default: this environment's)"
    )
    parser.add_argument("--force", action="store_true", help="import into a directory that is not empty")
    parser.add_argument(
        "--check-equivalence",
        action="store_true",
        help="replay the fixed requests through this tree and the imported one and compare the decisions",
    )
    args = parser.parse_args(argv)
    try:
        report = import_bundle(
            args.bundle,
            args.into,
            expect_hash=args.expect_hash,
            target_schemas=args.schemas,
            bootstrap=args.bootstrap,
            topic_prefix=get_settings().topic_prefix if args.topic_prefix is None else args.topic_prefix,
            force=args.force,
        )
    except BundleRefused as error:
        print(f"switchyard import: {error}", file=sys.stderr)
        return 1
    print(report.summary())
    if not args.check_equivalence:
        return 0
    return equivalence_main(["--original", str(REPO_ROOT), "--imported", str(args.into)])


def equivalence_main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="switchyard equivalence",
        description="replay fixed requests through two trees; same routes, policy verdicts and workflow answers?",
    )
    parser.add_argument("--original", type=Path, default=REPO_ROOT, help="the tree exported (default: this one)")
    parser.add_argument("--imported", type=Path, required=True, help="the tree an import laid out")
    parser.add_argument("--requests", type=Path, default=DEFAULT_REQUESTS, help="the fixed requests (JSON lines)")
    args = parser.parse_args(argv)
    try:
        result = compare(args.original, args.imported, args.requests)
    except ReplayFailed as error:
        print(f"equivalence: {error}", file=sys.stderr)
        return 1
    print(result.summary())
    return 0 if result.equivalent else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"export": export_main, "import": import_main, "equivalence": equivalence_main}
    if not args or args[0] not in commands:
        print(f"usage: python -m services.export.cli {{{','.join(commands)}}} ...", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
