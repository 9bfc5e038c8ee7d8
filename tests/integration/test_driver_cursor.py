"""The worker's hot statements on the driver's cursor (``scheduler.storage.driver_cursor``), both drivers, a
real server: the same rows as SQLAlchemy's ``execute`` of the same statement, SQLAlchemy's transaction kept,
driver errors raised as SQLAlchemy's exceptions, and a connection whose session died invalidated."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy import exc as sa_exc
from test_worker_runs import add_execution, add_task

from scheduler.storage.driver_cursor import run_on_driver
from scheduler.storage.run_statements import pg_claim, pg_finish_statement, pg_takeover
from scheduler.storage.runs import claim_execution
from scheduler.storage.tables import executions
from scheduler.storage.transactions import write_transaction


def _finish_params(execution_id: int, result: Any) -> dict[str, Any]:
    return {
        "p_id": execution_id,
        "p_worker": "w:1",
        "p_status": "completed",
        "p_duration": 3,
        "p_reason": None,
        "p_error": None,
        "p_result": result,
    }


def _status(engine: Engine, execution_id: int) -> tuple[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(
            select(executions.c.status, executions.c.result).where(executions.c.id == execution_id)
        ).one()
    return row.status, row.result


@pytest.mark.parametrize("result", [None, {"n": [1, 2], "s": "it's %(p_id)s"}, "text", 7])
def test_the_driver_cursor_returns_what_sqlalchemy_returns_for_the_same_statements(
    engines: tuple[Engine, Engine], result: Any
) -> None:
    plain, hot = engines
    task_id = add_task(plain, data={"token": "s3cret", "n": [1, 2]})
    ours, theirs = add_execution(plain, task_id), add_execution(plain, task_id)
    finish, _ = pg_finish_statement("completed", True)
    with hot.connect() as connection:
        rowcount, claimed = run_on_driver(connection, pg_claim(), {"p_id": ours, "p_worker": "w:1"})
        expected = connection.execute(pg_claim(), {"p_id": theirs, "p_worker": "w:1"}).one()._asdict()
        assert rowcount == 1 and claimed is not None
        assert claimed.keys() == expected.keys()
        varying = {"id", "scheduled_for", "started_at"}
        assert {k: v for k, v in claimed.items() if k not in varying} == {
            k: v for k, v in expected.items() if k not in varying
        }
        assert claimed["t_data"] == {"token": "s3cret", "n": [1, 2]}
        assert claimed["started_at"].tzinfo is not None

        _, finished = run_on_driver(connection, finish, _finish_params(ours, result))
        same = connection.execute(finish, _finish_params(theirs, result)).one()._asdict()
        assert finished is not None and finished.keys() == same.keys()
        assert {**finished, "id": 0} == {**same, "id": 0}
    assert _status(plain, ours) == _status(plain, theirs) == ("completed", result)  # JSON null for None


def test_a_statement_without_rows_gives_its_rowcount(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    retrying, _ = pg_finish_statement("retrying", False)
    params = {**_finish_params(execution_id, None), "p_status": "retrying"}
    with hot.connect() as connection:
        assert run_on_driver(connection, retrying, params) == (0, None)  # not running: nothing to finish
        assert claim_execution(connection, execution_id, "w:1", stale_after=timedelta(seconds=30))
        assert run_on_driver(connection, retrying, params) == (1, None)
    assert _status(plain, execution_id)[0] == "retrying"


def test_the_takeover_claim_runs_on_the_driver_with_its_interval(engines: tuple[Engine, Engine]) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    with plain.begin() as connection:
        connection.execute(
            executions.update()
            .where(executions.c.id == execution_id)
            .values(status="running", worker="dead:1", heartbeat_at=text("now() - interval '1 minute'"))
        )
    params = {"p_id": execution_id, "p_worker": "w:1", "p_holder": "dead:1"}
    with hot.connect() as connection:
        fresh = {**params, "p_stale": timedelta(minutes=5)}
        assert run_on_driver(connection, pg_takeover(), fresh) == (0, None)  # its heartbeat is not that old
        _, claimed = run_on_driver(connection, pg_takeover(), {**params, "p_stale": timedelta(seconds=30)})
    assert claimed is not None and (claimed["worker"], claimed["attempt"]) == ("w:1", 2)


def test_on_a_transactional_connection_the_statement_belongs_to_sqlalchemy_s_transaction(
    engines: tuple[Engine, Engine],
) -> None:
    plain, _ = engines
    task_id = add_task(plain)
    kept, undone = add_execution(plain, task_id), add_execution(plain, task_id)
    with plain.connect() as connection:
        with write_transaction(connection):
            assert run_on_driver(connection, pg_claim(), {"p_id": kept, "p_worker": "w:1"})[1] is not None
        with pytest.raises(RuntimeError), write_transaction(connection):
            assert run_on_driver(connection, pg_claim(), {"p_id": undone, "p_worker": "w:1"})[1] is not None
            raise RuntimeError("the caller fails after the claim")
    assert (_status(plain, kept)[0], _status(plain, undone)[0]) == ("running", "queued")


def test_a_driver_error_is_sqlalchemy_s_exception_and_the_connection_stays_usable(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    with hot.connect() as connection:
        with pytest.raises(sa_exc.DataError) as raised:  # the worker column is VARCHAR(200)
            run_on_driver(connection, pg_claim(), {"p_id": execution_id, "p_worker": "w" * 201})
        assert isinstance(raised.value.orig, hot.dialect.loaded_dbapi.Error)
        assert not raised.value.connection_invalidated and not connection.invalidated
        assert run_on_driver(connection, pg_claim(), {"p_id": execution_id, "p_worker": "w:1"})[0] == 1
        with pytest.raises(sa_exc.InvalidRequestError, match="p_worker"):
            run_on_driver(connection, pg_claim(), {"p_id": execution_id})


def test_a_connection_whose_session_died_raises_operational_error_and_is_invalidated(
    engines: tuple[Engine, Engine],
) -> None:
    plain, hot = engines
    execution_id = add_execution(plain, add_task(plain))
    with hot.connect() as connection:
        pid = connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with plain.connect() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(sa_exc.OperationalError) as raised:  # what workers.tasks retries on
            run_on_driver(connection, pg_claim(), {"p_id": execution_id, "p_worker": "w:1"})
        assert raised.value.connection_invalidated and connection.invalidated
    with hot.connect() as connection:  # the pool replaced the dead connection
        assert run_on_driver(connection, pg_claim(), {"p_id": execution_id, "p_worker": "w:1"})[0] == 1
