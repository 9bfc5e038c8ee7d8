"""Several schedules per task and jitter (scheduler.rules.combined, timing, policies, validation): the union
of schedules, the producing schedule of a slot, deterministic offsets, the interval a jitter must fit, and
excluded slots in the planner's decision, with real instants across DST changes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scheduler.commands.loading import load_registry
from scheduler.errors import InvalidField, InvalidSchedule
from scheduler.records import Task
from scheduler.rules.calendars import CalendarRule, parse_entries
from scheduler.rules.combined import CombinedSchedule, jitter_offset, shortest_gap, slot_of
from scheduler.rules.policies import plan_task
from scheduler.rules.schedules import fire_times, parse_schedule
from scheduler.rules.timing import plan_schedule, preview_schedule, task_schedule
from scheduler.rules.validation import validate_changes, validate_new_task
from scheduler.settings import Settings

SETTINGS = Settings()
GAP = "the shortest gap between its slots"
LONGER = "is longer than the schedule's interval"
SEVERAL = "a task with several schedules takes only cron and interval ones"
REGISTRY = load_registry(SETTINGS)


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def combined(
    texts: list[str], zone: str, jitter: timedelta = timedelta(0), task_id: int = 7
) -> CombinedSchedule:
    anchor = utc("2026-01-01T00:00:00")
    parts = tuple((text, parse_schedule(text, timezone=zone, anchor=anchor)) for text in texts)
    return CombinedSchedule(parts, jitter, task_id)


def times(schedule: CombinedSchedule, after: datetime, count: int) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    t: datetime | None = after
    for _ in range(count):
        t = schedule.next_after(t) if t is not None else None
        assert t is not None
        _slot, source = slot_of(schedule, t)
        out.append((t.isoformat().replace("+00:00", "Z"), source))
    return out


def test_weekday_and_weekend_schedules_across_the_berlin_fall_back() -> None:
    # 25 October 2026: Berlin falls back from CEST (UTC+2) to CET (UTC+1) at 03:00 local, a Sunday.
    schedule = combined(["0 9 * * 1-5", "0 12 * * 6,0"], "Europe/Berlin")
    assert times(schedule, utc("2026-10-23T00:00:00"), 5) == [
        ("2026-10-23T07:00:00Z", "0 9 * * 1-5"),  # Friday 09:00 CEST
        ("2026-10-24T10:00:00Z", "0 12 * * 6,0"),  # Saturday 12:00 CEST
        ("2026-10-25T11:00:00Z", "0 12 * * 6,0"),  # Sunday 12:00 CET: one hour later in UTC
        ("2026-10-26T08:00:00Z", "0 9 * * 1-5"),  # Monday 09:00 CET
        ("2026-10-27T08:00:00Z", "0 9 * * 1-5"),
    ]


def test_two_schedules_at_one_instant_are_one_slot_credited_to_the_first() -> None:
    # Both fire at 09:00 on weekdays in New York; across the spring-forward night of 8 March 2026.
    schedule = combined(["0 9 * * 1-5", "0 */3 * * *"], "America/New_York")
    got = times(schedule, utc("2026-03-06T13:30:00"), 6)
    assert got == [
        ("2026-03-06T14:00:00Z", "0 9 * * 1-5"),  # Friday 09:00 EST, also 09:00 of every 3 hours: once
        ("2026-03-06T17:00:00Z", "0 */3 * * *"),
        ("2026-03-06T20:00:00Z", "0 */3 * * *"),
        ("2026-03-06T23:00:00Z", "0 */3 * * *"),
        ("2026-03-07T02:00:00Z", "0 */3 * * *"),
        ("2026-03-07T05:00:00Z", "0 */3 * * *"),
    ]
    sunday = times(schedule, utc("2026-03-08T04:30:00"), 3)  # 23:30 EST on Saturday
    assert sunday == [
        ("2026-03-08T05:00:00Z", "0 */3 * * *"),  # 00:00 EST
        ("2026-03-08T07:00:00Z", "0 */3 * * *"),  # 03:00 EDT: 02:00 does not exist, 03:00 matches */3
        ("2026-03-08T10:00:00Z", "0 */3 * * *"),  # 06:00 EDT
    ]


def test_jitter_offsets_are_deterministic_within_the_window_and_differ_by_task_and_slot() -> None:
    slot = utc("2026-10-25T00:00:00")
    window = timedelta(minutes=15)
    offsets = {jitter_offset(task_id, slot, window) for task_id in range(1, 200)}
    assert all(timedelta(0) <= o < window for o in offsets)
    assert len(offsets) > 150  # spread, not a handful of values
    assert jitter_offset(3, slot, window) == jitter_offset(3, slot, window)
    assert jitter_offset(3, slot, window) != jitter_offset(3, slot + timedelta(hours=1), window)
    assert jitter_offset(3, slot, timedelta(0)) == timedelta(0)


def test_jittered_real_times_map_back_to_their_slots_across_the_repeated_hour() -> None:
    # Hourly in Berlin on the fall-back night: 02:30 CEST and 02:30 CET are two slots an hour apart.
    schedule = combined(["30 * * * *"], "Europe/Berlin", jitter=timedelta(minutes=59), task_id=42)
    start = utc("2026-10-24T22:00:00")
    real: list[datetime] = []
    t: datetime | None = start
    while len(real) < 6:
        t = schedule.next_after(t) if t is not None else None
        assert t is not None
        real.append(t)
    slots = [schedule.nominal(r) for r in real]
    assert slots == [utc(f"2026-10-24T{h}:30:00") for h in ("22", "23")] + [
        utc(f"2026-10-25T0{h}:30:00") for h in range(4)
    ]
    assert real == sorted(real) and len(set(real)) == 6
    assert all(timedelta(0) <= r - s < timedelta(minutes=59) for r, s in zip(real, slots, strict=True))
    assert [r - s for r, s in zip(real, slots, strict=True)] == [schedule.offset(s) for s in slots]
    # Inclusive lookups land on the same real times (the planner's first fire).
    assert schedule.next_after(real[2], inclusive=True) == real[2]
    assert schedule.next_after(real[2] - timedelta(microseconds=1)) == real[2]


def test_the_shortest_gap_sees_the_closest_pair_of_slots() -> None:
    now = utc("2026-03-01T00:00:00")
    assert shortest_gap(parse_schedule("0 * * * *", timezone="UTC", anchor=now), now) == timedelta(hours=1)
    assert shortest_gap(combined(["0 9 * * *", "30 9 * * *"], "UTC"), now) == timedelta(minutes=30)
    assert shortest_gap(parse_schedule("manual", anchor=now), now) is None


@pytest.mark.parametrize(
    ("schedule", "jitter_ms", "message"),
    [
        ("0 * * * *", 3_600_001, f"invalid jitter: 3600.001s {LONGER} (1h, {GAP})"),
        ("5m", 301_000, f"invalid jitter: 5m1s {LONGER} (5m, {GAP})"),
        (["0 9 * * *", "15 9 * * *"], 1_000_000, f"invalid jitter: 16m40s {LONGER} (15m, {GAP})"),
        ("manual", 1000, "invalid jitter: a manual schedule has no interval to spread runs over"),
        ("2031-01-01T00:00:00Z", 1000, "invalid jitter: a once schedule has no interval to spread runs over"),
    ],
)  # fmt: skip
def test_a_jitter_longer_than_the_interval_is_refused(schedule: Any, jitter_ms: int, message: str) -> None:
    now = utc("2030-06-12T10:30:00")
    fields = {"name": "j", "command": "test:echo", "schedule": schedule, "jitter_ms": jitter_ms}
    with pytest.raises(InvalidField) as error:
        validate_new_task(fields, settings=SETTINGS, commands=REGISTRY, now=now)
    assert str(error.value) == message


def test_a_jitter_equal_to_the_interval_is_accepted_and_zero_means_none() -> None:
    now = utc("2030-06-12T10:30:00")
    fields = {"name": "j", "command": "test:echo", "schedule": "0 * * * *"}
    full = validate_new_task(
        {**fields, "jitter_ms": 3_600_000}, settings=SETTINGS, commands=REGISTRY, now=now
    )
    assert full.jitter_ms == 3_600_000 and full.next_run_at is not None
    assert utc("2030-06-12T11:00:00") <= full.next_run_at < utc("2030-06-12T12:00:00")
    none = validate_new_task({**fields, "jitter_ms": 0}, settings=SETTINGS, commands=REGISTRY, now=now)
    assert none.jitter_ms is None and none.next_run_at == utc("2030-06-12T11:00:00")


@pytest.mark.parametrize(
    ("schedule", "error"),
    [
        ([], "invalid schedule: an empty list; give at least one schedule"),
        (["0 9 * * *", "manual"], f"invalid schedule 'manual': {SEVERAL}"),
        (["0 9 * * *", "now"], f"invalid schedule 'now': {SEVERAL}"),
        (["0 9 * * *", "61 * * * *"], "invalid schedule '61 * * * *'"),
        (["0 9 * * *"] * 21, "invalid schedule: 21 schedules (at most 20)"),
    ],
)  # fmt: skip
def test_bad_lists_of_schedules_are_refused(schedule: list[str], error: str) -> None:
    with pytest.raises((InvalidField, InvalidSchedule)) as raised:
        plan_schedule(schedule, timezone="UTC", now=utc("2030-06-12T10:30:00"))
    assert str(raised.value).startswith(error)


def test_several_schedules_are_stored_in_order_without_duplicates_and_one_stays_plain() -> None:
    now = utc("2030-06-12T10:30:00")  # a Wednesday
    fields = {"name": "m", "command": "test:echo", "timezone": "Europe/Berlin"}
    many = validate_new_task(
        {**fields, "schedule": ["0 12 * * 6,0", "0 9 * * 1-5", "0 12 * * 6,0"]},
        settings=SETTINGS,
        commands=REGISTRY,
        now=now,
    )
    assert (many.schedule, many.schedules) == ("0 12 * * 6,0", ["0 12 * * 6,0", "0 9 * * 1-5"])
    assert many.next_run_at == utc("2030-06-13T07:00:00")  # Thursday 09:00 CEST
    one = validate_new_task(
        {**fields, "schedule": ["0 9 * * 1-5"]}, settings=SETTINGS, commands=REGISTRY, now=now
    )
    assert (one.schedule, one.schedules) == ("0 9 * * 1-5", None)
    preview = preview_schedule(["0 9 * * 1-5", "0 12 * * 6,0"], timezone="Europe/Berlin", now=now, count=4)
    assert preview.sources == ["0 9 * * 1-5", "0 9 * * 1-5", "0 12 * * 6,0", "0 12 * * 6,0"]


def _task(**fields: Any) -> Task:
    now = utc("2030-06-12T10:30:00")
    definition = validate_new_task(
        {"name": "t", "command": "test:echo", **fields}, settings=SETTINGS, commands=REGISTRY, now=now
    )
    columns = definition.columns()
    extra = {"id": 5, "status_reason": None, "last_run_at": None, "run_count": 0, "consecutive_failures": 0}
    return Task(**columns, **extra, created_at=now, updated_at=now)


def test_updating_a_single_field_keeps_the_several_schedules_and_the_jitter_recomputes() -> None:
    task = _task(schedule=["0 9 * * 1-5", "0 12 * * 6,0"], timezone="Europe/Berlin")
    now = utc("2030-06-14T08:00:00")  # Friday 10:00 CEST
    changed = validate_changes(task, {"jitter_ms": 600_000}, settings=SETTINGS, commands=REGISTRY, now=now)
    assert "schedules" not in changed and changed["jitter_ms"] == 600_000
    saturday = utc("2030-06-15T10:00:00")
    assert saturday <= changed["next_run_at"] < saturday + timedelta(minutes=10)
    assert changed["next_run_at"] - saturday == jitter_offset(task.id, saturday, timedelta(minutes=10))
    single = validate_changes(task, {"schedule": "5m"}, settings=SETTINGS, commands=REGISTRY, now=now)
    assert single["schedules"] is None and single["schedule"] == "5m"


def test_an_excluded_slot_is_skipped_before_overlap_and_max_runs_see_it() -> None:
    # Hourly in New York on the fall-back night of 1 November 2026 (01:xx repeats), a holiday that day.
    holiday = CalendarRule("America/New_York", exclude=(("holiday", parse_entries(["2026-11-01"])),))
    task = replace(
        _task(schedule="0 * * * *", timezone="America/New_York"),
        next_run_at=utc("2026-11-01T03:00:00"),  # 23:00 EDT on 31 October
        misfire_policy="run_all",
        overlap_policy="forbid",
        max_runs=1,
    )
    now = utc("2026-11-01T06:00:30")  # 01:00 EST: slots at 03, 04 (00:00 EDT), 05 (01:00 EDT), 06 (01:00 EST)
    schedule = task_schedule(task)

    plan = plan_task(task, schedule, now, excluded=lambda t: holiday.reason(slot_of(schedule, t)[0]))

    assert [(s.scheduled_for, s.status, s.reason) for s in plan.slots] == [
        (utc("2026-11-01T03:00:00"), "pending", None),
        (utc("2026-11-01T04:00:00"), "skipped", "excluded"),
        (utc("2026-11-01T05:00:00"), "skipped", "excluded"),
        (utc("2026-11-01T06:00:00"), "skipped", "excluded"),
    ]
    assert plan.slots[1].error == "excluded by calendar 'holiday' (2026-11-01)"
    assert plan.completed_reason == "max_runs reached"  # the one run allowed is the 31 October slot

    only_excluded = replace(task, next_run_at=utc("2026-11-01T06:00:00"), max_runs=None)
    plan = plan_task(only_excluded, schedule, now, has_active=True, excluded=lambda t: holiday.reason(t))
    assert [(s.status, s.reason) for s in plan.slots] == [("skipped", "excluded")]
    assert plan.runs == 0 and plan.next_run_at == utc("2026-11-01T07:00:00")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    task_id=st.integers(min_value=1, max_value=2**40),
    expression=st.sampled_from(["0 * * * *", "30 2 * * *", "*/15 1-3 * * *", "0 9 * * 1-5", "0 0 1 * *"]),
    zone=st.sampled_from(
        ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kathmandu"]
    ),
    start=st.datetimes(
        min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31), timezones=st.just(UTC)
    ),
    fraction=st.floats(min_value=0.0, max_value=1.0),
)
def test_jittered_times_keep_the_slots_order_and_map_back_to_them(
    task_id: int, expression: str, zone: str, start: datetime, fraction: float
) -> None:
    """Whatever the task, zone (DST, 30- and 45-minute offsets) and jitter up to the shortest gap: real times
    are strictly increasing, each within [slot, slot + jitter), and map back to their slot."""
    plain = parse_schedule(expression, timezone=zone, anchor=start)
    gap = shortest_gap(plain, start)
    assert gap is not None
    jitter = max(timedelta(milliseconds=1), gap * fraction)
    schedule = CombinedSchedule(((expression, plain),), jitter, task_id)
    real: list[datetime] = []
    t: datetime | None = start
    for _ in range(12):
        t = schedule.next_after(t) if t is not None else None
        assert t is not None
        real.append(t)
    slots = [schedule.nominal(r) for r in real]
    assert real == sorted(set(real))
    assert slots == sorted(set(slots))
    assert all(timedelta(0) <= r - s < jitter for r, s in zip(real, slots, strict=True))
    assert slots == [slots[0], *fire_times(plain, slots[0], 11)]  # no slot skipped, none twice
    assert real[0] > start and slots[0] > start - jitter
