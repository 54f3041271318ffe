"""Reloading the route table without a restart: a changed file is picked up at the next check, an invalid one is
logged and the last good table stays in force."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.settings import get_settings
from services.shared.route_table import RouteTableError, RouteTableWatcher

CHECK_EVERY_S = 2.0


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write(path: Path, data: dict[str, Any] | str, mtime_s: int) -> None:
    """Writes the file and stamps it with a distinct mtime, as an edit seconds later would."""
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    os.utime(path, ns=(mtime_s * 10**9, mtime_s * 10**9))


@pytest.fixture
def data() -> dict[str, Any]:
    loaded = yaml.safe_load(get_settings().route_table.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def test_a_changed_file_is_picked_up_at_the_next_check(tmp_path: Path, data: dict[str, Any], clock: FakeClock) -> None:
    path = tmp_path / "route_table.yaml"
    write(path, data, 100)
    watcher = RouteTableWatcher(path, check_every_s=CHECK_EVERY_S, clock=clock)
    first = watcher.load()
    data["version"] = "next"
    data["low_confidence"]["threshold"] = 0.7
    write(path, data, 200)
    assert watcher.current() is first, "not looked at again before check_every_s"
    clock.now += CHECK_EVERY_S
    reloaded = watcher.current()
    assert reloaded.version.startswith("next+")
    assert reloaded.spec.low_confidence.threshold == 0.7
    assert watcher.table is reloaded


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, data: dict[str, Any], clock: FakeClock) -> None:
    path = tmp_path / "route_table.yaml"
    write(path, data, 100)
    watcher = RouteTableWatcher(path, check_every_s=CHECK_EVERY_S, clock=clock)
    first = watcher.load()
    clock.now += 10 * CHECK_EVERY_S
    assert watcher.current() is first


def test_an_invalid_change_is_logged_once_and_the_last_good_table_kept(
    tmp_path: Path, data: dict[str, Any], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "route_table.yaml"
    write(path, data, 100)
    watcher = RouteTableWatcher(path, check_every_s=CHECK_EVERY_S, clock=clock)
    good = watcher.load()
    data["routes"]["store_hours"]["provider"] = "default"
    write(path, data, 200)
    with caplog.at_level(logging.ERROR, logger="switchyard.router"):
        clock.now += CHECK_EVERY_S
        assert watcher.current() is good
        clock.now += CHECK_EVERY_S
        assert watcher.current() is good
    rejected = [record for record in caplog.records if "rejected" in record.getMessage()]
    assert len(rejected) == 1
    problems: list[str] = rejected[0].__dict__["problems"]
    assert any("routes.store_hours.provider" in line for line in problems)
    assert rejected[0].__dict__["route_table_version"] == good.version

    data["routes"]["store_hours"]["provider"] = None
    data["version"] = "fixed"
    write(path, data, 300)
    clock.now += CHECK_EVERY_S
    assert watcher.current().version.startswith("fixed+")


def test_a_deleted_file_keeps_the_last_good_table(tmp_path: Path, data: dict[str, Any], clock: FakeClock) -> None:
    path = tmp_path / "route_table.yaml"
    write(path, data, 100)
    watcher = RouteTableWatcher(path, check_every_s=CHECK_EVERY_S, clock=clock)
    good = watcher.load()
    path.unlink()
    clock.now += CHECK_EVERY_S
    assert watcher.current() is good


def test_an_invalid_file_at_start_up_is_an_error(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "route_table.yaml"
    write(path, "version: '1'\n", 100)
    with pytest.raises(RouteTableError, match=r"route_table.yaml: default_route: required key is missing"):
        RouteTableWatcher(path, clock=clock).load()
