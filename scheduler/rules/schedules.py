"""Schedules: parse schedule text and compute fire times.

Pure: no I/O and no clock; every instant is passed in. Datetimes taken must be timezone-aware (a naive one is
a programming error: ``ValueError``); datetimes returned are aware and in UTC. Bad user input raises only
:class:`InvalidSchedule` or :class:`InvalidTimezone`.

Cron follows Debian cron / cronie, evaluated in the task's IANA time zone:

- a job whose hour field is fixed (numbers, lists, ranges) and whose local time falls in a spring-forward gap
  runs once, at the first instant after the gap; if its local time repeats on fall-back it runs once, first;
- a job whose hour field has ``*`` or a step follows real elapsed time: it runs at every instant whose local
  wall time matches, so the skipped hour has no runs and the repeated hour runs twice;
- a jump of 3 hours or more (a zone changing sides of the date line) is a calendar change, not DST: skipped
  local times are not run.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from calendar import monthrange
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Literal, Protocol
from zoneinfo import ZoneInfo

from scheduler.errors import InvalidSchedule, InvalidTimezone

ScheduleKind = Literal["cron", "interval", "once", "manual"]

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_INTERVAL = timedelta(days=366)
_MAX_DST_JUMP = timedelta(hours=3)
_TICK = timedelta(microseconds=1)
_SEARCH_YEARS = 50  # a valid expression fires within 40 years (Feb 29 on a given weekday, across 2100)
_Wall = tuple[int, int, int, int, int]  # local year, month, day, hour, minute
_MONTH_NAMES = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")  # fmt: skip
_MONTHS = tuple(name[:3].lower() for name in _MONTH_NAMES)
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_MONTH_LENGTHS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_Field = tuple[str, int, int, tuple[str, ...]]  # name, lowest, highest, names for lowest upwards
_FIELDS: tuple[_Field, ...] = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 7, _DAYS),
)
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
# Numbers with unit words: an interval, or a mistaken one ("5M", "5 mins") that gets the accepted forms.
_INTERVAL = re.compile(r"(?:[0-9]+\s*[A-Za-z]+\s*)+")
_INTERVAL_PART = re.compile(r"([0-9]+)\s*([A-Za-z]+)")
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
# Unit words people write, for the hint "write '5m'".
_UNIT_WORDS = {
    word: unit
    for unit, words in {
        "s": ("sec", "secs", "second", "seconds"),
        "m": ("min", "mins", "minute", "minutes"),
        "h": ("hr", "hrs", "hour", "hours"),
        "d": ("day", "days"),
        "w": ("wk", "wks", "week", "weeks"),
    }.items()
    for word in (unit, *words)
}
INTERVAL_FORMS = (
    "an interval is a number and a lower-case unit s, m, h, d or w (seconds, minutes, hours, days, weeks), "
    "alone or combined: '30s', '5m', '1h30m', '1d', '1w'"
)
_EXPECTED = (
    "a cron expression (5 fields), an @macro, an interval like '5m', an ISO-8601 instant, 'now' or 'manual'"
)


def _aware_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is UTC:  # the usual case, in the planner's loops: nothing to convert
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got naive {value!r}")
    return value.astimezone(UTC)


def validate_timezone(name: str) -> ZoneInfo:
    """Return the IANA zone ``name``; raise :class:`InvalidTimezone` for an unknown or malformed name."""
    if not _ZONE_NAME.fullmatch(name) or len(name) > 64 or name.lower() in ("localtime", "posixrules"):
        raise InvalidTimezone(name)  # the pattern also keeps out paths ("../etc", "/etc/passwd")
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError, UnicodeError) as exc:  # not found, a directory, unreadable
        raise InvalidTimezone(name) from exc


# Legacy names that are valid zones but rarely what is meant: a fixed offset where people expect daylight
# saving (EST is UTC-5 all year), or North American rules without the region's history. The likely zone.
_LEGACY_ZONES = {
    "EST": ("US Eastern time", "America/New_York"),
    "MST": ("US Mountain time", "America/Denver"),
    "HST": ("Hawaii time", "Pacific/Honolulu"),
    "EST5EDT": ("US Eastern time", "America/New_York"),
    "CST6CDT": ("US Central time", "America/Chicago"),
    "MST7MDT": ("US Mountain time", "America/Denver"),
    "PST8PDT": ("US Pacific time", "America/Los_Angeles"),
}


def timezone_warning(name: str) -> str | None:
    """A warning for a legacy zone name (``EST``, ``EST5EDT``) naming the zone it likely stands for; None for
    any other name. The name is valid: this is advice, not an error."""
    legacy = _LEGACY_ZONES.get(name.strip())
    if legacy is None:
        return None
    region, zone = legacy
    tz = validate_timezone(name.strip())
    winter, summer = (_offset(tz, datetime(2025, month, 15)) for month in (1, 7))
    if winter == summer:
        hours = f"UTC{winter.total_seconds() / 3600:+03.0f}:00"
        what = f"has no daylight saving ({hours} all year)"
    else:
        what = "is a legacy name (North American rules, without the local history)"
    return f"time zone {name.strip()!r} {what}; for {region} use {zone!r}"


class _CronSpec:
    """A parsed cron expression: matching in naive local wall time, cached per expression."""

    __slots__ = ("_day_cache", "day_and", "doms", "dows", "elapsed", "hours", "minutes", "months")

    def __init__(self, fields: list[tuple[int, ...]], texts: list[str]) -> None:
        self.minutes, self.hours, doms, self.months, dows = fields
        self.doms, self.dows = frozenset(doms), frozenset(dows)
        # cronie: a day field written with a leading "*" (also "*/2") does not count as a restriction, and
        # day-of-month and day-of-week are ORed only when both are restricted.
        self.day_and = texts[2].startswith("*") or texts[4].startswith("*")
        self.elapsed = "*" in texts[1] or "/" in texts[1]
        self._day_cache: dict[tuple[int, int], tuple[int, ...]] = {}

    def days(self, year: int, month: int) -> tuple[int, ...]:
        """The matching days of ``month`` in ``year``, ascending."""
        key = (year, month)
        found = self._day_cache.get(key)
        if found is None:
            first_weekday, length = monthrange(year, month)  # Monday is 0 there; Sunday is 0 in cron
            matching = []
            for d in range(1, length + 1):
                dom, dow = d in self.doms, (first_weekday + d) % 7 in self.dows
                if (dom and dow) if self.day_and else (dom or dow):
                    matching.append(d)
            found = tuple(matching)
            if len(self._day_cache) > 256:
                self._day_cache.clear()
            self._day_cache[key] = found
        return found

    def next_wall(self, y: int, mo: int, d: int, h: int, mi: int) -> _Wall | None:
        """The first matching wall time at or after the one given (minute may be 60), or None."""
        limit = min(y + _SEARCH_YEARS, 9999)
        months, hours, minutes = self.months, self.hours, self.minutes
        while y <= limit:
            i = bisect_left(months, mo)
            if i == len(months):
                y, mo, d, h, mi = y + 1, months[0], 1, 0, 0
                continue
            if months[i] != mo:
                mo, d, h, mi = months[i], 1, 0, 0
            days = self.days(y, mo)
            i = bisect_left(days, d)
            if i == len(days):
                y, mo, d, h, mi = (y + 1, 1, 1, 0, 0) if mo == 12 else (y, mo + 1, 1, 0, 0)
                continue
            if days[i] != d:
                d, h, mi = days[i], 0, 0
            i = bisect_left(hours, h)
            if i == len(hours):
                d, h, mi = d + 1, 0, 0
                continue
            if hours[i] != h:
                h, mi = hours[i], 0
            i = bisect_left(minutes, mi)
            if i == len(minutes):
                h, mi = h + 1, 0
                continue
            return y, mo, d, h, minutes[i]
        return None

    def next_after(self, t: datetime, tz: ZoneInfo) -> datetime | None:
        """The first fire time strictly after ``t`` (aware UTC)."""
        local = t.astimezone(tz)
        now: _Wall = (local.year, local.month, local.day, local.hour, local.minute)
        wall = self.next_wall(*now[:4], now[4] + 1)
        best = None
        while wall is not None:
            best = self._instant_after(wall, tz, t)
            if best is not None:
                break
            wall = self.next_wall(*wall[:4], wall[4] + 1)
        if self.elapsed and local.fold == 0:
            # In the first pass of a repeated hour, earlier wall times come round again after t.
            offset, repeat = _offset(tz, local), _offset(tz, local.replace(fold=1))
            if repeat < offset and (best is None or _offset(tz, best.astimezone(tz)) != offset):
                back = local - (offset - repeat)
                wall = self.next_wall(back.year, back.month, back.day, back.hour, back.minute)
                while wall is not None and wall <= now:
                    again = datetime(*wall, fold=1, tzinfo=tz).astimezone(UTC)
                    if again > t:
                        return again if best is None or again < best else best
                    wall = self.next_wall(*wall[:4], wall[4] + 1)
        return best

    def _instant_after(self, wall: _Wall, tz: ZoneInfo, t: datetime) -> datetime | None:
        """The first instant after ``t`` at which ``wall`` fires, or None."""
        naive = datetime(*wall)
        off0, off1 = _offset(tz, naive), _offset(tz, datetime(*wall, fold=1))
        u = datetime(*wall, tzinfo=UTC) - off0
        if off0 == off1:
            return u if u > t else None
        if off0 > off1:  # repeated on fall-back
            if u > t:
                return u
            second = u + (off0 - off1)
            return second if self.elapsed and second > t else None
        if self.elapsed or off1 - off0 >= _MAX_DST_JUMP:  # skipped on spring-forward
            return None
        gap_end = _gap_end(naive, tz, off0, off1)
        return gap_end if gap_end > t else None


def _offset(tz: ZoneInfo, dt: datetime) -> timedelta:
    """The UTC offset in ``tz`` of the wall time in ``dt``'s fields and fold (its tzinfo is ignored)."""
    offset = tz.utcoffset(dt)
    assert offset is not None  # a ZoneInfo always has one
    return offset


