"""Every environment variable is a Settings field, and docs/configuration.md is generated from those fields."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.runtime.worker import WorkerConfig
from services.settings import (
    CONFIGURATION_DOC,
    REPO_ROOT,
    Settings,
    configuration_table,
    env_names,
    get_settings,
    main,
    shown_default,
    with_table,
)

SETTING_VARIABLES = {name for field in Settings.model_fields for name in env_names(field)}
# read by one script only, never by a process: the checkout root, and the test suite's listener switch (infra/test.sh)
SCRIPT_ONLY = {"SWITCHYARD_ROOT", "SWITCHYARD_TEST_KAFKA"}
SHELL_DEFAULT = re.compile(r"\$\{(SWITCHYARD_[A-Z0-9_]+):-([^$}]*)\}")


def shell_sources() -> list[Path]:
    return [
        *sorted((REPO_ROOT / "infra").rglob("*.sh")),
        REPO_ROOT / "Makefile",
        REPO_ROOT / "infra" / "deploy" / "Dockerfile",
    ]


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_committed_configuration_table_is_the_one_settings_generates() -> None:
    document = CONFIGURATION_DOC.read_text(encoding="utf-8")
    assert with_table(document) == document, "run `python -m services.settings table --write` and commit the result"


def test_every_setting_has_a_description_and_a_row() -> None:
    table = configuration_table()
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} needs a description: it is the configuration table's text"
        assert f"| `{env_names(name)[0]}`" in table


def test_every_switchyard_variable_the_scripts_read_is_a_setting_with_the_same_default() -> None:
    for source in shell_sources():
        text = source.read_text(encoding="utf-8")
        for variable in set(re.findall(r"SWITCHYARD_[A-Z0-9_]*[A-Z0-9]", text)) - SCRIPT_ONLY:
            assert variable in SETTING_VARIABLES, (
                f"{source.relative_to(REPO_ROOT)} reads {variable}: add it to Settings"
            )
        for variable, default in SHELL_DEFAULT.findall(text):
            if variable in SCRIPT_ONLY or not default:
                continue
            name = next(field for field in Settings.model_fields if variable in env_names(field))
            assert shown_default(name) == default, f"{source.relative_to(REPO_ROOT)}: {variable} defaults differ"


def test_every_switchyard_variable_the_services_name_is_a_setting() -> None:
    for source in sorted((REPO_ROOT / "services").rglob("*.py")):
        # a name ending in `_` is a prefix (SWITCHYARD_SECRET_<KEY PATH>, SWITCHYARD_MODEL_*), not a variable
        for variable in re.findall(r"SWITCHYARD_[A-Z0-9_]*[A-Z0-9]\b(?!_)", source.read_text(encoding="utf-8")):
            assert variable in SETTING_VARIABLES, (
                f"{source.relative_to(REPO_ROOT)} names {variable}: add it to Settings"
            )


def test_services_read_the_environment_only_through_settings() -> None:
    reads = re.compile(
        r"os\.environ\.get\(\s*\"([A-Z0-9_]+)\"|os\.environ\[\s*\"([A-Z0-9_]+)\"|os\.getenv\(\s*\"([A-Z0-9_]+)\""
    )
    for source in sorted((REPO_ROOT / "services").rglob("*.py")):
        if source.name == "settings.py":
            continue
        for match in reads.finditer(source.read_text(encoding="utf-8")):
            variable = next(group for group in match.groups() if group)
            assert variable in SETTING_VARIABLES, f"{source.relative_to(REPO_ROOT)} reads {variable} outside Settings"


def test_the_state_directory_takes_the_documented_name_and_the_older_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_VAR_DIR", raising=False)
    monkeypatch.setenv("SWITCHYARD_VAR", "/srv/switchyard/var")
    assert Settings().var_dir == Path("/srv/switchyard/var")
    monkeypatch.setenv("SWITCHYARD_VAR_DIR", "/srv/older")
    assert Settings().var_dir == Path("/srv/older"), "the older name wins where set, as before and in infra/lib.sh"
    assert Settings(var_dir=Path("/given")).var_dir == Path("/given")


def test_the_cache_follows_switchyard_cache_then_xdg(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHYARD_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/xdg")
    assert Settings().cache_dir == Path("/xdg/switchyard")
    monkeypatch.setenv("SWITCHYARD_CACHE", "/cache")
    assert Settings().cache_dir == Path("/cache")


def test_a_worker_takes_its_replica_id_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, fresh_settings: None
) -> None:
    monkeypatch.setenv("SWITCHYARD_REPLICA", "router-7")
    assert WorkerConfig().replica == "router-7"
    assert WorkerConfig(replica="given").replica == "given"


def test_an_empty_providers_file_variable_means_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_PROVIDERS_FILE", "")
    assert Settings().providers_file is None
    monkeypatch.setenv("SWITCHYARD_PROVIDERS_FILE", "providers/providers.yaml")
    assert Settings().providers_file == Path("providers/providers.yaml")


def test_the_provider_health_knobs_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_HEALTH_WINDOW_S", "4")
    monkeypatch.setenv("SWITCHYARD_HEALTH_MIN_CALLS", "3")
    settings = Settings()
    assert (settings.health_window_s, settings.health_min_calls, settings.health_step_s) == (4.0, 3, 5.0)


def test_the_table_command_prints_the_table_and_refuses_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["table"]) == 0
    assert capsys.readouterr().out == configuration_table()
    assert main(["tables"]) == 2
    assert "usage" in capsys.readouterr().err
