"""Scenario 13: a planner's host clock is wrong by 90 s, either way (``skew/sitecustomize.py`` offsets
``time.time`` and ``datetime.now`` in that process). Nothing changes: due-ness is the database's clock
(docs/architecture.md, invariant 6), so no slot goes out early, and none later than one tick.

One planner runs 90 s ahead and leads; one runs 90 s behind and stands by; half-way the first stops and
the second takes over, so both plan and dispatch.
"""

from __future__ import annotations

import re
import signal
import time
from datetime import UTC, datetime, timedelta

import pytest
from faultkit import TICK_MS, FaultSetup, PlannerProcess, figures

from scheduler.records import Execution
from tests.support.processes import wait_for

SKEW_S = 90.0
TASKS = 5
RUN_S = 1.8
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", re.MULTILINE)


def _observed_skew(planner: PlannerProcess) -> float:
    """How far the planner's own log stamps are from the real time (its first line was just written)."""
    logged = LOG_TIME.search(planner.log())
    assert logged is not None, planner.log()
    stamp = datetime.fromisoformat(logged.group(1)).replace(tzinfo=UTC)
    return (stamp - datetime.now(UTC)).total_seconds()


def _lateness(rows: list[Execution]) -> list[float]:
    return [(row.created_at - row.scheduled_for).total_seconds() for row in rows]


@pytest.mark.postgres
@pytest.mark.redis
def test_planners_with_host_clocks_90_s_off_dispatch_on_the_database_clock(fault_setup: FaultSetup) -> None:
    setup = fault_setup
    ahead = setup.planner("ahead", skew_s=SKEW_S)
    wait_for(lambda: "leader (term 1)" in ahead.log(), 30, "the planner ahead never led")
    skew_ahead = _observed_skew(ahead)
    behind = setup.planner("behind", skew_s=-SKEW_S)
    wait_for(lambda: "standby" in behind.log(), 30, "the planner behind never stood by")
    skew_behind = _observed_skew(behind)
    # The skew is real: each planner's own log lines are stamped 90 s off.
    assert abs(skew_ahead - SKEW_S) < 10 and abs(skew_behind + SKEW_S) < 10

    first = setup.interval_tasks(TASKS)
    once = {
        name: setup.service.create_task(
            name=name, command="test:echo", schedule=(setup.now() + timedelta(seconds=delay)).isoformat()
        )
        for name, delay in (("once-ahead", 1.5), ("once-behind", RUN_S + 1.5))
    }
    time.sleep(RUN_S)
    switched_at = setup.now()
    ahead.signal(signal.SIGTERM)  # a clean stop releases the lease: the planner behind takes over at once
    wait_for(lambda: "leader (term 2)" in behind.log(), 10, "the planner behind never took over")
    time.sleep(RUN_S)
    for planner in (ahead, behind):
        assert planner.stop() == 0, planner.log()[-3000:]

    rows = setup.executions([*first, *(task.id for task in once.values())])
    by_ahead = [row for row in rows if row.created_at < switched_at]
    by_behind = [row for row in rows if row.created_at >= switched_at]
    for name, mine in (("plus", by_ahead), ("minus", by_behind)):
        late = _lateness(mine)
        figures(
            f"clock-skew-{name}-90s",
            observed_skew_s=skew_ahead if name == "plus" else skew_behind,
            executions=len(mine),
            early=sum(1 for value in late if value < 0),
            max_late_s=max(late),
            tick_s=TICK_MS / 1000,
        )
        assert len(mine) >= TASKS
    lateness = _lateness(rows)
    assert min(lateness) >= 0, "a slot went out before its time"
    assert max(lateness) <= TICK_MS / 1000 + 0.4, "a slot went out later than one tick"
    for task in once.values():
        assert [row.scheduled_for for row in rows if row.task_id == task.id] == [task.next_run_at]
    assert all(row.status == "queued" for row in rows)