def _gap_end(wall: datetime, tz: ZoneInfo, before: timedelta, after: timedelta) -> datetime:
    """The instant the spring-forward gap containing naive ``wall`` ends (to the second)."""
    lo = int((wall - after).replace(tzinfo=UTC).timestamp())  # still at offset ``before``
    hi = int((wall - before).replace(tzinfo=UTC).timestamp())  # already at offset ``after``
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, tz).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, UTC)


def _small_int(digits: str) -> int:
    """ASCII digits as an int, capped at 10**9 (so a huge number is just out of range); -1 if not digits."""
    if not (digits.isascii() and digits.isdigit()):
        return -1
    return int(digits) if len(digits.lstrip("0")) <= 9 else 10**9


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _parse_value(expression: str, token: str, field_: _Field) -> int:
    name, low, high, names = field_
    if token.lower() in names:
        return names.index(token.lower()) + low
    if not (token.isascii() and token.isdigit()):
        hint = f" or a name such as {names[0]!r}" if names else ""
        raise InvalidSchedule(expression, f"{token!r} in the {name} field is not a number {low}-{high}{hint}")
    if not low <= _small_int(token) <= high:
        raise InvalidSchedule(expression, f"{token} is out of range for the {name} field ({low}-{high})")
    return int(token)


def _parse_field(expression: str, text: str, field_: _Field) -> tuple[int, ...]:
    name, low, high, _ = field_
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            step = _small_int(step_text)
            if step < 1:
                raise InvalidSchedule(
                    expression, f"step in {item!r} ({name} field) must be a whole number >= 1"
                )
            if step > high - low + 1:  # "*/61" would silently be minute 0 only, i.e. hourly
                raise InvalidSchedule(
                    expression,
                    f"step {step} in {item!r} is out of range for the {name} field ({low}-{high}): "
                    f"a step can be 1-{high - low + 1}",
                )
        if base == "*":
            start, end = low, high
        elif not base:
            raise InvalidSchedule(expression, f"empty item in the {name} field {text!r}")
        else:
            first, dash, last = base.partition("-")
            start = _parse_value(expression, first, field_)
            if slash and not dash:  # as in cronie; croniter reads "5/20" as "5-59/20"
                raise InvalidSchedule(expression, f"a step needs a range: write '{first}-{high}/{step_text}'")
            end = _parse_value(expression, last, field_) if dash else start
            if start > end:
                raise InvalidSchedule(expression, f"range {base!r} in the {name} field is reversed")
        values.update(range(start, end + 1, step))
    if name == "day-of-week" and 7 in values:  # 0 and 7 are both Sunday
        values = (values - {7}) | {0}
    return tuple(sorted(values))


