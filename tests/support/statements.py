"""Recording the statements an engine sends, through SQLAlchemy's events."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, event


def record_statements(engine: Engine) -> list[str]:
    """The first word of every statement sent on ``engine``'s connections from now on, upper-cased.

    Recorded by SQLAlchemy's ``before_cursor_execute`` event, which every statement of ours goes through
    (what a driver sends on its own, such as psycopg 3 preparing a statement, is protocol, not statements).
    The engine connects once here, so SQLAlchemy's own first statements are not recorded.
    """
    seen: list[str] = []

    def record(*args: Any) -> None:
        statement: str = args[2]  # (connection, cursor, statement, parameters, context, executemany)
        seen.append(statement.split(None, 1)[0].upper())

    engine.connect().close()
    event.listen(engine, "before_cursor_execute", record)
    return seen
