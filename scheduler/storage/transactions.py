"""The one way to open a transaction that writes: :func:`write_transaction`. Every caller uses it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text

from scheduler.storage.db import autocommits

_IDLE_TIMEOUT = text("SELECT set_config('idle_in_transaction_session_timeout', :value, true)")


@contextmanager
def write_transaction(
    bind: Engine | Connection, *, idle_timeout_ms: int | None = None, durable: bool = True
) -> Iterator[Connection]:
    """A transaction that will write, on a new connection of an engine or on an open connection: commit on
    success, roll back on any exception.

    - SQLite: ``BEGIN IMMEDIATE`` takes the write lock up front, so reads inside it see the state the writes
      apply to (a deferred transaction could read, then fail to upgrade its lock) and writers queue on the
      busy timeout. PostgreSQL: an ordinary transaction; row locks are taken by the statements.
    - A connection of an ``autocommit`` engine (:func:`scheduler.storage.db.autocommits`, the worker's hot
      path) gets an explicit ``BEGIN`` ... ``COMMIT``.
    - ``idle_timeout_ms`` (PostgreSQL): the server ends the session when the client stays silent that long
      inside this transaction (``SET LOCAL idle_in_transaction_session_timeout``, so it works behind
      PgBouncer in transaction mode): a frozen or partitioned client cannot hold its row locks for ever.
    - ``durable=False`` (PostgreSQL): ``synchronous_commit`` is off for this transaction only, so the commit
      does not wait for the WAL flush. For heartbeats (and claims, whose statement sets it itself: see
      ``run_statements.pg_claim_returning``): if the database crashed in that window, the execution would be
      ``queued`` again and run again, which at-least-once delivery allows anyway. Outcomes are durable.
    """
    if isinstance(bind, Engine):
        with (
            bind.connect() as connection,
            write_transaction(connection, idle_timeout_ms=idle_timeout_ms, durable=durable),
        ):
            yield connection
        return
    connection = bind
    sqlite = connection.dialect.name == "sqlite"
    explicit = autocommits(connection)
    if sqlite:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    elif explicit:
        connection.exec_driver_sql("BEGIN")
    try:
        if not sqlite and idle_timeout_ms is not None:
            connection.execute(_IDLE_TIMEOUT, {"value": f"{int(idle_timeout_ms)}ms"})
        if not sqlite and not durable:
            connection.exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        yield connection
    except BaseException:
        if explicit:
            connection.exec_driver_sql("ROLLBACK")
        else:
            connection.rollback()
        raise
    if explicit:
        connection.exec_driver_sql("COMMIT")
    else:
        connection.commit()
