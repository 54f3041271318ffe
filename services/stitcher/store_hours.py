"""Store hours as a customer hears them: open or closed now in the store's own time zone, today's hours with
today's exception (holiday, event) applied, tomorrow's, and exceptions coming up in the next two weeks.

Times are local wall-clock HH:MM; a closing time at or before the opening time runs past midnight
(22:00-02:00), so at 01:00 the store is still open on the previous day's hours.
"""

from __future__ import annotations

import calendar
import contextlib
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.wire.models import Store

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
UPCOMING_DAYS = 14


@dataclass(frozen=True)
class DayHours:
    """A store's hours on one local date; opens/closes None when closed all day."""

    day: date
    opens: str | None
    closes: str | None
    note: str

    @property
    def open(self) -> bool:
        return self.opens is not None and self.closes is not None

    @property
    def overnight(self) -> bool:
        return self.open and self.closes is not None and self.opens is not None and self.closes <= self.opens


def hours_on_date(store: Store, day: date) -> DayHours:
    """The exception for that date if there is one, else the regular hours of its weekday."""
    iso = day.isoformat()
    for exception in store.exceptions:
        if exception.date == iso:
            return DayHours(day, exception.opens, exception.closes, exception.note)
    for entry in store.opening_hours:
        if entry.weekday == day.weekday():
            return DayHours(day, entry.opens, entry.closes, "")
    return DayHours(day, None, None, f"closed on {WEEKDAYS[day.weekday()]}s")


def hours_on(store: Store, local: datetime) -> tuple[str | None, str | None, str]:
    """(opens, closes, note) for the store's local date; (None, None, note) when closed."""
    hours = hours_on_date(store, local.date())
    return hours.opens, hours.closes, hours.note


def local_now(store: Store, now_utc: datetime) -> datetime:
    """The store's wall clock; an unknown time zone raises ZoneInfoNotFoundError (the record is dead-lettered)."""
    return now_utc.astimezone(ZoneInfo(store.timezone))


def describe_hours(store: Store, now_utc: datetime) -> str:
    """One paragraph: open now or not, today's and tomorrow's hours, upcoming exceptions, the regular week."""
    local = local_now(store, now_utc)
    clock = local.strftime("%H:%M")
    today = hours_on_date(store, local.date())
    yesterday = hours_on_date(store, local.date() - timedelta(days=1))
    tomorrow = hours_on_date(store, local.date() + timedelta(days=1))
    parts = [f"{store.name} {_today(today, yesterday, clock)}", f"Tomorrow ({_label(tomorrow.day)}): {_day(tomorrow)}"]
    upcoming = _upcoming(store, local.date())
    if upcoming:
        parts.append("Coming up: " + "; ".join(upcoming))
    parts.append(f"Regular hours: {regular_week(store)}")
    parts.append(f"Local time now {clock} on {_label(local.date())} ({store.timezone})")
    return ". ".join(parts) + "."


def regular_week(store: Store) -> str:
    """The regular week compactly, consecutive days with the same hours joined: "Mon-Fri 09:00-21:00, Sat ..."."""
    runs: list[tuple[int, int, str]] = []
    for entry in sorted(store.opening_hours, key=lambda h: h.weekday):
        span = f"{entry.opens}-{entry.closes}"
        if runs and runs[-1][2] == span and runs[-1][1] == entry.weekday - 1:
            runs[-1] = (runs[-1][0], entry.weekday, span)
        else:
            runs.append((entry.weekday, entry.weekday, span))
    days = [WEEKDAYS[first][:3] + (f"-{WEEKDAYS[last][:3]}" if last > first else "") for first, last, _ in runs]
    return ", ".join(f"{day} {span}" for day, (_, _, span) in zip(days, runs, strict=True)) or "none"


def _today(today: DayHours, yesterday: DayHours, clock: str) -> str:
    note = f" ({today.note})" if today.note else ""
    if yesterday.overnight and yesterday.closes is not None and clock < yesterday.closes:
        return f"is open now, until {yesterday.closes} (last night's hours); today {_day(today)}"
    if not today.open or today.opens is None or today.closes is None:
        return f"is closed today{note}"
    if clock < today.opens:
        return f"is closed now: opens at {today.opens} today and closes at {today.closes}{note}"
    if today.overnight or clock < today.closes:
        return f"is open now, until {today.closes} today{note}"
    return f"is closed now: closed at {today.closes} today{note}"


