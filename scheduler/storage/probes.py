"""The health checks' own read: does the database answer."""

from __future__ import annotations

from sqlalchemy import Connection, text


def ping(connection: Connection) -> None:
    """One round trip (``SELECT 1``); raises the driver's error when the database does not answer."""
    connection.execute(text("SELECT 1"))
