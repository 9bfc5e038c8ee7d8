"""Schedules: parsing, cron semantics (cronie is the reference), DST in real zones, interval, once, manual.

Expected instants are written out by hand; each DST table names its transition instants in a comment.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from scheduler.errors import InvalidSchedule, InvalidTimezone
from scheduler.rules.schedules import (
    INTERVAL_FORMS,
    CronSchedule,
    IntervalSchedule,
    ManualSchedule,
    OnceSchedule,
    Schedule,
    fire_times,
    parse_interval,
    parse_schedule,
    timezone_warning,
    validate_timezone,
)

ANCHOR = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def utc(text: str) -> datetime:
    """'2025-03-30 01:00' as an aware UTC datetime."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def local_runs(expression: str, zone: str, after: str, count: int) -> list[str]:
    """The next ``count`` fire times after the UTC instant ``after``, as local ISO text with the offset."""
    schedule = CronSchedule(expression, zone)
    return [
        t.astimezone(ZoneInfo(zone)).isoformat(timespec="minutes")
        for t in fire_times(schedule, utc(after), count)
    ]


def runs_on(expression: str, zone: str, day: date) -> list[datetime]:
    """Every fire time during the local calendar day ``day`` in ``zone``."""
    tz = ZoneInfo(zone)
    start = datetime.combine(day, time(), tz)
    end = datetime.combine(day + timedelta(days=1), time(), tz)
    return [t for t in fire_times(CronSchedule(expression, zone), start, 200, inclusive=True) if t < end]


# --- parsing ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*/5 * * * *", CronSchedule("*/5 * * * *", "UTC")),
        ("@daily", CronSchedule("@daily", "UTC")),
        ("5m", IntervalSchedule(every=timedelta(minutes=5), anchor=ANCHOR)),
        ("now", OnceSchedule(at=ANCHOR)),
        ("2026-12-01T02:00:00Z", OnceSchedule(at=utc("2026-12-01 02:00"))),
        ("manual", ManualSchedule()),
    ],
)
def test_it_parses_each_kind_of_schedule(text: str, expected: object) -> None:
    assert parse_schedule(text, anchor=ANCHOR) == expected


@pytest.mark.parametrize(
    ("schedule", "kind"),
    [
        (CronSchedule("@hourly", "UTC"), "cron"),
        (IntervalSchedule(every=timedelta(seconds=1), anchor=ANCHOR), "interval"),
        (OnceSchedule(at=ANCHOR), "once"),
        (ManualSchedule(), "manual"),
    ],
)
def test_each_schedule_names_its_kind(schedule: Schedule, kind: str) -> None:
    assert schedule.kind == kind


def test_it_normalises_whitespace_and_case_of_a_cron_expression() -> None:
    schedule = parse_schedule("  */5\t*  * JAN-Mar  MON-fri ", timezone="Europe/Berlin", anchor=ANCHOR)
    assert schedule == CronSchedule("*/5 * * jan-mar mon-fri", "Europe/Berlin")
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == "*/5 * * jan-mar mon-fri"
    assert schedule.timezone == "Europe/Berlin"


@pytest.mark.parametrize(
    "macro", ["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"]
)
def test_it_keeps_macros_as_given(macro: str) -> None:
    schedule = parse_schedule(f" {macro.upper()} ", anchor=ANCHOR)
    assert isinstance(schedule, CronSchedule)
    assert schedule.expression == macro


def test_it_reads_words_case_insensitively() -> None:
    assert parse_schedule(" MANUAL ", anchor=ANCHOR) == ManualSchedule()
    assert parse_schedule("Now", anchor=ANCHOR) == OnceSchedule(at=ANCHOR)


def test_it_needs_an_aware_anchor() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("5m", anchor=datetime(2025, 1, 1))


