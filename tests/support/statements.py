"""Recording the statements an engine sends: on PostgreSQL at the driver's cursor, elsewhere through
SQLAlchemy's events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event


def record_statements(engine: Engine) -> list[str]:
    """The first word of every statement sent on ``engine``'s connections from now on, upper-cased.

    PostgreSQL: recorded by the driver's cursor (a subclass of the driver's own cursor class, set as the
    connection's public ``cursor_factory`` at every checkout, psycopg2 and psycopg 3 alike), so the worker's
    hot statements, which run on the DBAPI cursor (``scheduler.storage.driver_cursor``), are seen with every
    statement SQLAlchemy sends. What a driver sends on its own (psycopg 3 preparing a statement, the implicit
    ``BEGIN`` of a non-autocommit connection) is protocol, not statements. SQLite: SQLAlchemy's
    ``before_cursor_execute`` event, which every statement there goes through. The engine connects once here,
    so SQLAlchemy's own first statements are not recorded.
    """
    seen: list[str] = []

    def record(statement: str) -> None:
        seen.append(statement.split(None, 1)[0].upper())

    engine.connect().close()
    if engine.dialect.name != "postgresql":
        event.listen(engine, "before_cursor_execute", lambda *args: record(args[2]))
        return seen
    recording: dict[type, type] = {}  # the driver's cursor class -> its recording subclass

    def recording_cursor(base: type) -> type:
        class RecordingCursor(base):  # type: ignore[valid-type, misc]
            def execute(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                record(str(query))
                return super().execute(query, *args, **kwargs)

            def executemany(self, query: Any, *args: Any, **kwargs: Any) -> Any:
                record(str(query))
                return super().executemany(query, *args, **kwargs)

        return RecordingCursor

    def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        probe = dbapi_connection.cursor()
        base = type(probe)
        probe.close()
        if base not in recording.values():
            dbapi_connection.cursor_factory = recording.setdefault(base, recording_cursor(base))

    event.listen(engine.pool, "checkout", on_checkout)
    return seen