@lru_cache(maxsize=1024)
def _compile(expression: str) -> tuple[str, _CronSpec]:
    """Normalise and parse ``expression``; raise :class:`InvalidSchedule`."""
    text = " ".join(expression.lower().split())
    if text.startswith("@"):
        if text not in MACROS:
            raise InvalidSchedule(expression, f"unknown macro {text!r} (use one of {', '.join(MACROS)})")
        texts = MACROS[text].split()
    else:
        texts = text.split()
    if len(texts) != 5:
        raise InvalidSchedule(
            expression, f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(texts)}"
        )
    fields = [_parse_field(expression, part, spec) for part, spec in zip(texts, _FIELDS, strict=True)]
    spec = _CronSpec(fields, texts)
    if spec.day_and and not any(d <= _MONTH_LENGTHS[m - 1] for m in spec.months for d in spec.doms):
        days = " or ".join(_ordinal(d) for d in sorted(spec.doms))
        months = " or ".join(_MONTH_NAMES[m - 1] for m in spec.months)
        detail = f"no {months} {days}" if len(spec.doms) == 1 else f"no {days} in {months}"
        raise InvalidSchedule(expression, f"never fires ({detail})")
    return text, spec


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A cron expression evaluated in an IANA time zone (see the module docstring for DST)."""

    expression: str
    timezone: str
    _spec: _CronSpec = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text, spec = _compile(self.expression)
        object.__setattr__(self, "_zone", validate_timezone(self.timezone))
        object.__setattr__(self, "expression", text)
        object.__setattr__(self, "_spec", spec)

    @property
    def kind(self) -> Literal["cron"]:
        return "cron"

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first fire time after ``t`` (or at it when ``inclusive``) in UTC; None if none by 9999."""
        if t.tzinfo is not UTC:
            t = _aware_utc(t, "t")
        try:
            return self._spec.next_after(t - _TICK if inclusive else t, self._zone)
        except OverflowError:  # the local or UTC form of a time in year 9999 (or 1) is out of range
            return None


