"""A burst planned in several batches in one tick: each batch is published right after its commit (on
PostgreSQL from the relay's helper thread), oldest first, never past the concurrency cap."""

from __future__ import annotations

from datetime import timedelta

from planner_support import RecordingPublisher, ago, executions_of, make_service, make_settings, set_task
from sqlalchemy import Engine

from scheduler.planning.planner import Planner


def _due_tasks(engine: Engine, count: int, settings: object) -> None:
    service = make_service(engine, settings)  # type: ignore[arg-type]
    base = ago(engine, seconds=60)
    for i in range(count):
        task = service.create_task(name=f"burst-{i}", command="test:echo", schedule="1h")
        slot = base + timedelta(seconds=i)  # distinct slots: one oldest-first order
        set_task(engine, task.id, next_run_at=slot, anchor_at=slot)


def test_every_batch_of_a_burst_goes_out_in_the_same_tick(engine: Engine) -> None:
    settings = make_settings(planner_batch_size=3)
    _due_tasks(engine, 10, settings)
    publisher = RecordingPublisher()

    report = Planner(engine, settings, publisher).tick()

    rows = executions_of(engine)
    assert report.created == 10 and report.dispatched == 10 and not report.more
    assert sorted(publisher.ids) == sorted(r.id for r in rows)
    assert len(set(publisher.ids)) == 10  # each once
    assert {r.status for r in rows} == {"queued"}


def test_the_cap_holds_across_the_batches_of_one_tick(engine: Engine) -> None:
    settings = make_settings(planner_batch_size=2, max_concurrent_tasks=5)
    _due_tasks(engine, 9, settings)
    publisher = RecordingPublisher()
    planner = Planner(engine, settings, publisher)

    report = planner.tick()

    rows = sorted(executions_of(engine), key=lambda r: r.scheduled_for)
    assert report.created == 9 and report.dispatched == 5
    assert [r.status for r in rows] == ["queued"] * 5 + ["pending"] * 4
    assert sorted(publisher.ids) == sorted(r.id for r in rows[:5])
    assert planner.tick().dispatched == 0  # nothing finished: nothing more goes out


def test_an_older_pending_execution_goes_out_before_a_new_batch(engine: Engine) -> None:
    settings = make_settings(planner_batch_size=2, max_concurrent_tasks=2)
    service = make_service(engine, settings)
    manual = service.create_task(name="waiting", command="test:echo", schedule="manual")
    waiting = service.run_task_now(manual.id)  # no publisher: pending, older than the burst
    _due_tasks(engine, 3, settings)
    publisher = RecordingPublisher()

    report = Planner(engine, settings, publisher).tick()

    assert report.created == 3 and report.dispatched == 2
    assert publisher.ids[0] == waiting.id
