"""Misfire policies (docs/semantics.md): slots missed beyond grace are recorded, run once, or run all
(capped).

Outages are simulated by moving ``next_run_at`` into the past on the database clock.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from planner_support import (
    RecordingPublisher,
    by_status,
    executions_of,
    get_task,
    hour_floor,
    make_service,
    make_settings,
    minute_floor,
    now_of,
    set_task,
)
from sqlalchemy import Engine

from scheduler.planning.planner import Planner


def _hourly_down_six_hours(engine: Engine, policy: str) -> tuple[int, list[object]]:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name=f"hourly-{policy}", command="test:echo", schedule="@hourly", misfire_policy=policy
    )
    top = hour_floor(now_of(engine))
    set_task(engine, task.id, next_run_at=top - timedelta(hours=6))
    Planner(engine, settings, RecordingPublisher()).tick()
    rows = executions_of(engine, task.id)
    return task.id, [
        (int((top - r.scheduled_for).total_seconds() // 3600), r.status, r.trigger) for r in rows
    ]


def test_run_once_after_six_hours_runs_one_catch_up_and_records_five_misfires(engine: Engine) -> None:
    _, rows = _hourly_down_six_hours(engine, "run_once")
    # Hours ago -> outcome. The top of this hour is within its grace (one interval) and runs as scheduled.
    assert rows == [
        (6, "skipped", "schedule"),
        (5, "skipped", "schedule"),
        (4, "skipped", "schedule"),
        (3, "skipped", "schedule"),
        (2, "skipped", "schedule"),
        (1, "queued", "catchup"),
        (0, "queued", "schedule"),
    ]


def test_skip_after_six_hours_records_six_misfires_and_runs_only_the_current_slot(engine: Engine) -> None:
    task_id, rows = _hourly_down_six_hours(engine, "skip")
    assert rows == [(h, "skipped", "schedule") for h in range(6, 0, -1)] + [(0, "queued", "schedule")]
    assert {r.reason for r in executions_of(engine, task_id) if r.status == "skipped"} == {"misfired"}
    assert all(r.finished_at is not None for r in executions_of(engine, task_id) if r.status == "skipped")


def test_run_all_after_six_hours_runs_every_missed_slot(engine: Engine) -> None:
    _, rows = _hourly_down_six_hours(engine, "run_all")
    assert rows == [(h, "queued", "catchup") for h in range(6, 0, -1)] + [(0, "queued", "schedule")]


@pytest.mark.parametrize(
    ("policy", "expected"), [("skip", {"skipped": 6}), ("run_once", {"skipped": 5, "queued": 1})]
)
def test_with_a_short_grace_every_late_slot_is_a_misfire(
    engine: Engine, policy: str, expected: dict[str, int]
) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="short-grace",
        command="test:echo",
        schedule="1h",
        misfire_policy=policy,
        misfire_grace_ms=600_000,
    )
    first = now_of(engine) - timedelta(hours=5, minutes=30)
    set_task(engine, task.id, next_run_at=first, anchor_at=first)

    report = Planner(engine, settings, RecordingPublisher()).tick()

    rows = executions_of(engine, task.id)
    assert by_status(rows) == expected
    assert report.misfired == 6
    if policy == "run_once":
        assert rows[-1].trigger == "catchup" and rows[-1].scheduled_for == first + timedelta(hours=5)
    assert get_task(engine, task.id).next_run_at == first + timedelta(hours=6)


def test_run_all_is_capped_at_one_hundred_runs_per_tick_and_continues_next_tick(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="run-all", command="test:echo", schedule="* * * * *", misfire_policy="run_all"
    )
    first = minute_floor(now_of(engine)) - timedelta(hours=3)
    set_task(engine, task.id, next_run_at=first)
    planner = Planner(engine, settings, RecordingPublisher())

    report = planner.tick()

    assert report.created == 100
    assert get_task(engine, task.id).next_run_at == first + timedelta(minutes=100)
    report = planner.tick()
    rows = executions_of(engine, task.id)
    print(f"\nrun_all: 100 then {report.created} runs for {len(rows)} slots")
    assert report.created == 81  # 80 missed slots left, then the current minute on time
    assert [r.scheduled_for for r in rows] == [first + timedelta(minutes=m) for m in range(181)]
    assert {r.trigger for r in rows[:-1]} == {"catchup"} and rows[-1].trigger == "schedule"


@pytest.mark.parametrize(("policy", "runs"), [("skip", 1), ("run_once", 2)])
def test_an_every_minute_task_down_98_days_is_planned_in_bounded_time(
    engine: Engine, policy: str, runs: int
) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="down-98-days", command="test:echo", schedule="* * * * *", misfire_policy=policy
    )
    first = minute_floor(now_of(engine)) - timedelta(days=98)
    set_task(engine, task.id, next_run_at=first)
    planner = Planner(engine, settings, RecordingPublisher())

    started = time.perf_counter()
    report = planner.tick()
    elapsed = time.perf_counter() - started

    print(f"\n98 days of every-minute slots ({policy}): tick {elapsed:.3f} s, {report.misfired} misfired")
    assert elapsed < 2.0
    rows = executions_of(engine, task.id)
    assert report.created == runs and by_status(rows).get("queued") == runs
    assert len(rows) == runs + 11  # ten individual misfired rows and one summary row
    summary = rows[10]
    assert summary.status == "skipped" and summary.reason == "misfired"
    slots = 98 * 24 * 60  # missed: every minute from `first` up to the one before the current minute
    assert report.misfired == slots
    assert summary.result["misfired"] == slots - 10 - (runs - 1)
    assert summary.error is not None and str(summary.result["misfired"]) in summary.error
    assert get_task(engine, task.id).next_run_at == first + timedelta(days=98, minutes=1)


def test_an_interval_task_down_98_days_gets_an_exact_summary(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="interval-98", command="test:echo", schedule="1m", misfire_policy="skip"
    )
    first = now_of(engine) - timedelta(days=98, seconds=30)
    set_task(engine, task.id, next_run_at=first, anchor_at=first)

    report = Planner(engine, settings, RecordingPublisher()).tick()

    summary = executions_of(engine, task.id)[10]
    assert summary.result["exact"] is True
    assert summary.result["misfired"] == 98 * 24 * 60 - 10
    assert report.misfired == 98 * 24 * 60 and report.created == 1


def test_a_mass_outage_of_many_tasks_finishes_in_bounded_time(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    first = minute_floor(now_of(engine)) - timedelta(days=98)
    for i in range(100):
        task = service.create_task(name=f"mass-{i}", command="test:echo", schedule="*/1 * * * *")
        set_task(engine, task.id, next_run_at=first)

    started = time.perf_counter()
    report = Planner(engine, settings, RecordingPublisher()).tick()
    elapsed = time.perf_counter() - started

    print(f"\n100 tasks x 98 days of missed minutes: tick {elapsed:.3f} s, {report.misfired} slots misfired")
    assert report.due == 100 and report.created == 200  # run_once: one catch-up and the current minute each
    assert elapsed < 20.0


@pytest.mark.parametrize(
    ("policy", "status", "trigger", "task_status"),
    [("skip", "skipped", "schedule", "completed"), ("run_once", "queued", "catchup", "active")],
)
def test_a_once_task_missed_beyond_grace_follows_its_policy_and_completes_unless_it_runs(
    engine: Engine, policy: str, status: str, trigger: str, task_status: str
) -> None:
    # Skipped, its only slot ends it; run, it stays active until that run ends it (completed or failed).
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="once-late", command="test:echo", schedule="now", misfire_policy=policy
    )
    late = now_of(engine) - timedelta(hours=2)
    set_task(engine, task.id, schedule=late.isoformat(), next_run_at=late)

    Planner(engine, settings, RecordingPublisher()).tick()

    assert [(r.status, r.trigger) for r in executions_of(engine, task.id)] == [(status, trigger)]
    assert get_task(engine, task.id).status == task_status


def test_a_paused_task_accrues_no_misses_and_resuming_does_not_replay(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="paused-long", command="test:echo", schedule="* * * * *")
    service.pause(task.id)
    set_task(engine, task.id, next_run_at=minute_floor(now_of(engine)) - timedelta(hours=5))
    planner = Planner(engine, settings, RecordingPublisher())
    assert planner.tick().due == 0

    service.resume(task.id)
    report = planner.tick()

    assert report.misfired == 0 and report.created == 0
    assert executions_of(engine, task.id) == []
    resumed = get_task(engine, task.id).next_run_at
    assert resumed is not None and resumed > now_of(engine) - timedelta(seconds=1)
