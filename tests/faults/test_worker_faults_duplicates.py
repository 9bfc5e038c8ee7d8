"""Scenario 12: the same execution id delivered twice at once, to two workers: the command runs once.

Every id goes out as two messages, back to back in one batch, to a queue that two worker processes (two pool
processes each) consume; the commands' own side effect (one line per start, keyed by execution id) counts
the runs, whatever the database says.
"""

from __future__ import annotations

import re
import time
from collections import Counter

import pytest
from faultkit import figures, run_figures
from worker_support import STALE_S, WorkerWorld, world

from scheduler.records import Dispatch
from tests.support.processes import wait_at_most

__all__ = ["world"]

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]

COMMAND_S = 0.3


@pytest.mark.parametrize("count", [20, pytest.param(200, marks=pytest.mark.slow)])
def test_the_same_execution_delivered_twice_at_once_to_two_workers_runs_once(
    world: WorkerWorld, count: int
) -> None:
    workers = [world.start_worker(concurrency=2, wait=False) for _ in range(2)]
    pending = [  # while the workers get ready (nothing is published before both are)
        world.service.run_task_now(world.create(f"dup{i}", "fault:append", data={"seconds": COMMAND_S}).id)
        for i in range(count)
    ]
    for worker in workers:
        worker.wait_ready()
    twice = [
        Dispatch(e.id, e.queue, e.command, e.task_name, timeout_s=30.0) for e in pending for _ in range(2)
    ]
    started = time.monotonic()
    world.publisher.publish(twice)
    rows = [world.wait_finished(execution.id, 30 + count * COMMAND_S / 4) for execution in pending]
    elapsed = time.monotonic() - started
    wait_at_most(world.drained, STALE_S + 0.5)  # duplicates that waited for a recheck have looked again

    received = Counter(
        match.group(1)
        for worker in workers
        for match in re.finditer(r"Task fault:append \[(dup\d+)\]\[[0-9a-f-]+\] received", worker.log())
    )
    runs = {execution.id: world.runs(execution.id) for execution in pending}
    # Both messages of an id reached a worker process: both workers name it in their logs.
    logs = [worker.log() for worker in workers]
    both_workers = sum(all(f"[{e.task_name}]" in log for log in logs) for e in pending)
    figures(
        f"duplicate-delivery-{count}",
        **run_figures(runs, rows),
        recovery_s=elapsed,
        messages=sum(received.values()),
        ids_on_both_workers=both_workers,
    )
    assert [(row.status, row.attempt) for row in rows] == [("completed", 1)] * count, rows
    assert all(len(lines) == 1 for lines in runs.values()), runs
    assert all(received[e.task_name] >= 2 for e in pending), received  # each id was delivered twice
    assert both_workers > 0, "no id reached both workers: the race was not exercised"
