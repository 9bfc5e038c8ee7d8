"""Schedules and times in words (local labels and clock-change notes are :mod:`scheduler.rules.timing`'s,
shared with ``scheduler:validate``)."""

from __future__ import annotations

from scheduler.rules.schedules import MACROS

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def schedule_in_words(kind: str, schedule: str) -> str:
    """A short English reading of common schedules; the raw text for anything else (shown beside it)."""
    text = schedule.strip()
    if kind == "manual":
        return "only when run by hand"
    if kind == "once":
        return f"once, at {text}"
    if kind == "interval":
        return f"every {text.removeprefix('every').strip()}"
    fields = MACROS.get(text.lower(), text).split()
    if len(fields) != 5:
        return text
    minute, hour, day, month, weekday = fields
    if (day, month) != ("*", "*"):
        return text
    if (minute, hour, weekday) == ("*", "*", "*"):
        return "every minute"
    if minute.startswith("*/") and (hour, weekday) == ("*", "*"):
        return f"every {minute[2:]} minutes"
    if minute.isdigit() and hour == "*" and weekday == "*":
        return f"every hour at minute {int(minute)}"
    if minute.isdigit() and hour.isdigit():
        at = f"{int(hour):02d}:{int(minute):02d}"
        if weekday == "*":
            return f"every day at {at}"
        if weekday.isdigit() and int(weekday) <= 7:
            return f"every {_DAYS[int(weekday) % 7]} at {at}"
        if weekday == "1-5":
            return f"weekdays at {at}"
    return text


def short_time(iso: str | None) -> str:
    """An ISO-8601 UTC string (``2026-12-07T05:16:55.101769Z``) as people read it: ``2026-12-07 05:16:55 UTC``
    (the ``datetime`` attribute keeps the exact value)."""
    if not iso:
        return ""
    return iso.replace("T", " ").split(".")[0].removesuffix("Z") + " UTC"
