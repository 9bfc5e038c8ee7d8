"""Exclusion calendars: named sets of days (dates, date ranges, weekdays) and the ICS files they come from.

Pure: no I/O and no clock. A calendar holds *local days*: whether a slot falls on one is judged on the slot's
wall date in the task's time zone (:func:`local_day`), so a holiday in Pacific/Kiritimati (UTC+14) covers the
14 hours before midnight UTC as well. Bad input raises :class:`InvalidField` naming the calendar field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from scheduler.errors import InvalidField

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_WEEKDAY_WORDS = {word: index for index, full in enumerate(_FULL_DAYS) for word in (full[:3], full)}
MAX_ENTRIES = 10_000
MAX_RANGE_DAYS = 3_660
_CALENDAR_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ICS_DATE = re.compile(r"([0-9]{8})(?:T[0-9]{6}Z?)?")


def validate_calendar_name(value: object) -> str:
    """A calendar name: 1-100 characters of letters, digits, ``_``, ``.`` and ``-``, starting with a letter
    or digit (so it reads the same in a shell, in JSON and in an error message)."""
    if not isinstance(value, str) or not _CALENDAR_NAME.fullmatch(value.strip()):
        shown = repr(value)[:60]
        raise InvalidField(
            "calendar", f"{shown} is not a calendar name (letters, digits, '_', '.', '-'; at most 100)"
        )
    return value.strip()


def _parse_date(text: str) -> date:
    if not _DATE.fullmatch(text):
        raise InvalidField("calendar", f"{text!r} is not a date (YYYY-MM-DD), a range A..B or a weekday")
    try:
        return date.fromisoformat(text)
    except ValueError as error:
        raise InvalidField("calendar", f"{text!r} is not a date ({error})") from None


@dataclass(frozen=True, slots=True)
class CalendarDays:
    """The days of one calendar: single dates, inclusive ranges, weekdays (0 = Monday)."""

    dates: frozenset[date] = frozenset()
    ranges: tuple[tuple[date, date], ...] = ()
    weekdays: frozenset[int] = frozenset()

    def contains(self, day: date) -> bool:
        """True when ``day`` is one of the calendar's days."""
        if day in self.dates or day.weekday() in self.weekdays:
            return True
        return any(first <= day <= last for first, last in self.ranges)

    def merged(self, other: CalendarDays) -> CalendarDays:
        """Both calendars' days."""
        ranges = tuple(sorted(set(self.ranges) | set(other.ranges)))
        return CalendarDays(self.dates | other.dates, ranges, self.weekdays | other.weekdays)

    @property
    def empty(self) -> bool:
        return not (self.dates or self.ranges or self.weekdays)

    def to_json(self) -> dict[str, Any]:
        """The stored form: ``{"dates": [...], "ranges": [[first, last], ...], "weekdays": [...]}``."""
        return {
            "dates": [d.isoformat() for d in sorted(self.dates)],
            "ranges": [[a.isoformat(), b.isoformat()] for a, b in self.ranges],
            "weekdays": [WEEKDAYS[w] for w in sorted(self.weekdays)],
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> CalendarDays:
        """The inverse of :meth:`to_json` (stored values were validated when written)."""
        return cls(
            frozenset(date.fromisoformat(d) for d in value.get("dates", ())),
            tuple((date.fromisoformat(a), date.fromisoformat(b)) for a, b in value.get("ranges", ())),
            frozenset(WEEKDAYS.index(w) for w in value.get("weekdays", ())),
        )


def parse_entries(entries: Iterable[str]) -> CalendarDays:
    """Entries as a user writes them: ``2026-12-25``, ``2026-12-24..2026-12-31``, ``sat`` or ``saturday``."""
    dates: set[date] = set()
    ranges: set[tuple[date, date]] = set()
    weekdays: set[int] = set()
    for count, raw in enumerate(entries, 1):
        if count > MAX_ENTRIES:
            raise InvalidField("calendar", f"more than {MAX_ENTRIES} entries")
        text = str(raw).strip()
        if text.lower() in _WEEKDAY_WORDS:
            weekdays.add(_WEEKDAY_WORDS[text.lower()])
        elif ".." in text:
            first, _, last = text.partition("..")
            ranges.add(_checked_range(_parse_date(first.strip()), _parse_date(last.strip()), text))
        else:
            dates.add(_parse_date(text))
    return CalendarDays(frozenset(dates), tuple(sorted(ranges)), frozenset(weekdays))


def _checked_range(first: date, last: date, text: str) -> tuple[date, date]:
    if last < first:
        raise InvalidField("calendar", f"the range {text!r} ends before it starts")
    if (last - first).days > MAX_RANGE_DAYS:
        raise InvalidField("calendar", f"the range {text!r} is longer than {MAX_RANGE_DAYS} days")
    return first, last


def _unfolded(text: str) -> list[str]:
    """RFC 5545 content lines: a line starting with a space or tab continues the previous one."""
    lines: list[str] = []
    for raw in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if raw[:1] in (" ", "\t") and lines:
            lines[-1] += raw[1:]
        elif raw.strip():
            lines.append(raw)
    return lines


def _ics_date(line: str, number: int) -> date:
    _, _, value = line.partition(":")
    match = _ICS_DATE.fullmatch(value.strip())
    if match is None:
        raise InvalidField("ics", f"line {number}: {value.strip()[:40]!r} is not an iCalendar date")
    digits = match.group(1)
    try:
        return date(int(digits[:4]), int(digits[4:6]), int(digits[6:]))
    except ValueError as error:
        raise InvalidField("ics", f"line {number}: {digits!r} is not a date ({error})") from None


def parse_ics(text: str) -> CalendarDays:
    """The days of the events of an iCalendar file: each VEVENT's DTSTART up to its DTEND (exclusive, as RFC
    5545 says of all-day events; without DTEND the one day). A timed event counts for the date it is written
    with. Recurrence rules are not expanded: an event with RRULE is refused rather than half-read."""
    lines = _unfolded(text)
    if not lines or lines[0].strip().upper() != "BEGIN:VCALENDAR":
        raise InvalidField("ics", "not an iCalendar file (it must start with BEGIN:VCALENDAR)")
    if lines[-1].strip().upper() != "END:VCALENDAR":
        raise InvalidField("ics", "not a complete iCalendar file (it must end with END:VCALENDAR)")
    ranges: set[tuple[date, date]] = set()
    start: date | None = None
    end: date | None = None
    inside = False
    for number, line in enumerate(lines, 1):
        key = line.split(":", 1)[0].split(";", 1)[0].strip().upper()
        if key == "BEGIN" and line.strip().upper() == "BEGIN:VEVENT":
            inside, start, end = True, None, None
        elif key == "END" and line.strip().upper() == "END:VEVENT":
            if start is None:
                raise InvalidField("ics", f"line {number}: an event without DTSTART")
            last = start if end is None or end <= start else end - timedelta(days=1)
            ranges.add(_checked_range(start, last, f"{start}..{last}"))
            inside = False
        elif inside and key == "DTSTART":
            start = _ics_date(line, number)
        elif inside and key == "DTEND":
            end = _ics_date(line, number)
        elif inside and key == "RRULE":
            raise InvalidField("ics", f"line {number}: recurring events (RRULE) are not supported")
    if len(ranges) > MAX_ENTRIES:
        raise InvalidField("ics", f"more than {MAX_ENTRIES} events")
    single = frozenset(a for a, b in ranges if a == b)
    return CalendarDays(single, tuple(sorted((a, b) for a, b in ranges if a != b)))


def local_day(instant: datetime, timezone: str) -> date:
    """The wall date of ``instant`` in ``timezone``: the day a calendar judges."""
    return instant.astimezone(ZoneInfo(timezone)).date()


@dataclass(frozen=True, slots=True)
class CalendarRule:
    """A task's calendars: a slot is excluded when its local day is in an ``exclude`` calendar or, with
    ``only_in`` calendars, in none of them."""

    timezone: str
    exclude: tuple[tuple[str, CalendarDays], ...] = ()
    only_in: tuple[tuple[str, CalendarDays], ...] = ()

    def reason(self, instant: datetime) -> str | None:
        """Why ``instant`` is excluded (``excluded by calendar 'x'``, ``outside calendar 'y'``), else None."""
        day = local_day(instant, self.timezone)
        for name, days in self.exclude:
            if days.contains(day):
                return f"excluded by calendar {name!r} ({day.isoformat()})"
        if self.only_in and not any(days.contains(day) for _, days in self.only_in):
            names = " or ".join(repr(name) for name, _ in self.only_in)
            return f"outside calendar {names} ({day.isoformat()})"
        return None


def task_calendar_rule(
    timezone: str,
    exclude: list[str] | None,
    only_in: list[str] | None,
    stored: Mapping[str, Mapping[str, Any]],
) -> CalendarRule | None:
    """The rule of a task's calendars from their stored days (name -> days); None without calendars. A
    name missing from ``stored`` (deleted meanwhile) is left out."""
    if not exclude and not only_in:
        return None

    def named(names: list[str] | None) -> tuple[tuple[str, CalendarDays], ...]:
        return tuple((name, CalendarDays.from_json(stored[name])) for name in names or () if name in stored)

    return CalendarRule(timezone, named(exclude), named(only_in))
