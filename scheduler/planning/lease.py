"""Leader election by lease: a ``scheduler_leases`` row renewed by the leader (database clock); invariant 4
of docs/architecture.md.

No session-level advisory locks (they break behind PgBouncer in transaction mode): the lease is a row.

- :meth:`Lease.acquire_or_renew` is one ``INSERT ... ON CONFLICT (name) DO UPDATE ... WHERE holder = me OR
  expires_at <= now RETURNING term`` (:func:`scheduler.storage.leases.acquire_or_renew`): it creates the
  lease, renews our own, or takes over an expired one. The ``term`` goes up by one whenever the holder
  changes, so terms order leaders.
- Fencing, two layers: every dispatch transaction calls :meth:`Lease.holds` (or :meth:`Lease.fence`) first,
  which re-reads ``(name, holder, term)`` with ``expires_at > now`` (``FOR SHARE`` on PostgreSQL, so a
  takeover waits for the transaction to end; SQLite's write lock serialises them anyway) and the planner rolls
  back when it fails.
  And locally, :meth:`Lease.locally_valid` turns False ``ttl - margin`` after the monotonic instant the last
  renewal was *sent*, so a leader that cannot renew stops dispatching before its lease can have expired.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine

from scheduler.storage import leases
from scheduler.storage.clock import db_now
from scheduler.storage.leases import PLANNER_LEASE
from scheduler.storage.transactions import write_transaction


def default_holder() -> str:
    """A holder id unique per process: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def default_margin(ttl: timedelta) -> timedelta:
    """How long before the lease's expiry a leader stops acting on its own: a fifth of the TTL."""
    return ttl / 5


def idle_timeout_ms(ttl: timedelta) -> int:
    """How long a planner transaction may sit idle before the server ends its session: half the TTL.

    A leader frozen inside a transaction (SIGSTOP, swapped out, a VM pause) holds the lease row ``FOR SHARE``
    and its due tasks ``FOR UPDATE``: without this bound a standby's takeover would wait for the frozen
    process, however long it sleeps. Half the TTL ends a freeze that began in the first half of a grant before
    the grant expires; planning a batch never leaves the database waiting that long.
    """
    return max(1, round(ttl.total_seconds() * 500))


class Lease:
    """One process's view of a named lease. One planner thread renews it; other threads of that planner (the
    relay's) only read :meth:`locally_valid`.

    ``ttl``: how long a grant lasts on the database clock; ``margin``: how much earlier this process stops
    trusting it (default :func:`default_margin`). ``monotonic`` is injectable for tests only.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        ttl: timedelta,
        name: str = PLANNER_LEASE,
        holder: str | None = None,
        margin: timedelta | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl <= timedelta(0):
            raise ValueError(f"lease ttl must be positive, got {ttl}")
        self.engine = engine
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = ttl
        self.margin = default_margin(ttl) if margin is None else margin
        if not timedelta(0) <= self.margin < ttl:
            raise ValueError(f"lease margin must be in [0, ttl), got {self.margin}")
        self._monotonic = monotonic
        self.idle_timeout_ms = idle_timeout_ms(ttl)
        self._term: int | None = None
        self._valid_until = 0.0
        self._renewed_at = 0.0
        self.grants = 0  # successful acquire_or_renew calls: what the renewals metric counts

    @property
    def term(self) -> int | None:
        """The term of our last successful grant, or None when we do not hold the lease."""
        return self._term

    def acquire_or_renew(self) -> bool:
        """Take or extend the lease; True if we hold it now. Database errors propagate (then we hold none).

        While the renewal is in flight the previous grant stays trusted (its window was counted from when
        *it* was sent, so it cannot outlive the stored lease): the planner's relay thread asks
        :meth:`locally_valid` before each publish, and a renewal must not look like a lost lease to it.
        """
        sent = self._monotonic()
        try:
            with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
                now = db_now(connection)
                term = leases.acquire_or_renew(
                    connection, name=self.name, holder=self.holder, now=now, ttl=self.ttl
                )
        except BaseException:
            self.forget()
            raise
        if term is None:
            self.forget()
            return False
        self._valid_until = sent + (self.ttl - self.margin).total_seconds()
        self._renewed_at = sent
        self._term = term
        self.grants += 1
        return True

    def locally_valid(self) -> bool:
        """True while the last grant is certainly still valid by this process's monotonic clock."""
        return self._term is not None and self._monotonic() < self._valid_until

    def seconds_since_renewal(self) -> float:
        return self._monotonic() - self._renewed_at

    def needs_renewal(self) -> bool:
        """True unless the last grant is locally valid and younger than a third of the TTL.

        The planner renews only then, not every tick: a grant lasts ``ttl`` on the database clock and is
        trusted here for ``ttl - margin``, so renewing at a third of the TTL keeps it valid throughout while
        sparing the idle tick a transaction (the fencing check of each dispatch transaction still runs).
        """
        return not self.locally_valid() or self.seconds_since_renewal() * 3 >= self.ttl.total_seconds()

    def forget(self) -> None:
        """Stop trusting the last grant (a fencing check failed): the next tick asks the database again."""
        self._term = None
        self._valid_until = 0.0

    def fence(self, connection: Connection, *, idle_timeout_ms: int | None = None) -> datetime | None:
        """:meth:`holds` and the database clock together: the clock if we hold the lease, else None (also when
        the last grant is no longer locally valid). See :func:`scheduler.storage.leases.fence`, which on
        PostgreSQL with ``idle_timeout_ms`` must be the transaction's first statement."""
        if self._term is None or not self.locally_valid():
            return None
        return leases.fence(
            connection, name=self.name, holder=self.holder, term=self._term, idle_timeout_ms=idle_timeout_ms
        )

    def holds(self, connection: Connection, now: datetime) -> bool:
        """Fencing check inside a dispatch transaction: our (name, holder, term) is stored and unexpired
        (:func:`scheduler.storage.leases.holds`: on PostgreSQL the row stays locked ``FOR SHARE``, so no
        dispatch of an old term can commit after a new term began)."""
        if self._term is None or not self.locally_valid():
            return False
        return leases.holds(connection, name=self.name, holder=self.holder, term=self._term, now=now)

    def release(self) -> None:
        """Give the lease up now (on a clean shutdown) so a standby takes over at its next attempt."""
        if self._term is None:
            return
        term, self._term, self._valid_until = self._term, None, 0.0
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            leases.expire_lease(connection, name=self.name, holder=self.holder, term=term)
