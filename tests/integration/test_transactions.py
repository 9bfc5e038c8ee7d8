"""write_transaction, the one write-transaction helper: on an engine or an open connection, pooled or
autocommit, it commits on success and rolls everything back on an exception; its settings stay local."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, func, insert, select

from scheduler.storage.db import make_engine
from scheduler.storage.tables import leases
from scheduler.storage.transactions import write_transaction

Begin = Callable[[Engine], AbstractContextManager[Connection]]


class Boom(Exception):
    pass


def lease_rows(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(leases)).scalar_one())


def add_lease_row(connection: Connection, name: str) -> None:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    connection.execute(
        insert(leases).values(name=name, holder="test", term=1, expires_at=moment, renewed_at=moment)
    )


@pytest.fixture(params=["on the engine", "on an open connection"])
def begin(request: pytest.FixtureRequest) -> Iterator[Begin]:
    """write_transaction on the engine itself, or on a connection the caller opened and keeps."""
    with ExitStack() as opened:

        def on_connection(engine: Engine) -> AbstractContextManager[Connection]:
            return write_transaction(opened.enter_context(engine.connect()))

        yield write_transaction if request.param == "on the engine" else on_connection


@pytest.fixture(params=["sqlite", "postgres", "postgres-autocommit"])
def any_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The scheduler's engines: SQLite, PostgreSQL, and the worker's autocommit one on PostgreSQL."""
    database, _, mode = request.param.partition("-")
    url = request.getfixturevalue("sqlite_url" if database == "sqlite" else "pg_url")
    engine = make_engine(url, autocommit=mode == "autocommit")
    yield engine
    engine.dispose()


def test_a_write_transaction_commits_on_success_and_rolls_all_back_on_an_exception(
    any_engine: Engine, begin: Begin
) -> None:
    with begin(any_engine) as connection:
        add_lease_row(connection, "kept")
    with pytest.raises(Boom), begin(any_engine) as connection:
        add_lease_row(connection, "first of two")
        add_lease_row(connection, "second of two")
        raise Boom
    assert lease_rows(any_engine) == 1


@pytest.mark.postgres
def test_its_idle_timeout_and_non_durable_commit_apply_to_that_transaction_only(pg_url: str) -> None:
    for autocommit in (False, True):
        engine = make_engine(pg_url, autocommit=autocommit)
        try:
            with engine.connect() as connection:
                with write_transaction(connection, idle_timeout_ms=4321, durable=False):
                    inside = (
                        connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar_one(),
                        connection.exec_driver_sql("SHOW synchronous_commit").scalar_one(),
                    )
                after = (
                    connection.exec_driver_sql("SHOW idle_in_transaction_session_timeout").scalar_one(),
                    connection.exec_driver_sql("SHOW synchronous_commit").scalar_one(),
                )
        finally:
            engine.dispose()
        assert inside == ("4321ms", "off"), autocommit
        assert after == ("0", "on"), autocommit


def test_on_sqlite_it_takes_the_write_lock_before_the_first_write(sqlite_url: str, tmp_path: Path) -> None:
    engine = make_engine(sqlite_url)
    other = sqlite3.connect(tmp_path / "scheduler.db", timeout=0, isolation_level=None)
    try:
        with write_transaction(engine) as connection:
            connection.execute(select(1))  # a read only, so far
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released by the commit
        other.execute("ROLLBACK")
    finally:
        other.close()
        engine.dispose()
