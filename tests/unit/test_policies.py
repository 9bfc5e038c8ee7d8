"""The planner's pure decisions (scheduler.rules.policies): grace, misfire, overlap, bounds, and the jump
over long outages, checked against brute-force enumeration."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from scheduler.records import Task
from scheduler.rules.policies import (
    MAX_RUNS_PER_TICK,
    MAX_SKIPPED_ROWS,
    count_slots,
    latest_slot_before,
    plan_task,
)
from scheduler.rules.schedules import Schedule, parse_schedule

NOW = datetime(2025, 3, 30, 12, 0, 30, tzinfo=UTC)  # Europe/Berlin sprang forward at 01:00 UTC this day


def _task(schedule: str, next_run_at: datetime, **fields: object) -> Task:
    task = Task(
        id=1,
        name="t",
        command="test:echo",
        schedule=schedule,
        schedule_kind="cron",
        timezone="UTC",
        data={},
        status="active",
        status_reason=None,
        queue="default",
        retries=0,
        retry_delay_ms=0,
        retry_backoff=2.0,
        timeout_ms=1000,
        overlap_policy="allow",
        misfire_policy="run_once",
        misfire_grace_ms=None,
        auto_pause_after=None,
        start_at=None,
        end_at=None,
        max_runs=None,
        anchor_at=next_run_at,
        next_run_at=next_run_at,
        last_run_at=None,
        run_count=0,
        consecutive_failures=0,
        created_at=next_run_at,
        updated_at=next_run_at,
    )
    return replace(task, **fields)  # type: ignore[arg-type]


def _schedule(task: Task) -> Schedule:
    return parse_schedule(task.schedule, timezone=task.timezone, anchor=task.anchor_at)


def _outcome(task: Task, now: datetime = NOW, has_active: bool = False) -> list[tuple[str, str, str | None]]:
    plan = plan_task(task, _schedule(task), now, has_active=has_active)
    return [(s.scheduled_for.strftime("%H:%M"), s.status, s.reason or s.trigger) for s in plan.slots]


def _brute_slots(schedule: Schedule, first: datetime, before: datetime) -> list[datetime]:
    slots, slot = [], first
    while slot < before:
        slots.append(slot)
        following = schedule.next_after(slot)
        assert following is not None
        slot = following
    return slots


def test_an_on_time_slot_runs_as_scheduled() -> None:
    task = _task("* * * * *", NOW.replace(second=0))
    assert _outcome(task) == [("12:00", "pending", "schedule")]
    assert plan_task(task, _schedule(task), NOW).next_run_at == NOW.replace(minute=1, second=0)


def test_a_slot_older_than_its_gap_is_missed_even_within_the_hour() -> None:
    task = _task("*/10 * * * *", NOW.replace(minute=0, second=0) - timedelta(minutes=20))
    assert _outcome(task) == [
        ("11:40", "skipped", "misfired"),
        ("11:50", "pending", "catchup"),
        ("12:00", "pending", "schedule"),
    ]


def test_the_default_grace_is_capped_at_one_hour() -> None:
    daily = _task("0 10 * * *", NOW.replace(hour=10, minute=0, second=0))
    assert _outcome(replace(daily, misfire_policy="skip")) == [("10:00", "skipped", "misfired")]
    assert _outcome(daily) == [("10:00", "pending", "catchup")]
    assert _outcome(daily, now=NOW.replace(hour=10, minute=59)) == [("10:00", "pending", "schedule")]


def test_an_explicit_grace_keeps_every_slot_within_it_on_time() -> None:
    task = _task(
        "* * * * *", NOW.replace(minute=0, second=0) - timedelta(minutes=4), misfire_grace_ms=150_000
    )
    assert _outcome(task) == [
        ("11:56", "skipped", "misfired"),
        ("11:57", "pending", "catchup"),
        ("11:58", "pending", "schedule"),
        ("11:59", "pending", "schedule"),
        ("12:00", "pending", "schedule"),
    ]


def test_a_long_grace_runs_late_slots_on_time_a_hundred_per_tick() -> None:
    first = NOW.replace(second=0) - timedelta(hours=5)
    task = _task("* * * * *", first, misfire_grace_ms=86_400_000)
    plan = plan_task(task, _schedule(task), NOW)
    assert plan.runs == MAX_RUNS_PER_TICK and plan.misfired == 0
    assert {s.trigger for s in plan.slots} == {"schedule"}
    assert plan.slots[0].scheduled_for == first
    assert plan.next_run_at == first + timedelta(minutes=MAX_RUNS_PER_TICK)


def test_forbid_keeps_one_run_per_tick_and_none_while_another_is_active() -> None:
    task = _task(
        "*/10 * * * *", NOW.replace(minute=0, second=0) - timedelta(minutes=20), overlap_policy="forbid"
    )
    assert [o[1:] for o in _outcome(task)] == [
        ("skipped", "misfired"),
        ("pending", "catchup"),
        ("skipped", "overlap"),
    ]
    assert {o[1:] for o in _outcome(task, has_active=True)[1:]} == {("skipped", "overlap")}


def test_replace_keeps_only_the_newest_run_of_a_tick() -> None:
    task = _task(
        "*/10 * * * *", NOW.replace(minute=0, second=0) - timedelta(minutes=10), overlap_policy="replace"
    )
    assert _outcome(task) == [("11:50", "cancelled", "replaced"), ("12:00", "pending", "schedule")]


def test_max_runs_stops_mid_catch_up_and_completes_the_task() -> None:
    first = NOW.replace(minute=0, second=0) - timedelta(minutes=5)
    task = _task("* * * * *", first, misfire_policy="run_all", max_runs=10, run_count=7)
    plan = plan_task(task, _schedule(task), NOW)
    assert plan.runs == 3 and plan.next_run_at is None and plan.completed_reason == "max_runs reached"


def test_run_all_continues_from_the_first_slot_it_did_not_run() -> None:
    first = NOW.replace(second=0) - timedelta(minutes=250)
    task = _task("* * * * *", first, misfire_policy="run_all")
    plan = plan_task(task, _schedule(task), NOW)
    assert plan.runs == MAX_RUNS_PER_TICK
    assert plan.next_run_at == first + timedelta(minutes=MAX_RUNS_PER_TICK)


@pytest.mark.parametrize("policy", ["skip", "run_once"])
@pytest.mark.parametrize(
    ("schedule", "zone", "outage"),
    [
        ("* * * * *", "UTC", timedelta(days=98)),
        ("*/7 1-3 * * *", "Europe/Berlin", timedelta(days=40)),  # crosses the spring-forward gap
        ("30 2 * * *", "Europe/Berlin", timedelta(days=400)),
        ("0 9 * * 1-5", "America/New_York", timedelta(days=30)),
    ],
)
def test_a_long_outage_is_summarised_with_the_same_totals_as_brute_force(
    policy: str, schedule: str, zone: str, outage: timedelta
) -> None:
    sched = parse_schedule(schedule, timezone=zone, anchor=NOW)
    first = sched.next_after(NOW - outage)
    assert first is not None
    task = _task(schedule, first, timezone=zone, misfire_policy=policy)
    plan = plan_task(task, sched, NOW)
    due = _brute_slots(sched, first, NOW + timedelta(microseconds=1))
    latest, following = due[-1], sched.next_after(due[-1])
    assert following is not None
    on_time = NOW - latest <= min(timedelta(hours=1), following - latest)
    missed = due[:-1] if on_time else due
    assert plan.misfired == len(missed) or not plan.slots[MAX_SKIPPED_ROWS].result["exact"]  # type: ignore[index]
    assert plan.next_run_at == following
    runs = [s for s in plan.slots if s.status == "pending"]
    assert len(runs) == int(on_time) + (1 if policy == "run_once" else 0)
    if policy == "run_once":
        assert runs[0].scheduled_for == missed[-1] and runs[0].trigger == "catchup"
    individual = [s.scheduled_for for s in plan.slots[:MAX_SKIPPED_ROWS]]
    assert individual == missed[:MAX_SKIPPED_ROWS]
    summary = plan.slots[MAX_SKIPPED_ROWS].result
    assert summary is not None
    expected = len(missed) - MAX_SKIPPED_ROWS - (1 if policy == "run_once" else 0)
    assert abs(summary["misfired"] - expected) <= max(2, expected // 20)
    if summary["exact"]:
        assert summary["misfired"] == expected


@pytest.mark.parametrize(
    ("schedule", "zone"),
    [
        ("* * * * *", "UTC"),
        ("*/15 * * * *", "Europe/Berlin"),
        ("30 2 * * *", "Europe/Berlin"),
        ("45m", "UTC"),
    ],
)
def test_latest_slot_before_and_count_slots_agree_with_enumeration(schedule: str, zone: str) -> None:
    sched = parse_schedule(schedule, timezone=zone, anchor=datetime(2025, 1, 1, 0, 7, tzinfo=UTC))
    first = sched.next_after(datetime(2025, 3, 25, tzinfo=UTC))
    assert first is not None
    for hours in itertools.chain(range(1, 30, 7), (100, 300)):
        bound = first + timedelta(hours=hours, minutes=13)
        slots = _brute_slots(sched, first, bound)
        assert latest_slot_before(sched, bound, first) == slots[-1]
        count, exact = count_slots(sched, first, bound)
        assert count == len(slots) or not exact