@pytest.mark.parametrize(
    ("text", "timezone", "reason"),
    [
        ("61 * * * *", "UTC", "61 is out of range for the minute field (0-59)"),
        ("0 24 * * *", "UTC", "24 is out of range for the hour field (0-23)"),
        ("0 0 0 * *", "UTC", "0 is out of range for the day-of-month field (1-31)"),
        ("0 0 * 13 *", "UTC", "13 is out of range for the month field (1-12)"),
        ("0 0 * * 8", "UTC", "8 is out of range for the day-of-week field (0-7)"),
        ("0 0 * * 99999999999999999999", "UTC", "out of range for the day-of-week field"),
        ("*/0 * * * *", "UTC", "step in '*/0' (minute field) must be a whole number >= 1"),
        (
            "*/61 * * * *",
            "UTC",
            "step 61 in '*/61' is out of range for the minute field (0-59): a step can be 1-60",
        ),
        ("*/90 * * * *", "UTC", "step 90 in '*/90' is out of range for the minute field (0-59)"),
        ("0-30/61 * * * *", "UTC", "step 61 in '0-30/61' is out of range for the minute field"),
        (
            "0 */25 * * *",
            "UTC",
            "step 25 in '*/25' is out of range for the hour field (0-23): a step can be 1-24",
        ),
        ("0 0 */32 * *", "UTC", "out of range for the day-of-month field (1-31): a step can be 1-31"),
        ("0 0 1 */13 *", "UTC", "out of range for the month field (1-12): a step can be 1-12"),
        ("0 0 * * */9", "UTC", "out of range for the day-of-week field (0-7): a step can be 1-8"),
        ("0 */x * * *", "UTC", "step in '*/x' (hour field) must be a whole number >= 1"),
        ("* * * *", "UTC", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
        ("0 * * * * *", "UTC", "expected 5 fields"),
        ("@fortnightly", "UTC", "unknown macro '@fortnightly' (use one of @yearly, @annually"),
        ("@reboot", "UTC", "unknown macro '@reboot'"),
        ("0 0 30 2 *", "UTC", "never fires (no February 30th)"),
        ("0 0 31 4 *", "UTC", "never fires (no April 31st)"),
        ("0 0 30,31 2 *", "UTC", "never fires (no 30th or 31st in February)"),
        ("0 0 31 apr,jun,sep,nov *", "UTC", "never fires (no April or June or September or November 31st)"),
        ("0 0 L * *", "UTC", "'l' in the day-of-month field is not a number 1-31"),
        ("0 0 ? * *", "UTC", "'?' in the day-of-month field is not a number 1-31"),
        (
            "0 0 * * mon#2",
            "UTC",
            "'mon#2' in the day-of-week field is not a number 0-7 or a name such as 'sun'",
        ),
        ("0 0 * foo *", "UTC", "'foo' in the month field is not a number 1-12 or a name such as 'jan'"),
        ("0 mon * * *", "UTC", "'mon' in the hour field is not a number 0-23"),
        ("5-1 * * * *", "UTC", "range '5-1' in the minute field is reversed"),
        ("1,,2 * * * *", "UTC", "empty item in the minute field '1,,2'"),
        ("-5 * * * *", "UTC", "'' in the minute field is not a number"),
        ("5/20 * * * *", "UTC", "a step needs a range: write '5-59/20'"),
        ("0 0 * * tue/2", "UTC", "a step needs a range: write 'tue-7/2'"),
        ("5x", "UTC", "unknown unit 'x'; an interval is a number and a lower-case unit s, m, h, d or w"),
        ("0s", "UTC", "an interval must be longer than zero"),
        ("-5m", "UTC", "an interval must be positive"),
        ("367d", "UTC", "an interval can be at most 366 days"),
        ("5", "UTC", "not an interval; an interval is a number and a lower-case unit"),
        ("", "UTC", "empty; give a cron expression (5 fields)"),
        ("   ", "UTC", "empty; give a cron expression (5 fields)"),
        ("*/5", "UTC", "not a schedule; give a cron expression (5 fields)"),
        ("tomorrow", "UTC", "not a schedule"),
        ("2026-13-01T00:00:00Z", "UTC", "not a valid ISO-8601 instant"),
        ("2026-12-01T02:00:00+25:00", "UTC", "not a valid ISO-8601 instant"),
    ],
)
def test_it_rejects_bad_schedules_with_a_reason(text: str, timezone: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(text, timezone=timezone, anchor=ANCHOR)
    assert reason in caught.value.reason
    assert caught.value.expression == text
    assert isinstance(caught.value, ValueError)  # callers may catch it as bad input


def test_it_rejects_an_unknown_timezone_for_any_schedule() -> None:
    with pytest.raises(InvalidTimezone, match="Mars/Olympus"):
        parse_schedule("@daily", timezone="Mars/Olympus", anchor=ANCHOR)
    with pytest.raises(InvalidTimezone):
        parse_schedule("5m", timezone="Mars/Olympus", anchor=ANCHOR)


@pytest.mark.parametrize(
    "name",
    ["Mars/Olympus", "", " ", "../etc/passwd", "/etc/localtime", "Europe/../UTC", "Europe", "localtime",
     "posixrules", "Europe/Berlin\x00", "europe/berlin ", "__init__", "Europe/Berlin/"],
)  # fmt: skip
def test_it_rejects_unknown_and_malformed_timezones(name: str) -> None:
    with pytest.raises(InvalidTimezone) as caught:
        validate_timezone(name)
    assert caught.value.name == name


@pytest.mark.parametrize("name", ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Etc/GMT+5"])
def test_it_accepts_iana_timezones(name: str) -> None:
    assert validate_timezone(name) == ZoneInfo(name)


def test_constructing_a_cron_schedule_validates_it() -> None:
    with pytest.raises(InvalidSchedule):
        CronSchedule("61 * * * *", "UTC")
    with pytest.raises(InvalidTimezone):
        CronSchedule("* * * * *", "Mars/Olympus")
    assert CronSchedule("0  0 * * *", "UTC") == CronSchedule("0 0 * * *", "UTC")
    assert hash(CronSchedule("0  0 * * *", "UTC")) == hash(CronSchedule("0 0 * * *", "UTC"))


# --- cron fields: an expansion table (croniter changed step semantics between releases; we own ours) --------


@pytest.mark.parametrize(
    ("minute_field", "minutes"),
    [
        ("*/15", [0, 15, 30, 45]),
        ("10-30/10", [10, 20, 30]),
        ("1-10/3", [1, 4, 7, 10]),
        ("*/25", [0, 25, 50]),
        ("*/60", [0]),  # a step as long as the field: once per hour; longer ones are rejected
        ("7,3,7,59", [3, 7, 59]),
        ("0-4,50-52", [0, 1, 2, 3, 4, 50, 51, 52]),
        ("00,05", [0, 5]),
        ("5-5", [5]),  # croniter 7.0 reads a one-value range as "*"
        ("59-59/5", [59]),
    ],
)
def test_it_expands_minute_lists_ranges_and_steps(minute_field: str, minutes: list[int]) -> None:
    times = fire_times(
        CronSchedule(f"{minute_field} 0 * * *", "UTC"), utc("2025-01-01 00:00"), 60, inclusive=True
    )
    assert [t.minute for t in times if t < utc("2025-01-01 01:00")] == minutes


@pytest.mark.parametrize(
    ("dow_field", "weekdays"),
    [  # weekdays as cron numbers, Sunday 0; the week starts Sunday 2025-06-01
        ("0", [0]),
        ("7", [0]),
        ("0,7", [0]),
        ("5-7", [0, 5, 6]),
        ("1-5", [1, 2, 3, 4, 5]),
        ("mon-fri", [1, 2, 3, 4, 5]),
        ("MON,wed,Fri", [1, 3, 5]),
        ("sun", [0]),
        ("sat,sun", [0, 6]),
        ("*/2", [0, 2, 4, 6]),
        ("*/3", [0, 3, 6]),
        ("1-7/2", [0, 1, 3, 5]),
        ("tue-sat/2", [2, 4, 6]),
    ],
)
def test_it_expands_day_of_week_with_names_and_both_sundays(dow_field: str, weekdays: list[int]) -> None:
    times = fire_times(
        CronSchedule(f"0 0 * * {dow_field}", "UTC"), utc("2025-06-01 00:00"), 7, inclusive=True
    )
    assert sorted((t.isoweekday() % 7) for t in times if t < utc("2025-06-08 00:00")) == weekdays


@pytest.mark.parametrize(
    ("month_field", "months"),
    [
        ("jan,mar-may", [1, 3, 4, 5]),
        ("*/4", [1, 5, 9]),
        ("dec", [12]),
        ("feb-apr/2", [2, 4]),
        ("6-12/3", [6, 9, 12]),
    ],
)
def test_it_expands_months_with_names(month_field: str, months: list[int]) -> None:
    times = fire_times(
        CronSchedule(f"0 0 1 {month_field} *", "UTC"), utc("2025-01-01 00:00"), 12, inclusive=True
    )
    assert [t.month for t in times if t.year == 2025] == months


@pytest.mark.parametrize(
    ("macro", "after", "expected"),
    [
        ("@yearly", "2025-03-04 05:06", ["2026-01-01T00:00+00:00", "2027-01-01T00:00+00:00"]),
        ("@annually", "2025-03-04 05:06", ["2026-01-01T00:00+00:00", "2027-01-01T00:00+00:00"]),
        ("@monthly", "2025-03-04 05:06", ["2025-04-01T00:00+00:00", "2025-05-01T00:00+00:00"]),
        ("@weekly", "2025-03-04 05:06", ["2025-03-09T00:00+00:00", "2025-03-16T00:00+00:00"]),  # Sundays
        ("@daily", "2025-03-04 05:06", ["2025-03-05T00:00+00:00", "2025-03-06T00:00+00:00"]),
        ("@midnight", "2025-03-04 05:06", ["2025-03-05T00:00+00:00", "2025-03-06T00:00+00:00"]),
        ("@hourly", "2025-03-04 05:06", ["2025-03-04T06:00+00:00", "2025-03-04T07:00+00:00"]),
    ],
)
def test_each_macro_fires_like_its_expansion(macro: str, after: str, expected: list[str]) -> None:
    assert local_runs(macro, "UTC", after, 2) == expected


def test_day_of_month_and_day_of_week_are_ored_when_both_are_restricted() -> None:
    # The 13th of each month, and every Friday (06-13 is both).
    assert local_runs("0 0 13 * fri", "UTC", "2025-06-01 00:00", 6) == [
        "2025-06-06T00:00+00:00",
        "2025-06-13T00:00+00:00",
        "2025-06-20T00:00+00:00",
        "2025-06-27T00:00+00:00",
        "2025-07-04T00:00+00:00",
        "2025-07-11T00:00+00:00",
    ]
    assert local_runs("0 0 1,15 * 3", "UTC", "2025-10-01 00:00", 4) == [
        "2025-10-08T00:00+00:00",  # Wednesday
        "2025-10-15T00:00+00:00",  # the 15th (and a Wednesday)
        "2025-10-22T00:00+00:00",
        "2025-10-29T00:00+00:00",
    ]


def test_a_day_field_starting_with_a_star_is_not_a_restriction_so_the_days_are_anded() -> None:
    # cronie: "*/2" in day-of-month is a star field, so "odd days AND Mondays" (croniter would OR them).
    assert local_runs("0 0 */2 * mon", "UTC", "2025-06-01 00:00", 3) == [
        "2025-06-09T00:00+00:00",
        "2025-06-23T00:00+00:00",
        "2025-07-07T00:00+00:00",
    ]
    assert local_runs("0 0 1 * *", "UTC", "2025-06-01 00:00", 1) == ["2025-07-01T00:00+00:00"]
    assert local_runs("0 0 * * 1", "UTC", "2025-06-01 00:00", 1) == ["2025-06-02T00:00+00:00"]


def test_a_leap_day_job_waits_for_the_next_leap_year() -> None:
    assert local_runs("0 0 29 2 *", "UTC", "2025-01-01 00:00", 2) == [
        "2028-02-29T00:00+00:00",
        "2032-02-29T00:00+00:00",
    ]
    # 2100 is not a leap year.
    assert local_runs("0 12 29 feb *", "UTC", "2096-03-01 00:00", 1) == ["2104-02-29T12:00+00:00"]


def test_a_rare_anded_day_still_fires() -> None:
    # February 29th that is a Sunday ("*/7" in day-of-week is a star field: 0 and 7, both Sunday).
    assert local_runs("0 0 29 2 */7", "UTC", "2025-01-01 00:00", 1) == ["2032-02-29T00:00+00:00"]


def test_it_crosses_month_and_year_ends() -> None:
    assert local_runs("59 23 31 * *", "UTC", "2025-12-31 23:58", 3) == [
        "2025-12-31T23:59+00:00",
        "2026-01-31T23:59+00:00",
        "2026-03-31T23:59+00:00",
    ]


def test_it_gives_none_when_nothing_fires_before_year_9999_ends() -> None:
    assert CronSchedule("0 0 1 1 *", "UTC").next_after(utc("9999-06-01 00:00")) is None
    assert fire_times(CronSchedule("0 0 1 1 *", "UTC"), utc("9998-06-01 00:00"), 5) == [
        utc("9999-01-01 00:00")
    ]
    assert CronSchedule("59 23 31 12 *", "America/New_York").next_after(utc("9999-12-01 00:00")) is None
    assert CronSchedule("* * * * *", "Asia/Kolkata").next_after(datetime.max.replace(tzinfo=UTC)) is None


# --- cron: next_after contract ------------------------------------------------------------------------------


def test_next_after_is_strictly_after_unless_inclusive() -> None:
    schedule = CronSchedule("*/5 * * * *", "UTC")
    assert schedule.next_after(utc("2025-01-01 10:05")) == utc("2025-01-01 10:10")
    assert schedule.next_after(utc("2025-01-01 10:05"), inclusive=True) == utc("2025-01-01 10:05")
    assert schedule.next_after(utc("2025-01-01 10:05:00.000001"), inclusive=True) == utc("2025-01-01 10:10")
    assert schedule.next_after(utc("2025-01-01 10:04:59.999999")) == utc("2025-01-01 10:05")


def test_next_after_takes_any_zone_and_answers_in_utc() -> None:
    schedule = CronSchedule("0 9 * * *", "Europe/Berlin")
    new_york = datetime(2025, 6, 1, 12, 0, tzinfo=ZoneInfo("America/New_York"))  # 16:00Z, 18:00 in Berlin
    result = schedule.next_after(new_york)
    assert result == utc("2025-06-02 07:00")
    assert result is not None and result.tzinfo is UTC


def test_next_after_rejects_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        CronSchedule("* * * * *", "UTC").next_after(datetime(2025, 1, 1))


# --- cron in real zones, DST --------------------------------------------------------------------------------
# Europe/Berlin 2025: spring forward 2025-03-30 01:00Z (02:00 CET -> 03:00 CEST),
#                     fall back    2025-10-26 01:00Z (03:00 CEST -> 02:00 CET).
# America/New_York 2025: spring forward 2025-03-09 07:00Z (02:00 EST -> 03:00 EDT),
#                        fall back    2025-11-02 06:00Z (02:00 EDT -> 01:00 EST).
# Australia/Lord_Howe 2025 (30-minute shift): fall back 2025-04-05 15:00Z (02:00 +11 -> 01:30 +10:30),
#                                             spring forward 2025-10-04 15:30Z (02:00 +10:30 -> 02:30 +11).
# Asia/Kolkata: +05:30 all year.
# Pacific/Apia: 2011-12-30 10:00Z jumped from 12-29 24:00 -10 to 12-31 00:00 +14; 2011-12-30 never happened.


@pytest.mark.parametrize(
    ("expression", "zone", "after", "expected"),
    [
        # A fixed time in the spring gap runs once, at the first instant after the gap.
        ("30 2 * * *", "Europe/Berlin", "2025-03-29 12:00",
         ["2025-03-30T03:00+02:00", "2025-03-31T02:30+02:00"]),
        ("0 2 * * *", "Europe/Berlin", "2025-03-29 12:00",
         ["2025-03-30T03:00+02:00", "2025-03-31T02:00+02:00"]),
        ("30 2 * * *", "America/New_York", "2025-03-08 12:00",
         ["2025-03-09T03:00-04:00", "2025-03-10T02:30-04:00"]),
        ("15 2 * * *", "Australia/Lord_Howe", "2025-10-04 00:00",
         ["2025-10-05T02:30+11:00", "2025-10-06T02:15+11:00"]),
        # Several fixed times in one gap run once between them; a time after the gap still runs.
        ("0,30 2 * * *", "Europe/Berlin", "2025-03-29 12:00",
         ["2025-03-30T03:00+02:00", "2025-03-31T02:00+02:00", "2025-03-31T02:30+02:00"]),
        ("30 2,3 * * *", "Europe/Berlin", "2025-03-29 12:00",
         ["2025-03-30T03:00+02:00", "2025-03-30T03:30+02:00", "2025-03-31T02:30+02:00"]),
        ("0 2,3 * * *", "Europe/Berlin", "2025-03-29 12:00",
         ["2025-03-30T03:00+02:00", "2025-03-31T02:00+02:00", "2025-03-31T03:00+02:00"]),
        # A fixed time in the repeated hour runs once, the first time.
        ("30 2 * * *", "Europe/Berlin", "2025-10-25 12:00",
         ["2025-10-26T02:30+02:00", "2025-10-27T02:30+01:00"]),
        ("30 1 * * *", "America/New_York", "2025-11-01 12:00",
         ["2025-11-02T01:30-04:00", "2025-11-03T01:30-05:00"]),
        ("45 1 * * *", "Australia/Lord_Howe", "2025-04-05 00:00",
         ["2025-04-06T01:45+11:00", "2025-04-07T01:45+10:30"]),
        ("*/20 2 * * *", "Europe/Berlin", "2025-10-25 12:00",
         ["2025-10-26T02:00+02:00", "2025-10-26T02:20+02:00",
          "2025-10-26T02:40+02:00", "2025-10-27T02:00+01:00"]),
        # A wildcard hour follows elapsed time: nothing in the gap, the repeated hour twice.
        ("0 * * * *", "Europe/Berlin", "2025-03-29 23:30",
         ["2025-03-30T01:00+01:00", "2025-03-30T03:00+02:00", "2025-03-30T04:00+02:00"]),
        ("0 * * * *", "Europe/Berlin", "2025-10-25 22:30",
         ["2025-10-26T01:00+02:00", "2025-10-26T02:00+02:00",
          "2025-10-26T02:00+01:00", "2025-10-26T03:00+01:00"]),
        ("*/30 * * * *", "America/New_York", "2025-11-02 04:45",
         ["2025-11-02T01:00-04:00", "2025-11-02T01:30-04:00",
          "2025-11-02T01:00-05:00", "2025-11-02T01:30-05:00",
          "2025-11-02T02:00-05:00"]),
        ("0 */2 * * *", "America/New_York", "2025-03-09 04:30",
         ["2025-03-09T00:00-05:00", "2025-03-09T04:00-04:00"]),
        ("0 * * * *", "Australia/Lord_Howe", "2025-10-04 13:45",
         ["2025-10-05T01:00+10:30", "2025-10-05T03:00+11:00"]),
        ("15 * * * *", "Australia/Lord_Howe", "2025-04-05 14:00",
         ["2025-04-06T01:15+11:00", "2025-04-06T02:15+10:30", "2025-04-06T03:15+10:30"]),
        ("*/15 1 * * *", "Australia/Lord_Howe", "2025-04-05 13:30",  # fixed hour: 01:30 and 01:45 once
         ["2025-04-06T01:00+11:00", "2025-04-06T01:15+11:00",
          "2025-04-06T01:30+11:00", "2025-04-06T01:45+11:00",
          "2025-04-07T01:00+10:30"]),
        # No DST in Kolkata: fixed times are plain, midnight there is 18:30Z the day before.
        ("30 9 * * *", "Asia/Kolkata", "2025-03-29 00:00",
         ["2025-03-29T09:30+05:30", "2025-03-30T09:30+05:30"]),
        ("@daily", "Asia/Kolkata", "2025-10-25 12:00", ["2025-10-26T00:00+05:30", "2025-10-27T00:00+05:30"]),
        # Apia skipped a whole day: that is a calendar change, not DST, so nothing runs for 12-30.
        ("0 10 * * *", "Pacific/Apia", "2011-12-29 10:00",
         ["2011-12-29T10:00-10:00", "2011-12-31T10:00+14:00", "2012-01-01T10:00+14:00"]),
        ("0 0 30 12 *", "Pacific/Apia", "2011-06-01 00:00", ["2012-12-30T00:00+14:00"]),
        ("0 23 * * *", "Pacific/Apia", "2011-12-29 10:00",
         ["2011-12-29T23:00-10:00", "2011-12-31T23:00+14:00"]),
    ],
)  # fmt: skip
def test_it_runs_at_these_local_times_around_transitions(
    expression: str, zone: str, after: str, expected: list[str]
) -> None:
    assert local_runs(expression, zone, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "zone", "day", "count"),
    [
        ("0 * * * *", "Europe/Berlin", date(2025, 3, 30), 23),
        ("0 * * * *", "Europe/Berlin", date(2025, 10, 26), 25),
        ("*/15 * * * *", "Europe/Berlin", date(2025, 3, 30), 92),
        ("*/15 * * * *", "Europe/Berlin", date(2025, 10, 26), 100),
        ("0 * * * *", "America/New_York", date(2025, 3, 9), 23),
        ("0 * * * *", "America/New_York", date(2025, 11, 2), 25),
        ("*/15 * * * *", "America/New_York", date(2025, 3, 9), 92),
        ("*/15 * * * *", "America/New_York", date(2025, 11, 2), 100),
        ("@hourly", "America/New_York", date(2025, 11, 2), 25),
        # Lord Howe moves 30 minutes: 02:00 is skipped, 01:30-02:00 repeats (01:00 and 02:00 do not).
        ("0 * * * *", "Australia/Lord_Howe", date(2025, 10, 5), 23),
        ("0 * * * *", "Australia/Lord_Howe", date(2025, 4, 6), 24),
        ("*/15 * * * *", "Australia/Lord_Howe", date(2025, 10, 5), 94),
        ("*/15 * * * *", "Australia/Lord_Howe", date(2025, 4, 6), 98),
        ("0 * * * *", "Asia/Kolkata", date(2025, 3, 30), 24),
        ("*/15 * * * *", "Asia/Kolkata", date(2025, 10, 26), 96),
        # Fixed times: one run a day whatever the transition.
        ("30 2 * * *", "Europe/Berlin", date(2025, 3, 30), 1),
        ("30 2 * * *", "Europe/Berlin", date(2025, 10, 26), 1),
        ("0 2,3 * * *", "Europe/Berlin", date(2025, 3, 30), 1),
        ("0 2,3 * * *", "Europe/Berlin", date(2025, 10, 26), 2),
        ("0 0-23 * * *", "Europe/Berlin", date(2025, 10, 26), 24),  # a range is fixed, like a list
        ("0 1-3 * * *", "America/New_York", date(2025, 11, 2), 3),
        ("0 10 * * *", "Pacific/Apia", date(2011, 12, 29), 1),
        ("0 10 * * *", "Pacific/Apia", date(2011, 12, 31), 1),
        ("0 * * * *", "Pacific/Apia", date(2011, 12, 29), 24),
    ],
)
def test_it_runs_this_many_times_on_transition_days(
    expression: str, zone: str, day: date, count: int
) -> None:
    times = runs_on(expression, zone, day)
    assert len(times) == count
    assert len(set(times)) == count


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [  # Berlin fall back: 00:00Z-01:00Z is 02:xx CEST (first pass), 01:00Z-02:00Z is 02:xx CET (second pass).
        ("*/30 * * * *", "2025-10-26 00:45", "2025-10-26 01:00"),  # first pass: 02:00 comes round again
        ("15 * * * *", "2025-10-26 00:45", "2025-10-26 01:15"),  # 02:15 CET
        ("15 * * * *", "2025-10-26 00:10", "2025-10-26 00:15"),  # 02:15 CEST
        ("*/30 * * * *", "2025-10-26 01:10", "2025-10-26 01:30"),  # second pass
        ("15 * * * *", "2025-10-26 01:20", "2025-10-26 02:15"),  # 03:15 CET
        ("30 2 * * *", "2025-10-26 00:10", "2025-10-26 00:30"),
        ("30 2 * * *", "2025-10-26 00:30", "2025-10-27 01:30"),  # not again at 02:30 CET
        ("30 2 * * *", "2025-10-26 01:10", "2025-10-27 01:30"),
        ("0 3 * * *", "2025-10-26 00:30", "2025-10-26 02:00"),
    ],
)
def test_next_after_needs_no_state_inside_a_repeated_hour(expression: str, after: str, expected: str) -> None:
    assert CronSchedule(expression, "Europe/Berlin").next_after(utc(after)) == utc(expected)


def test_a_job_that_ran_at_the_end_of_a_gap_does_not_run_again_for_the_gap() -> None:
    schedule = CronSchedule("0,30 2 * * *", "Europe/Berlin")
    gap_end = utc("2025-03-30 01:00")
    assert schedule.next_after(gap_end, inclusive=True) == gap_end
    assert schedule.next_after(gap_end) == utc("2025-03-31 00:00")
    assert schedule.next_after(utc("2025-03-30 00:59:59")) == gap_end


# --- intervals ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1w", timedelta(weeks=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("  2h  ", timedelta(hours=2)),
        ("1h 30m", timedelta(hours=1, minutes=30)),
        ("30m1h", timedelta(hours=1, minutes=30)),
        ("1w2d3h4m5s", timedelta(weeks=1, days=2, hours=3, minutes=4, seconds=5)),
        ("90s", timedelta(seconds=90)),
        ("366d", timedelta(days=366)),
        ("1s", timedelta(seconds=1)),
    ],
)
def test_it_parses_intervals(text: str, expected: timedelta) -> None:
    assert parse_interval(text) == expected


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("5M", "unknown unit 'M' (minutes are '5m'; months need a cron expression such as '0 0 1 * *')"),
        ("5 mins", "unknown unit 'mins' (write '5m')"),
        ("2 hours", "unknown unit 'hours' (write '2h')"),
        ("10 Seconds", "unknown unit 'Seconds' (write '10s')"),
        ("1h 30min", "unknown unit 'min' (write '30m')"),
        ("3 fortnights", "unknown unit 'fortnights'"),
    ],
)
def test_interval_mistakes_get_a_hint_and_the_accepted_forms(text: str, hint: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_schedule(text, anchor=ANCHOR)
    assert caught.value.reason == f"{hint}; {INTERVAL_FORMS}"
    assert "'30s', '5m', '1h30m', '1d', '1w'" in INTERVAL_FORMS


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("0s", "longer than zero"),
        ("0h0m", "longer than zero"),
        ("-5m", "must be positive"),
        ("5x", "unknown unit 'x'"),
        ("5", "not an interval"),
        ("m", "not an interval"),
        ("", "not an interval"),
        ("1.5h", "not an interval"),
        ("+5m", "not an interval"),
        ("5ms", "unknown unit 'ms'"),
        ("1H30M", "unknown unit 'H' (write '1h')"),
        ("1h1h", "the unit 'h' appears twice"),
        ("367d", "at most 366 days"),
        ("53w", "at most 366 days"),
        ("99999999999999999999999d", "at most 366 days"),
        ("\uff15m", "not an interval"),  # a full-width digit five
    ],
)
def test_it_rejects_bad_intervals(text: str, reason: str) -> None:
    with pytest.raises(InvalidSchedule) as caught:
        parse_interval(text)
    assert reason in caught.value.reason


