"""A config loaded from a file or directory and reloaded without a restart when it changes on disk.

`WatchedConfig` keeps the last good value: an invalid or vanished file is logged once and never replaces it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, Generic, TypeVar

T = TypeVar("T")

DEFAULT_CHECK_EVERY_S: Final = 2.0

# one entry per watched file: name, inode, size, mtime. The name catches a rename, the inode an editor that saves
# by writing a new file and renaming it over the old one, size and mtime an edit in place.
FileStamp = tuple[str, int, int, int]
Stamp = tuple[FileStamp, ...]


def every_file(path: Path) -> list[Path]:
    """The files a path stands for: itself, or the files directly inside it when it is a directory. Hidden names
    are left out so an editor's swap files, rewritten every few seconds, do not cause reloads."""
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


def problems_of(error: Exception) -> list[str]:
    """The config errors here carry one line per problem in `problems`; any other error is one line."""
    problems = getattr(error, "problems", None)
    if isinstance(problems, list) and all(isinstance(line, str) for line in problems):
        return problems
    return [str(error)]


class WatchedConfig(Generic[T]):
    """The value in force for a file or directory. `load()` reads it at start-up and raises when it is invalid;
    `current()` re-stats the files at most every `check_every_s` (a few stats, cheap enough for an event loop) and
    reloads when their stamp changed. An invalid or vanished config is logged once and the last good value stays.

    `what` names the config in log messages ("route table"); `version` and `version_field` put its version in
    the log extras (`route_table_version=...`); `files` says which files of a directory count (default: all
    but hidden ones)."""

    def __init__(
        self,
        path: Path,
        load: Callable[[Path], T],
        *,
        invalid: type[Exception] | tuple[type[Exception], ...],
        what: str,
        version: Callable[[T], str],
        version_field: str,
        logger: logging.Logger,
        files: Callable[[Path], Iterable[Path]] = every_file,
        check_every_s: float = DEFAULT_CHECK_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.check_every_s = check_every_s
        self._load = load
        self._invalid = invalid
        self._what = what
        self._version = version
        self._version_field = version_field
        self._log = logger
        self._files = files
        self._clock = clock
        self._value: T | None = None
        self._stamp: Stamp | None = None
        self._next_check = 0.0

    def load(self) -> T:
        """Reads the config now; raises the loader's error when it is invalid (a bad config stops start-up)."""
        # stamped before reading: an edit made while loading differs from this stamp and is read at the next check
        stamp = self._stat()
        self._value = self._load(self.path)
        self._stamp = stamp
        self._next_check = self._clock() + self.check_every_s
        return self._value

    @property
    def value(self) -> T:
        if self._value is None:
            raise RuntimeError(f"{type(self).__name__}.load() has not been called")
        return self._value

    def current(self) -> T:
        """The value in force, reloaded first when the files changed since the last check."""
        value = self.value
        now = self._clock()
        if now < self._next_check:
            return value
        self._next_check = now + self.check_every_s
        stamp = self._stat()
        if stamp == self._stamp:
            return value
        # remembered even when the reload fails, so a broken config is logged once, not at every check
        self._stamp = stamp
        extra = {"path": str(self.path), self._version_field: self._version(value)}
        if stamp is None:
            self._log.error("%s %s is gone; keeping the last good %s", self._what, self.path, self._what, extra=extra)
            return value
        try:
            loaded = self._load(self.path)
        except self._invalid as error:
            self._log.error(
                "%s change rejected: %s is invalid; keeping the last good %s",
                self._what,
                self.path,
                self._what,
                extra={**extra, "problems": problems_of(error)},
            )
            return value
        self._log.info(
            "%s reloaded from %s",
            self._what,
            self.path,
            extra={
                "path": str(self.path),
                self._version_field: self._version(loaded),
                "previous_version": self._version(value),
            },
        )
        self._value = loaded
        return loaded

    def _stat(self) -> Stamp | None:
        """The stamp of the watched files, or None when the path itself is gone."""
        try:
            if not self.path.exists():
                return None
            names = list(self._files(self.path))
        except OSError:  # the directory went away while being listed
            return None
        stamps: list[FileStamp] = []
        for file in names:
            try:
                status = file.stat()
            except OSError:  # removed between listing and stat: leaving it out is what the next check would see
                continue
            stamps.append((file.name, status.st_ino, status.st_size, status.st_mtime_ns))
        return tuple(stamps)
