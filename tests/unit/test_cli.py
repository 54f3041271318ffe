"""`switchyard` on click: every command answers --help with each option described, passthrough commands reach their
module with the arguments untouched, `demo` runs the demo, and `config check` finds what is wrong across files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner, Result

from services import cli
from services.cli import PassthroughCommand, switchyard
from services.settings import REPO_ROOT, get_settings
from services.tools.demo import chain as demo

RUNNER = CliRunner()
SUBCOMMANDS = re.compile(r"^usage: switchyard [^{\n]*\{([a-z,-]+)\}", re.M)


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
    return found


COMMANDS = _commands(switchyard)


def _undescribed(help_text: str) -> list[str]:
    """Arguments and options in an argparse or click help that carry no description."""
    missing: list[str] = []
    lines = help_text.splitlines()
    listing = False
    for index, line in enumerate(lines):
        if re.match(r"^\S.*:$", line):
            listing = "options" in line.lower() or "arguments" in line.lower()
            continue
        entry = re.match(r"^  (\S.*?)(?:\s{2,}\S.*)?$", line)
        if not listing or entry is None or line.startswith("   ") or re.search(r"\s{2,}\S", line.strip()):
            continue
        following = lines[index + 1] if index + 1 < len(lines) else ""
        described_below = re.match(r"^ {6,}\S", following) is not None
        if not described_below and not entry.group(1).startswith("{"):
            missing.append(entry.group(1))
    return missing


def _invoke(*arguments: str) -> Result:
    return RUNNER.invoke(switchyard, list(arguments))


def test_the_group_help_lists_every_command_and_the_exit_codes() -> None:
    result = _invoke("--help")
    assert result.exit_code == 0
    for name in switchyard.commands:
        assert re.search(rf"^  {re.escape(name)}\s", result.output, re.M), name
    assert "Exit codes:" in result.output
    for code in ("0", "1", "2", "3", "75"):
        assert re.search(rf"^\s+{code}\s+\S", result.output, re.M), code


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_a_help_that_describes_each_option(path: tuple[str, ...]) -> None:
    result = _invoke(*path, "--help")
    assert result.exit_code == 0, result.output
    assert result.output.lower().startswith(f"usage: switchyard {' '.join(path)}"), result.output.splitlines()[0]
    assert _undescribed(result.output) == []


@pytest.mark.parametrize(
    "path",
    [p for p in COMMANDS if isinstance(switchyard.commands.get(p[0]), PassthroughCommand)],
    ids=" ".join,
)
def test_the_subcommands_of_passthrough_modules_describe_each_option(path: tuple[str, ...]) -> None:
    found = SUBCOMMANDS.search(_invoke(*path, "--help").output)
    for name in found.group(1).split(",") if found else []:
        result = _invoke(*path, name, "--help")
        assert result.exit_code == 0, result.output
        assert _undescribed(result.output) == [], f"{' '.join(path)} {name}"


def test_a_passthrough_command_hands_on_every_argument_in_order_and_its_exit_code() -> None:
    received: list[list[str]] = []

    def target(argv: list[str]) -> int:
        received.append(argv)
        return 3

    group = click.Group("g")
    group.add_command(PassthroughCommand("x", "records its arguments", target))
    arguments = ["--rates", "1", "2", "positional", "--help", "--", "-h", "--flag=value"]
    result = RUNNER.invoke(group, ["x", *arguments])
    assert result.exit_code == 3
    assert received == [arguments]


def test_demo_runs_the_demo_instead_of_rejecting_its_own_name(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, float, str | None]] = []

    def run(requests: int, rate: float, model: str | None) -> int:
        calls.append((requests, rate, model))
        return 0

    monkeypatch.setattr(demo, "run", run)
    assert cli.main(["demo"]) == 0
    assert cli.main(["demo", "--requests", "5", "--rate", "2"]) == 0
    assert calls == [(30, 1.5, None), (5, 2.0, None)]


def test_usage_errors_exit_2_from_click_and_from_argparse_modules() -> None:
    assert _invoke("no-such-command").exit_code == 2
    assert _invoke("run", "no-such-process").exit_code == 2
    assert _invoke("demo", "--no-such-option").exit_code == 2
    assert cli.main(["demo", "--no-such-option"]) == 2
    assert cli.main(["config", "check", "--no-such-option"]) == 2


def test_config_check_passes_on_the_committed_configuration() -> None:
    result = _invoke("config", "check", "--root", str(REPO_ROOT))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("config ok:")


def test_config_check_json_parses_and_counts_what_it_checked() -> None:
    result = _invoke("config", "check", "--root", str(REPO_ROOT), "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["problems"] == []
    assert set(report["counts"]) == {"routes", "rules", "providers", "topics"}
    assert all(count > 0 for count in report["counts"].values())


def test_models_json_output_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHYARD_MODEL_REGISTRY_DIR", str(tmp_path))
    get_settings.cache_clear()
    try:
        result = _invoke("models", "--json")
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


# -- config check on broken copies ----------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the committed configuration, to break one thing at a time."""
    for folder in ("routes", "policies", "providers", "topics", "schemas"):
        shutil.copytree(REPO_ROOT / folder, tmp_path / folder)
    return tmp_path