@dataclass(frozen=True, slots=True)
class IntervalSchedule:
    """Fires at ``anchor + k * every`` for whole k >= 0, in elapsed time (``1d`` is 24 h): it never drifts."""

    every: timedelta
    anchor: datetime

    def __post_init__(self) -> None:
        if self.every <= timedelta(0):
            raise InvalidSchedule(str(self.every), "the interval must be longer than zero")
        object.__setattr__(self, "anchor", _aware_utc(self.anchor, "anchor"))

    @property
    def kind(self) -> Literal["interval"]:
        return "interval"

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """The first ``anchor + k * every`` after ``t`` (at or after it when ``inclusive``), in UTC."""
        t = _aware_utc(t, "t")
        if t < self.anchor or (inclusive and t == self.anchor):
            return self.anchor
        steps, rest = divmod(t - self.anchor, self.every)
        k = steps if inclusive and not rest else steps + 1
        try:
            return self.anchor + k * self.every
        except OverflowError:
            return None


@dataclass(frozen=True, slots=True)
class OnceSchedule:
    """Fires once, at ``at``."""

    at: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "at", _aware_utc(self.at, "at"))

    @property
    def kind(self) -> Literal["once"]:
        return "once"

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """``at`` (UTC) if it is after ``t`` (or equal to it when ``inclusive``), else None."""
        t = _aware_utc(t, "t")
        return self.at if self.at > t or (inclusive and self.at == t) else None


@dataclass(frozen=True, slots=True)
class ManualSchedule:
    """Never fires; the task runs only when asked."""

    @property
    def kind(self) -> Literal["manual"]:
        return "manual"

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None:
        """Always None."""
        _aware_utc(t, "t")
        return None


BasicSchedule = CronSchedule | IntervalSchedule | OnceSchedule | ManualSchedule


class Schedule(Protocol):
    """What the planner and the previews need of a schedule: its kind and its next fire time. A parsed
    :data:`BasicSchedule` is one, and so is a task's combined schedule (``scheduler.rules.combined``)."""

    @property
    def kind(self) -> ScheduleKind: ...

    def next_after(self, t: datetime, *, inclusive: bool = False) -> datetime | None: ...


