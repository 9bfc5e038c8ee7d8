"""Properties of schedules over random expressions, zones and instants, and a fuzz of the parser."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scheduler.errors import InvalidSchedule, InvalidTimezone
from scheduler.rules.schedules import (
    CronSchedule,
    IntervalSchedule,
    fire_times,
    parse_schedule,
    validate_timezone,
)

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "Pacific/Apia"]
DST_ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Apia"]
TRANSITIONS = {  # UTC instants where the zone's offset changes, so that examples land near them often
    "UTC": [],
    "Asia/Kolkata": [],
    "Europe/Berlin": ["2025-03-30 01:00", "2025-10-26 01:00", "2030-03-31 01:00", "2030-10-27 01:00"],
    "America/New_York": ["2025-03-09 07:00", "2025-11-02 06:00", "2030-03-10 07:00", "2030-11-03 06:00"],
    "Australia/Lord_Howe": ["2025-04-05 15:00", "2025-10-04 15:30", "2030-04-06 15:00", "2030-10-05 15:30"],
    "Pacific/Apia": ["2011-04-02 14:00", "2011-09-24 14:00", "2011-12-30 10:00", "2012-04-01 14:00"],
}
ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@st.composite
def zone_and_instant(draw: st.DrawFn, zones: list[str] = ZONES) -> tuple[str, datetime]:
    """A zone, and an instant that is often within two days of one of its transitions."""
    zone = draw(st.sampled_from(zones))
    near = TRANSITIONS[zone]
    if draw(st.booleans()) and near:
        base = utc(draw(st.sampled_from(near)))
        return zone, base + timedelta(seconds=draw(st.integers(-2 * 86400, 2 * 86400)))
    return zone, draw(st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)))


@st.composite
def cron_field(draw: st.DrawFn, low: int, high: int, names: tuple[str, ...] = (), stars: bool = True) -> str:
    """One cron field: "*", or a list of values, ranges and steps (names sometimes for single values)."""
    if draw(st.integers(0, 3)) == 0:
        return "*"
    if not stars:  # no "*/n" items, and rarely every value
        high = min(high, low + 5)
    items = []
    for _ in range(draw(st.integers(1, 3))):
        a = draw(st.integers(low, high))
        b = draw(st.integers(a, high))
        step = draw(st.integers(1, high - low + 1))
        value = names[a - low] if names and a - low < len(names) and draw(st.booleans()) else str(a)
        choices = [value]
        if b > a:  # croniter 7.0 reads a one-value range ("5-5") as "*"; a table test pins ours
            choices += [f"{a}-{b}", f"{a}-{b}/{step}"]
        if stars:
            choices.append(f"*/{step}")
        items.append(draw(st.sampled_from(choices)))
    return ",".join(items)


MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@st.composite
def cron_expression(draw: st.DrawFn, star_days: bool = True) -> str:
    return " ".join(
        [
            draw(cron_field(0, 59)),
            draw(cron_field(0, 23)),
            draw(cron_field(1, 31, stars=star_days)),
            draw(cron_field(1, 12, MONTHS)),
            draw(cron_field(0, 7, DAYS, stars=star_days)),
        ]
    )


def valid(expression: str, zone: str) -> CronSchedule:
    try:
        return CronSchedule(expression, zone)
    except InvalidSchedule as error:
        assume(
            "never fires" not in error.reason
        )  # e.g. "0 0 31 2 *" can be generated; that rejection is right
        raise


@FAST
@given(cron_expression(), zone_and_instant(), st.integers(0, 999_999))
def test_any_instant_between_two_fire_times_leads_to_the_second(
    expression: str, zone_instant: tuple[str, datetime], millionths: int
) -> None:
    zone, x = zone_instant
    schedule = valid(expression, zone)
    f1 = schedule.next_after(x)
    assume(f1 is not None)
    assert f1 is not None and f1 > x
    f2 = schedule.next_after(f1)
    assume(f2 is not None)
    assert f2 is not None and f2 > f1
    t = f1 + (f2 - f1) * millionths // 1_000_000
    assert f1 <= t < f2
    assert schedule.next_after(t) == f2
    assert schedule.next_after(f1, inclusive=True) == f1
    assert schedule.next_after(t, inclusive=True) == (f1 if t == f1 else f2)


@FAST
@given(cron_expression(), zone_and_instant())
def test_fire_times_are_strictly_increasing_in_utc(
    expression: str, zone_instant: tuple[str, datetime]
) -> None:
    zone, x = zone_instant
    times = fire_times(valid(expression, zone), x, 12)
    assert all(t.tzinfo is UTC for t in times)
    assert all(a < b for a, b in zip([x, *times], times, strict=False))


@FAST
@given(cron_expression(star_days=False), zone_and_instant(["UTC", "Asia/Kolkata"]))
def test_without_dst_it_agrees_with_croniter(expression: str, zone_instant: tuple[str, datetime]) -> None:
    # cronie (and we) AND the day fields when either is written starting with "*" ("*/2" too), else OR them;
    # croniter ANDs when either expands to every value ("0-6" too). Compare where the two readings agree.
    zone, x = zone_instant
    _, _, dom, _, dow = expression.split()
    expanded = croniter.expand(expression)[0]
    assume((expanded[2] == ["*"]) == dom.startswith("*"))
    assume((expanded[4] == ["*"]) == dow.startswith("*"))
    schedule = valid(expression, zone)
    ours = schedule.next_after(x)
    assume(ours is not None)
    theirs = croniter(expression, x.astimezone(ZoneInfo(zone))).get_next(datetime)
    assert ours == theirs


def _set(values: set[int]) -> str:
    return ",".join(str(v) for v in sorted(values))


minute_sets = st.one_of(
    st.sets(st.integers(0, 59), min_size=1, max_size=4).map(lambda s: (_set(s), s)),
    st.integers(1, 30).map(lambda n: (f"*/{n}", set(range(0, 60, n)))),
)
hour_sets = st.one_of(  # (field text, hours, follows elapsed time)
    st.sets(st.integers(0, 23), min_size=1, max_size=4).map(lambda s: (_set(s), s, False)),
    st.integers(1, 12).map(lambda n: (f"*/{n}", set(range(0, 24, n)), True)),
    st.just(("*", set(range(24)), True)),
)


def reference_next(
    minutes: set[int], hours: set[int], elapsed: bool, zone: str, t: datetime
) -> datetime | None:
    """The stated DST rules, minute by minute in UTC, within 50 hours (None beyond)."""
    tz = ZoneInfo(zone)
    u = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    before = (u - timedelta(minutes=1)).astimezone(tz).utcoffset()
    assert before is not None
    while u < t + timedelta(hours=50):
        local = u.astimezone(tz)
        offset = local.utcoffset()
        assert offset is not None
        matches = local.minute in minutes and local.hour in hours
        if matches and (elapsed or local.fold == 0):  # fixed times run in the first pass only
            return u
        if not elapsed and timedelta(0) < offset - before < timedelta(hours=3):  # u ends a spring-forward gap
            skipped = (u + before).replace(tzinfo=None)
            while skipped < (u + offset).replace(tzinfo=None):
                if skipped.minute in minutes and skipped.hour in hours:
                    return u
                skipped += timedelta(minutes=1)
        before = offset
        u += timedelta(minutes=1)
    return None


@FAST
@given(minute_sets, hour_sets, zone_and_instant(DST_ZONES))
def test_it_follows_the_dst_rules_minute_by_minute(
    minute: tuple[str, set[int]], hour: tuple[str, set[int], bool], zone_instant: tuple[str, datetime]
) -> None:
    zone, t = zone_instant
    expected = reference_next(minute[1], hour[1], hour[2], zone, t)
    assume(expected is not None)
    assert CronSchedule(f"{minute[0]} {hour[0]} * * *", zone).next_after(t) == expected


@FAST
@given(
    st.timedeltas(timedelta(microseconds=1), timedelta(days=366)),
    st.datetimes(datetime(2000, 1, 1), datetime(2040, 1, 1), timezones=st.just(UTC)),
    st.datetimes(datetime(1990, 1, 1), datetime(2050, 1, 1), timezones=st.just(UTC)),
    st.booleans(),
)
def test_an_interval_fires_on_whole_multiples_of_its_period(
    every: timedelta, anchor: datetime, t: datetime, inclusive: bool
) -> None:
    result = IntervalSchedule(every=every, anchor=anchor).next_after(t, inclusive=inclusive)
    assert result is not None
    assert result >= anchor
    assert (result - anchor) % every == timedelta(0)
    assert result > t or (inclusive and result == t)
    if result > anchor:  # the one before it was not due yet
        assert result - every < t or (not inclusive and result - every == t)


cronish = st.text(alphabet="0123456789*/-,@ \tabcdefjlmnorstuwy#?LW:TZ+", max_size=40)


@FAST
@given(st.one_of(st.text(max_size=60), cronish), st.one_of(st.sampled_from(ZONES), st.text(max_size=20)))
def test_parsing_any_text_succeeds_or_raises_only_schedule_errors(text: str, zone: str) -> None:
    try:
        schedule = parse_schedule(text, timezone=zone, anchor=ANCHOR)
    except (InvalidSchedule, InvalidTimezone):
        return
    schedule.next_after(ANCHOR)  # whatever parsed can be evaluated


@FAST
@given(st.text(max_size=40))
def test_any_timezone_name_is_known_or_raises_invalid_timezone(name: str) -> None:
    try:
        validate_timezone(name)
    except InvalidTimezone as error:
        assert error.name == name


@pytest.mark.parametrize(
    "text",
    [
        "0 0 * * *",
        "*/5 * * * *",
        "@weekly",
        "5m",
        "1h30m",
        "now",
        "manual",
        "2026-12-01T02:00:00Z",
        "0 0 29 2 *",
    ],
)
def test_known_good_text_parses(text: str) -> None:
    parse_schedule(text, timezone="Europe/Berlin", anchor=ANCHOR)