def test_an_interval_fires_at_its_anchor_then_every_period() -> None:
    schedule = IntervalSchedule(every=timedelta(minutes=5), anchor=utc("2025-01-01 12:00"))
    assert schedule.next_after(utc("2025-01-01 11:00")) == utc("2025-01-01 12:00")
    assert schedule.next_after(utc("2025-01-01 12:00")) == utc("2025-01-01 12:05")
    assert schedule.next_after(utc("2025-01-01 12:00"), inclusive=True) == utc("2025-01-01 12:00")
    assert schedule.next_after(utc("2025-01-01 12:07:30")) == utc("2025-01-01 12:10")
    assert schedule.next_after(utc("2025-01-01 12:10"), inclusive=True) == utc("2025-01-01 12:10")
    assert schedule.next_after(utc("2025-01-01 12:10")) == utc("2025-01-01 12:15")


def test_an_interval_does_not_drift() -> None:
    anchor = datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC)
    schedule = IntervalSchedule(every=timedelta(seconds=7, microseconds=1), anchor=anchor)
    late = anchor + 10_000 * timedelta(seconds=7, microseconds=1) - timedelta(seconds=3)  # a late planner
    assert schedule.next_after(late) == datetime(2025, 1, 2, 7, 26, 40, 133456, tzinfo=UTC)  # + 70000.01 s
    times = fire_times(schedule, anchor, 10_001, inclusive=True)
    assert times[-1] == anchor + 10_000 * timedelta(seconds=7, microseconds=1)
    assert {b - a for a, b in pairwise(times)} == {timedelta(seconds=7, microseconds=1)}


