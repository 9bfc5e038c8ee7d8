"""The database clock: due-ness and audit times come from the database, never a host clock (invariant 6 of
docs/architecture.md)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, text

from scheduler.records import as_utc

_SQLITE_NOW = text("SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')")
_POSTGRES_NOW = text("SELECT clock_timestamp()")


def db_now(connection: Connection) -> datetime:
    """The database's current time, aware and in UTC.

    PostgreSQL: ``clock_timestamp()`` (the wall clock, not the transaction start, so a long transaction sees
    time move). SQLite: ``strftime(... 'now')``, millisecond precision, returned as naive UTC text.
    """
    if connection.dialect.name == "sqlite":
        raw = connection.execute(_SQLITE_NOW).scalar_one()
        return datetime.strptime(str(raw), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=UTC)
    value = connection.execute(_POSTGRES_NOW).scalar_one()
    if not isinstance(value, datetime):
        raise TypeError(f"the database returned {value!r} for the current time")
    now = as_utc(value)
    assert now is not None
    return now
