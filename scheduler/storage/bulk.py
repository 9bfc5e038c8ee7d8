"""Many rows into one PostgreSQL table as one statement with one parameter: the rows as a JSON array, expanded
by the server with ``jsonb_populate_recordset`` (each field cast to its column's type), inserted in the
array's order; the array is made by :func:`scheduler.storage.dispatch.json_rows`, as the planner's is.
Sending 10,000 rows as bound parameters cost the client ~20x what this costs the server.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, text

from scheduler.storage.dispatch import json_rows

BULK_MIN_ROWS = 100  # below this, an ordinary executemany is as fast and is the path every caller tests


def _quoted(name: str) -> str:
    return f'"{name}"'


def insert_json_rows(
    connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]], *, returning: Sequence[str] = ()
) -> list[Row[Any]]:
    """Insert ``rows`` (all with the same keys, a subset of ``table``'s columns) in order; the ``returning``
    columns of the inserted rows (in insertion order in practice, which callers should not rely on: return a
    unique column to match them). PostgreSQL only."""
    if not rows:
        return []
    columns = ", ".join(_quoted(name) for name in rows[0])
    back = f" RETURNING {', '.join(_quoted(name) for name in returning)}" if returning else ""
    statement = text(
        f'INSERT INTO "{table.name}" ({columns}) SELECT {columns} '
        f'FROM jsonb_populate_recordset(NULL::"{table.name}", CAST(:rows AS jsonb)) WITH ORDINALITY AS r '
        f"ORDER BY r.ordinality{back}"
    )
    result = connection.execute(statement, {"rows": json_rows(list(map(dict, rows)))})
    return list(result) if returning else []