def test_a_daily_interval_is_24_hours_of_elapsed_time_across_dst() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    schedule = parse_schedule(
        "1d", timezone="Europe/Berlin", anchor=datetime(2025, 3, 29, 9, 0, tzinfo=berlin)
    )
    times = fire_times(schedule, utc("2025-03-29 00:00"), 3)
    assert [t.astimezone(berlin).isoformat(timespec="minutes") for t in times] == [
        "2025-03-29T09:00+01:00",
        "2025-03-30T10:00+02:00",
        "2025-03-31T10:00+02:00",
    ]


def test_an_interval_anchor_in_any_zone_is_kept_in_utc() -> None:
    anchor = datetime(2025, 6, 1, 9, 0, tzinfo=ZoneInfo("Asia/Kolkata"))
    schedule = parse_schedule("1h30m", anchor=anchor)
    assert schedule == IntervalSchedule(every=timedelta(minutes=90), anchor=utc("2025-06-01 03:30"))
    assert isinstance(schedule, IntervalSchedule) and schedule.anchor.tzinfo is UTC


def test_an_interval_needs_a_positive_period_and_an_aware_anchor() -> None:
    with pytest.raises(InvalidSchedule):
        IntervalSchedule(every=timedelta(0), anchor=ANCHOR)
    with pytest.raises(ValueError, match="timezone-aware"):
        IntervalSchedule(every=timedelta(minutes=1), anchor=datetime(2025, 1, 1))


