"""Worker processes that die: scenario 6 (kill -9 of a pool process mid-command), 7 (the hard time limit
kills a command's whole process tree) and 8 (a poison command that kills its worker every time).

Heartbeats are 500 ms, so a silent execution is presumed dead after 1.5 s (3 beats); the planner runs in a
thread of the test with a 200 ms tick. Recovery never waits for the broker's visibility timeout (2 h).

The tests take turns on one worker (``module_world``: prefork, 2 pool processes); Celery replaces each pool
process they kill, and each test's database rows are gone before the next begins.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from faultkit import figures
from sqlalchemy import select
from worker_support import STALE_S, TICK_MS, WorkerWorld, module_worker, module_world, worker_pid

from scheduler.observability.events import TASK_PAUSED
from scheduler.storage.tables import audit
from tests.support.processes import process_alive, wait_at_most, wait_for

__all__ = ["module_worker", "module_world"]

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

# The next attempt starts (or the row is lost) at most this long after a pool process died: the heartbeat
# goes stale (3 beats), then a recheck or the planner's sweep acts (a tick or a recheck countdown), plus slack
# for the claim and a busy machine.
RECOVERY_BOUND_S = STALE_S + 2 * TICK_MS / 1000 + 2.5


@pytest.fixture
def world(module_world: WorkerWorld) -> WorkerWorld:
    return module_world


def sleeping_lines(world: WorkerWorld, execution_id: int) -> list[int]:
    """The attempts whose test:sleep started (its ``sleeping N s`` log line), one entry per start."""
    return [
        line.attempt
        for line in world.service.logs(execution_id)
        if line.message.startswith("sleeping ") and line.level == "INFO"
    ]


def test_pool_processes_killed_mid_command_are_retried_or_lost_within_the_heartbeat_bound(
    world: WorkerWorld,
) -> None:
    world.module_worker()
    world.start_planner()
    outcomes = {1: "completed", 0: "lost"}  # retries -> how the execution ends
    executions = {}
    for retries in outcomes:
        task = world.create(f"victim-{retries}", "test:sleep", data={"seconds": 2.5}, retries=retries)
        executions[retries] = world.service.run_task_now(task.id)
    running = {retries: world.wait_status(e.id, ["running"], 20) for retries, e in executions.items()}
    # Mid-command, once a heartbeat stored the command's first log line (its start is counted below).
    wait_for(
        lambda: all(sleeping_lines(world, e.id) == [1] for e in executions.values()),
        10,
        "the commands' first log lines were never stored",
    )
    for row in running.values():
        os.kill(worker_pid(row), signal.SIGKILL)
    killed = time.monotonic()

    recovered: dict[int, float] = {}

    def all_recovered() -> bool:
        for retries, execution in executions.items():
            row = world.execution(execution.id)
            if retries not in recovered and (
                (row.attempt > 1 and row.status == "running") or row.status == "lost"
            ):
                recovered[retries] = time.monotonic() - killed
        return len(recovered) == len(executions)

    wait_for(all_recovered, 20, f"stuck after their pool processes died: {executions}", interval_s=0.02)
    done = {retries: world.wait_finished(e.id, 20) for retries, e in executions.items()}
    wait_at_most(
        world.drained, STALE_S + 0.5
    )  # redelivered messages and rechecks drain: nothing may start again
    runs = {retries: sleeping_lines(world, e.id) for retries, e in executions.items()}
    for retries in outcomes:
        figures(
            f"kill-pool-process-retries-{retries}",
            runs=len(runs[retries]),
            duplicates=len(runs[retries]) - len(set(runs[retries])),
            lost=int(done[retries].status == "lost"),
            recovery_s=recovered[retries],
        )
    for retries, outcome in outcomes.items():
        row = world.execution(executions[retries].id)
        assert (row.status, row.attempt) == (outcome, retries + 1), (row, world.worker_logs())
        # each attempt started once, the killed one included
        assert runs[retries] == list(range(1, retries + 2)), runs
        assert recovered[retries] <= RECOVERY_BOUND_S, (
            f"recovery took {recovered[retries]:.2f} s > {RECOVERY_BOUND_S:.2f} s"
        )


@pytest.mark.parametrize("retries", [1])
def test_the_hard_time_limit_kills_the_whole_process_tree_and_retries_follow_the_attempts(
    world: WorkerWorld, retries: int
) -> None:
    world.module_worker()
    world.start_planner()
    task = world.create("tree", "fault:tree", timeout_ms=1000, retries=retries, retry_delay_ms=100)
    execution = world.service.run_task_now(task.id)
    started = time.monotonic()
    done = world.wait_finished(execution.id, 30)
    elapsed = time.monotonic() - started
    children = sorted(world.runs_dir.glob(f"{execution.id}.*.child"))
    child_pids = [int(path.read_text()) for path in children]
    # The kill is asynchronous to the row's update: give it a moment.
    wait_at_most(lambda: not any(process_alive(pid) for pid in child_pids), 1.0)
    survivors = [pid for pid in child_pids if process_alive(pid)]
    for pid in survivors:  # never leave them behind, whatever the outcome
        os.kill(pid, signal.SIGKILL)
    runs = world.runs(execution.id)
    figures(
        "hard-time-limit",
        runs=len(runs),
        duplicates=len(runs) - len({line.split()[0] for line in runs}),
        lost=int(done.status == "lost"),
        recovery_s=elapsed,
        orphans=len(survivors),
    )
    assert (done.status, done.attempt) == ("timed_out", retries + 1), (done, world.worker_logs())
    assert "hard time limit" in (done.error or "")
    assert [line.split()[0] for line in runs] == [str(n) for n in range(1, retries + 2)]
    assert len(child_pids) == retries + 1
    assert survivors == [], "a child of the command outlived the hard time limit"


def test_a_poison_command_stops_at_its_last_attempt_and_auto_pauses_its_task(world: WorkerWorld) -> None:
    world.module_worker()
    world.start_planner()
    paused: list[dict[str, Any]] = []
    world.events.on(TASK_PAUSED, paused.append)
    task = world.create("poison", "fault:poison", retries=1, auto_pause_after=2)
    started = time.monotonic()
    first = world.service.run_task_now(task.id)
    second = world.service.run_task_now(task.id)
    rows = [world.wait_finished(execution.id, 30) for execution in (first, second)]
    elapsed = time.monotonic() - started
    wait_at_most(
        world.drained, STALE_S + 0.5
    )  # redelivered messages and rechecks drain; no attempt may start again
    runs = {execution.id: world.runs(execution.id) for execution in (first, second)}
    after = world.service.get_task(task.id)
    figures(
        "poison-command",
        runs=sum(len(lines) for lines in runs.values()),
        duplicates=sum(len(lines) - len({line.split()[0] for line in lines}) for lines in runs.values()),
        lost=sum(row.status == "lost" for row in rows),
        recovery_s=elapsed,
    )
    assert [(row.status, row.attempt) for row in rows] == [("lost", 2), ("lost", 2)], rows
    for execution_id, lines in runs.items():
        assert [line.split()[0] for line in lines] == ["1", "2"], (execution_id, lines)
    assert after.status == "paused", after
    assert after.status_reason == "auto-paused after 2 consecutive failures"
    assert after.consecutive_failures == 2
    assert [event["task"]["id"] for event in paused] == [task.id]
    with world.engine.connect() as connection:
        actions = connection.execute(
            select(audit.c.action).where(audit.c.task_id == task.id).order_by(audit.c.id)
        ).scalars()
        assert [action for action in actions if action != "run"] == ["create", "pause"]
