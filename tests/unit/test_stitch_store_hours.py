"""Store hours in the store's own time zone, with today's exceptions, tomorrow's hours and those coming up."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.stitcher.store_hours import describe_hours, regular_week
from services.wire.models import HoursException, OpeningHours, Store


def store(timezone: str, *, exceptions: list[HoursException] | None = None, late: bool = False) -> Store:
    hours = [OpeningHours(weekday=d, opens="09:00", closes="21:00") for d in range(6)]
    if late:
        hours[4] = OpeningHours(weekday=4, opens="18:00", closes="02:00")
    return Store(
        store_id="0001",
        name="Harbor Mall #0001",
        timezone=timezone,
        region="us-east",
        opening_hours=hours,
        exceptions=exceptions
        if exceptions is not None
        else [
            HoursException(date="2026-12-24", opens="09:00", closes="16:00", note="closes early on 24 December"),
            HoursException(date="2026-12-25", opens=None, closes=None, note="closed on Christmas Day"),
        ],
        updated_at=0,
    )


@pytest.mark.parametrize(
    ("timezone", "utc_hour", "local"),
    [
        ("America/New_York", 14, "09:00"),  # UTC-5 in winter
        ("America/Los_Angeles", 17, "09:00"),  # UTC-8
        ("Europe/Berlin", 8, "09:00"),  # UTC+1
        ("Asia/Kolkata", 3, "08:30"),  # UTC+5:30
    ],
)
def test_the_clock_is_the_stores_own(timezone: str, utc_hour: int, local: str) -> None:
    text = describe_hours(store(timezone), datetime(2026, 11, 25, utc_hour, 0, tzinfo=UTC))
    assert f"Local time now {local} on Wednesday 25 November ({timezone})" in text


def test_the_same_instant_is_open_in_one_time_zone_and_closed_in_another() -> None:
    instant = datetime(2026, 11, 25, 23, 30, tzinfo=UTC)  # 18:30 in New York, 00:30 Thursday in Berlin
    assert "is open now, until 21:00 today" in describe_hours(store("America/New_York"), instant)
    assert "is closed now: opens at 09:00 today" in describe_hours(store("Europe/Berlin"), instant)


def test_todays_early_closing_is_told_with_its_reason() -> None:
    text = describe_hours(store("America/New_York"), datetime(2026, 12, 24, 15, 0, tzinfo=UTC))  # 10:00 local
    assert "is open now, until 16:00 today (closes early on 24 December)" in text
    assert "Tomorrow (Friday 25 December): closed on Christmas Day" in text


def test_a_holiday_closes_the_store_all_day() -> None:
    text = describe_hours(store("Europe/Berlin"), datetime(2026, 12, 25, 11, 0, tzinfo=UTC))
    assert "is closed today (closed on Christmas Day)" in text


def test_the_exception_follows_the_local_date_not_the_utc_date() -> None:
    # 03:00 UTC on 24 December is 19:00 on 23 December in Los Angeles: regular hours, early closing tomorrow
    text = describe_hours(store("America/Los_Angeles"), datetime(2026, 12, 24, 3, 0, tzinfo=UTC))
    assert "is open now, until 21:00 today." in text
    assert "Tomorrow (Thursday 24 December): 09:00-16:00 (closes early on 24 December)" in text


def test_exceptions_in_the_next_two_weeks_are_announced() -> None:
    text = describe_hours(store("Europe/London"), datetime(2026, 12, 15, 12, 0, tzinfo=UTC))
    assert (
        "Coming up: Thursday 24 December 09:00-16:00 (closes early on 24 December); "
        "Friday 25 December closed on Christmas Day" in text
    )
    later = describe_hours(store("Europe/London"), datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
    assert "Coming up" not in later


def test_a_weekday_without_hours_is_closed_all_day() -> None:
    text = describe_hours(store("Europe/Berlin", exceptions=[]), datetime(2026, 11, 29, 12, 0, tzinfo=UTC))  # Sunday
    assert "is closed today" in text


def test_hours_past_midnight_keep_the_store_open_after_midnight() -> None:
    # Friday 18:00-02:00 in New York; 01:30 Saturday local is 06:30 UTC
    text = describe_hours(store("America/New_York", late=True), datetime(2026, 11, 28, 6, 30, tzinfo=UTC))
    assert "is open now, until 02:00 (last night's hours)" in text
    friday_night = describe_hours(store("America/New_York", late=True), datetime(2026, 11, 28, 4, 0, tzinfo=UTC))
    assert "is open now, until 02:00 today" in friday_night


def test_the_regular_week_joins_days_with_the_same_hours() -> None:
    assert regular_week(store("Europe/Berlin")) == "Mon-Sat 09:00-21:00"
    assert regular_week(store("Europe/Berlin", late=True)) == "Mon-Thu 09:00-21:00, Fri 18:00-02:00, Sat 09:00-21:00"


def test_an_unknown_time_zone_raises_so_the_record_is_dead_lettered() -> None:
    with pytest.raises(Exception, match="Mars"):
        describe_hours(store("Mars/Olympus_Mons"), datetime(2026, 11, 25, tzinfo=UTC))
