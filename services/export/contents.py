"""What goes into an export bundle: the one declared list of sections, each a set of globs over the project tree.

Collection is by declared location, never by a list of known files, so rules, templates, migrations and models
that land later are picked up by the next export. A file keeps its project-relative path inside the bundle, so
an import lays it out where the same code looks for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final


@dataclass(frozen=True)
class Section:
    """One kind of content: where it lives, what it is, and whether it is production data."""

    name: str
    patterns: tuple[str, ...]
    description: str
    data: bool = False
    """Raw production data: exported only with --with-data."""
    secrets_checked: bool = False
    """Configuration that may name credentials: literal secrets are refused (or redacted) before export."""
    under_var: bool = False
    """Patterns are relative to the run-time state directory (SWITCHYARD_VAR), kept under var/ in the bundle."""


# Never exported, whatever a pattern matches: caches, build output, local environments, run-time logs.
EXCLUDED_PARTS: Final = frozenset(
    {"__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", ".hypothesis", ".venv", "node_modules", ".git"}
)
EXCLUDED_SUFFIXES: Final = (".pyc", ".pyo", ".tmp", ".log", ".pid", ".lock")

SECTIONS: Final[tuple[Section, ...]] = (
    Section("routes", ("routes/**/*.yaml", "routes/**/*.yml"), "route tables: intent to route, conditions, fallbacks"),
    Section(
        "policies",
        ("policies/**/*.yaml", "policies/**/*.yml"),
        "policy rules the governor and the output guard evaluate",
        secrets_checked=True,
    ),
    Section(
        "prompt_templates",
        ("services/stitcher/templates/**/*", "services/stitcher/workflow_phrases.yaml"),
        "prompt templates the stitcher renders and the data workflows' phrases, with their versions",
    ),
    Section(
        "providers",
        ("providers/**/*.yaml", "providers/**/*.yml"),
        "model providers: endpoints and keys as environment references, never values",
        secrets_checked=True,
    ),
    Section(
        "governance",
        ("governance/**/*.yaml", "governance/**/*.yml", "services/governor/**/*.yaml", "services/governor/**/*.yml"),
        "governance configuration: PII patterns, vault, output guard settings",
        secrets_checked=True,
    ),
    Section("schemas", ("schemas/*.avsc", "schemas/history/**/*.avsc"), "the Avro wire contract with its history"),
    Section("topics", ("topics/*.yaml", "topics/*.yml"), "declarative topic definitions"),
    Section(
        "models",
        ("models/**/*",),
        "trained models from the registry: portable weights, data cards, evaluation results",
        under_var=True,
    ),
    Section(
        "training_sets",
        (
            "services/router/intents/data/*.jsonl",
            "services/governor/data/*.jsonl",
            "services/tools/eval/data/*.jsonl",
            "services/learning/**/*.sql",
            "services/learning/**/*.yaml",
            "services/learning/queries/**/*",
        ),
        "training and eval sets: the written intent, guard and answer examples, the telemetry export queries",
    ),
    Section("clickhouse", ("infra/clickhouse/*.sql",), "ClickHouse DDL and materialized views, in migration order"),
    Section("weaviate", ("pipelines/weaviate/*.json",), "the Weaviate collection definition (generated at export)"),
    Section(
        "knowledge", ("knowledge/**/*.md", "knowledge/**/*.yaml"), "knowledge-base sources, ingested into Weaviate"
    ),
    Section(
        "deploy",
        ("infra/deploy/**/*",),
        "deployment: docker-compose, Kubernetes manifests (Deployments, KEDA, PDBs), the image build file",
    ),
    Section(
        "monitoring",
        ("infra/grafana/**/*", "infra/prometheus/**/*"),
        "monitoring: Prometheus scrape configuration and Grafana dashboards",
    ),
    Section(
        "runtime",
        ("pyproject.toml", "Makefile", "README.md", "docs/*.md", ".gitignore", "services/**/*", "infra/**/*"),
        "the Switchyard code and the scripts `make up` runs: the bundle runs without the original checkout",
    ),
    Section(
        "data",
        ("export-data/**/*", "learning*/**/datasets/**/*"),
        "raw production data (ClickHouse tables as JSON lines, the learning loop's data sets), only with --with-data",
        data=True,
        under_var=True,
    ),
)

SECTION_NAMES: Final = tuple(section.name for section in SECTIONS)


def section(name: str) -> Section:
    for candidate in SECTIONS:
        if candidate.name == name:
            return candidate
    raise KeyError(f"no bundle section {name!r}; sections: {', '.join(SECTION_NAMES)}")


def _excluded(relative: Path) -> bool:
    hidden = any(part.startswith(".") and part != ".gitignore" for part in relative.parts)
    cached = any(part in EXCLUDED_PARTS for part in relative.parts)
    return hidden or cached or relative.name.endswith(EXCLUDED_SUFFIXES)


def collect(root: Path, var_dir: Path, sections: Iterable[Section] = SECTIONS) -> dict[str, tuple[Path, str]]:
    """Every file the sections declare: bundle path (project-relative, POSIX) -> (file on disk, section name).

    A file matched by two sections belongs to the first (the more specific ones come first in SECTIONS)."""
    found: dict[str, tuple[Path, str]] = {}
    for entry in sections:
        base, prefix = (var_dir, Path("var")) if entry.under_var else (root, Path())
        for pattern in entry.patterns:
            for path in sorted(base.glob(pattern)):
                if not path.is_file() or path.is_symlink():
                    continue
                relative = prefix / path.relative_to(base)
                if _excluded(relative):
                    continue
                found.setdefault(relative.as_posix(), (path, entry.name))
    return dict(sorted(found.items()))
