"""Scenario 2: the leader is frozen (SIGSTOP) past its lease, then thawed (SIGCONT). The standby takes over
within the lease time plus a tick even when the freeze caught the leader inside a planning transaction; the
thawed planner finds its term lost and dispatches nothing on it: no slot twice, no message twice.

Freeze points: an arbitrary moment of its loop; inside a planning transaction (rows written, not committed:
its row locks must not hold the cluster hostage); in the relay, holding pending executions it is about to
publish (after the thaw it must not publish them: the new leader did).
"""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from faultkit import LEASE_TTL_MS, TICK_MS, FaultSetup, account_slots, figures

from tests.support.processes import wait_for

TASKS = 5
EVERY = timedelta(seconds=1)
FROZEN_PAST_LEASE_S = 0.6
RUN_AFTER_THAW_S = 1.2


def _stopped(pid: int) -> bool:
    state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    return state == "T"


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("point", ["anywhere", "before_commit", "before_publish"])
def test_a_frozen_leader_is_replaced_and_after_thawing_dispatches_nothing_on_its_lost_term(
    fault_setup: FaultSetup, point: str
) -> None:
    setup = fault_setup
    leader = setup.planner("a", fault=None if point == "anywhere" else f"{point}:stop")
    wait_for(lambda: (lease := setup.lease()) and f":{leader.pid}:" in lease[0], 30, "planner a never led")
    standby = setup.planner("b")
    wait_for(lambda: "standby" in standby.log(), 30, "planner b never reported standing by")
    first = setup.interval_tasks(TASKS, due_now=True)

    if point == "anywhere":
        time.sleep(0.6)  # a few ticks with due slots, then freeze it wherever it is
        leader.signal(signal.SIGSTOP)
    wait_for(lambda: _stopped(leader.pid), 30, f"planner a never froze at {point}")
    frozen = setup.lease()
    assert frozen is not None and f":{leader.pid}:" in frozen[0]
    taken = wait_for(
        lambda: (lease := setup.lease()) and lease[1] > frozen[1] and lease,
        LEASE_TTL_MS / 1000 + 10,
        "the standby never took the lease over from the frozen leader",
        interval_s=0.02,
    )
    recovery_s = (taken[2] - frozen[2]).total_seconds()
    time.sleep(FROZEN_PAST_LEASE_S)
    thawed_at = setup.now()
    leader.signal(signal.SIGCONT)
    time.sleep(RUN_AFTER_THAW_S)
    for planner in (leader, standby):
        assert planner.stop() == 0, planner.log()[-3000:]

    rows = setup.executions()
    account = account_slots(rows, EVERY, first)
    published = setup.published_ids()
    final = setup.lease()
    thawed_log = leader.log()
    figures(
        f"freeze-{point.replace('_', '-')}",
        expected_slots=account.expected,
        executions=account.executions,
        duplicates=account.duplicates,
        missed_in_grace=account.missed_in_grace + account.gaps,
        duplicate_messages=sum(count - 1 for count in published.values() if count > 1),
        recovery_s=recovery_s,
    )
    assert recovery_s <= LEASE_TTL_MS / 1000 + TICK_MS / 1000 + 0.5, "a frozen leader must not stall takeover"
    assert final is not None and final[1] == taken[1] and f":{standby.pid}:" in final[0]  # never led again
    assert "standby" in thawed_log.split("leader (term", 1)[-1], "the thawed planner must stand by"
    if point == "before_commit":  # the server ended the frozen transaction: its commit could not happen
        assert "tick failed" in thawed_log
    assert account.duplicates == 0 and account.gaps == 0 and account.missed_in_grace == 0
    assert {row.status for row in rows} == {"queued"}
    assert set(published) == {row.id for row in rows} and max(published.values()) == 1
    # Nothing the thawed planner planned under its old term was committed after the takeover.
    assert not [row for row in rows if row.created_at < taken[2] and row.created_at > thawed_at]