def test_an_interval_past_the_end_of_time_gives_none() -> None:
    schedule = IntervalSchedule(every=timedelta(days=366), anchor=utc("9999-01-01 00:00"))
    assert schedule.next_after(utc("9999-06-01 00:00")) is None


# --- once and manual ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "zone", "at"),
    [
        ("2026-12-01T02:00:00Z", "Europe/Berlin", "2026-12-01 02:00"),
        ("2026-12-01T02:00:00+00:00", "UTC", "2026-12-01 02:00"),
        ("2026-12-01T07:30:00+05:30", "Europe/Berlin", "2026-12-01 02:00"),
        ("2026-12-01T02:00:00", "Europe/Berlin", "2026-12-01 01:00"),  # no offset: wall time in the zone
        ("2026-12-01 02:00", "America/New_York", "2026-12-01 07:00"),
        ("2026-12-01", "Asia/Kolkata", "2026-11-30 18:30"),
        ("2025-03-30T02:30:00", "Europe/Berlin", "2025-03-30 01:00"),  # in the gap: its end
        ("2025-10-26T02:30:00", "Europe/Berlin", "2025-10-26 00:30"),  # repeated: the first
        ("2011-12-30T10:00:00", "Pacific/Apia", "2011-12-30 10:00"),  # a day that never happened: its end
    ],
)
def test_it_parses_iso_instants_with_and_without_an_offset(text: str, zone: str, at: str) -> None:
    assert parse_schedule(text, timezone=zone, anchor=ANCHOR) == OnceSchedule(at=utc(at))


