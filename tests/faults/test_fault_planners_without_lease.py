"""Scenario 3: two planner processes with leadership disabled plan the same 1-second tasks at once.
Invariant 2 alone (the unique slot and ``ON CONFLICT DO NOTHING`` in the transaction that advances the
task) gives exactly one execution per slot, with no gap. 20 s by default; the slow variant runs three minutes.

Without a lease both planners relay pending rows too, so a message may go out twice (claims are
conditional, invariant 3): that count is reported, not forbidden.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from faultkit import FaultSetup, account_slots, figures

from tests.support.processes import wait_for

EVERY = timedelta(seconds=1)
TASKS = 20


def _run_two_planners(setup: FaultSetup, seconds: float, scenario: str) -> None:
    planners = [setup.planner(name, no_lease=True) for name in ("x", "y")]
    for planner in planners:
        wait_for(lambda p=planner: "started" in p.log(), 30, f"planner {planner.name} did not start")
    first = setup.interval_tasks(TASKS)
    started = time.monotonic()
    time.sleep(seconds)
    for planner in planners:
        assert planner.stop() == 0, planner.log()[-3000:]
    stopped_at = setup.now()
    elapsed = time.monotonic() - started

    rows = setup.executions()
    account = account_slots(rows, EVERY, first)
    published = setup.published_ids()
    lag = max(stopped_at - (next_run or stopped_at) for next_run in setup.next_runs(first).values())
    figures(
        scenario,
        seconds=round(elapsed),
        planners=len(planners),
        expected_slots=account.expected,
        executions=account.executions,
        duplicates=account.duplicates,
        missed_in_grace=account.missed_in_grace + account.gaps,
        duplicate_messages=sum(count - 1 for count in published.values() if count > 1),
        lag_s=lag.total_seconds(),
    )
    assert account.duplicates == 0 and account.gaps == 0 and account.missed_in_grace == 0
    assert account.executions == account.expected == len(rows)
    assert account.expected >= TASKS * (seconds - 2)  # both kept up: about one slot per task and second
    assert lag <= EVERY + timedelta(seconds=1)
    assert {row.status for row in rows} == {"queued"} and set(published) == {row.id for row in rows}
    for planner in planners:
        assert "Traceback" not in planner.log()


@pytest.mark.postgres
@pytest.mark.redis
def test_two_planners_without_a_lease_plan_each_slot_exactly_once(fault_setup: FaultSetup) -> None:
    _run_two_planners(fault_setup, 20, "no-lease-20s")


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.postgres
@pytest.mark.redis
def test_two_planners_without_a_lease_plan_each_slot_exactly_once_for_three_minutes(
    fault_setup: FaultSetup,
) -> None:
    _run_two_planners(fault_setup, 180, "no-lease-180s")
