"""Equivalence of two Switchyard trees: the same fixed requests replayed through each tree's own code, route table,
intent model and policy rules (services/export/replay.py, run in a child process per tree) must give the same
routes, policy verdicts and workflow answers.

`switchyard export equivalence --original . --imported DIR` prints the comparison and exits 1 on any difference.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# the fixed request set: the demo's request mix plus edge cases (discount over the limit, an old return, PII, a
# greeting, a pasted stock list); fixed ids and times so every replay sees the same input
DEFAULT_REQUESTS: Final = Path(__file__).with_name("replay_requests.jsonl")
COMPARED: Final = ("intent", "confidence", "route_id", "kind", "provider", "fallbacks", "policy", "answer")
# variables that would point a child at another tree's files
TREE_VARIABLES: Final = (
    "SWITCHYARD_VAR",
    "SWITCHYARD_ROUTE_TABLE",
    "SWITCHYARD_SCHEMAS_DIR",
    "SWITCHYARD_TOPICS_DIR",
    "SWITCHYARD_POLICIES",
)


class ReplayFailed(RuntimeError):
    """A tree could not replay the requests; carries its error output."""


@dataclass
class Equivalence:
    original: Path
    imported: Path
    results: dict[str, list[dict[str, Any]]]
    differences: list[str] = field(default_factory=list)

    @property
    def equivalent(self) -> bool:
        return not self.differences

    def summary(self) -> str:
        rows = self.results["original"]
        routes = Counter(row["route_id"] for row in rows)
        verdicts = Counter((row["policy"] or {}).get("verdict", "no rules") for row in rows)
        answers = sum(1 for row in rows if row["answer"] is not None)
        lines = [
            f"replayed {len(rows)} requests through {self.original} and {self.imported}",
            f"  routes:   {', '.join(f'{name} {count}' for name, count in sorted(routes.items()))}",
            f"  policy:   {', '.join(f'{name} {count}' for name, count in sorted(verdicts.items()))}",
            f"  workflow answers: {answers}",
            f"  route table {rows[0]['route_table_version']}, intent model {rows[0]['intent_model_version']}"
            if rows
            else "  no requests",
        ]
        if self.equivalent:
            lines.append(f"EQUIVALENT: {len(rows)} of {len(rows)} requests give the same route, verdict and answer")
        else:
            lines.append(f"DIFFERENT: {len(self.differences)} difference(s)")
            lines += [f"  - {difference}" for difference in self.differences[:50]]
        return "\n".join(lines)


def start_replay(tree: Path, requests: Path, python: str = sys.executable) -> subprocess.Popen[str]:
    """The replay of one tree by its own code, in a child: cwd and PYTHONPATH the tree, its var/."""
    tree = tree.resolve()
    environment = {key: value for key, value in os.environ.items() if key not in TREE_VARIABLES}
    environment.update({"PYTHONPATH": str(tree), "SWITCHYARD_VAR": str(tree / "var"), "PYTHONDONTWRITEBYTECODE": "1"})
    return subprocess.Popen(
        [python, "-m", "services.export.replay", "--requests", str(requests.resolve())],
        cwd=tree,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def replay_results(tree: Path, child: subprocess.Popen[str]) -> tuple[Path, list[dict[str, Any]]]:
    """The code directory the child ran and its result per request."""
    stdout, stderr = child.communicate(timeout=600)
    if child.returncode != 0:
        raise ReplayFailed(f"replay in {tree} failed ({child.returncode}):\n{stderr[-4000:]}")
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return Path(lines[0]["code"]), lines[1:]


def compare(original: Path, imported: Path, requests: Path = DEFAULT_REQUESTS) -> Equivalence:
    """Both trees replay at once (two children), then every decision is compared."""
    children = {tree: start_replay(tree, requests) for tree in (original, imported)}
    try:
        (original_code, original_rows), (imported_code, imported_rows) = (
            replay_results(tree, child) for tree, child in children.items()
        )
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
                child.wait()
    result = Equivalence(original, imported, {"original": original_rows, "imported": imported_rows})
    for tree, code in ((original, original_code), (imported, imported_code)):
        if code != tree.resolve():
            result.differences.append(f"{tree} ran the code in {code}, not its own")
    result.differences.extend(differences(original_rows, imported_rows))
    return result


def differences(original: list[dict[str, Any]], imported: list[dict[str, Any]]) -> list[str]:
    """Each request whose route, verdict or answer differs, with both values."""
    found: list[str] = []
    if len(original) != len(imported):
        found.append(f"{len(original)} results from the original, {len(imported)} from the imported tree")
    for left, right in zip(original, imported, strict=False):
        if left["request_id"] != right["request_id"]:
            found.append(f"request order differs: {left['request_id']} and {right['request_id']}")
            continue
        found.extend(
            f"{left['request_id']} {key}: original {left.get(key)!r}, imported {right.get(key)!r}"
            for key in COMPARED
            if left.get(key) != right.get(key)
        )
    return found