def _day(hours: DayHours) -> str:
    if not hours.open:
        return hours.note or "closed"
    return f"{hours.opens}-{hours.closes} ({hours.note})" if hours.note else f"{hours.opens}-{hours.closes}"


def _upcoming(store: Store, today: date) -> list[str]:
    """Exceptions after tomorrow and within UPCOMING_DAYS, soonest first."""
    first, last = today + timedelta(days=2), today + timedelta(days=UPCOMING_DAYS)
    found = []
    for exception in sorted(store.exceptions, key=lambda e: e.date):
        try:
            day = date.fromisoformat(exception.date)
        except ValueError:
            continue
        if first <= day <= last:
            hours = DayHours(day, exception.opens, exception.closes, exception.note)
            found.append(f"{_label(day)} {_day(hours)}")
    return found


def _label(day: date) -> str:
    return f"{WEEKDAYS[day.weekday()]} {day.day} {day.strftime('%B')}"


def describe_day(store: Store, now_utc: datetime, day: date) -> str:
    """The hours of one local date a request asks about: today's with whether the store is open now."""
    local = local_now(store, now_utc)
    if day == local.date():
        yesterday = hours_on_date(store, day - timedelta(days=1))
        return f"{store.name} {_today(hours_on_date(store, day), yesterday, local.strftime('%H:%M'))}."
    return f"{store.name} on {_label(day)}: {_day(hours_on_date(store, day))}."


_HOLIDAYS: dict[str, tuple[int, int]] = {
    "christmas eve": (12, 24),
    "christmas day": (12, 25),
    "christmas": (12, 25),
    "boxing day": (12, 26),
    "new year's eve": (12, 31),
    "new years eve": (12, 31),
    "new year's day": (1, 1),
    "new years day": (1, 1),
}
_MONTH_NUMBERS = {m.lower(): n for n, m in enumerate(calendar.month_name) if m} | {
    m.lower(): n for n, m in enumerate(calendar.month_abbr) if m
}
_MONTHS = "|".join(sorted(_MONTH_NUMBERS, key=len, reverse=True))
_DAY_MONTH = re.compile(
    rf"\b([0-3]?\d)(?:st|nd|rd|th)?(?: of)? ({_MONTHS})\b|\b({_MONTHS}) ([0-3]?\d)(?:st|nd|rd|th)?\b", re.I
)
_WEEKDAY = re.compile(r"\b(monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?\b", re.I)
_RELATIVE = re.compile(r"\b(today|tonight|now|tomorrow)\b", re.I)
_HOLIDAY = re.compile(r"\b(" + "|".join(re.escape(h) for h in sorted(_HOLIDAYS, key=len, reverse=True)) + r")\b", re.I)


def asked_day(text: str, today: date) -> date | None:
    """The local date a question asks about ("on Sunday", "christmas eve", "24 December", "tonight"), the next
    one on or after today; None when it names none."""
    holiday = _HOLIDAY.search(text)
    if holiday:
        return _next_date(today, *_HOLIDAYS[holiday.group(1).lower()])
    named = _DAY_MONTH.search(text)
    if named:
        day, month = (named.group(1), named.group(2)) if named.group(1) else (named.group(4), named.group(3))
        with contextlib.suppress(ValueError):
            return _next_date(today, _MONTH_NUMBERS[month.lower()], int(day))
    weekday = _WEEKDAY.search(text)
    if weekday:
        wanted = WEEKDAYS.index(weekday.group(1).capitalize())
        return today + timedelta(days=(wanted - today.weekday()) % 7)
    relative = _RELATIVE.search(text)
    if relative:
        return today + timedelta(days=1 if relative.group(1).lower() == "tomorrow" else 0)
    return None


def _next_date(today: date, month: int, day: int) -> date:
    this_year = date(today.year, month, day)
    return this_year if this_year >= today else date(today.year + 1, month, day)
