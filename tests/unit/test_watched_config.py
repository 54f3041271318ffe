"""WatchedConfig, the hot reload behind the route table and the policy: a change is picked up at the next check, an
invalid one keeps the last good value, and a directory notices a file added to it. A fake clock, no sleeps."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from services.runtime.watched import WatchedConfig

CHECK_EVERY_S = 2.0
log = logging.getLogger("test.watched")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class BadConfig(ValueError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def write(path: Path, text: str, mtime_s: int) -> Path:
    """Writes the file and stamps it with a distinct mtime, as an edit seconds later would."""
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))
    return path


def read_numbers(path: Path) -> tuple[int, ...]:
    """A file holds one number; a directory holds the numbers of its files, in name order."""
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    try:
        return tuple(int(file.read_text(encoding="utf-8")) for file in files)
    except ValueError as error:
        raise BadConfig([f"{path}: not a number: {error}"]) from None


def watch(path: Path, clock: FakeClock) -> WatchedConfig[tuple[int, ...]]:
    return WatchedConfig(
        path,
        read_numbers,
        invalid=BadConfig,
        what="numbers",
        version=lambda numbers: ",".join(map(str, numbers)),
        version_field="numbers_version",
        logger=log,
        check_every_s=CHECK_EVERY_S,
        clock=clock,
    )


def test_a_changed_file_is_reloaded_at_the_next_check(tmp_path: Path) -> None:
    clock = FakeClock()
    path = write(tmp_path / "n.txt", "1", 100)
    watched = watch(path, clock)
    assert watched.load() == (1,)
    write(path, "2", 200)
    assert watched.current() == (1,), "not looked at again before check_every_s"
    clock.now += CHECK_EVERY_S
    assert watched.current() == (2,)
    assert watched.value == (2,)


def test_an_invalid_change_is_logged_once_and_the_last_good_value_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    path = write(tmp_path / "n.txt", "1", 100)
    watched = watch(path, clock)
    good = watched.load()
    write(path, "one", 200)
    with caplog.at_level(logging.ERROR, logger=log.name):
        for _ in range(3):
            clock.now += CHECK_EVERY_S
            assert watched.current() is good
    rejected = [record for record in caplog.records if "rejected" in record.getMessage()]
    assert len(rejected) == 1
    assert str(path) in rejected[0].getMessage() and "last good numbers" in rejected[0].getMessage()
    assert rejected[0].__dict__["numbers_version"] == "1"
    assert any("not a number" in line for line in rejected[0].__dict__["problems"])

    write(path, "3", 300)
    clock.now += CHECK_EVERY_S
    assert watched.current() == (3,)


def test_a_deleted_file_is_logged_once_and_the_last_good_value_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    path = write(tmp_path / "n.txt", "1", 100)
    watched = watch(path, clock)
    good = watched.load()
    path.unlink()
    with caplog.at_level(logging.ERROR, logger=log.name):
        for _ in range(3):
            clock.now += CHECK_EVERY_S
            assert watched.current() is good
    assert len([record for record in caplog.records if "is gone" in record.getMessage()]) == 1


def test_a_directory_notices_an_added_file(tmp_path: Path) -> None:
    clock = FakeClock()
    write(tmp_path / "a.txt", "1", 100)
    watched = watch(tmp_path, clock)
    assert watched.load() == (1,)
    write(tmp_path / "b.txt", "2", 100)
    clock.now += CHECK_EVERY_S
    assert watched.current() == (1, 2)


def test_an_invalid_config_at_start_up_raises_and_value_needs_a_load(tmp_path: Path) -> None:
    watched = watch(write(tmp_path / "n.txt", "x", 100), FakeClock())
    with pytest.raises(RuntimeError, match=r"load\(\) has not been called"):
        _ = watched.value
    with pytest.raises(BadConfig, match="not a number"):
        watched.load()