def parse_interval(text: str) -> timedelta:
    """Parse ``30s``, ``5m``, ``2h``, ``1d``, ``1w`` or combinations (``1h30m``, ``1h 30m``).

    Units are lower case (``5M`` could as well mean months). The result is longer than zero and at most 366
    days; anything else raises :class:`InvalidSchedule`, whose reason shows the accepted forms.
    """
    stripped = text.strip()
    if stripped.startswith("-"):
        raise InvalidSchedule(text, "an interval must be positive")
    if not stripped.isascii() or not _INTERVAL.fullmatch(stripped):
        raise InvalidSchedule(text, f"not an interval; {INTERVAL_FORMS}")
    seconds = 0
    seen: set[str] = set()
    for number, unit in _INTERVAL_PART.findall(stripped):
        if unit not in _UNITS:
            raise InvalidSchedule(text, f"unknown unit {unit!r}{_unit_hint(number, unit)}; {INTERVAL_FORMS}")
        if unit in seen:
            raise InvalidSchedule(text, f"the unit {unit!r} appears twice in the interval")
        seen.add(unit)
        seconds += _small_int(number) * _UNITS[unit]
    if seconds == 0:
        raise InvalidSchedule(text, "an interval must be longer than zero")
    if seconds > MAX_INTERVAL.total_seconds():
        raise InvalidSchedule(text, "an interval can be at most 366 days (use a cron expression for longer)")
    return timedelta(seconds=seconds)


def _unit_hint(number: str, unit: str) -> str:
    """`` (write '5m')`` for a unit word we can read, with a note on ``M`` (minutes or months?)."""
    if unit == "M":
        return f" (minutes are '{number}m'; months need a cron expression such as '0 0 1 * *')"
    known = _UNIT_WORDS.get(unit.lower())
    return "" if known is None else f" (write '{number}{known}')"


def _parse_instant(text: str, tz: ZoneInfo) -> datetime:
    """An ISO-8601 instant; without an offset, wall time in ``tz`` (first if repeated, gap end if skipped)."""
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is not None:
            return parsed.astimezone(UTC)
        off0, off1 = _offset(tz, parsed), _offset(tz, parsed.replace(fold=1))
        return _gap_end(parsed, tz, off0, off1) if off0 < off1 else parsed.replace(tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidSchedule(text, f"not a valid ISO-8601 instant ({exc})") from exc


def parse_schedule(text: str, *, timezone: str = "UTC", anchor: datetime) -> BasicSchedule:
    """Parse schedule text; raise :class:`InvalidSchedule` or :class:`InvalidTimezone`.

    ``text`` is a 5-field cron expression or @macro (evaluated in ``timezone``), an interval (anchored at
    ``anchor``), ``now`` (once at ``anchor``), an ISO-8601 instant (without an offset it is wall time in
    ``timezone``), or ``manual``. ``anchor`` must be aware (``ValueError`` otherwise).
    """
    anchor = _aware_utc(anchor, "anchor")
    zone = validate_timezone(timezone)
    stripped = text.strip()
    word = stripped.lower()
    if not stripped:
        raise InvalidSchedule(text, f"empty; give {_EXPECTED}")
    if word == "manual":
        return ManualSchedule()
    if word == "now":
        return OnceSchedule(at=anchor)
    if re.match(r"[0-9]{4}-", stripped):
        return OnceSchedule(at=_parse_instant(stripped, zone))
    if re.match(r"[-+]?[0-9]", stripped) and (len(stripped.split()) == 1 or _INTERVAL.fullmatch(stripped)):
        return IntervalSchedule(every=parse_interval(stripped), anchor=anchor)
    if word.startswith("@") or len(stripped.split()) > 1:
        return CronSchedule(expression=stripped, timezone=timezone)
    raise InvalidSchedule(text, f"not a schedule; give {_EXPECTED}")


def fire_times(schedule: Schedule, after: datetime, count: int, *, inclusive: bool = False) -> list[datetime]:
    """Up to ``count`` fire times of ``schedule`` after ``after`` (at or after when ``inclusive``), in UTC."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    times: list[datetime] = []
    t: datetime | None = after
    while len(times) < count and t is not None:
        t = schedule.next_after(t, inclusive=inclusive and not times)
        if t is not None:
            times.append(t)
    return times
