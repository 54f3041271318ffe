"""Store hours as a customer hears them: today's hours in the store's own time zone, with today's exception
(holiday, event) applied, and the next change of state."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from services.runtime.models import Store

WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def hours_on(store: Store, local: datetime) -> tuple[str | None, str | None, str]:
    """(opens, closes, note) for the store's local date; (None, None, note) when closed."""
    date = local.date().isoformat()
    for exception in store.exceptions:
        if exception.date == date:
            return exception.opens, exception.closes, exception.note
    for entry in store.opening_hours:
        if entry.weekday == local.weekday():
            return entry.opens, entry.closes, ""
    return None, None, "closed on " + WEEKDAYS[local.weekday()] + "s"


def describe_hours(store: Store, now_utc: datetime) -> str:
    """One paragraph: open now or not, today's hours, and the rest of the week's regular hours."""
    local = now_utc.astimezone(ZoneInfo(store.timezone))
    opens, closes, note = hours_on(store, local)
    clock = local.strftime("%H:%M")
    if opens is None or closes is None:
        today = f"{store.name} is closed today ({WEEKDAYS[local.weekday()]} {local.date().isoformat()})"
    elif opens <= clock < closes:
        today = f"{store.name} is open now, until {closes} today"
    elif clock < opens:
        today = f"{store.name} opens at {opens} today and closes at {closes}"
    else:
        today = f"{store.name} closed at {closes} today"
    if note:
        today += f" ({note})"
    tomorrow = local + timedelta(days=1)
    t_opens, t_closes, t_note = hours_on(store, tomorrow)
    later = f"Tomorrow: {t_opens}-{t_closes}" if t_opens and t_closes else "Tomorrow: closed"
    if t_note:
        later += f" ({t_note})"
    week = ", ".join(
        f"{WEEKDAYS[h.weekday][:3]} {h.opens}-{h.closes}" for h in sorted(store.opening_hours, key=lambda h: h.weekday)
    )
    return f"{today}. {later}. Regular hours ({store.timezone}): {week}. Local time now {clock}."
