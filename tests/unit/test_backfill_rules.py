"""Backfill slots, DST notes and the end of a timed pause (scheduler.rules.backfills): real instants."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from test_validation_timing import task

from scheduler.errors import InvalidField
from scheduler.records import Task
from scheduler.rules.backfills import backfill_range, dst_notes, resume_after_pause

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def cron(expression: str, zone: str, **overrides: Any) -> Task:
    made: Task = task(schedule=expression, schedule_kind="cron", timezone=zone, **overrides)
    return made


# (cron, zone, from, to, the slots in UTC). Each slot once; the wall times a DST change repeats or skips
# follow the cron rules of scheduler:next.
SLOTS = [
    # Berlin falls back on 2026-10-25 (03:00 CEST -> 02:00 CET): an hourly job has both 02:30s, a daily one
    # the first only.
    ("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00", "2026-10-25T02:45:00",
     ["2026-10-24T23:30:00", "2026-10-25T00:30:00", "2026-10-25T01:30:00", "2026-10-25T02:30:00"]),
    ("30 2 * * *", "Europe/Berlin", "2026-10-24T00:00:00", "2026-10-26T12:00:00",
     ["2026-10-24T00:30:00", "2026-10-25T00:30:00", "2026-10-26T01:30:00"]),
    # Berlin springs forward on 2026-03-29 (02:00 CET -> 03:00 CEST): 02:30 does not exist, it runs at 03:00.
    ("30 2 * * *", "Europe/Berlin", "2026-03-28T00:00:00", "2026-03-30T12:00:00",
     ["2026-03-28T01:30:00", "2026-03-29T01:00:00", "2026-03-30T00:30:00"]),
    # New York falls back on 2026-11-01 (02:00 EDT -> 01:00 EST).
    ("0 1 * * *", "America/New_York", "2026-10-31T00:00:00", "2026-11-02T12:00:00",
     ["2026-10-31T05:00:00", "2026-11-01T05:00:00", "2026-11-02T06:00:00"]),
    # The range is inclusive at both ends.
    ("0 * * * *", "UTC", "2026-01-01T00:00:00", "2026-01-01T02:00:00",
     ["2026-01-01T00:00:00", "2026-01-01T01:00:00", "2026-01-01T02:00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expression", "zone", "start", "end", "expected"), SLOTS)
def test_backfill_slots_across_dst_changes(
    expression: str, zone: str, start: str, end: str, expected: list[str]
) -> None:
    found = backfill_range(cron(expression, zone), utc(start), utc(end), now=NOW, force=False)
    assert found.slots == [utc(t) for t in expected]


def test_dst_notes_name_the_repeated_wall_time_and_the_offset_change() -> None:
    zone = ZoneInfo("America/New_York")
    times = [utc("2026-11-01T04:30:00"), utc("2026-11-01T05:30:00"), utc("2026-11-01T06:30:00")]
    assert dst_notes(times, zone) == [
        None,
        "first of two 01:30 (clocks go back)",
        "second of two 01:30 (clocks go back); clock change before this run: EDT -> EST",
    ]
    spring = [utc("2026-03-28T01:30:00"), utc("2026-03-29T01:00:00")]
    assert dst_notes(spring, ZoneInfo("Europe/Berlin")) == [
        None,
        "clock change before this run: CET -> CEST",
    ]


@pytest.mark.parametrize(
    ("start", "end", "words"),
    [
        ("2026-01-02T00:00:00", "2026-01-01T00:00:00", "reversed"),
        ("2029-12-31T00:00:00", "2030-01-01T00:00:01", "in the future"),
    ],
)
def test_a_reversed_or_future_range_is_refused(start: str, end: str, words: str) -> None:
    with pytest.raises(InvalidField, match=words):
        backfill_range(cron("0 * * * *", "UTC"), utc(start), utc(end), now=NOW, force=False)


def test_more_than_ten_thousand_slots_need_force_and_a_manual_task_has_none() -> None:
    minutely = cron("* * * * *", "UTC")
    start, end = utc("2026-01-01T00:00:00"), utc("2026-01-07T22:39:00")  # exactly 10,000 slots
    assert len(backfill_range(minutely, start, end, now=NOW, force=False).slots) == 10_000
    with pytest.raises(InvalidField, match="more than 10000 slots; pass --force"):
        backfill_range(minutely, start, utc("2026-01-07T22:40:00"), now=NOW, force=False)
    manual = task(schedule="manual", schedule_kind="manual", next_run_at=None)
    with pytest.raises(InvalidField, match="manual"):
        backfill_range(manual, start, end, now=NOW, force=False)


@pytest.mark.parametrize(
    ("expression", "zone", "until", "expected"),
    [
        # A slot exactly at the end of the pause runs; earlier ones (the paused span) never do.
        ("0 9 * * *", "Europe/Berlin", "2026-10-26T08:00:00", "2026-10-26T08:00:00"),
        ("0 9 * * *", "Europe/Berlin", "2026-10-26T08:00:01", "2026-10-27T08:00:00"),
        # A pause ending inside the repeated hour of New York's fall-back night: the second 01:30 is next.
        ("30 * * * *", "America/New_York", "2026-11-01T05:45:00", "2026-11-01T06:30:00"),
    ],
)
def test_a_timed_pause_resumes_at_the_first_slot_at_or_after_its_end(
    expression: str, zone: str, until: str, expected: str
) -> None:
    assert resume_after_pause(cron(expression, zone), utc(until)) == utc(expected)


def test_a_timed_pause_ending_past_the_tasks_end_resumes_to_nothing() -> None:
    ended = cron("0 9 * * *", "UTC", end_at=utc("2026-01-01T00:00:00"))
    assert resume_after_pause(ended, utc("2026-02-01T00:00:00")) is None
