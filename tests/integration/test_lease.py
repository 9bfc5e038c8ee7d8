"""The leader lease (invariant 4 of docs/architecture.md): one holder at a time by the database clock,
takeover after expiry with a new term, and a deposed leader's dispatch transaction is refused (fencing)."""

from __future__ import annotations

import threading
from datetime import timedelta

from planner_support import (
    RecordingPublisher,
    ago,
    executions_of,
    make_service,
    make_settings,
    now_of,
    set_task,
)
from sqlalchemy import Engine, update

from scheduler.planning.lease import Lease
from scheduler.planning.planner import Planner
from scheduler.storage.leases import read_lease
from scheduler.storage.tables import leases

TTL = timedelta(seconds=10)


def _expire(engine: Engine, name: str = "planner") -> None:
    """Make the stored lease expire now (time moves on the database, not in the test)."""
    past = ago(engine, seconds=1)
    with engine.begin() as connection:
        connection.execute(update(leases).where(leases.c.name == name).values(expires_at=past))


def test_the_first_holder_gets_term_one_and_a_second_holder_cannot_acquire_while_it_is_fresh(
    engine: Engine,
) -> None:
    first, second = Lease(engine, ttl=TTL, holder="a"), Lease(engine, ttl=TTL, holder="b")

    assert first.acquire_or_renew() and first.term == 1
    assert not second.acquire_or_renew() and second.term is None
    assert first.acquire_or_renew() and first.term == 1  # renewing keeps the term

    with engine.connect() as connection:
        state = read_lease(connection)
    assert state is not None and state.holder == "a" and state.term == 1
    assert state.expires_at - state.renewed_at == TTL
    assert abs(state.renewed_at - now_of(engine)) < timedelta(seconds=5)


def test_a_standby_takes_over_after_expiry_with_the_next_term_and_the_old_holder_is_fenced(
    engine: Engine,
) -> None:
    first, second = Lease(engine, ttl=TTL, holder="a"), Lease(engine, ttl=TTL, holder="b")
    assert first.acquire_or_renew()
    _expire(engine)

    assert second.acquire_or_renew() and second.term == 2
    with engine.connect() as connection:
        now = now_of(engine)
        assert second.holds(connection, now)
        assert not first.holds(connection, now)  # its monotonic clock still trusts the grant; the row says no
    assert not first.acquire_or_renew() and first.term is None
    _expire(engine)
    assert first.acquire_or_renew() and first.term == 3


def test_a_released_lease_is_taken_over_at_once(engine: Engine) -> None:
    first, second = Lease(engine, ttl=TTL, holder="a"), Lease(engine, ttl=TTL, holder="b")
    assert first.acquire_or_renew()
    first.release()
    assert second.acquire_or_renew() and second.term == 2


def test_a_leader_stops_trusting_its_lease_before_it_can_have_expired(engine: Engine) -> None:
    clock = [1000.0]
    lease = Lease(engine, ttl=TTL, holder="a", monotonic=lambda: clock[0])
    assert lease.acquire_or_renew() and lease.locally_valid()
    clock[0] += (TTL - lease.margin).total_seconds()  # 8 s later by the monotonic clock: 2 s of margin left

    assert not lease.locally_valid()
    with engine.connect() as connection:
        assert not lease.holds(connection, now_of(engine))  # the row is still fresh, the process is not sure


def test_holders_racing_for_a_free_lease_elect_exactly_one(engine: Engine) -> None:
    contenders = [Lease(engine, ttl=TTL, holder=f"h{i}") for i in range(8)]
    barrier = threading.Barrier(len(contenders))
    won: list[str] = []

    def contend(lease: Lease) -> None:
        barrier.wait()
        if lease.acquire_or_renew():
            won.append(lease.holder)

    threads = [threading.Thread(target=contend, args=(lease,)) for lease in contenders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(won) == 1
    with engine.connect() as connection:
        state = read_lease(connection)
    assert state is not None and state.holder == won[0] and state.term == 1


def test_a_deposed_planner_cannot_commit_a_dispatch(engine: Engine) -> None:
    settings = make_settings()
    old, new = (Planner(engine, settings, RecordingPublisher(), holder=h) for h in ("old", "new"))
    assert old.tick().leader
    _expire(engine)
    assert new.tick().leader and new.lease.term == 2
    task = make_service(engine, settings).create_task(name="fenced", command="test:echo", schedule="1h")
    slot = ago(engine, seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)

    batch = old.plan_batch()  # the old leader still trusts its grant locally; the transaction re-checks

    assert batch.fenced and batch.due == 0
    assert executions_of(engine, task.id) == []
    assert not old.tick().leader
    assert new.tick().created == 1


def test_a_standby_planner_plans_nothing(engine: Engine) -> None:
    settings = make_settings()
    leader, standby = (Planner(engine, settings, RecordingPublisher(), holder=h) for h in ("l", "s"))
    task = make_service(engine, settings).create_task(name="standby", command="test:echo", schedule="1h")
    assert leader.tick().leader
    slot = ago(engine, seconds=1)
    set_task(engine, task.id, next_run_at=slot, anchor_at=slot)

    report = standby.tick()

    assert not report.leader and report.due == 0
    assert executions_of(engine, task.id) == []
