"""Switchyard's ClickHouse access: the HTTP client every process uses (against a real server or the
embedded chDB owner alike), the DDL migrations in infra/clickhouse/, and a small CLI.

    switchyard migrate [--ddl-dir DIR]
    switchyard query "SQL" [--format PrettyCompact | --json]
    switchyard ping
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError

from services.settings import DATA_ROOT, Settings, get_settings

DDL_DIR = DATA_ROOT / "infra" / "clickhouse"
MIGRATIONS_TABLE = "switchyard.schema_migrations"
_MIGRATION_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
_RESULT_SQL = re.compile(r"^[\s(]*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXISTS|EXPLAIN|FROM)\b", re.IGNORECASE)


class MigrationError(Exception):
    """A migration cannot be applied; the message names the file and what to do."""


def get_client(settings: Settings | None = None, **overrides: Any) -> Client:
    """A clickhouse-connect HTTP client for settings.clickhouse_url; `overrides` go to get_client as they are
    (compress=, database=, ...). It does not create the database: before `migrate` has run, connecting
    raises clickhouse-connect's DatabaseError with ClickHouse's UNKNOWN_DATABASE (code 81)."""
    settings = settings or get_settings()
    url = urlsplit(settings.clickhouse_url)
    options: dict[str, Any] = {
        "host": url.hostname or "127.0.0.1",
        "port": url.port or (8443 if url.scheme == "https" else 8123),
        "interface": url.scheme or "http",
        "username": url.username or settings.clickhouse_user,
        "password": url.password or settings.clickhouse_password,
        "database": settings.clickhouse_database,
    }
    options.update(overrides)
    return clickhouse_connect.get_client(**options)


def ping(settings: Settings | None = None, timeout_s: float = 3.0) -> bool:
    """True when the ClickHouse HTTP interface answers /ping (no client handshake, so it suits probes)."""
    url = (settings or get_settings()).clickhouse_url.rstrip("/") + "/ping"
    try:
        with urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200 and response.read().startswith(b"Ok."))
    except (URLError, OSError):
        return False


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)


def split_statements(sql: str) -> list[str]:
    """Statements end with `;` at the end of a line; chunks holding only comments are dropped."""
    statements, current = [], []
    for line in sql.splitlines():
        current.append(line)
        if line.rstrip().endswith(";"):
            statements.append("\n".join(current).rstrip().rstrip(";"))
            current = []
    statements.append("\n".join(current))
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(statement: str) -> bool:
    return any(line.strip() and not line.strip().startswith("--") for line in statement.splitlines())


def load_migrations(ddl_dir: Path) -> list[Migration]:
    """The NNN_name.sql files of `ddl_dir`, in order; two files with one number is an error."""
    files = sorted(p for p in ddl_dir.glob("*.sql") if _MIGRATION_NAME.match(p.name))
    numbers = [p.name[:3] for p in files]
    duplicates = sorted({n for n in numbers if numbers.count(n) > 1})
    if duplicates:
        raise MigrationError(f"{ddl_dir}: more than one migration numbered {', '.join(duplicates)}; renumber one")
    return [Migration(p.name, p.read_text(encoding="utf-8")) for p in files]


def migrate(client: Client, ddl_dir: Path = DDL_DIR) -> list[str]:
    """Apply the migrations of `ddl_dir` not applied yet, in order; returns the names applied now. An applied
    file whose content changed is refused: write a new NNN file instead of editing an applied one."""
    migrations = load_migrations(ddl_dir)
    client.command("CREATE DATABASE IF NOT EXISTS switchyard", use_database=False)
    client.command(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} (name String, checksum String, "
        "applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) ENGINE = ReplacingMergeTree ORDER BY name",
        use_database=False,
    )
    applied = _applied_checksums(client)
    _refuse_changed(migrations, applied, ddl_dir)
    done = []
    for migration in (m for m in migrations if m.name not in applied):
        for statement in migration.statements:
            client.command(statement, use_database=False)
        client.insert(MIGRATIONS_TABLE, [[migration.name, migration.checksum]], column_names=["name", "checksum"])
        done.append(migration.name)
    return done


def _applied_checksums(client: Client) -> dict[str, str]:
    result = client.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE} FINAL")
    return {name: checksum for name, checksum in result.result_rows}


def _refuse_changed(migrations: list[Migration], applied: dict[str, str], ddl_dir: Path) -> None:
    for migration in migrations:
        recorded = applied.get(migration.name)
        if recorded is not None and recorded != migration.checksum:
            raise MigrationError(
                f"{ddl_dir / migration.name} was applied with sha256 {recorded} but now has "
                f"{migration.checksum}; revert the edit and put the change in a new migration file"
            )


def format_table(columns: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(lines)


def _query(client: Client, sql: str, fmt: str | None) -> str:
    if fmt:
        return bytes(client.raw_query(sql, fmt=fmt)).decode("utf-8", errors="replace").rstrip("\n")
    if not _RESULT_SQL.match(sql):
        client.command(sql)
        return "Ok."
    result = client.query(sql)
    rows = [[str(v) for v in row] for row in result.result_rows]
    return format_table(list(result.column_names), rows) + f"\n({len(rows)} rows)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    migrate_cmd = commands.add_parser("migrate", help="apply infra/clickhouse/NNN_*.sql not applied yet")
    migrate_cmd.add_argument(
        "--ddl-dir", type=Path, default=DDL_DIR, help="the NNN_*.sql files (default infra/clickhouse)"
    )
    query_cmd = commands.add_parser("query", help="run one SQL statement and print its result")
    query_cmd.add_argument("sql", help="one SQL statement, e.g. 'SELECT count() FROM switchyard.requests'")
    formats = query_cmd.add_mutually_exclusive_group()
    formats.add_argument("--format", help="a ClickHouse output format, passed through (e.g. PrettyCompact)")
    formats.add_argument("--json", action="store_true", help="one JSON object a row (ClickHouse's JSONEachRow)")
    commands.add_parser("ping", help="exit 0 when ClickHouse answers /ping")
    args = parser.parse_args(argv)
    settings = get_settings()
    try:
        if args.command == "ping":
            ok = ping(settings)
            print("ok" if ok else f"no answer from {settings.clickhouse_url}")
            return 0 if ok else 1
        if args.command == "migrate":
            applied = migrate(get_client(settings, database=""), args.ddl_dir)
            print(f"applied {', '.join(applied)}" if applied else "schema up to date")
            return 0
        print(_query(get_client(settings), args.sql, "JSONEachRow" if args.json else args.format))
        return 0
    except (MigrationError, ClickHouseError) as ex:
        print(f"error: {ex}", file=sys.stderr)
        if "AUTHENTICATION_FAILED" in str(ex):
            print(
                "hint: the password comes from SWITCHYARD_CLICKHOUSE_PASSWORD, else the file "
                f"{settings.clickhouse_password_path()} (`make up` writes it for the embedded server)",
                file=sys.stderr,
            )
        return 1


if __name__ == "__main__":
    sys.exit(main())
