"""Scenario 11: PostgreSQL restarts while an execution runs (a private server, stopped and started again).

The database is down for longer than the heartbeat bound (3 beats of 500 ms), so when it is back every
heartbeat looks stale. The worker must still record the outcome of the attempt that ran through the outage
(not have it reaped and run again), and the planner and the workers reconnect on their own. The last test
pins the planner's half: after its sweeps stopped for longer than the bound, the sweep reaps nothing for one
more bound, so the workers can beat again first.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
from faultkit import figures
from sqlalchemy import func, update
from worker_support import STALE_S, WorkerWorld, pg_world

from scheduler.commands.loading import load_registry
from scheduler.planning.recovery import Recovery
from scheduler.records import Dispatch
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from scheduler.storage.tables import executions

__all__ = ["pg_world"]

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(120)]

COMMAND_S = 3.0  # ends while the database is down: its outcome waits for the database


def restart_during_a_run(world: WorkerWorld, server: Any, down_s: float) -> None:
    worker = world.start_worker(concurrency=2, wait=False)  # gets ready while the run is planned
    world.start_planner()
    task = world.create("through-restart", "fault:append", data={"seconds": COMMAND_S}, retries=1)
    execution = world.service.run_task_now(task.id)
    worker.wait_ready()
    world.wait_status(execution.id, ["running"], 20)
    time.sleep(1.0)
    server.stop("fast")  # ends every session: the worker's, the planner's, the test's
    time.sleep(down_s)
    server.start()
    up = time.monotonic()
    done = world.wait_finished(execution.id, 60, tolerate_errors=True)
    recorded_s = time.monotonic() - up
    # A new run goes all the way (planner relay -> broker -> worker claim -> outcome) after the restart.
    after = world.service.run_task_now(task.id)
    next_run = world.wait_finished(after.id, 30)
    runs = world.runs(execution.id)
    figures(
        f"postgres-restart-{down_s:g}s",
        runs=len(runs),
        duplicates=len(runs) - 1,
        lost=int(done.status == "lost"),
        recovery_s=recorded_s,
    )
    assert (done.status, done.attempt) == ("completed", 1), (done, world.worker_logs())
    assert len(runs) == 1, runs
    assert (next_run.status, next_run.attempt) == ("completed", 1), (next_run, world.worker_logs())


@pytest.mark.redis
def test_postgres_restarted_during_a_run_records_its_outcome_and_everyone_reconnects(
    pg_world: WorkerWorld, private_postgres: Any
) -> None:
    restart_during_a_run(pg_world, private_postgres, down_s=STALE_S * 2)


@pytest.mark.slow
@pytest.mark.redis
def test_postgres_down_for_20_s_during_a_run_records_its_outcome_and_everyone_reconnects(
    pg_world: WorkerWorld, private_postgres: Any
) -> None:
    restart_during_a_run(pg_world, private_postgres, down_s=20)


def test_the_sweep_reaps_nothing_for_one_heartbeat_bound_after_its_sweeps_were_interrupted(
    pg_url: str,
) -> None:
    settings = Settings(database_url=pg_url, heartbeat_interval=100)  # the bound: 3 beats, 0.3 s
    engine = make_engine(pg_url)
    try:
        service = SchedulerService(engine, settings, commands=load_registry(settings))
        execution = service.run_task_now(
            service.create_task(name="silent", command="test:echo", retries=0).id
        )
        recovery = Recovery(engine, settings, None, None)

        def publish(_dispatches: list[Dispatch]) -> None:
            return None

        assert recovery.sweep(publish).lost == 0  # watching from here
        time.sleep(0.5)  # no sweep for longer than the bound, as while the database was down
        long_ago = func.now() - func.make_interval(0, 0, 0, 0, 0, 0, 10)
        with engine.begin() as connection:
            connection.execute(
                update(executions)
                .where(executions.c.id == execution.id)
                .values(status="running", worker="gone:1", started_at=long_ago, heartbeat_at=long_ago)
            )
        resumed = time.monotonic()
        reaped_after = None
        while reaped_after is None and time.monotonic() - resumed < 3:
            if recovery.sweep(publish).lost:
                reaped_after = time.monotonic() - resumed
            time.sleep(0.05)
        assert reaped_after is not None, "never reaped"
        assert 0.3 <= reaped_after <= 1.0, reaped_after  # one bound of grace, then reaped at once
        assert service.get_execution(execution.id).status == "lost"
    finally:
        engine.dispose()
