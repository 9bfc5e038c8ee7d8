"""Scenario 1: the leading planner is killed (SIGKILL) inside a tick, between insert and commit or between
commit and publish. A standby leads within the lease time plus one tick; every slot of the window has exactly
one execution; everything committed reaches the broker once and ends ``queued``.

The kill comes from the planner itself (``SCHEDULER_TEST_FAULT``, :mod:`scheduler.planning.fault_injection`),
so it lands exactly at the named point.
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta

import pytest
from faultkit import LEASE_TTL_MS, TICK_MS, FaultSetup, PlannerProcess, account_slots, figures

from tests.support.processes import wait_for

TASKS = 5
EVERY = timedelta(seconds=1)
RUN_AFTER_TAKEOVER_S = 1.2


def lead_then_stand_by(setup: FaultSetup, fault: str) -> tuple[PlannerProcess, PlannerProcess]:
    """Start planner ``a`` (with the fault), wait until it leads; then ``b``, wait until it stands by."""
    leader = setup.planner("a", fault=fault)
    wait_for(lambda: (lease := setup.lease()) and f":{leader.pid}:" in lease[0], 30, "planner a never led")
    standby = setup.planner("b")
    wait_for(lambda: "standby" in standby.log(), 30, "planner b never reported standing by")
    return leader, standby


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("fault", ["before_commit", "after_commit"])
def test_a_leader_killed_mid_tick_is_replaced_within_a_lease_and_no_slot_is_lost_or_doubled(
    fault_setup: FaultSetup, fault: str
) -> None:
    setup = fault_setup
    leader, standby = lead_then_stand_by(setup, fault)
    first = setup.interval_tasks(TASKS, due_now=True)  # the leader's next tick plans them and dies

    assert leader.wait_dead(30) == -signal.SIGKILL, leader.log()[-3000:]
    before = setup.lease()
    assert before is not None and f":{leader.pid}:" in before[0]
    taken = wait_for(
        lambda: (lease := setup.lease()) and lease[1] > before[1] and lease,
        LEASE_TTL_MS / 1000 + 10,
        "the standby never took the lease over",
        interval_s=0.02,
    )
    recovery_s = (taken[2] - before[2]).total_seconds()
    committed_by_dead = [row for row in setup.executions() if row.created_at < taken[2]]
    time.sleep(RUN_AFTER_TAKEOVER_S)
    assert standby.stop() == 0, standby.log()[-3000:]
    stopped_at = setup.now()

    rows = setup.executions()
    account = account_slots(rows, EVERY, first)
    published = setup.published_ids()
    unpublished = [row.id for row in rows if published[row.id] == 0]
    figures(
        f"kill-{fault.replace('_', '-')}",
        expected_slots=account.expected,
        executions=account.executions,
        duplicates=account.duplicates,
        missed_in_grace=account.missed_in_grace + account.gaps,
        committed_by_dead_leader=len(committed_by_dead),
        unpublished=len(unpublished),
        duplicate_messages=sum(count - 1 for count in published.values() if count > 1),
        recovery_s=recovery_s,
    )
    ttl_s, tick_s = LEASE_TTL_MS / 1000, TICK_MS / 1000
    assert ttl_s - 0.05 <= recovery_s <= ttl_s + tick_s + 0.5, "takeover must wait for expiry, then be prompt"
    assert taken[0].endswith(standby.name) or f":{standby.pid}:" in taken[0]
    if fault == "before_commit":
        assert committed_by_dead == []  # the killed transaction rolled back
    else:
        assert len(committed_by_dead) == TASKS  # its commit survived it: one slot per task, never published
    assert account.duplicates == 0 and account.gaps == 0 and account.missed_in_grace == 0
    assert account.executions == account.expected == len(rows)
    assert {row.status for row in rows} == {"queued"}, "everything committed must reach the broker"
    assert unpublished == [] and set(published) == {row.id for row in rows}
    assert max(published.values()) == 1
    for next_run in setup.next_runs(first).values():
        assert next_run is not None and next_run >= stopped_at - EVERY - timedelta(seconds=1)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.postgres
@pytest.mark.redis
def test_killing_whichever_planner_leads_every_few_seconds_for_two_minutes_loses_and_doubles_nothing(
    fault_setup: FaultSetup,
) -> None:
    """Chaos: three planners; every 3-6 s the leader gets SIGKILL at a random moment and a new one starts."""
    import random

    setup = fault_setup
    rng = random.Random(20261127)
    planners = [setup.planner(f"c{i}") for i in range(3)]
    first = setup.interval_tasks(TASKS)
    deadline = time.monotonic() + 120
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(3.0, 6.0))
        lease = setup.lease()
        leader = next((p for p in planners if lease and f":{p.pid}:" in lease[0] and p.alive()), None)
        if leader is None:
            continue
        leader.signal(signal.SIGKILL)
        leader.wait_dead(10)
        kills += 1
        planners.append(setup.planner(f"c{len(planners)}"))
    time.sleep(LEASE_TTL_MS / 1000 + 1)
    for planner in planners:
        planner.stop()

    rows = setup.executions()
    account = account_slots(rows, EVERY, first)
    published = setup.published_ids()
    figures(
        "chaos-kill-leader-120s",
        kills=kills,
        expected_slots=account.expected,
        executions=account.executions,
        duplicates=account.duplicates,
        missed_in_grace=account.missed_in_grace + account.gaps,
        unpublished=sum(1 for row in rows if published[row.id] == 0),
        duplicate_messages=sum(count - 1 for count in published.values() if count > 1),
    )
    assert kills >= 15
    assert account.duplicates == 0 and account.gaps == 0 and account.missed_in_grace == 0
    assert {row.status for row in rows} == {"queued"} and set(published) == {row.id for row in rows}
