"""The worker's hot path (claim, completion) on PostgreSQL, through both drivers, on a real server.

On an autocommit connection (the worker's) and inside a transaction the statements give the same rows; each
is one statement on the driver's cursor (where the tests count statements). psycopg 3 prepares them on the
server once they ran ``prepare_threshold`` times on a connection, prepares them again when they were dropped
from it, and prepares nothing with ``?prepare_threshold=none`` (the setting for a pooler that cannot keep
them).
"""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, bindparam, select, text, update
from test_worker_runs import add_execution, add_task

from scheduler.records import ClaimedExecution
from scheduler.storage.db import make_engine
from scheduler.storage.runs import claim_execution, finish_execution
from scheduler.storage.tables import executions, tasks
from scheduler.storage.transactions import write_transaction
from tests.conftest import with_driver
from tests.support.statements import record_statements

STALE = timedelta(seconds=30)
PSYCOPG_DEFAULT_THRESHOLD = 5  # psycopg 3 prepares a statement once it ran this many times on a connection


def _comparable(claim: ClaimedExecution) -> dict[str, Any]:
    fields = dataclasses.asdict(claim)
    for varying in ("id", "started_at", "scheduled_for", "task_status"):
        fields.pop(varying)
    return fields


def _prepared_claims(connection: Connection) -> int:
    """How many statements prepared on this connection's server session are the claim."""
    query = text("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE 'UPDATE task_executions%'")
    return int(connection.execute(query).scalar_one())


def _claim_and_finish(connection: Connection, execution_id: int) -> None:
    claim = claim_execution(connection, execution_id, "w:1", stale_after=STALE)
    assert claim is not None and claim.id == execution_id
    assert finish_execution(connection, claim, status="completed", duration_ms=1) is not None


def test_the_autocommit_and_the_transactional_connections_claim_and_finish_alike(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    task_id = add_task(plain, data={"token": "s3cret", "n": [1, 2]}, auto_pause_after=1)
    first, second = add_execution(plain, task_id), add_execution(plain, task_id)
    seen = record_statements(hot)
    with hot.connect() as connection:
        by_hot = claim_execution(connection, first, "w:1", stale_after=STALE)
        assert by_hot is not None
        finished_hot = finish_execution(connection, by_hot, status="failed", duration_ms=5, error="x")
    assert seen == ["UPDATE", "WITH"]  # one statement each, committing by itself: no BEGIN, no COMMIT
    with plain.connect() as connection, write_transaction(connection):
        by_plain = claim_execution(connection, second, "w:1", stale_after=STALE)
        assert by_plain is not None
        finished_plain = finish_execution(connection, by_plain, status="failed", duration_ms=5, error="x")
    assert _comparable(by_hot) == _comparable(by_plain)
    assert by_hot.data == {"token": "s3cret", "n": [1, 2]} and by_hot.retry_backoff == 2.0
    assert (by_hot.task_status, by_plain.task_status) == ("active", "paused")
    assert finished_hot is not None and finished_plain is not None
    # The first failure auto-paused the task (auto_pause_after=1); the second counted on top of it.
    assert (finished_hot.task_paused, finished_hot.consecutive_failures) == (True, 1)
    assert (finished_plain.task_paused, finished_plain.consecutive_failures) == (False, 2)


def test_a_claim_that_is_not_ours_to_take_returns_nothing_on_the_autocommit_connection(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    with hot.connect() as connection:
        assert claim_execution(connection, execution_id, "w:1", stale_after=STALE) is not None
        for _ in range(PSYCOPG_DEFAULT_THRESHOLD + 1):  # past the threshold: prepared or not, the same answer
            assert claim_execution(connection, execution_id, "w:2", stale_after=STALE) is None


def test_inside_an_explicit_transaction_statements_are_bracketed_by_begin_and_commit(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    seen = record_statements(hot)
    with hot.connect() as connection, write_transaction(connection):
        assert claim_execution(connection, execution_id, "w:1", stale_after=STALE) is not None
    assert seen == ["BEGIN", "UPDATE", "COMMIT"]


def test_values_written_in_a_statement_are_bound_safely_every_time(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    task_id = add_task(plain)
    tricky = "it's 100% done; DROP TABLE x; -- $1 %s %(p_id)s"
    statement = (
        update(tasks)
        .where(tasks.c.id == bindparam("p_id"), tasks.c.status.in_(("active", "paused")))
        .values(status_reason=tricky, consecutive_failures=bindparam("p_failures"))
    )
    runs = range(1, PSYCOPG_DEFAULT_THRESHOLD + 3)  # past the threshold: prepared on psycopg 3
    with hot.connect() as connection:
        for failures in runs:
            assert connection.execute(statement, {"p_id": task_id, "p_failures": failures}).rowcount == 1
    with plain.connect() as connection:
        row = connection.execute(
            select(tasks.c.status_reason, tasks.c.consecutive_failures).where(tasks.c.id == task_id)
        ).one()
        untouched = connection.execute(select(executions.c.id)).all()
    assert (row.status_reason, row.consecutive_failures) == (tricky, runs[-1])
    assert untouched == []


def test_psycopg_prepares_the_claim_once_per_connection_and_again_after_it_was_dropped(pg_url: str) -> None:
    url = with_driver(pg_url, "psycopg")
    plain, hot = make_engine(url), make_engine(url, autocommit=True)
    task_id = add_task(plain)
    ids = [add_execution(plain, task_id) for _ in range(3 * PSYCOPG_DEFAULT_THRESHOLD)]
    try:
        with hot.connect() as connection:
            for execution_id in ids[:PSYCOPG_DEFAULT_THRESHOLD]:
                _claim_and_finish(connection, execution_id)
            assert _prepared_claims(connection) == 0  # not yet: five runs, prepared from the sixth
            _claim_and_finish(connection, ids[PSYCOPG_DEFAULT_THRESHOLD])
            assert _prepared_claims(connection) == 1
            connection.exec_driver_sql("DEALLOCATE ALL")  # as a pooler's DISCARD ALL would
            assert _prepared_claims(connection) == 0
            for execution_id in ids[PSYCOPG_DEFAULT_THRESHOLD + 1 :]:
                _claim_and_finish(connection, execution_id)
            assert _prepared_claims(connection) == 1
    finally:
        plain.dispose()
        hot.dispose()


@pytest.mark.parametrize(("threshold", "prepared"), [("none", 0), ("0", 1)])
def test_prepare_threshold_in_the_url_reaches_psycopg(pg_url: str, threshold: str, prepared: int) -> None:
    """``none``: nothing prepared (behind PgBouncer in transaction mode); ``0``: prepared at the first run."""
    url = with_driver(pg_url, "psycopg") + f"?prepare_threshold={threshold}"
    plain, hot = make_engine(url), make_engine(url, autocommit=True)
    task_id = add_task(plain)
    ids = [add_execution(plain, task_id) for _ in range(2 * PSYCOPG_DEFAULT_THRESHOLD)]
    try:
        with hot.connect() as connection:
            _claim_and_finish(connection, ids[0])
            assert _prepared_claims(connection) == prepared
            for execution_id in ids[1:]:
                _claim_and_finish(connection, execution_id)
            assert _prepared_claims(connection) == prepared
    finally:
        plain.dispose()
        hot.dispose()
