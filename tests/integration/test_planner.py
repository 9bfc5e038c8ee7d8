"""The planner tick: due slots become executions exactly once, then reach the broker."""

from __future__ import annotations

from datetime import timedelta

from planner_support import (
    RecordingPublisher,
    ago,
    by_status,
    executions_of,
    get_task,
    make_service,
    make_settings,
    minute_floor,
    now_of,
    set_task,
)
from sqlalchemy import Engine

from scheduler.planning.planner import Planner


def test_a_due_task_is_dispatched_once_and_its_next_run_advanced(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(name="every-minute", command="test:echo", schedule="1m")
    slot = ago(engine, seconds=5)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()

    report = Planner(engine, settings, publisher).tick()

    rows = executions_of(engine, task.id)
    assert [(r.status, r.trigger, r.scheduled_for) for r in rows] == [("queued", "schedule", slot)]
    assert rows[0].enqueued_at is not None and rows[0].max_attempts == task.retries + 1
    assert publisher.ids == [rows[0].id]
    assert publisher.dispatches[0].queue == "default" and publisher.dispatches[0].command == "test:echo"
    assert publisher.dispatches[0].timeout_s == task.timeout_ms / 1000
    after = get_task(engine, task.id)
    assert after.next_run_at == slot + timedelta(minutes=1)
    assert after.run_count == 1 and after.last_run_at is not None and after.status == "active"
    assert (report.leader, report.due, report.created, report.dispatched) == (True, 1, 1, 1)


def test_a_replayed_tick_for_the_same_slot_inserts_nothing(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(name="replayed", command="test:echo", schedule="1m")
    slot = ago(engine, seconds=5)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    planner = Planner(engine, settings, RecordingPublisher())
    planner.tick()

    set_task(engine, task.id, next_run_at=slot)  # as if the advance had been lost: the same slot again
    report = planner.tick()

    assert len(executions_of(engine, task.id)) == 1
    assert report.created == 0
    assert get_task(engine, task.id).next_run_at == slot + timedelta(minutes=1)
    assert get_task(engine, task.id).run_count == 1


def test_tasks_not_yet_due_or_not_active_are_left_alone(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    future = service.create_task(name="future", command="test:echo", schedule="1h")
    paused = service.create_task(name="paused", command="test:echo", schedule="1m")
    manual = service.create_task(name="manual", command="test:echo", schedule="manual")
    set_task(engine, paused.id, next_run_at=ago(engine, minutes=5), status="paused")

    report = Planner(engine, settings, RecordingPublisher()).tick()

    assert report.due == 0 and executions_of(engine) == []
    assert get_task(engine, future.id).next_run_at == future.next_run_at
    assert get_task(engine, manual.id).next_run_at is None


def test_a_once_task_stays_active_with_no_next_run_after_its_dispatch(engine: Engine) -> None:
    # Its run decides how it ends (completed or failed: test_worker_runs, test_once_outcomes).
    settings = make_settings()
    task = make_service(engine, settings).create_task(name="once", command="test:echo", schedule="now")
    assert task.next_run_at is not None and task.next_run_at <= now_of(engine)

    Planner(engine, settings, RecordingPublisher()).tick()

    after = get_task(engine, task.id)
    assert (after.status, after.status_reason, after.next_run_at, after.run_count) == (
        "active",
        None,
        None,
        1,
    )
    assert by_status(executions_of(engine, task.id)) == {"queued": 1}


def test_a_task_reaching_max_runs_is_completed(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(
        name="twice", command="test:echo", schedule="1m", max_runs=2, misfire_policy="run_all"
    )
    first = minute_floor(ago(engine, minutes=5))
    set_task(engine, task.id, next_run_at=first, anchor_at=first)

    Planner(engine, settings, RecordingPublisher()).tick()

    rows = executions_of(engine, task.id)
    assert [r.scheduled_for for r in rows] == [first, first + timedelta(minutes=1)]
    after = get_task(engine, task.id)
    assert (after.status, after.status_reason, after.run_count, after.next_run_at) == (
        "completed",
        "max_runs reached",
        2,
        None,
    )


def test_a_task_past_its_end_is_completed_without_running_later_slots(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    now = now_of(engine)
    task = service.create_task(
        name="ending", command="test:echo", schedule="1m", end_at=now + timedelta(days=1)
    )
    first = minute_floor(now) - timedelta(minutes=3)
    set_task(engine, task.id, next_run_at=first, anchor_at=first, end_at=first + timedelta(seconds=90))

    Planner(engine, settings, RecordingPublisher()).tick()

    rows = executions_of(engine, task.id)
    # Slots first and first+1m lie before end_at; both are older than the one-minute grace: one catch-up.
    assert [(r.scheduled_for, r.status, r.trigger) for r in rows] == [
        (first, "skipped", "schedule"),
        (first + timedelta(minutes=1), "queued", "catchup"),
    ]
    after = get_task(engine, task.id)
    assert (after.status, after.status_reason, after.next_run_at) == ("completed", "end_at passed", None)


def test_a_task_due_only_after_its_end_is_completed_with_no_run(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(name="over", command="test:echo", schedule="1m")
    slot = ago(engine, seconds=10)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot, end_at=slot - timedelta(seconds=10))

    Planner(engine, settings, RecordingPublisher()).tick()

    assert executions_of(engine, task.id) == []
    assert get_task(engine, task.id).status == "completed"


def test_many_due_tasks_are_planned_in_batches_within_one_tick(engine: Engine) -> None:
    settings = make_settings(planner_batch_size=7)
    service = make_service(engine, settings)
    slot = ago(engine, seconds=5)
    for i in range(30):
        task = service.create_task(name=f"t{i}", command="test:echo", schedule="1h")
        set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()

    report = Planner(engine, settings, publisher).tick()

    assert (report.due, report.created, report.dispatched, report.more) == (30, 30, 30, False)
    assert by_status(executions_of(engine)) == {"queued": 30}
    assert sorted(publisher.ids) == sorted(r.id for r in executions_of(engine))


def test_a_broker_failure_leaves_executions_pending_for_the_next_tick(engine: Engine) -> None:
    settings = make_settings()
    task = make_service(engine, settings).create_task(name="relay", command="test:echo", schedule="1h")
    slot = ago(engine, seconds=5)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)
    publisher = RecordingPublisher()
    publisher.fail = True
    planner = Planner(engine, settings, publisher)

    report = planner.tick()

    assert report.broker_error is not None and report.created == 1 and report.dispatched == 0
    assert by_status(executions_of(engine, task.id)) == {"pending": 1}

    publisher.fail = False
    report = planner.tick()

    assert report.dispatched == 1 and report.broker_error is None
    assert by_status(executions_of(engine, task.id)) == {"queued": 1}


def test_manual_runs_written_without_a_publisher_are_relayed(engine: Engine) -> None:
    settings = make_settings()
    service = make_service(engine, settings)
    task = service.create_task(name="manual-run", command="test:echo", schedule="manual")
    execution = service.run_task_now(task.id)
    assert execution.status == "pending"
    publisher = RecordingPublisher()

    Planner(engine, settings, publisher).tick()

    assert publisher.ids == [execution.id]
    assert service.get_execution(execution.id).status == "queued"
