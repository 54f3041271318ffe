"""The ClickHouse comments (migration 029 and later) and docs/data-engineers.md say the same, and say it of every
table and column the migrations create: the migrations are applied to a throwaway chDB directory."""

from __future__ import annotations

import pytest

from services.infra.dictionary import DOC, Table, committed, render, schema, with_dictionary


@pytest.fixture(scope="module")
def tables() -> list[Table]:
    return schema()


def test_every_table_view_and_column_the_migrations_create_has_a_comment(tables: list[Table]) -> None:
    assert {t.name for t in tables} >= {"stage_events", "answers", "audit_records", "feedback", "struggle_flags"}
    for table in tables:
        assert table.comment, f"switchyard.{table.name} has no comment: ALTER TABLE ... MODIFY COMMENT in a migration"
        if table.kind in ("tables", "rollups"):
            missing = [c.name for c in table.columns if not c.comment]
            assert not missing, f"switchyard.{table.name}: COMMENT COLUMN missing for {missing}"


def test_the_committed_dictionary_is_the_one_the_migrations_generate(tables: list[Table]) -> None:
    document = DOC.read_text(encoding="utf-8")
    assert committed(document) == render(tables), "run `python -m services.infra.dictionary --write` and commit it"
    assert with_dictionary(document, render(tables)) == document


def test_every_table_has_a_section_in_the_data_engineers_guide(tables: list[Table]) -> None:
    document = DOC.read_text(encoding="utf-8")
    for table in tables:
        heading = (
            f"#### `switchyard.{table.name}`" if table.kind != "materialized views" else f"- `switchyard.{table.name}`"
        )
        assert heading in document, f"docs/data-engineers.md has no section for switchyard.{table.name}"
        for column in table.columns if table.kind in ("tables", "rollups") else ():
            assert f"| `{column.name}` | `{column.type}` |" in document


def test_a_dictionary_section_shows_the_engine_key_and_every_column(tables: list[Table]) -> None:
    answers = next(t for t in tables if t.name == "answers")
    section = render([answers])
    assert "engine `ReplacingMergeTree` · ORDER BY `store_id, request_id`" in section
    assert "| `api_key` | `LowCardinality(String)` | Gateway API key id that asked" in section