def test_once_fires_only_at_its_instant() -> None:
    schedule = OnceSchedule(at=utc("2026-12-01 02:00"))
    assert schedule.next_after(utc("2026-12-01 01:59")) == utc("2026-12-01 02:00")
    assert schedule.next_after(utc("2026-12-01 02:00")) is None
    assert schedule.next_after(utc("2026-12-01 02:00"), inclusive=True) == utc("2026-12-01 02:00")
    assert fire_times(schedule, utc("2020-01-01 00:00"), 5) == [utc("2026-12-01 02:00")]


def test_now_is_once_at_the_anchor() -> None:
    anchor = datetime(2025, 6, 1, 9, 0, tzinfo=ZoneInfo("America/New_York"))
    schedule = parse_schedule("now", anchor=anchor)
    assert schedule == OnceSchedule(at=utc("2025-06-01 13:00"))
    assert schedule.next_after(anchor, inclusive=True) == utc("2025-06-01 13:00")


def test_manual_never_fires() -> None:
    schedule = parse_schedule("manual", anchor=ANCHOR)
    assert schedule.next_after(ANCHOR) is None
    assert schedule.next_after(ANCHOR, inclusive=True) is None
    assert fire_times(schedule, ANCHOR, 10) == []


# --- fire_times ---------------------------------------------------------------------------------------------


