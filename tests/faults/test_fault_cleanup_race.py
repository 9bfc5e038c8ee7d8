"""Scenario 14: history clean-up racing a lagging standby never re-enables a slot inside the misfire window.

A slot is guarded by its execution row (unique ``(task_id, scheduled_for)``): while the row exists, no planner
can insert that slot again. A lagging standby (one that read a task before the leader advanced it, and plans
from that stale ``next_run_at``) cannot commit in practice (row locks and lease fencing, scenario 2); this is
the second line of defence: whatever it replays, the rows of every slot still inside the task's misfire
window are there, because clean-up keeps them, also for tasks whose grace is longer than the default hour.

The replay is run and rolled back: what matters is which slots it *would* insert.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

import pytest
from faultkit import FaultSetup, figures
from sqlalchemy import Engine, func, insert, select, text, update

from scheduler.commands.loading import load_registry
from scheduler.planning.batch import ScheduleCache, plan_tasks
from scheduler.planning.cleanup import SLOT_WINDOW, run_cleanup
from scheduler.records import Task, as_utc
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.mapping import task_from_row
from scheduler.storage.tables import executions, tasks
from scheduler.storage.transactions import write_transaction
from tests.support.processes import wait_for

HISTORY = timedelta(hours=5)


def _window(task: Task) -> timedelta:
    """How far back a planner could still plan (and run) a slot of ``task``: its misfire window."""
    grace = SLOT_WINDOW if task.misfire_grace_ms is None else timedelta(milliseconds=task.misfire_grace_ms)
    return max(SLOT_WINDOW, grace)


def _utc(moment: datetime) -> datetime:
    value = as_utc(moment)  # SQLite hands back naive UTC
    assert value is not None
    return value


def _load(engine: Engine, task_id: int) -> Task:
    with engine.connect() as connection:
        return task_from_row(connection.execute(select(tasks).where(tasks.c.id == task_id)).one())


def _ran_history(engine: Engine, task: Task, slots: list[datetime]) -> None:
    """Rows of slots the leader planned and workers finished long ago (retention 0 days: all expired)."""
    rows: list[dict[str, Any]] = [
        {
            "task_id": task.id,
            "task_name": task.name,
            "command": task.command,
            "scheduled_for": slot,
            "status": "completed",
            "queue": task.queue,
            "max_attempts": 1,
            "created_at": slot,
            "finished_at": slot + timedelta(seconds=1),
        }
        for slot in slots
    ]
    with engine.begin() as connection:
        connection.execute(insert(executions), rows)


def replay_stale(engine: Engine, stale: list[Task]) -> list[tuple[int, datetime, str]]:
    """What a lagging standby planning ``stale`` task views would insert: (task id, slot, status); rolled
    back."""
    inserted: list[tuple[int, datetime, str]] = []
    with write_transaction(engine) as connection:
        now = db_now(connection)
        last = connection.execute(select(func.coalesce(func.max(executions.c.id), 0))).scalar_one()
        plan_tasks(connection, stale, now, ScheduleCache())
        query = select(executions.c.task_id, executions.c.scheduled_for, executions.c.status).where(
            executions.c.id > last, executions.c.task_id.in_([task.id for task in stale])
        )
        inserted = [(int(r.task_id), _utc(r.scheduled_for), r.status) for r in connection.execute(query)]
        connection.rollback()
    return inserted


def _world(engine: Engine, settings: Settings) -> tuple[datetime, list[Task], list[Task]]:
    """Three caught-up tasks with five hours of finished history; returns (now, tasks, stale views)."""
    service = SchedulerService(engine, settings, commands=load_registry(settings), actor="faults")
    with engine.connect() as connection:
        now = db_now(connection)
    start = now.replace(minute=0, second=0, microsecond=0) - HISTORY
    specs = [
        ("hourly-default-grace", "@hourly", None, timedelta(hours=1)),
        ("ten-minutes-3h-grace", "10m", 3 * 3600_000, timedelta(minutes=10)),
        ("minutely-default-grace", "* * * * *", None, timedelta(minutes=1)),
    ]
    current: list[Task] = []
    stale: list[Task] = []
    for name, schedule, grace, every in specs:
        task = service.create_task(name=name, command="test:echo", schedule=schedule, misfire_grace_ms=grace)
        slots = [start + k * every for k in range(int((now - start) / every) + 1)]
        _ran_history(engine, task, slots)
        with engine.begin() as connection:  # as the leader left it: anchored at the first slot, caught up
            connection.execute(
                update(tasks)
                .where(tasks.c.id == task.id)
                .values(anchor_at=start, next_run_at=slots[-1] + every, run_count=len(slots))
            )
        current.append(_load(engine, task.id))
        stale.append(dataclasses.replace(current[-1], next_run_at=start))  # read five hours ago
    return now, current, stale


def test_cleanup_keeps_every_slot_of_the_misfire_window_so_a_stale_replay_inserts_nothing_there(
    engine: Engine,
) -> None:
    settings = Settings(history_retention_days=0)
    now, current, stale = _world(engine, settings)
    assert replay_stale(engine, stale) == []  # every slot has its row: nothing to insert

    deleted = run_cleanup(engine, settings)
    replayed = replay_stale(engine, stale)

    windows = {task.id: _window(task) for task in current}
    with engine.connect() as connection:
        kept = [(int(r.task_id), _utc(r.scheduled_for)) for r in connection.execute(select(executions))]
    # Slots due since the world was built (a minute boundary passing) are new, not brought back: not counted.
    inside = [(task_id, slot) for task_id, slot, _ in replayed if now - windows[task_id] <= slot < now]
    reruns = Counter(task_id for task_id, _, status in replayed if status == "pending")
    figures(
        "cleanup-vs-lagging-standby",
        deleted=deleted,
        kept=len(kept),
        replayed_rows=len(replayed),
        replayed_inside_window=len(inside),
        replayed_runs=sum(reruns.values()),
    )
    for task in current:
        # Clean-up kept exactly the slots inside the task's window (retention is 0 days).
        mine = sorted(slot for task_id, slot in kept if task_id == task.id)
        assert mine and mine[0] >= now - windows[task.id] - timedelta(minutes=10)
        assert all(slot >= now - windows[task.id] for slot in mine)
    assert inside == []  # a lagging standby cannot bring back a slot inside any window
    assert deleted > 0


def _record_every_insert(engine: Engine) -> None:
    """A test-only trigger logging every execution insert, so a slot inserted twice shows even after clean-up
    deleted the first row."""
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE slot_log (task_id bigint, scheduled_for timestamptz, status text, "
                "at timestamptz DEFAULT clock_timestamp())"
            )
        )
        connection.execute(
            text(
                "CREATE FUNCTION log_slot() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "INSERT INTO slot_log (task_id, scheduled_for, status) "
                "VALUES (NEW.task_id, NEW.scheduled_for, NEW.status); RETURN NEW; END $$"
            )
        )
        connection.execute(
            text(
                "CREATE TRIGGER log_slot AFTER INSERT ON task_executions "
                "FOR EACH ROW EXECUTE FUNCTION log_slot()"
            )
        )


@pytest.mark.postgres
@pytest.mark.redis
def test_cleanup_racing_a_leader_process_and_a_lagging_standby_never_doubles_a_slot(
    fault_setup: FaultSetup,
) -> None:
    setup = fault_setup
    engine = setup.engine
    settings = Settings(history_retention_days=0)
    _record_every_insert(engine)
    now, current, stale = _world(engine, settings)
    fast = setup.interval_tasks(3, every="1s", grace_ms=2 * 3600_000, prefix="fast")  # rows keep coming
    leader = setup.planner(
        "leader", env={"SCHEDULER_HISTORY_RETENTION_DAYS": "0", "SCHEDULER_CLEANUP_INTERVAL": "1000"}
    )
    wait_for(lambda: "leader (term 1)" in leader.log(), 30, "the planner never led")

    stop = threading.Event()
    errors: list[BaseException] = []
    replays = cleanups = 0
    would_insert: list[tuple[int, datetime, str]] = []

    def lagging_standby() -> None:
        nonlocal replays
        try:
            while not stop.is_set():
                would_insert.extend(replay_stale(engine, stale))
                replays += 1
        except BaseException as error:  # surfaced below
            errors.append(error)

    def cleaner() -> None:
        nonlocal cleanups
        try:
            while not stop.is_set():
                with engine.begin() as connection:  # workers finish what the leader sends
                    connection.execute(
                        update(executions)
                        .where(executions.c.status.in_(("pending", "queued")))
                        .values(status="completed", finished_at=func.now())
                    )
                run_cleanup(engine, settings)
                cleanups += 1
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=lagging_standby), threading.Thread(target=cleaner)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    stop.set()
    for thread in threads:
        thread.join(30)
    assert leader.stop() == 0, leader.log()[-3000:]
    assert errors == []

    windows = {task.id: _window(task) for task in current} | dict.fromkeys(fast, timedelta(hours=2))
    with engine.connect() as connection:
        log = connection.execute(text("SELECT task_id, scheduled_for FROM slot_log")).all()
    inserted_twice = [key for key, count in Counter((int(t), s) for t, s in log).items() if count > 1]
    # As above: a slot that fell due during the race is one the leader had not planned yet, not a cleaned one.
    inside = [(t, s) for t, s, _ in would_insert if now - windows[t] <= s < now]
    figures(
        "cleanup-race-with-processes",
        replays=replays,
        cleanups=cleanups,
        slots_inserted=len(log),
        inserted_twice=len(inserted_twice),
        replayed_inside_window=len(inside),
    )
    assert replays > 5 and cleanups > 5
    assert inserted_twice == []
    assert inside == []
