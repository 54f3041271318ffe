"""The dashboard's questions to ClickHouse, one SQL statement per panel, all over a window [since, until), read
from the per-minute rollups (infra/clickhouse/012, 013) where one exists. Shared by the web app and by
`switchyard work-split`, which prints the orchestration-work split next to the reference deployment's."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import aiohttp

from services.settings import Settings, get_settings

# The reference deployment's measured split (1,600 stores, 50,000 requests a day), in percent.
REFERENCE_SPLIT: Final = {
    "routing": 29.0,
    "governance": 22.0,
    "context_stitching": 19.0,
    "monitoring": 14.0,
    "policy": 8.0,
    "data_prep": 5.0,
    "audit": 3.0,
}
WINDOW: Final = "minute >= toStartOfMinute({since:DateTime64(3, 'UTC')}) AND minute < {until:DateTime64(3, 'UTC')}"
QUANTILES: Final = ("p50", "p90", "p95", "p99")

PANELS: Final[Mapping[str, str]] = {
    "throughput": f"""
        SELECT toUnixTimestamp(minute) AS t, sum(answers) AS answers
        FROM answer_minute WHERE {WINDOW} GROUP BY minute ORDER BY minute""",
    "end_to_end": f"""
        SELECT sum(answers) AS answers, quantilesMerge(0.5, 0.9, 0.95, 0.99)(end_to_end_ms_q) AS q
        FROM answer_minute WHERE {WINDOW}""",
    "end_to_end_series": f"""
        SELECT toUnixTimestamp(minute) AS t, quantilesMerge(0.5, 0.9, 0.95, 0.99)(end_to_end_ms_q) AS q
        FROM answer_minute WHERE {WINDOW} GROUP BY minute ORDER BY minute""",
    "stages": f"""
        SELECT stage, sum(events) AS events, sum(failed) AS failed,
               quantilesMerge(0.5, 0.9, 0.95, 0.99)(duration_ms_q) AS q
        FROM stage_minute WHERE {WINDOW} GROUP BY stage
        ORDER BY indexOf(['router', 'stitcher', 'governor', 'answerer', 'auditor'], stage)""",
    "routes": f"""
        SELECT route, sum(answers) AS answers, sum(cost_usd) AS cost_usd, sum(tokens_in) AS tokens_in,
               sum(tokens_out) AS tokens_out, quantilesMerge(0.5, 0.9, 0.95, 0.99)(end_to_end_ms_q) AS q
        FROM answer_minute WHERE {WINDOW} GROUP BY route ORDER BY answers DESC, route""",
    "providers": f"""
        SELECT provider, sum(answers) AS answers, sum(failovers) AS failovers, sum(cost_usd) AS cost_usd,
               sum(tokens_in) AS tokens_in, sum(tokens_out) AS tokens_out
        FROM answer_minute WHERE {WINDOW} GROUP BY provider ORDER BY answers DESC, provider""",
    "model_calls": f"""
        SELECT provider, model, sumIf(calls, outcome = 'OK') AS ok, sumIf(calls, outcome = 'TIMEOUT') AS timeouts,
               sumIf(calls, outcome NOT IN ('OK', 'TIMEOUT')) AS errors, sum(calls) AS total_calls,
               quantilesMergeIf(0.5, 0.9, 0.95, 0.99)(latency_ms_q, outcome = 'OK') AS q
        FROM model_call_minute WHERE {WINDOW} GROUP BY provider, model ORDER BY total_calls DESC""",
    "verdicts": f"""
        SELECT verdict, sum(answers) AS answers FROM answer_minute WHERE {WINDOW}
        GROUP BY verdict ORDER BY answers DESC, verdict""",
    "rules": f"""
        SELECT rule_id, rule_version, stage, action, sum(matches) AS matches FROM rule_minute WHERE {WINDOW}
        GROUP BY rule_id, rule_version, stage, action ORDER BY matches DESC, rule_id LIMIT 12""",
    "dead_letters": f"""
        SELECT stage, error_type, sum(dead_letters) AS dead_letters FROM dead_letter_minute WHERE {WINDOW}
        GROUP BY stage, error_type ORDER BY dead_letters DESC, stage""",
    "lag": """
        SELECT stage, argMax(total, sampled_at) AS lag, max(sampled_at) AS latest_sample
        FROM (SELECT stage, sampled_at, sum(lag) AS total FROM consumer_lag
              WHERE sampled_at >= {since:DateTime64(3, 'UTC')} AND sampled_at < {until:DateTime64(3, 'UTC')}
              GROUP BY stage, sampled_at)
        GROUP BY stage
        ORDER BY indexOf(['router', 'stitcher', 'governor', 'answerer', 'auditor', 'telemetry'], stage)""",
    "work": f"""
        SELECT category, greatest(sum(work_ms), 0) AS work_ms FROM orchestration_work WHERE {WINDOW}
        GROUP BY category""",
    "feedback": f"""
        SELECT kind, sum(events) AS events, sum(rated) AS rated, sum(rating_sum) AS rating_sum,
               sum(low_ratings) AS low_ratings
        FROM feedback_minute WHERE {WINDOW} GROUP BY kind ORDER BY kind""",
}

REQUESTS_SQL: Final = """
    SELECT request_id, store_id, route, provider, verdict, round(end_to_end_ms, 1) AS end_to_end_ms,
           round(cost_usd, 6) AS cost, toString(audited_at) AS audited
    FROM answers FINAL
    WHERE audited_at >= {since:DateTime64(3, 'UTC')} AND audited_at < {until:DateTime64(3, 'UTC')}
      AND ({route:String} = '' OR route = {route:String})
      AND ({provider:String} = '' OR provider = {provider:String})
      AND ({verdict:String} = '' OR verdict = {verdict:String})
    ORDER BY end_to_end_ms DESC LIMIT 50"""

AUDIT_SQL: Final = """
    SELECT record FROM audit_records FINAL WHERE request_id = {request_id:String}
    ORDER BY recorded_at DESC LIMIT 1"""


class ClickHouseHTTP:
    """ClickHouse's HTTP interface, asynchronously: SQL with bound parameters in, JSON rows out."""

    def __init__(self, settings: Settings, session: aiohttp.ClientSession) -> None:
        self.url = settings.clickhouse_url.rstrip("/") + "/"
        self.database = settings.clickhouse_database
        self.session = session
        self.auth = aiohttp.BasicAuth(settings.clickhouse_user, settings.clickhouse_password)

    async def rows(self, sql: str, parameters: Mapping[str, Any]) -> list[dict[str, Any]]:
        params = {"database": self.database, "default_format": "JSON", "output_format_json_quote_64bit_integers": "0"}
        params.update({f"param_{name}": _literal(value) for name, value in parameters.items()})
        async with self.session.post(self.url, params=params, data=sql.encode(), auth=self.auth) as response:
            body = await response.text()
            if response.status != 200:
                raise RuntimeError(f"ClickHouse answered {response.status}: {body.strip()[:500]}")
        data: list[dict[str, Any]] = json.loads(body)["data"]
        return data


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    return str(value)


