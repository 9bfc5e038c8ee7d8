"""A renewal in flight does not look like a lost lease to the planner's other thread.

The relay thread asks :meth:`Lease.locally_valid` before each publish while the planner thread may be renewing
the lease mid-tick (a burst that started a third of a TTL after the last renewal). The renewal used to drop
the grant until the database answered, so a batch committed just then was not published that tick.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, event

from scheduler.planning.lease import Lease

TTL = timedelta(seconds=10)


def _trust_during_renewal(engine: Engine, lease: Lease) -> list[bool]:
    """What ``locally_valid`` says while the lease's upsert statement runs (as another thread would see)."""
    seen: list[bool] = []

    def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO SCHEDULER_LEASES"):
            seen.append(lease.locally_valid())

    event.listen(engine, "before_cursor_execute", before)
    try:
        assert lease.acquire_or_renew()
    finally:
        event.remove(engine, "before_cursor_execute", before)
    return seen


def test_a_held_lease_stays_trusted_while_it_is_renewed(engine: Engine) -> None:
    lease = Lease(engine, ttl=TTL, holder="leader")
    assert _trust_during_renewal(engine, lease) == [False]  # not held before the first grant
    assert _trust_during_renewal(engine, lease) == [True]  # held: the renewal does not blink
    assert lease.locally_valid() and lease.term == 1


def test_a_renewal_that_finds_another_holder_stops_trusting_at_once(engine: Engine) -> None:
    ours, theirs = Lease(engine, ttl=TTL, holder="a"), Lease(engine, ttl=TTL, holder="b")
    assert theirs.acquire_or_renew()
    assert not ours.acquire_or_renew()
    assert not ours.locally_valid() and ours.term is None
