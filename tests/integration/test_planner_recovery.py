"""The recovery sweep (invariant 1 of docs/architecture.md): ids the broker lost are published again;
executions of dead workers are reaped, and retried while attempts remain."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from planner_support import (
    RecordingPublisher,
    add_execution,
    executions_of,
    get_task,
    make_service,
    make_settings,
    now_of,
)
from sqlalchemy import Engine, select, update

from scheduler.observability.events import TASK_EVENT, EventBus
from scheduler.planning.planner import Planner
from scheduler.records import Task
from scheduler.storage.tables import executions, logs

# Fast bounds: recovery after 1 s, heartbeats every 100 ms (a worker is silent after 300 ms).
SETTINGS = {"recovery_after": 1000, "heartbeat_interval": 100}


def _task(engine: Engine, retries: int = 2, **fields: Any) -> Task:
    service = make_service(engine, make_settings(**SETTINGS))
    return service.create_task(name="job", command="test:echo", schedule="manual", retries=retries, **fields)


def _planner(
    engine: Engine, publisher: RecordingPublisher, events: EventBus | None = None, **settings: Any
) -> Planner:
    return Planner(engine, make_settings(**(SETTINGS | settings)), publisher, events=events)


def set_execution(engine: Engine, execution_id: int, **values: Any) -> None:
    with engine.begin() as connection:
        connection.execute(update(executions).where(executions.c.id == execution_id).values(**values))


def test_a_queued_execution_nobody_claimed_is_published_again_under_the_same_id(engine: Engine) -> None:
    task = _task(engine)
    now = now_of(engine)
    lost = add_execution(
        engine, task, now - timedelta(minutes=2), status="queued", enqueued_at=now - timedelta(seconds=5)
    )
    fresh = add_execution(engine, task, now - timedelta(minutes=1), status="queued", enqueued_at=now)
    publisher = RecordingPublisher()

    report = _planner(engine, publisher).tick()

    assert publisher.ids == [lost] and report.dispatched == 1
    rows = {r.id: r for r in executions_of(engine, task.id)}
    seen = rows[lost].heartbeat_at  # when the sweep looked: not republished every tick
    assert rows[lost].status == "queued" and seen is not None and seen > now - timedelta(seconds=1)
    assert rows[lost].enqueued_at == now - timedelta(seconds=5)  # the first publish stays on record
    assert rows[fresh].enqueued_at == now and rows[fresh].heartbeat_at is None
    assert _planner(engine, publisher).tick().dispatched == 0


def test_a_silent_running_execution_with_attempts_left_is_retried_as_the_next_attempt(engine: Engine) -> None:
    task = _task(engine, retries=2)
    now = now_of(engine)
    execution = add_execution(
        engine,
        task,
        now - timedelta(minutes=1),
        status="running",
        worker="dead-worker",
        attempt=1,
        started_at=now - timedelta(seconds=30),
        heartbeat_at=now - timedelta(seconds=20),
    )
    events = EventBus()
    heard: list[dict[str, Any]] = []
    events.on(TASK_EVENT, heard.append)
    publisher = RecordingPublisher()

    report = _planner(engine, publisher, events).tick()

    (row,) = executions_of(engine, task.id)
    assert (row.status, row.attempt, row.worker) == ("queued", 2, None)
    assert [(e["final"], e["execution"]["status"], e["execution"]["attempt"]) for e in heard] == [
        (False, "lost", 1)
    ]
    assert row.error is not None and "attempt 1 lost" in row.error and "dead-worker" in row.error
    assert publisher.ids == [execution]
    assert report.requeued == 1 and report.lost == 0
    with engine.connect() as connection:
        lines = connection.execute(select(logs.c.attempt, logs.c.level, logs.c.message)).all()
    assert [(line.attempt, line.level) for line in lines] == [(1, "ERROR")]


def test_a_silent_running_execution_on_its_last_attempt_is_lost(engine: Engine) -> None:
    task = _task(engine, retries=0)
    now = now_of(engine)
    add_execution(
        engine,
        task,
        now - timedelta(minutes=1),
        status="running",
        worker="dead-worker",
        started_at=now - timedelta(seconds=30),
        heartbeat_at=now - timedelta(seconds=20),
    )
    events = EventBus()
    heard: list[dict[str, Any]] = []
    events.on(TASK_EVENT, heard.append)
    publisher = RecordingPublisher()

    report = _planner(engine, publisher, events).tick()

    (row,) = executions_of(engine, task.id)
    assert row.status == "lost" and row.finished_at is not None and row.duration_ms is not None
    assert publisher.ids == [] and report.lost == 1
    assert [(e["type"], e["final"], e["execution"]["status"]) for e in heard] == [("failed", True, "lost")]


def test_a_once_task_whose_only_run_is_lost_ends_failed(engine: Engine) -> None:
    service = make_service(engine, make_settings(**SETTINGS))
    task = service.create_task(name="once", command="test:echo", schedule="now", retries=0)
    # Heartbeats every second: the two sweeps below must come within 3 of them of each other for stale
    # heartbeats to be trusted (with 100 ms a loaded machine stretched the gap past 0.3 s: nothing was lost).
    planner = _planner(engine, RecordingPublisher(), heartbeat_interval=1000)
    planner.tick()  # dispatches the slot: the task stays active
    (queued,) = executions_of(engine, task.id)
    now = now_of(engine)
    set_execution(
        engine,
        queued.id,
        status="running",
        worker="dead-worker",
        started_at=now - timedelta(seconds=30),
        heartbeat_at=now - timedelta(seconds=20),
    )

    time.sleep(planner.sweep_interval_s)  # the next tick sweeps again
    report = planner.tick()

    assert report.lost == 1
    after = get_task(engine, task.id)
    assert (after.status, after.status_reason) == ("failed", f"execution {queued.id} lost")


def test_a_running_execution_with_a_fresh_heartbeat_is_left_alone(engine: Engine) -> None:
    task = _task(engine)
    now = now_of(engine)
    add_execution(
        engine,
        task,
        now - timedelta(minutes=1),
        status="running",
        worker="alive",
        started_at=now - timedelta(seconds=30),
        heartbeat_at=now + timedelta(seconds=5),  # stays fresh for the whole test
    )

    report = _planner(engine, RecordingPublisher()).tick()

    assert report.requeued == report.lost == 0
    assert executions_of(engine, task.id)[0].status == "running"


def test_an_execution_running_far_past_its_time_limit_is_lost_even_with_heartbeats(engine: Engine) -> None:
    task = _task(engine, retries=0, timeout_ms=1000)
    now = now_of(engine)
    add_execution(
        engine,
        task,
        now - timedelta(minutes=5),
        status="running",
        worker="stuck",
        started_at=now - timedelta(minutes=3),
        heartbeat_at=now + timedelta(seconds=5),
    )

    _planner(engine, RecordingPublisher()).tick()

    (row,) = executions_of(engine, task.id)
    assert row.status == "lost" and row.error is not None and "time limit" in row.error


def test_a_retrying_execution_whose_retry_message_is_long_overdue_is_published_again(engine: Engine) -> None:
    task = _task(engine, retry_delay_ms=100)
    now = now_of(engine)
    overdue = add_execution(
        engine, task, now - timedelta(minutes=2), status="retrying", enqueued_at=now - timedelta(seconds=10)
    )
    waiting = add_execution(engine, task, now - timedelta(minutes=1), status="retrying", enqueued_at=now)
    publisher = RecordingPublisher()

    _planner(engine, publisher).tick()

    assert publisher.ids == [overdue]
    statuses = {r.id: r.status for r in executions_of(engine, task.id)}
    assert statuses == {overdue: "retrying", waiting: "retrying"}  # the claim starts the next attempt
