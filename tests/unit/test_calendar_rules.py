"""Exclusion calendars (scheduler.rules.calendars): entries, ICS files, and which slots a calendar leaves out,
judged on the slot's local day, with real instants across DST changes and in zones whose day starts at a
shifted offset."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from scheduler.errors import InvalidField
from scheduler.rules.calendars import CalendarDays, CalendarRule, local_day, parse_entries, parse_ics


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_entries_are_dates_inclusive_ranges_and_weekdays() -> None:
    days = parse_entries(["2026-12-25", " 2026-12-30..2027-01-01 ", "sat", "Sunday"])
    assert days.to_json() == {
        "dates": ["2026-12-25"],
        "ranges": [["2026-12-30", "2027-01-01"]],
        "weekdays": ["sat", "sun"],
    }
    assert CalendarDays.from_json(days.to_json()) == days
    inside = [date(2026, 12, 25), date(2026, 12, 30), date(2027, 1, 1), date(2026, 12, 5), date(2026, 12, 6)]
    outside = [date(2026, 12, 24), date(2026, 12, 29), date(2027, 1, 4), date(2026, 12, 7)]
    assert [days.contains(d) for d in inside] == [True] * 5
    assert [days.contains(d) for d in outside] == [False] * 4


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("2026-13-01", "invalid calendar: '2026-13-01' is not a date (month must be in 1..12)"),
        ("2026-02-30", "invalid calendar: '2026-02-30' is not a date (day is out of range for month)"),
        (
            "25.12.2026",
            "invalid calendar: '25.12.2026' is not a date (YYYY-MM-DD), a range A..B or a weekday",
        ),
        ("holiday", "invalid calendar: 'holiday' is not a date (YYYY-MM-DD), a range A..B or a weekday"),
        (
            "2026-12-31..2026-12-01",
            "invalid calendar: the range '2026-12-31..2026-12-01' ends before it starts",
        ),
        ("2026-12-01..", "invalid calendar: '' is not a date (YYYY-MM-DD), a range A..B or a weekday"),
    ],
)
def test_a_malformed_entry_is_one_clear_error(entry: str, message: str) -> None:
    with pytest.raises(InvalidField) as error:
        parse_entries(["2026-12-25", entry])
    assert str(error.value) == message


ICS = """BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//holidays//EN\r
BEGIN:VEVENT\r
UID:1\r
DTSTART;VALUE=DATE:20261225\r
DTEND;VALUE=DATE:20261227\r
SUMMARY:Christmas\r
 (two days)\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:2\r
DTSTART;VALUE=DATE:20270101\r
SUMMARY:New year, no DTEND\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:3\r
DTSTART:20260704T090000Z\r
DTEND:20260704T170000Z\r
END:VEVENT\r
END:VCALENDAR\r
"""


def test_ics_all_day_events_end_the_day_before_dtend() -> None:
    days = parse_ics(ICS)
    assert days.to_json() == {
        "dates": ["2026-07-04", "2027-01-01"],
        "ranges": [["2026-12-25", "2026-12-26"]],
        "weekdays": [],
    }
    assert not days.contains(date(2026, 12, 27))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hello", "invalid ics: not an iCalendar file (it must start with BEGIN:VCALENDAR)"),
        ("", "invalid ics: not an iCalendar file (it must start with BEGIN:VCALENDAR)"),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\n",
            "invalid ics: not a complete iCalendar file (it must end with END:VCALENDAR)",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261332\nEND:VEVENT\nEND:VCALENDAR",
            "invalid ics: line 3: '20261332' is not a date (month must be in 1..12)",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART:tomorrow\nEND:VEVENT\nEND:VCALENDAR",
            "invalid ics: line 3: 'tomorrow' is not an iCalendar date",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nSUMMARY:x\nEND:VEVENT\nEND:VCALENDAR",
            "invalid ics: line 4: an event without DTSTART",
        ),
        (
            "BEGIN:VCALENDAR\nBEGIN:VEVENT\nDTSTART;VALUE=DATE:20261225\nRRULE:FREQ=YEARLY\nEND:VEVENT\n"
            "END:VCALENDAR",
            "invalid ics: line 4: recurring events (RRULE) are not supported",
        ),
    ],
)
def test_a_file_that_is_not_ics_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(InvalidField) as error:
        parse_ics(text)
    assert str(error.value) == message


HOLIDAY = (("holiday", parse_entries(["2026-11-01"])),)


@pytest.mark.parametrize(
    ("zone", "instant", "excluded"),
    [
        # Kiritimati is UTC+14: its 1 November starts at 10:00 UTC on 31 October.
        ("Pacific/Kiritimati", "2026-10-31T09:59:59", False),
        ("Pacific/Kiritimati", "2026-10-31T10:00:00", True),
        ("Pacific/Kiritimati", "2026-11-01T09:59:59", True),
        ("Pacific/Kiritimati", "2026-11-01T10:00:00", False),
        # Kathmandu is UTC+05:45.
        ("Asia/Kathmandu", "2026-10-31T18:14:59", False),
        ("Asia/Kathmandu", "2026-10-31T18:15:00", True),
        # New York falls back on 1 November 2026 at 02:00 EDT: the day starts at 04:00 UTC (EDT) and
        # ends at 05:00 UTC on 2 November (EST): 25 hours.
        ("America/New_York", "2026-11-01T03:59:59", False),
        ("America/New_York", "2026-11-01T04:00:00", True),
        ("America/New_York", "2026-11-01T05:30:00", True),  # 01:30 EDT
        ("America/New_York", "2026-11-01T06:30:00", True),  # 01:30 EST, the repeated hour
        ("America/New_York", "2026-11-02T04:59:59", True),
        ("America/New_York", "2026-11-02T05:00:00", False),
        # Lord Howe Island moves by 30 minutes (UTC+11 in summer, from 4 October 2026).
        ("Australia/Lord_Howe", "2026-10-31T12:59:59", False),
        ("Australia/Lord_Howe", "2026-10-31T13:00:00", True),
        # UTC itself: the calendar day is the UTC day.
        ("UTC", "2026-10-31T23:59:59", False),
        ("UTC", "2026-11-01T00:00:00", True),
    ],
)
def test_a_holiday_is_the_local_day_of_the_slot(zone: str, instant: str, excluded: bool) -> None:
    rule = CalendarRule(zone, exclude=HOLIDAY)
    reason = rule.reason(utc(instant))
    assert (reason is not None) is excluded
    if excluded:
        assert reason == "excluded by calendar 'holiday' (2026-11-01)"
        assert local_day(utc(instant), zone) == date(2026, 11, 1)


def test_only_in_runs_on_business_days_and_exclude_wins() -> None:
    business = ("business", parse_entries(["mon", "tue", "wed", "thu", "fri"]))
    rule = CalendarRule("Europe/Berlin", exclude=HOLIDAY, only_in=(business,))
    # Sunday 1 November 2026 in Berlin; Monday 2 November; Sunday 29 March (spring forward) at 00:30 CET.
    assert rule.reason(utc("2026-11-01T12:00:00")) == "excluded by calendar 'holiday' (2026-11-01)"
    assert rule.reason(utc("2026-11-02T08:00:00")) is None
    assert rule.reason(utc("2026-10-31T23:30:00")) == "excluded by calendar 'holiday' (2026-11-01)"
    assert rule.reason(utc("2026-03-28T23:30:00")) == "outside calendar 'business' (2026-03-29)"
    assert rule.reason(utc("2026-03-29T22:30:00")) is None  # 00:30 CEST on Monday 30 March
