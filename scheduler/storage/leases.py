"""SQL of leadership leases (``scheduler_leases``): take or renew, fence, read, give up. Callers own the
transaction; :class:`scheduler.planning.lease.Lease` decides when to call which (see its module).

A lease is a row, not a session-level advisory lock (those break behind PgBouncer in transaction mode); its
times are the database clock's.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, select, text, update
from sqlalchemy.dialects import postgresql, sqlite

from scheduler.records import LeaseState, as_utc
from scheduler.storage.clock import db_now
from scheduler.storage.tables import leases

PLANNER_LEASE = "planner"
# fence() on PostgreSQL: the clock and the fencing check (row locked FOR SHARE) in one round trip; the second
# form also sets the transaction's idle timeout first (what write_transaction would do separately).
_PG_FENCE = text(
    """
    SELECT c.now FROM (SELECT clock_timestamp() AS now) AS c
    JOIN scheduler_leases AS l ON l.name = :name AND l.holder = :holder AND l.term = :term
        AND l.expires_at > c.now
    FOR SHARE OF l
    """
)
_PG_FENCE_IDLE = text(
    """
    SELECT c.now FROM (
        SELECT set_config('idle_in_transaction_session_timeout', :idle, true) AS idle,
            clock_timestamp() AS now
    ) AS c
    JOIN scheduler_leases AS l ON l.name = :name AND l.holder = :holder AND l.term = :term
        AND l.expires_at > c.now
    FOR SHARE OF l
    """
)


def _lease_state(row: Any) -> LeaseState:
    expires, renewed = as_utc(row.expires_at), as_utc(row.renewed_at)
    assert expires is not None and renewed is not None
    return LeaseState(row.name, row.holder, int(row.term), expires, renewed)


def read_lease(connection: Connection, name: str = PLANNER_LEASE) -> LeaseState | None:
    """The lease row ``name``, or None when nobody ever held it."""
    row = connection.execute(select(leases).where(leases.c.name == name)).first()
    return None if row is None else _lease_state(row)


def all_leases(connection: Connection) -> list[LeaseState]:
    """Every lease row, the latest expiry first (what the health checks show)."""
    rows = connection.execute(select(leases).order_by(leases.c.expires_at.desc()))
    return [_lease_state(row) for row in rows]


def acquire_or_renew(
    connection: Connection, *, name: str, holder: str, now: datetime, ttl: timedelta
) -> int | None:
    """Our term if ``holder`` now holds ``name`` until ``now + ttl``; None if another holder does.

    One ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE holder = me OR expires_at <= now RETURNING
    term``: it creates the lease, renews our own, or takes over an expired one. The term goes up by one
    whenever the holder changes, so terms order leaders.
    """
    dialect: Any = postgresql if connection.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(leases).values(
        name=name, holder=holder, term=1, expires_at=now + ttl, renewed_at=now
    )
    excluded = statement.excluded
    statement = statement.on_conflict_do_update(
        index_elements=["name"],
        set_={
            # SET expressions read the old row: the term moves on only when the holder changes.
            "term": case((leases.c.holder == excluded.holder, leases.c.term), else_=leases.c.term + 1),
            "holder": excluded.holder,
            "expires_at": excluded.expires_at,
            "renewed_at": excluded.renewed_at,
        },
        where=(leases.c.holder == excluded.holder) | (leases.c.expires_at <= excluded.renewed_at),
    ).returning(leases.c.term)
    term = connection.execute(statement).scalar_one_or_none()
    return None if term is None else int(term)


def holds(connection: Connection, *, name: str, holder: str, term: int, now: datetime) -> bool:
    """Whether ``(name, holder, term)`` is stored and unexpired at ``now``.

    On PostgreSQL the row is locked ``FOR SHARE`` until the transaction ends, so a takeover (an update of
    the row) waits for it: nothing written in this transaction under an old term can commit after a new term
    began. SQLite's write lock serialises them anyway.
    """
    query = (
        select(leases.c.term)
        .where(
            leases.c.name == name,
            leases.c.holder == holder,
            leases.c.term == term,
            leases.c.expires_at > now,
        )
        .with_for_update(read=True)  # FOR SHARE on PostgreSQL; nothing on SQLite
    )
    return connection.execute(query).first() is not None


def fence(
    connection: Connection, *, name: str, holder: str, term: int, idle_timeout_ms: int | None = None
) -> datetime | None:
    """:func:`holds` and the database clock together: the clock if ``(name, holder, term)`` holds the lease,
    else None.

    PostgreSQL: one statement, ``clock_timestamp()`` joined to the lease row ``FOR SHARE`` (the row lock of
    :func:`holds`, taken with the same instant it is checked against); with ``idle_timeout_ms`` it also sets
    the transaction's ``idle_in_transaction_session_timeout`` before taking that lock (see
    :func:`~scheduler.storage.transactions.write_transaction`), so it must be the transaction's first
    statement. SQLite: the two statements (``idle_timeout_ms`` means nothing there).
    """
    if connection.dialect.name != "postgresql":
        now = db_now(connection)
        return now if holds(connection, name=name, holder=holder, term=term, now=now) else None
    params: dict[str, object] = {"name": name, "holder": holder, "term": term}
    statement = _PG_FENCE
    if idle_timeout_ms is not None:
        statement, params["idle"] = _PG_FENCE_IDLE, f"{int(idle_timeout_ms)}ms"
    row = connection.execute(statement, params).first()
    return None if row is None else as_utc(row.now)


def expire_lease(connection: Connection, *, name: str, holder: str, term: int) -> None:
    """End ``holder``'s term ``term`` of ``name`` now (database clock): the next claimant takes it over."""
    now = db_now(connection)
    connection.execute(
        update(leases)
        .where(leases.c.name == name, leases.c.holder == holder, leases.c.term == term)
        .values(expires_at=now)
    )
