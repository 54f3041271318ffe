"""Migration files: ordering, statement splitting and checksums, without a server."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from services.infra.clickhouse import (
    DDL_DIR,
    Migration,
    MigrationError,
    format_table,
    load_migrations,
    split_statements,
)


def test_statements_split_on_semicolons_that_end_a_line() -> None:
    sql = "-- header\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory;\n;\nDROP TABLE b;\n-- trailing\n"
    assert split_statements(sql) == [
        "-- header\nCREATE TABLE a (x String DEFAULT ';')\nENGINE = Memory",
        "DROP TABLE b",
    ]


def test_a_last_statement_without_semicolon_is_kept() -> None:
    assert split_statements("SELECT 1;\nSELECT 2") == ["SELECT 1", "SELECT 2"]


def test_migrations_load_in_number_order_and_ignore_other_files(tmp_path: Path) -> None:
    for name in ("010_later.sql", "002_first.sql", "notes.sql", "README.md"):
        (tmp_path / name).write_text("SELECT 1;\n")
    assert [m.name for m in load_migrations(tmp_path)] == ["002_first.sql", "010_later.sql"]


def test_two_migrations_with_one_number_are_refused(tmp_path: Path) -> None:
    (tmp_path / "003_a.sql").write_text("SELECT 1;\n")
    (tmp_path / "003_b.sql").write_text("SELECT 2;\n")
    with pytest.raises(MigrationError, match="more than one migration numbered 003"):
        load_migrations(tmp_path)


def test_checksum_is_the_sha256_of_the_file_text() -> None:
    migration = Migration("001_x.sql", "CREATE DATABASE x;\n")
    assert migration.checksum == hashlib.sha256(b"CREATE DATABASE x;\n").hexdigest()


def test_the_shipped_ddl_creates_the_database_first_and_every_table_in_it() -> None:
    migrations = load_migrations(DDL_DIR)
    assert [m.name for m in migrations][:4] == [
        "001_database.sql",
        "002_requests.sql",
        "003_stage_events.sql",
        "004_dead_letters.sql",
    ]
    assert migrations[0].statements == [
        "-- The database every Switchyard telemetry table lives in.\nCREATE DATABASE IF NOT EXISTS switchyard"
    ]
    for migration in migrations[1:]:
        assert all("switchyard." in s for s in migration.statements)


def test_tables_print_with_aligned_columns() -> None:
    assert format_table(["a", "bb"], [["xyz", "1"]]) == "a    bb\n---  --\nxyz  1 "
