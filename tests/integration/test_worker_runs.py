"""The worker's SQL (scheduler.storage.runs) on SQLite and PostgreSQL: claims are conditional, completion
is fenced, failures count up and auto-pause, logs keep their attempt."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, insert, select, update

from scheduler.records import PendingLog
from scheduler.storage.runs import (
    append_logs,
    claim_execution,
    finish_execution,
    heartbeat,
    load_task,
    record_auto_pause,
    running_claim,
)
from scheduler.storage.tables import audit, executions, logs, tasks

STALE = timedelta(seconds=15)


@pytest.fixture
def db_url(db_url_each_driver: str) -> str:
    """Claims, heartbeats and outcomes on SQLite and on PostgreSQL through each driver."""
    return db_url_each_driver


def add_task(engine: Engine, **overrides: Any) -> int:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "name": f"t-{time.monotonic_ns()}",
        "command": "test:echo",
        "schedule": "manual",
        "schedule_kind": "manual",
        "timezone": "UTC",
        "data": {"x": 1},
        "status": "active",
        "queue": "default",
        "retries": 2,
        "retry_delay_ms": 10,
        "retry_backoff": 2.0,
        "timeout_ms": 5000,
        "overlap_policy": "allow",
        "misfire_policy": "run_once",
        "anchor_at": now,
        "run_count": 0,
        "consecutive_failures": 0,
        **overrides,
    }
    with engine.begin() as connection:
        return int(connection.execute(insert(tasks).values(values).returning(tasks.c.id)).scalar_one())


def add_execution(engine: Engine, task_id: int, *, status: str = "queued", max_attempts: int = 3) -> int:
    with engine.begin() as connection:
        return int(
            connection.execute(
                insert(executions)
                .values(
                    task_id=task_id,
                    task_name="t",
                    command="test:echo",
                    scheduled_for=datetime.now(UTC),
                    trigger="manual",
                    status=status,
                    attempt=1,
                    max_attempts=max_attempts,
                    queue="default",
                )
                .returning(executions.c.id)
            ).scalar_one()
        )


def row(engine: Engine, execution_id: int) -> Any:
    with engine.connect() as connection:
        return connection.execute(select(executions).where(executions.c.id == execution_id)).one()


def test_a_claim_returns_the_task_fields_and_a_second_claim_is_a_no_op(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w1:1", stale_after=STALE)
    assert claim is not None
    assert (claim.attempt, claim.task_found, claim.data, claim.timeout_ms) == (1, True, {"x": 1}, 5000)
    assert claim.log_bytes == 0
    with engine.begin() as connection:
        assert claim_execution(connection, execution_id, "w2:2", stale_after=STALE) is None
    current = row(engine, execution_id)
    assert (current.status, current.worker) == ("running", "w1:1")
    assert current.started_at is not None and current.heartbeat_at is not None


def test_finished_and_cancelled_executions_cannot_be_claimed(engine: Engine) -> None:
    task_id = add_task(engine)
    for status in ("completed", "cancelled", "failed", "lost", "skipped"):
        execution_id = add_execution(engine, task_id, status=status)
        with engine.begin() as connection:
            assert claim_execution(connection, execution_id, "w:1", stale_after=STALE) is None


def test_a_deleted_task_is_reported_by_the_claim(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        connection.execute(tasks.delete().where(tasks.c.id == task_id))
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
    assert claim is not None and not claim.task_found and claim.task_id is None


def test_retrying_starts_the_next_attempt_and_logs_keep_their_attempt(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
        assert claim is not None
        append_logs(connection, execution_id, claim.attempt, [PendingLog(datetime.now(UTC), "ERROR", "boom")])
        done = finish_execution(connection, claim, status="retrying", duration_ms=5, error="boom")
    assert done is not None and done.consecutive_failures is None
    assert row(engine, execution_id).status == "retrying"
    with engine.begin() as connection:
        second = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
    assert second is not None and second.attempt == 2 and second.log_bytes == 4
    with engine.connect() as connection:
        attempts = [r.attempt for r in connection.execute(select(logs.c.attempt))]
    assert attempts == [1]


def test_completion_is_fenced_to_the_claiming_worker(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
        assert claim is not None
        connection.execute(update(executions).where(executions.c.id == execution_id).values(worker="other:2"))
    with engine.begin() as connection:
        assert not heartbeat(connection, execution_id, "w:1")
        assert finish_execution(connection, claim, status="completed", duration_ms=1, result=1) is None
    assert row(engine, execution_id).status == "running"


def test_a_stale_running_claim_is_taken_over_as_the_next_attempt(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        assert claim_execution(connection, execution_id, "dead:1", stale_after=STALE) is not None
    with engine.begin() as connection:
        assert claim_execution(connection, execution_id, "w:2", stale_after=STALE) is None  # heartbeat fresh
        connection.execute(
            update(executions)
            .where(executions.c.id == execution_id)
            .values(heartbeat_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:2", stale_after=STALE)
    assert claim is not None and claim.attempt == 2 and claim.took_over_from == "dead:1"


def _run_once(engine: Engine, task_id: int, status: Any) -> Any:
    """A new execution of the task, claimed and finished with ``status``: what finish_execution returned."""
    execution_id = add_execution(engine, task_id, max_attempts=1)
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
        assert claim is not None
        return finish_execution(connection, claim, status=status, duration_ms=3, error="x")


def test_success_resets_failures_and_final_failures_auto_pause(engine: Engine) -> None:
    task_id = add_task(engine, auto_pause_after=2, consecutive_failures=0)

    def run(status: Any) -> Any:
        return _run_once(engine, task_id, status)

    first = run("failed")
    assert first.consecutive_failures == 1 and not first.task_paused
    assert run("completed").consecutive_failures == 0
    assert run("timed_out").consecutive_failures == 1
    paused = run("failed")
    assert paused.consecutive_failures == 2 and paused.task_paused
    with engine.begin() as connection:
        task = load_task(connection, task_id)
        assert task is not None
        record_auto_pause(connection, task, actor="worker:test")
    assert (task.status, task.status_reason) == ("paused", "auto-paused after 2 consecutive failures")
    assert task.last_run_at is None  # outcomes leave it to dispatches (the planner's slots, manual runs)
    with engine.connect() as connection:
        assert connection.execute(select(audit.c.action, audit.c.actor)).all() == [("pause", "worker:test")]
    assert not run("failed").task_paused  # already paused: not paused again


def test_a_completion_writes_the_task_row_only_to_reset_a_failure_streak(engine: Engine) -> None:
    task_id = add_task(engine, consecutive_failures=0)

    def task_row() -> Any:
        with engine.connect() as connection:
            return dict(connection.execute(select(tasks).where(tasks.c.id == task_id)).one()._mapping)

    def run(status: Any) -> Any:
        return _run_once(engine, task_id, status)

    before = task_row()
    untouched = run("completed")
    assert untouched is not None and untouched.consecutive_failures is None  # nothing to reset: not written
    assert task_row() == before
    assert run("failed").consecutive_failures == 1
    assert run("completed").consecutive_failures == 0
    assert task_row() == before | {"updated_at": task_row()["updated_at"]}


def test_a_dispatched_once_task_ends_with_the_outcome_of_its_latest_run(engine: Engine) -> None:
    # Dispatched: once, no next run. auto_pause_after=1 would pause a recurring task at its first failure.
    task_id = add_task(engine, schedule="now", schedule_kind="once", next_run_at=None, auto_pause_after=1)

    def run(status: Any) -> tuple[Any, Any]:
        finished = _run_once(engine, task_id, status)
        with engine.connect() as connection:
            task = load_task(connection, task_id)
            (latest,) = connection.execute(select(func.max(executions.c.id))).one()
        assert task is not None
        return finished, (task.status, task.status_reason, task.consecutive_failures, latest)

    failed, task = run("failed")
    assert task == ("failed", f"execution {task[3]} failed", 1, task[3]) and not failed.task_paused
    _, task = run("timed_out")  # a manual run of the failed task fails again
    assert task[:3] == ("failed", f"execution {task[3]} timed_out", 2)
    _, task = run("completed")  # ... and then succeeds
    assert task[:3] == ("completed", "ran once", 0)
    _, task = run("failed")
    assert task[:3] == ("failed", f"execution {task[3]} failed", 1)


def test_a_once_task_not_dispatched_yet_keeps_its_status_whatever_a_manual_run_does(engine: Engine) -> None:
    slot = datetime.now(UTC) + timedelta(hours=1)
    task_id = add_task(engine, schedule="later", schedule_kind="once", next_run_at=slot)
    for status in ("failed", "completed"):
        _run_once(engine, task_id, status)
        with engine.connect() as connection:
            task = load_task(connection, task_id)
        assert task is not None and (task.status, task.status_reason) == ("active", None)


def test_running_claim_reads_the_claim_of_a_running_execution(engine: Engine) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        assert running_claim(connection, execution_id) is None
        claim_execution(connection, execution_id, "w:9", stale_after=STALE)
        claim = running_claim(connection, execution_id)
    assert claim is not None and claim.worker == "w:9" and claim.retry_delay_ms == 10


@pytest.mark.parametrize("status", ["completed", "failed"])
def test_a_final_outcome_stamps_finished_at_and_duration(engine: Engine, status: Any) -> None:
    task_id = add_task(engine)
    execution_id = add_execution(engine, task_id)
    with engine.begin() as connection:
        claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
        assert claim is not None
        finish_execution(connection, claim, status=status, duration_ms=42, result={"a": [1]}, error="e")
    current = row(engine, execution_id)
    assert current.status == status and current.duration_ms == 42 and current.finished_at is not None
    assert current.error == (None if status == "completed" else "e")
    assert current.result == {"a": [1]}