def test_fire_times_lists_up_to_count_times_in_utc() -> None:
    times = fire_times(CronSchedule("0 9 * * mon-fri", "Europe/Berlin"), utc("2025-06-06 06:00"), 3)
    assert times == [utc("2025-06-06 07:00"), utc("2025-06-09 07:00"), utc("2025-06-10 07:00")]
    assert all(t.tzinfo is UTC for t in times)
    assert fire_times(CronSchedule("0 9 * * *", "UTC"), utc("2025-06-06 09:00"), 1, inclusive=True) == [
        utc("2025-06-06 09:00")
    ]
    assert fire_times(CronSchedule("0 9 * * *", "UTC"), ANCHOR, 0) == []
    with pytest.raises(ValueError):
        fire_times(CronSchedule("0 9 * * *", "UTC"), ANCHOR, -1)


# --- legacy zone names -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "warning"),
    [
        ("EST", "time zone 'EST' has no daylight saving (UTC-05:00 all year); for US Eastern time use "
                "'America/New_York'"),
        ("MST", "time zone 'MST' has no daylight saving (UTC-07:00 all year); for US Mountain time use "
                "'America/Denver'"),
        ("HST", "time zone 'HST' has no daylight saving (UTC-10:00 all year); for Hawaii time use "
                "'Pacific/Honolulu'"),
        ("EST5EDT", "for US Eastern time use 'America/New_York'"),
        ("PST8PDT", "for US Pacific time use 'America/Los_Angeles'"),
    ],
)  # fmt: skip
def test_a_legacy_zone_name_gets_a_warning_naming_the_likely_zone(name: str, warning: str) -> None:
    validate_timezone(name)  # still valid: a warning, not an error
    found = timezone_warning(name)
    assert found is not None and warning in found


@pytest.mark.parametrize("name", ["UTC", "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Etc/GMT+5"])
def test_an_iana_zone_name_gets_no_warning(name: str) -> None:
    assert timezone_warning(name) is None
