"""The telemetry writer's event-time window: a row is buffered only when its event time (the column its table is
partitioned by month on and expires on) is within the table's TTL and at most `telemetry_max_future_hours` ahead of
the writer's clock. Clients choose some of these times (a request's and a feedback's created_at); far-off ones would
be deleted by the TTL at once, or spread one batch over more months than ClickHouse takes in one INSERT block
(max_partitions_per_insert_block, 100), so such a row is dead-lettered instead."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from services.runtime.faults import RejectedRecord


class EventTime(NamedTuple):
    column: str
    ttl: timedelta


# As in infra/clickhouse/*.sql: PARTITION BY toYYYYMM(column), TTL toDateTime(column) + INTERVAL ttl (a YEAR as
# 365 days). tests/unit/test_telemetry_writer.py checks them against the migrations.
EVENT_TIMES = {
    "stage_events": EventTime("started_at", timedelta(days=90)),
    "answers": EventTime("created_at", timedelta(days=365)),
    "audit_records": EventTime("recorded_at", timedelta(days=7 * 365)),
    "rule_verdicts": EventTime("decided_at", timedelta(days=365)),
    "dead_letters": EventTime("failed_at", timedelta(days=180)),
    "feedback": EventTime("created_at", timedelta(days=365)),
    "model_calls": EventTime("started_at", timedelta(days=90)),
}


class EventTimeOutOfWindow(RejectedRecord):
    """A row's event time is older than its table's TTL or too far ahead; the reason names the column and value."""


@dataclass(frozen=True)
class EventWindow:
    max_future: timedelta

    def check(self, table: str, columns: list[str], row: list[Any], now: datetime) -> None:
        """Raises EventTimeOutOfWindow when the row's event time is outside [now - TTL, now + max_future]."""
        column, ttl = EVENT_TIMES[table]
        value: datetime = row[columns.index(column)]
        if value < now - ttl:
            reason = f"{table}.{column} {value.isoformat()} is older than the table's TTL of {ttl.days} days"
        elif value > now + self.max_future:
            hours = self.max_future.total_seconds() / 3600
            reason = f"{table}.{column} {value.isoformat()} is more than {hours:g} h ahead of the writer's clock"
        else:
            return
        raise EventTimeOutOfWindow(f"{reason} (now {now.isoformat()})", request_id=row[columns.index("request_id")])
