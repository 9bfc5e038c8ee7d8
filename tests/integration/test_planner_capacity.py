"""Overlap policies and the fleet-wide concurrency cap (docs/semantics.md)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from planner_support import (
    RecordingPublisher,
    add_execution,
    ago,
    by_status,
    executions_of,
    make_service,
    make_settings,
    now_of,
    set_task,
)
from sqlalchemy import Engine, update

from scheduler.planning.planner import Planner
from scheduler.storage.tables import executions


def _due_task_with_a_running_execution(engine: Engine, overlap: str) -> tuple[int, int]:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name=f"overlap-{overlap}", command="test:echo", schedule="1h", overlap_policy=overlap
    )
    now = now_of(engine)
    running = add_execution(
        engine,
        task,
        now - timedelta(hours=1),
        status="running",
        worker="w1",
        started_at=now - timedelta(seconds=2),
        heartbeat_at=now,
    )
    slot = now - timedelta(seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    Planner(engine, settings, RecordingPublisher()).tick()
    return task.id, running


def test_forbid_records_the_new_slot_as_skipped_for_overlap(engine: Engine) -> None:
    task_id, running = _due_task_with_a_running_execution(engine, "forbid")
    rows = executions_of(engine, task_id)
    assert [(r.id == running, r.status, r.reason) for r in rows] == [
        (True, "running", None),
        (False, "skipped", "overlap"),
    ]


def test_replace_cancels_the_running_execution_then_runs_the_new_slot(engine: Engine) -> None:
    task_id, running = _due_task_with_a_running_execution(engine, "replace")
    rows = executions_of(engine, task_id)
    assert [(r.id == running, r.status, r.reason) for r in rows] == [
        (True, "cancelled", "replaced"),
        (False, "queued", None),
    ]
    assert rows[0].finished_at is not None


def test_allow_runs_the_new_slot_beside_the_running_one(engine: Engine) -> None:
    task_id, _ = _due_task_with_a_running_execution(engine, "allow")
    assert [r.status for r in executions_of(engine, task_id)] == ["running", "queued"]


def test_forbid_runs_the_slot_when_nothing_is_active(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="forbid-idle", command="test:echo", schedule="1h", overlap_policy="forbid"
    )
    add_execution(engine, task, ago(engine, hours=2), status="completed", finished_at=ago(engine, hours=1))
    slot = ago(engine, seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)

    Planner(engine, settings, RecordingPublisher()).tick()

    assert [r.status for r in executions_of(engine, task.id)] == ["completed", "queued"]


def _finish(engine: Engine, ids: list[int]) -> None:
    finished = ago(engine)
    with engine.begin() as connection:
        statement = update(executions).where(executions.c.id.in_(ids))
        connection.execute(statement.values(status="completed", finished_at=finished))


def test_the_cap_holds_due_executions_pending_and_releases_them_oldest_first(engine: Engine) -> None:
    settings = make_settings(max_concurrent_tasks=3)
    service = make_service(engine, settings)
    base = ago(engine, seconds=30)
    for i in range(10):
        task = service.create_task(name=f"capped-{i}", command="test:echo", schedule="1h")
        slot = base + timedelta(seconds=i)  # distinct slots, so "oldest first" has one answer
        set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()
    planner = Planner(engine, settings, publisher)

    report = planner.tick()

    rows = executions_of(engine)
    assert report.created == 10 and report.dispatched == 3
    assert [r.status for r in rows] == ["queued"] * 3 + ["pending"] * 7
    assert publisher.ids == [r.id for r in rows[:3]]

    assert planner.tick().dispatched == 0  # nothing finished: nothing more goes out
    _finish(engine, publisher.ids[:2])
    report = planner.tick()

    assert report.dispatched == 2
    assert publisher.ids[3:] == [r.id for r in rows[3:5]]
    assert by_status(executions_of(engine)) == {"completed": 2, "queued": 3, "pending": 5}


@pytest.mark.parametrize("in_flight", ["queued", "running", "retrying"])
def test_the_cap_counts_queued_running_and_retrying_executions(engine: Engine, in_flight: str) -> None:
    settings = make_settings(max_concurrent_tasks=2)
    service = make_service(engine, settings)
    busy = service.create_task(name="busy", command="test:echo", schedule="manual")
    now = now_of(engine)
    for minutes in (1, 2):
        add_execution(
            engine,
            busy,
            now - timedelta(minutes=minutes),
            status=in_flight,
            enqueued_at=now,
            started_at=now,
            heartbeat_at=now,
        )
    waiting = service.run_task_now(busy.id)

    assert Planner(engine, settings, RecordingPublisher()).tick().dispatched == 0
    assert service.get_execution(waiting.id).status == "pending"
