"""History retention: old finished executions go with their logs, in batches; open and recent ones stay."""

from __future__ import annotations

from datetime import timedelta

import pytest
from planner_support import (
    RecordingPublisher,
    add_execution,
    add_log,
    count_logs,
    executions_of,
    make_service,
    make_settings,
    now_of,
)
from sqlalchemy import Engine

from scheduler.planning.cleanup import cleanup_step, run_cleanup
from scheduler.planning.planner import Planner
from scheduler.records import FINISHED_STATUSES


def test_only_old_finished_executions_and_their_logs_are_deleted(engine: Engine) -> None:
    settings = make_settings(history_retention_days=30)
    task = make_service(engine, settings).create_task(name="history", command="test:echo", schedule="manual")
    now = now_of(engine)
    old = now - timedelta(days=40)
    expired = [
        add_execution(engine, task, old + timedelta(minutes=i), status=status, finished_at=old)
        for i, status in enumerate(FINISHED_STATUSES)
    ]
    for execution in expired:
        add_log(engine, execution)
    kept = {
        "recent": add_execution(
            engine, task, now - timedelta(days=2), status="completed", finished_at=now - timedelta(days=1)
        ),
        # A slot inside the misfire window stays whatever its finish time says (slot uniqueness).
        "slot-in-window": add_execution(
            engine, task, now - timedelta(minutes=10), status="skipped", finished_at=old
        ),
    }
    for minutes, status in enumerate(("pending", "queued", "running", "retrying")):
        kept[status] = add_execution(
            engine, task, old - timedelta(minutes=minutes + 1), status=status, enqueued_at=old, started_at=old
        )
    add_log(engine, kept["running"])

    deleted = run_cleanup(engine, settings)

    assert deleted == len(expired)
    assert {r.id for r in executions_of(engine)} == set(kept.values())
    assert count_logs(engine) == 1


def test_cleanup_works_through_many_rows_in_small_batches(engine: Engine) -> None:
    settings = make_settings(history_retention_days=1)
    task = make_service(engine, settings).create_task(name="bulk", command="test:echo", schedule="manual")
    old = now_of(engine) - timedelta(days=3)
    for i in range(23):
        execution = add_execution(
            engine, task, old + timedelta(seconds=i), status="completed", finished_at=old
        )
        add_log(engine, execution)

    assert run_cleanup(engine, settings, batch_size=5) == 23
    assert executions_of(engine) == [] and count_logs(engine) == 0
    assert run_cleanup(engine, settings, batch_size=5) == 0


def test_a_time_budget_works_a_backlog_off_over_several_steps(engine: Engine) -> None:
    settings = make_settings(history_retention_days=1)
    task = make_service(engine, settings).create_task(name="backlog", command="test:echo", schedule="manual")
    old = now_of(engine) - timedelta(days=3)
    for i in range(12):
        add_execution(engine, task, old + timedelta(seconds=i), status="skipped", finished_at=old)

    steps = [cleanup_step(engine, settings, batch_size=5, time_budget_s=0) for _ in range(3)]

    assert [(step.deleted, step.done) for step in steps] == [(5, False), (5, False), (2, True)]
    assert executions_of(engine) == []


def test_an_explicit_now_ages_the_history(engine: Engine) -> None:
    settings = make_settings(history_retention_days=7)
    task = make_service(engine, settings).create_task(name="aging", command="test:echo", schedule="manual")
    now = now_of(engine)
    add_execution(
        engine, task, now - timedelta(hours=2), status="completed", finished_at=now - timedelta(hours=2)
    )

    assert run_cleanup(engine, settings) == 0
    assert run_cleanup(engine, settings, now=now + timedelta(days=8)) == 1


@pytest.mark.parametrize("retention_days", [0, 30])
def test_the_leading_planner_runs_cleanup_on_its_first_tick(engine: Engine, retention_days: int) -> None:
    settings = make_settings(history_retention_days=retention_days)
    task = make_service(engine, settings).create_task(
        name="planner-cleans", command="test:echo", schedule="manual"
    )
    old = now_of(engine) - timedelta(days=10)
    add_execution(engine, task, old, status="failed", finished_at=old)

    report = Planner(engine, settings, RecordingPublisher()).tick()

    assert report.cleaned == (1 if retention_days < 10 else 0)