def window(since: datetime | None, until: datetime | None, minutes: int = 15) -> tuple[datetime, datetime]:
    end = until or datetime.now(tz=UTC)
    return since or end - timedelta(minutes=minutes), end


async def summary(client: ClickHouseHTTP, since: datetime, until: datetime) -> dict[str, Any]:
    """Every panel over the window, queried concurrently."""
    names = list(PANELS)
    results = await asyncio.gather(*(client.rows(PANELS[n], {"since": since, "until": until}) for n in names))
    panels = dict(zip(names, results, strict=True))
    seconds = max((until - since).total_seconds(), 1.0)
    answers = int(panels["end_to_end"][0]["answers"]) if panels["end_to_end"] else 0
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "requests_per_s": answers / seconds,
        "split": work_split(panels["work"]),
        **panels,
    }


def work_split(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The measured split in the reference's categories and order, in ms and percent, next to the reference."""
    measured = {row["category"]: float(row["work_ms"]) for row in rows if row["category"] in REFERENCE_SPLIT}
    total = sum(measured.values())
    return [
        {
            "category": category,
            "work_ms": round(measured.get(category, 0.0), 3),
            "percent": round(100 * measured.get(category, 0.0) / total, 1) if total else 0.0,
            "reference_percent": reference,
        }
        for category, reference in REFERENCE_SPLIT.items()
    ]


async def measured_split(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """The split of the orchestration_work view over the minutes from `since` to `until`."""
    async with aiohttp.ClientSession() as session:
        rows = await ClickHouseHTTP(get_settings(), session).rows(PANELS["work"], {"since": since, "until": until})
    return work_split(rows)


async def _print_split(since: datetime, until: datetime, as_json: bool) -> int:
    split = await measured_split(since, until)
    if as_json:
        print(json.dumps(split, indent=2))
        return 0
    print(f"orchestration work {since:%Y-%m-%d %H:%M} to {until:%H:%M} UTC (model time excluded)")
    print(f"{'category':<18} {'work ms':>12} {'measured':>9} {'reference':>10}")
    for row in split:
        measured, reference = f"{row['percent']:.1f}%", f"{row['reference_percent']:.1f}%"
        print(f"{row['category']:<18} {row['work_ms']:>12.1f} {measured:>9} {reference:>10}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="switchyard work-split", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=int, default=60, help="the window: the last N minutes (default 60)")
    parser.add_argument("--since", type=datetime.fromisoformat, help="window start, ISO 8601 UTC")
    parser.add_argument("--until", type=datetime.fromisoformat, help="window end, ISO 8601 UTC (default now)")
    parser.add_argument("--json", action="store_true", help="print the split as JSON")
    args = parser.parse_args(argv)
    since, until = window(_utc(args.since), _utc(args.until), args.minutes)
    return asyncio.run(_print_split(since, until, args.json))


def _utc(value: datetime | None) -> datetime | None:
    return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
