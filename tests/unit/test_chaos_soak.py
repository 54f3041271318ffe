"""The pure parts of `make chaos` and `make soak`: the hostile records are what they claim to be, and the soak's
verdict tells a flat process from a growing one."""

from __future__ import annotations

import os
from typing import Any

import pytest

from services.settings import get_settings
from services.tools.chaos import hostile_requests, table
from services.tools.soak import Limits, open_fds, rss_mib, verdicts
from services.wire.codec import AvroCodec
from services.wire.schema_registry import SchemaRegistry


@pytest.fixture(scope="module")
def codec() -> AvroCodec:
    return AvroCodec(SchemaRegistry.load(get_settings().schemas_dir))


def test_hostile_records_are_random_bytes_or_valid_avro_with_extreme_values(codec: AvroCodec) -> None:
    records = list(hostile_requests(400))
    raw = [r for r in records if isinstance(r, bytes)]
    typed = [r for r in records if isinstance(r, dict)]
    assert len(raw) == 100 and len(typed) == 300
    for record in typed:
        assert codec.decode(codec.encode("Request", record))[1]["text"] == record["text"]
    texts = {r["text"] for r in typed}
    assert "" in texts and max(len(t) for t in texts) == 512 * 1024
    assert any("\u202e" in t for t in texts) and any("\x00" in t for t in texts)
    assert {r["created_at"] for r in typed} >= {0, 253402300799999}
    assert max(len(r["attributes"]) for r in typed) == 500
    assert len({r["request_id"] for r in typed}) == len(typed)


def test_hostile_records_are_the_same_for_the_same_seed() -> None:
    assert list(hostile_requests(50, seed=3)) == list(hostile_requests(50, seed=3))


def samples(*points: tuple[float, int]) -> list[dict[str, Any]]:
    return [
        {"minute": i, "processes": {"router/0": {"rss_mib": rss, "fds": fds}}} for i, (rss, fds) in enumerate(points)
    ]


def test_a_process_that_holds_its_memory_and_files_is_flat() -> None:
    (row,) = verdicts(samples((300.0, 40), (340.0, 44), (310.0, 41)), Limits())
    assert row["flat"] is True and row["rss_mib_peak"] == 340.0


def test_a_process_whose_memory_grows_past_the_limit_is_not_flat() -> None:
    (row,) = verdicts(samples((300.0, 40), (330.0, 40), (390.0, 40)), Limits(rss_growth=0.15, rss_slack_mib=32))
    assert row["flat"] is False


def test_a_process_that_leaks_file_descriptors_is_not_flat() -> None:
    (row,) = verdicts(samples((300.0, 40), (300.0, 80)), Limits(fd_growth=16))
    assert row["flat"] is False


def test_a_process_sampled_once_has_no_verdict() -> None:
    (row,) = verdicts(samples((300.0, 40)), Limits())
    assert row["flat"] is None


def test_this_process_can_be_sampled() -> None:
    rss, fds = rss_mib(os.getpid()), open_fds(os.getpid())
    assert rss is not None and rss > 1 and fds is not None and fds >= 3
    assert rss_mib(2**22 + 7) is None and open_fds(2**22 + 7) is None


def test_the_chaos_table_has_a_row_per_fault_and_leaves_missing_figures_blank() -> None:
    rows = [{"fault": "broker", "lasted_s": 5.0, "sent": 10, "answered": 10, "lost": 0, "recovery_s": None}]
    lines = table(rows).splitlines()
    assert lines[0].startswith("| fault | lasted_s |") and len(lines) == 3
    assert lines[2].startswith("| broker | 5.0 | 10 | 10 |") and "|  |" in lines[2]
