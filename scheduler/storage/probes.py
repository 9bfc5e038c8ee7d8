"""Reads of the health checks: does the database answer, and which planner leases exist."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, text

from scheduler.storage.tables import leases


def ping(connection: Connection) -> None:
    """One round trip (``SELECT 1``); raises the driver's error when the database does not answer."""
    connection.execute(text("SELECT 1"))


def leases_by_expiry(connection: Connection) -> Sequence[Any]:
    """Every lease row (name, holder, term, expires_at), the latest expiry first."""
    columns = (leases.c.name, leases.c.holder, leases.c.term, leases.c.expires_at)
    return connection.execute(select(*columns).order_by(leases.c.expires_at.desc())).all()


def held_lease(connection: Connection, now: datetime) -> dict[str, Any] | None:
    """A lease unexpired at ``now`` as ``{"lease", "holder"}``, or None when no planner holds one."""
    row = connection.execute(
        select(leases.c.name, leases.c.holder).where(leases.c.expires_at > now).limit(1)
    ).first()
    return None if row is None else {"lease": row.name, "holder": row.holder}
