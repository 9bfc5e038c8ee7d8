"""The planner with issue 15's richer schedules, on SQLite and PostgreSQL: exclusion calendars record the slot
skipped (reason ``excluded``, naming the calendar), several schedules produce one execution per instant naming
the schedule, and a jitter runs the slot late while the row keeps the nominal slot."""

from __future__ import annotations

import threading
from datetime import timedelta

from planner_support import (
    RecordingPublisher,
    ago,
    executions_of,
    get_task,
    make_service,
    make_settings,
    minute_floor,
    now_of,
    set_task,
    settled_minute,
)
from sqlalchemy import Engine, insert

from scheduler.planning.planner import Planner
from scheduler.rules.calendars import local_day, parse_entries
from scheduler.rules.combined import CombinedSchedule
from scheduler.rules.timing import task_schedule
from scheduler.rules.validation import validate_new_task
from scheduler.storage.calendars import calendar_days
from scheduler.storage.db import make_engine
from scheduler.storage.tables import tasks

ZONE = "Pacific/Kiritimati"  # UTC+14: its day starts ten hours before UTC's previous midnight


def test_an_excluded_slot_is_recorded_skipped_naming_the_calendar_and_only_in_runs(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    slot = settled_minute(engine)
    today = local_day(slot, ZONE).isoformat()  # the slot's day in the task's zone, not in UTC
    service.create_calendar("today", [today])
    excluded = service.create_task(
        name="excluded", command="test:echo", schedule="1m", timezone=ZONE, exclude=["today"]
    )
    only_in = service.create_task(
        name="only-in", command="test:echo", schedule="1m", timezone=ZONE, only_in=["today"]
    )
    for task in (excluded, only_in):
        set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()

    report = Planner(engine, settings, publisher).tick()

    [skipped] = executions_of(engine, excluded.id)
    assert (skipped.status, skipped.reason, skipped.scheduled_for) == ("skipped", "excluded", slot)
    assert skipped.error == f"excluded by calendar 'today' ({today})"
    [ran] = executions_of(engine, only_in.id)
    assert (ran.status, ran.trigger, ran.scheduled_for) == ("queued", "schedule", slot)
    assert publisher.ids == [ran.id]
    assert (report.created, report.skipped) == (1, 1)
    after = get_task(engine, excluded.id)
    assert after.next_run_at == slot + timedelta(minutes=1) and after.run_count == 0
    history = service.history(task="excluded")
    assert [(e.reason, e.error) for e in history] == [("excluded", skipped.error)]


def test_two_schedules_firing_at_one_instant_make_one_execution_naming_the_first(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="two", command="test:echo", schedule=["2m", "1m"])
    slot = settled_minute(engine)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)  # both intervals fire at the anchor
    planner = Planner(engine, settings, RecordingPublisher())

    planner.tick()
    set_task(engine, task.id, next_run_at=slot)  # a replayed tick: the slot exists already
    planner.tick()

    rows = executions_of(engine, task.id)
    assert [(r.scheduled_for, r.schedule) for r in rows] == [(slot, "2m")]
    assert get_task(engine, task.id).next_run_at == slot + timedelta(minutes=1)
    follow = service.next_runs(task="two", count=3)
    assert [(r.slot, r.schedule) for r in follow] == [
        (slot + timedelta(minutes=1), "1m"),
        (slot + timedelta(minutes=2), "2m"),
        (slot + timedelta(minutes=3), "1m"),
    ]


def test_a_jittered_slot_runs_at_its_offset_and_keeps_its_nominal_slot(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="jittered", command="test:echo", schedule="1m", jitter_ms=50_000)
    anchor = minute_floor(ago(engine, minutes=3))
    set_task(engine, task.id, anchor_at=anchor)
    schedule = task_schedule(get_task(engine, task.id))
    assert isinstance(schedule, CombinedSchedule)
    now = now_of(engine)
    real = schedule.next_after(anchor, inclusive=True)  # the latest real fire time by now: due, on time
    while (following_real := schedule.next_after(real)) is not None and following_real <= now:
        real = following_real
    assert real is not None and real <= now
    nominal = schedule.nominal(real)
    set_task(engine, task.id, next_run_at=real)

    Planner(engine, settings, RecordingPublisher()).tick()

    [row] = executions_of(engine, task.id)
    assert row.scheduled_for == nominal  # the unique (task, slot) key is the nominal slot
    assert (nominal - anchor) % timedelta(minutes=1) == timedelta(0)
    assert timedelta(0) <= real - nominal < timedelta(seconds=50)
    after = get_task(engine, task.id)
    following = nominal + timedelta(minutes=1)
    assert after.next_run_at == following + schedule.offset(following)
    # Another process (a restarted planner, scheduler:next) computes the same real time.
    assert task_schedule(after).next_after(real) == after.next_run_at
    assert service.next_runs(task="jittered", count=1)[0].at == after.next_run_at


def test_a_calendar_being_attached_to_a_task_cannot_be_deleted_meanwhile(pg_url: str) -> None:
    """PostgreSQL: delete_calendar waits for a transaction that attaches the calendar (create_task's share
    lock), then sees the task and refuses; without its own row lock it would delete a calendar in use."""
    engine = make_engine(pg_url)
    settings = make_settings()
    service = make_service(engine, settings)
    service.create_calendar("busy", ["sat"])
    outcome: list[BaseException | None] = []
    with engine.begin() as attaching:
        # What create_task does in its transaction: share-lock the calendar, insert the task naming it.
        assert calendar_days(attaching, ["busy"], lock=True) == {"busy": parse_entries(["sat"]).to_json()}
        definition = validate_new_task(
            {"name": "uses-busy", "command": "test:echo", "schedule": "1h", "exclude": ["busy"]},
            settings=settings, commands=service.commands, now=now_of(engine),
        )  # fmt: skip
        attaching.execute(insert(tasks).values(**definition.columns(), run_count=0, consecutive_failures=0))

        def delete() -> None:
            try:
                service.delete_calendar("busy")
                outcome.append(None)
            except BaseException as error:  # the refusal, reported to the test's thread
                outcome.append(error)

        deleting = threading.Thread(target=delete)
        deleting.start()
        deleting.join(timeout=1.0)
        assert deleting.is_alive()  # blocked on the calendar's row lock while the task is not committed
    deleting.join(timeout=30)
    assert [str(error) for error in outcome] == [
        "invalid calendar: 'busy' is used by task 'uses-busy'; detach it first"
    ]
    assert [c.name for c in service.list_calendars()] == ["busy"]
    engine.dispose()
