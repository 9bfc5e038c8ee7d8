"""Prepared statements on the worker's hot path (scheduler.storage.prepared), on a real PostgreSQL.

They must give the same rows as the plain statements, survive a connection losing them, and step aside
where they cannot be used (inside an explicit transaction, or where prepared statements keep vanishing).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, bindparam, select, update
from test_worker_runs import add_execution, add_task

from scheduler.records import ClaimedExecution
from scheduler.storage import prepared
from scheduler.storage.db import make_engine
from scheduler.storage.runs import claim_execution, finish_execution
from scheduler.storage.tables import executions, tasks
from scheduler.storage.transactions import write_transaction
from tests.support.statements import record_statements

STALE = timedelta(seconds=30)


@pytest.fixture
def engines(pg_url: str) -> Iterator[tuple[Engine, Engine]]:
    """(plain engine, autocommit engine) on one fresh database."""
    plain, hot = make_engine(pg_url), make_engine(pg_url, autocommit=True)
    yield plain, hot
    plain.dispose()
    hot.dispose()


def _comparable(claim: ClaimedExecution) -> dict[str, Any]:
    fields = dataclasses.asdict(claim)
    for varying in ("id", "started_at", "scheduled_for", "task_status"):
        fields.pop(varying)
    return fields


def test_prepared_and_plain_statements_claim_and_finish_alike(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    task_id = add_task(plain, data={"token": "s3cret", "n": [1, 2]}, auto_pause_after=1)
    first, second = add_execution(plain, task_id), add_execution(plain, task_id)
    seen = record_statements(hot)
    with hot.connect() as connection:
        by_prepared = claim_execution(connection, first, "w:1", stale_after=STALE)
        assert by_prepared is not None
        finished_prepared = finish_execution(
            connection, by_prepared, status="failed", duration_ms=5, error="x"
        )
    assert seen == ["PREPARE", "EXECUTE", "PREPARE", "EXECUTE"]
    with plain.connect() as connection, write_transaction(connection):
        by_plain = claim_execution(connection, second, "w:1", stale_after=STALE)
        assert by_plain is not None
        finished_plain = finish_execution(connection, by_plain, status="failed", duration_ms=5, error="x")
    assert _comparable(by_prepared) == _comparable(by_plain)
    assert by_prepared.data == {"token": "s3cret", "n": [1, 2]} and by_prepared.retry_backoff == 2.0
    assert (by_prepared.task_status, by_plain.task_status) == ("active", "paused")
    assert finished_prepared is not None and finished_plain is not None
    # The first failure auto-paused the task (auto_pause_after=1); the second counted on top of it.
    assert (finished_prepared.task_paused, finished_prepared.consecutive_failures) == (True, 1)
    assert (finished_plain.task_paused, finished_plain.consecutive_failures) == (False, 2)


def test_a_claim_that_is_not_ours_to_take_returns_nothing_when_prepared(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    with hot.connect() as connection:
        assert claim_execution(connection, execution_id, "w:1", stale_after=STALE) is not None
        assert claim_execution(connection, execution_id, "w:2", stale_after=STALE) is None


def test_statements_that_vanished_from_the_connection_are_prepared_again(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    task_id = add_task(plain)
    first, second = add_execution(plain, task_id), add_execution(plain, task_id)
    seen = record_statements(hot)
    with hot.connect() as connection:
        assert claim_execution(connection, first, "w:1", stale_after=STALE) is not None
        connection.exec_driver_sql("DEALLOCATE ALL")  # as a pooler's DISCARD ALL would
        seen.clear()
        assert claim_execution(connection, second, "w:1", stale_after=STALE) is not None
    assert seen == ["EXECUTE", "PREPARE", "EXECUTE"]


def test_a_connection_whose_statements_keep_vanishing_runs_plain_statements(
    engines: tuple[Engine, Engine], monkeypatch: pytest.MonkeyPatch
) -> None:
    """As behind PgBouncer in transaction mode, where PREPARE and EXECUTE reach different server sessions."""
    plain, hot = engines
    task_id = add_task(plain)
    first, second = add_execution(plain, task_id), add_execution(plain, task_id)

    def prepare_elsewhere(connection: Connection, statement: prepared.PreparedStatement) -> None:
        connection.exec_driver_sql(statement.prepare_sql, execution_options={"no_parameters": True})
        connection.exec_driver_sql(f"DEALLOCATE {statement.name}")

    monkeypatch.setattr(prepared, "_prepare", prepare_elsewhere)
    seen = record_statements(hot)
    with hot.connect() as connection:
        claimed = claim_execution(connection, first, "w:1", stale_after=STALE)
        assert claimed is not None and claimed.id == first
        seen.clear()
        assert claim_execution(connection, second, "w:1", stale_after=STALE) is not None
    assert seen == ["UPDATE"]


def test_inside_an_explicit_transaction_statements_are_not_prepared(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    seen = record_statements(hot)
    with hot.connect() as connection, write_transaction(connection):
        assert claim_execution(connection, execution_id, "w:1", stale_after=STALE) is not None
    assert seen == ["BEGIN", "UPDATE", "COMMIT"]


def test_the_statement_values_are_rendered_as_literals_safely(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    task_id = add_task(plain)
    tricky = "it's 100% done; DROP TABLE x; -- $1"
    statement = (
        update(tasks)
        .where(tasks.c.id == bindparam("p_id"), tasks.c.status.in_(("active", "paused")))
        .values(status_reason=tricky, consecutive_failures=bindparam("p_failures"))
    )
    with hot.connect() as connection:
        for failures in (3, 4):  # prepared once, run twice
            result = prepared.execute(
                connection, "test", statement, {"p_id": task_id, "p_failures": failures}
            )
            assert result.rowcount == 1
    with plain.connect() as connection:
        row = connection.execute(
            select(tasks.c.status_reason, tasks.c.consecutive_failures).where(tasks.c.id == task_id)
        ).one()
        untouched = connection.execute(select(executions.c.id)).all()
    assert (row.status_reason, row.consecutive_failures) == (tricky, 4)
    assert untouched == []
