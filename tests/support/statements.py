"""Recording the statements a PostgreSQL engine sends, at the driver's cursor."""

from __future__ import annotations

from typing import Any

import psycopg2.extensions
from sqlalchemy import Engine, event


def record_statements(engine: Engine) -> list[str]:
    """The first word of every statement sent on ``engine``'s connections from now on, upper-cased.

    Recorded by the driver's cursor, so statements sent past SQLAlchemy (the worker's prepared statements)
    count too. The engine connects once here, so SQLAlchemy's own first statements are not recorded.
    """
    seen: list[str] = []

    class Recording(psycopg2.extensions.cursor):
        def execute(self, query: Any, vars: Any = None) -> None:
            seen.append(str(query).split(None, 1)[0].upper())
            super().execute(query, vars)

    def record(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.cursor_factory = Recording

    event.listen(engine, "connect", record)
    engine.connect().close()
    seen.clear()
    return seen
