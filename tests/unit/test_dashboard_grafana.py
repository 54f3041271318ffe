"""The Grafana dashboard reads only metrics the stages export, and the built-in dashboard's work split is in the
reference form."""

from __future__ import annotations

import json
import re

from services.dashboard.queries import REFERENCE_SPLIT, work_split
from services.runtime.observability import StageMetrics
from services.settings import REPO_ROOT

GRAFANA = REPO_ROOT / "infra" / "grafana" / "switchyard-stages.json"


def exported_series() -> set[str]:
    metrics = StageMetrics("router")
    metrics.dead_letter("X")
    metrics.error("transient")
    metrics.consumer_lag.labels("router", "requests", "0").set(1)
    text = metrics.exposition().decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")}


def test_every_grafana_query_reads_a_series_the_stages_export() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"switchyard_[a-z_]+", expr)}
    assert used and used <= exported_series() | {"up"}, used - exported_series()
    assert {"switchyard_consumer_lag", "switchyard_dead_lettered_total", "switchyard_processing_seconds_bucket"} <= used


def test_the_grafana_dashboard_has_unique_panel_ids_and_a_prometheus_input() -> None:
    dashboard = json.loads(GRAFANA.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"


def test_the_work_split_is_in_the_reference_categories_and_sums_to_one_hundred() -> None:
    rows = [{"category": "routing", "work_ms": 30.0}, {"category": "audit", "work_ms": 10.0},
            {"category": "data_prep", "work_ms": 60.0}, {"category": "other", "work_ms": 999.0}]  # fmt: skip
    split = {row["category"]: row for row in work_split(rows)}
    assert list(split) == list(REFERENCE_SPLIT)
    assert (split["routing"]["percent"], split["audit"]["percent"], split["data_prep"]["percent"]) == (30.0, 10.0, 60.0)
    assert split["policy"]["percent"] == 0.0 and split["routing"]["reference_percent"] == 29.0
    assert sum(r["reference_percent"] for r in split.values()) == 100.0
