"""Scenario 13: the planner's host clock is wrong by 90 s either way (``skew/sitecustomize.py`` offsets
``time.time`` and ``datetime.now`` in the planner process). Nothing changes: due-ness is the database's clock
(invariant 6), so no slot goes out early, and none later than one tick.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

import pytest
from faultkit import TICK_MS, FaultSetup, figures, wait_for

SKEW_S = 90.0
TASKS = 5
RUN_S = 5.0
LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", re.MULTILINE)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("skew_s", [SKEW_S, -SKEW_S], ids=["ahead", "behind"])
def test_a_planner_with_a_skewed_host_clock_dispatches_on_the_database_clock(
    fault_setup: FaultSetup, skew_s: float
) -> None:
    setup = fault_setup
    planner = setup.planner("skewed", skew_s=skew_s)
    wait_for(lambda: "leader (term 1)" in planner.log(), 30, "the skewed planner never led")
    logged = LOG_TIME.search(planner.log())
    assert logged is not None, planner.log()
    # The skew is real: the planner's own log lines are stamped 90 s off.
    seen_skew = (
        datetime.fromisoformat(logged.group(1)).replace(tzinfo=UTC) - datetime.now(UTC)
    ).total_seconds()
    assert abs(seen_skew - skew_s) < 10, f"the planner's clock is off by {seen_skew:.1f} s, not {skew_s}"

    first = setup.interval_tasks(TASKS)
    once_at = setup.now() + timedelta(seconds=3)
    once = setup.service.create_task(name="once", command="test:echo", schedule=once_at.isoformat())
    time.sleep(RUN_S)
    assert planner.stop() == 0, planner.log()[-3000:]

    rows = setup.executions([*first, once.id])
    lateness = [(row.created_at - row.scheduled_for).total_seconds() for row in rows]
    early = [row for row, late in zip(rows, lateness, strict=True) if late < 0]
    once_rows = [row for row in rows if row.task_id == once.id]
    figures(
        f"clock-skew-{'plus' if skew_s > 0 else 'minus'}-{abs(skew_s):.0f}s",
        observed_skew_s=seen_skew,
        executions=len(rows),
        early=len(early),
        max_late_s=max(lateness),
        tick_s=TICK_MS / 1000,
    )
    assert len(rows) >= TASKS * (RUN_S - 1)
    assert early == []
    assert max(lateness) <= TICK_MS / 1000 + 0.3, "a slot went out later than one tick"
    assert [row.scheduled_for for row in once_rows] == [once_at]
    assert all(row.status == "queued" for row in rows)