def _edit(path: Path, change: Any) -> None:
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(document)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def _problems(tree: Path) -> list[str]:
    result = _invoke("config", "check", "--root", str(tree))
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    assert lines, result.output
    report = json.loads(_invoke("config", "check", "--root", str(tree), "--json").stdout)
    assert report["ok"] is False and report["problems"] == lines
    return lines


def test_config_check_finds_a_route_naming_a_provider_that_providers_lacks(tree: Path) -> None:
    _edit(tree / "routes" / "route_table.yaml", lambda d: d["routes"]["stock_check"].update(provider="nowhere"))
    (line,) = _problems(tree)
    assert "route_table.yaml: routes.stock_check.provider: provider 'nowhere' is not in" in line
    assert "providers.yaml" in line


def test_config_check_finds_a_fallback_naming_an_unknown_route(tree: Path) -> None:
    _edit(tree / "routes" / "route_table.yaml", lambda d: d["routes"]["complaint"].update(fallbacks=["model.gone"]))
    (line,) = _problems(tree)
    assert "routes.complaint.fallbacks[0]: unknown route id 'model.gone'" in line


def test_config_check_finds_a_provider_fallback_naming_an_unknown_provider(tree: Path) -> None:
    _edit(tree / "providers" / "providers.yaml", lambda d: d["providers"]["custom"].update(fallback=["ghost"]))
    (line,) = _problems(tree)
    assert "providers.custom.fallback.0" in line and "'ghost'" in line


def test_config_check_finds_a_policy_rule_naming_an_unknown_intent(tree: Path) -> None:
    def rename(document: dict[str, Any]) -> None:
        for rule in document["rules"]:
            for condition in rule["when"]:
                if condition.get("fact") == "intent":
                    condition["one_of"] = ["return_or_refund", "refund_please"]
                    return

    _edit(tree / "policies" / "commercial.yaml", rename)
    (line,) = _problems(tree)
    assert "commercial.yaml: rule " in line and "intent one_of 'refund_please'" in line


def test_config_check_finds_a_pii_audience_that_is_no_provider(tree: Path) -> None:
    _edit(tree / "policies" / "privacy.yaml", lambda d: d["pii_visibility"].update(hosted_gpt=["PERSON"]))
    (line,) = _problems(tree)
    assert "pii_visibility.hosted_gpt: not a provider in" in line


def test_config_check_finds_a_topic_a_process_needs_that_topics_lacks(tree: Path) -> None:
    _edit(
        tree / "topics" / "side.yaml", lambda d: d.update(topics=[t for t in d["topics"] if t["name"] != "ref.stores"])
    )
    (line,) = _problems(tree)
    assert "topic 'ref.stores' is used by the stitcher process" in line


def test_config_check_reports_every_file_at_fault_in_one_run(tree: Path) -> None:
    _edit(tree / "routes" / "route_table.yaml", lambda d: d["routes"]["stock_check"].update(provider="nowhere"))
    _edit(tree / "topics" / "chain.yaml", lambda d: d.update(topics=[t for t in d["topics"] if t["name"] != "routed"]))
    (tree / "policies" / "safety.yaml").write_text("version: [unclosed\n", encoding="utf-8")
    problems = _problems(tree)
    assert any("provider 'nowhere'" in line for line in problems)
    assert any("topic 'routed' is used by the router process" in line for line in problems)
    assert any("safety.yaml: is not valid YAML" in line for line in problems)
