"""The worker's hot path on PostgreSQL, through both drivers: a no-op execution costs two statements (claim,
completion), each committing by itself on the connection the thread keeps; an outcome with logs still goes in
one transaction."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select
from test_worker_runs import add_execution, add_task

from scheduler.commands.registry import CommandContext, command
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from scheduler.storage.tables import executions, logs
from tests.support.statements import record_statements
from workers.runner import execute
from workers.runtime import WorkerRuntime


@command("roundtrip:silent", "Do nothing, log nothing (test).")
def silent(ctx: CommandContext) -> None:
    return None


@command("roundtrip:fail", "Fail (test).")
def fail(ctx: CommandContext) -> None:
    raise RuntimeError("boom")


def _execution(engine: Engine, command_name: str) -> int:
    task_id = add_task(engine, command=command_name, retries=0)
    execution_id = add_execution(engine, task_id, max_attempts=1)
    with engine.begin() as connection:
        connection.execute(
            executions.update().where(executions.c.id == execution_id).values(command=command_name)
        )
    return execution_id


@pytest.fixture
def pg_engine(pg_driver_url: str) -> Iterator[Engine]:
    engine = make_engine(pg_driver_url)
    yield engine
    engine.dispose()


def test_a_plain_execution_is_one_claim_and_one_completion_statement(
    pg_engine: Engine, pg_driver_url: str
) -> None:
    runtime = WorkerRuntime(Settings(database_url=pg_driver_url, broker_url="redis://127.0.0.1:1/0"))
    first, second = _execution(pg_engine, "roundtrip:silent"), _execution(pg_engine, "roundtrip:silent")
    seen = record_statements(runtime.hot_engine)
    try:
        decisions = [execute(runtime, first, worker="w:1")]
        # The claim (UPDATE ... RETURNING), then the completion (execution + task: WITH ... SELECT).
        assert seen == ["UPDATE", "WITH"]
        seen.clear()
        decisions.append(execute(runtime, second, worker="w:1"))
    finally:
        runtime.hot_engine.dispose()
        runtime.engine.dispose()
    assert [d.kind for d in decisions] == ["done", "done"]
    assert seen == ["UPDATE", "WITH"]  # the same two on the connection the thread kept
    with pg_engine.connect() as connection:
        rows = connection.execute(select(executions).where(executions.c.id.in_([first, second]))).all()
    assert [(r.status, r.attempt, r.finished_at is not None) for r in rows] == [("completed", 1, True)] * 2


def test_an_outcome_with_logs_is_one_transaction_on_the_autocommit_connection(
    pg_engine: Engine, pg_driver_url: str
) -> None:
    runtime = WorkerRuntime(Settings(database_url=pg_driver_url, broker_url="redis://127.0.0.1:1/0"))
    execution_id = _execution(pg_engine, "roundtrip:fail")
    seen = record_statements(runtime.hot_engine)
    try:
        decision = execute(runtime, execution_id, worker="w:1")
    finally:
        runtime.hot_engine.dispose()
        runtime.engine.dispose()
    assert decision.kind == "failed"  # the Celery task ends FAILURE (workers.tasks)
    # The claim, committing by itself, then the outcome and its logs in one transaction.
    assert seen[:2] == ["UPDATE", "BEGIN"] and seen[-1] == "COMMIT"
    assert seen.count("BEGIN") == 1 and seen.count("COMMIT") == 1
    with pg_engine.connect() as connection:
        row = connection.execute(select(executions).where(executions.c.id == execution_id)).one()
        lines = connection.execute(select(logs.c.message).where(logs.c.execution_id == execution_id)).all()
    assert row.status == "failed" and "boom" in (row.error or "")
    assert any("attempt 1 of 1 failed" in line.message for line in lines)
