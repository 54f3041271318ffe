"""What goes into a bundle: files are collected by the declared locations of contents.py, so rules, templates,
migrations and models that land later are exported without touching the exporter; literal secrets never leave."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.export.contents import SECTIONS, collect, section
from services.export.secrets import LiteralSecretError, find_secrets, redact
from services.settings import REPO_ROOT


def touch(path: Path, text: str = "x") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_files_that_land_later_are_collected_by_their_declared_location(tmp_path: Path) -> None:
    root, var = tmp_path / "tree", tmp_path / "state"
    touch(root / "policies" / "discounts.yaml")
    touch(root / "services" / "stitcher" / "templates" / "answer.v2.j2")
    touch(root / "infra" / "clickhouse" / "012_quality_views.sql")
    touch(root / "services" / "learning" / "queries" / "training_set.sql")
    touch(var / "models" / "registry" / "returns-small" / "3" / "card.json", "{}")
    touch(var / "models" / "registry" / "returns-small" / "3" / "model.safetensors")

    found = {path: entry[1] for path, entry in collect(root, var).items()}

    assert found == {
        "infra/clickhouse/012_quality_views.sql": "clickhouse",
        "policies/discounts.yaml": "policies",
        "services/learning/queries/training_set.sql": "training_sets",
        "services/stitcher/templates/answer.v2.j2": "prompt_templates",
        "var/models/registry/returns-small/3/card.json": "models",
        "var/models/registry/returns-small/3/model.safetensors": "models",
    }


def test_caches_hidden_files_logs_and_the_pii_vault_key_are_never_collected(tmp_path: Path) -> None:
    root = tmp_path / "tree"
    touch(tmp_path / "var" / "secrets" / "pii_vault.key")
    touch(root / "services" / "router" / "__pycache__" / "stage.cpython-311.pyc")
    touch(root / "services" / "router" / "stage.py")
    touch(root / "routes" / ".route_table.yaml.swp")
    touch(tmp_path / "var" / "models" / "intent" / ".intent_model.npz.123.tmp")
    touch(tmp_path / "var" / "kafka" / "server.log")

    assert list(collect(root, tmp_path / "var")) == ["services/router/stage.py"]


def test_production_data_is_a_section_of_its_own_that_only_with_data_selects() -> None:
    assert [entry.name for entry in SECTIONS if entry.data] == ["data"]
    assert section("providers").secrets_checked
    assert not section("models").data


def test_the_repository_has_every_section_an_import_needs() -> None:
    found = {entry[1] for entry in collect(REPO_ROOT, REPO_ROOT / "var").values()}

    assert {"routes", "providers", "schemas", "topics", "clickhouse", "knowledge", "deploy", "runtime"} <= found


def test_a_literal_api_key_is_found_with_its_file_and_key() -> None:
    text = "providers:\n  hosted:\n    kind: openai\n    api_key: abc123\n    api_key_env: OPENAI_API_KEY\n"

    findings = find_secrets(text, "providers/providers.yaml")

    assert [(f.file, f.key) for f in findings] == [("providers/providers.yaml", "providers.hosted.api_key")]
    assert "providers/providers.yaml: providers.hosted.api_key" in str(LiteralSecretError(findings))


def test_credential_shaped_values_and_passwords_in_urls_are_found_under_any_key() -> None:
    text = (
        "providers:\n"
        "  a: {base_url: 'https://svc:hunter2@llm.internal/v1'}\n"
        "  b: {headers: ['Bearer abcdefghijklmnopqrstuvwxyz012345']}\n"
        "  c: {note: sk-proj-0123456789abcdefghij}\n"
        "  d: {base_url: 'https://llm.example/v1?api_key=zzz'}\n"
    )

    keys = [finding.key for finding in find_secrets(text, "p.yaml")]

    assert keys == ["providers.a.base_url", "providers.b.headers[0]", "providers.c.note", "providers.d.base_url"]


def test_redaction_replaces_only_the_value_by_an_environment_reference_and_keeps_comments() -> None:
    text = "# hosted model\nproviders:\n  hosted:\n    api_key: abc123  # rotate monthly\n"

    redacted = redact(text, find_secrets(text, "p.yaml"))

    reference = "${SWITCHYARD_SECRET_PROVIDERS_HOSTED_API_KEY}"
    assert redacted == f"# hosted model\nproviders:\n  hosted:\n    api_key: {reference}  # rotate monthly\n"
    assert find_secrets(redacted, "p.yaml") == []


@given(st.from_regex(r"[A-Z_][A-Z0-9_]{0,30}", fullmatch=True))
def test_an_environment_reference_is_never_taken_for_a_secret(name: str) -> None:
    assert find_secrets(f"api_key: '${{{name}}}'\ntoken: '${{{name}}}'\n", "p.yaml") == []


def test_the_shipped_provider_definitions_hold_references_not_secrets() -> None:
    for path in (REPO_ROOT / "providers").glob("*.yaml"):
        assert find_secrets(path.read_text(encoding="utf-8"), path.name) == []


@pytest.mark.parametrize("value", ["null", "''", "OPENAI_API_KEY"])
def test_the_env_name_form_is_the_sanctioned_one(value: str) -> None:
    assert find_secrets(f"api_key_env: {value}\n", "p.yaml") == []


def test_the_equivalence_check_names_each_request_and_decision_that_differs() -> None:
    from services.export.equivalence import differences

    row = {"request_id": "r1", "route_id": "model.large", "policy": {"verdict": "ALLOW"}, "answer": None}
    changed = {**row, "route_id": "workflow.escalate", "policy": {"verdict": "ESCALATE"}}

    assert differences([row], [row]) == []
    assert differences([row], [changed]) == [
        "r1 route_id: original 'model.large', imported 'workflow.escalate'",
        "r1 policy: original {'verdict': 'ALLOW'}, imported {'verdict': 'ESCALATE'}",
    ]
    assert differences([row, row], [row]) == ["2 results from the original, 1 from the imported tree"]


def test_every_file_under_services_travels_so_data_the_code_reads_is_never_left_behind() -> None:
    # the governor trains its guards from services/governor/data/*.jsonl on a fresh machine: a bundle without them
    # imports cleanly and then fails at start
    found = collect(REPO_ROOT, REPO_ROOT / "var")
    shipped = {
        path.relative_to(REPO_ROOT).as_posix()
        for path in (REPO_ROOT / "services").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and not path.name.startswith(".")
    }

    assert shipped - set(found) == set()
