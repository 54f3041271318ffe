"""A versioned configuration (the route table, the policy rules) as it was at a recorded version.

Versions are content hashes (`route_table.yaml`'s `version+sha256`, the policy set's `versions#sha256`), so the
file that produced a version is found by loading candidates and comparing: first the working tree, then every
committed revision of the path, newest first (the configuration is under version control, as it should be).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from services.settings import REPO_ROOT

Config = TypeVar("Config")


class VersionNotFound(LookupError):
    """No revision of the configuration has the recorded version."""


def at_version(
    path: Path, version: str, load: Callable[[Path], Config], version_of: Callable[[Config], str]
) -> tuple[Config, str]:
    """The configuration whose version is `version`, and where it was found ("working tree" or a commit)."""
    for where, candidate in _candidates(path):
        try:
            config = load(candidate)
        except Exception:  # a revision that no longer loads under today's code is not the one recorded
            continue
        if version_of(config) == version:
            return config, where
    raise VersionNotFound(f"no revision of {path} has version {version!r} (working tree and git history searched)")


def _candidates(path: Path) -> Iterator[tuple[str, Path]]:
    if path.exists():
        yield "working tree", path
    try:
        relative = path.resolve().relative_to(REPO_ROOT)
    except ValueError:
        return
    for commit in _git("log", "--format=%H", "--", str(relative)).split():
        with tempfile.TemporaryDirectory(prefix="switchyard-version-") as scratch:
            restored = _restore(commit, relative, Path(scratch))
            if restored is not None:
                yield f"commit {commit[:12]}", restored


def _restore(commit: str, relative: Path, scratch: Path) -> Path | None:
    """The path's content at `commit`, written under `scratch` with its own name(s); None when it did not exist."""
    names = _git("ls-tree", "-r", "--name-only", commit, "--", str(relative)).split()
    if not names:
        return None
    for name in names:
        target = scratch / Path(name).relative_to(relative.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(_git_bytes("show", f"{commit}:{name}"))
    return scratch / relative.name


def _git(*args: str) -> str:
    return _git_bytes(*args).decode()


def _git_bytes(*args: str) -> bytes:
    try:
        done = subprocess.run(["git", "-C", str(REPO_ROOT), *args], capture_output=True, check=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return b""
    return done.stdout
