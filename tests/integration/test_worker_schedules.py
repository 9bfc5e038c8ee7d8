"""Planner and worker together, as separate processes: scheduled tasks run on time, once per slot."""

from __future__ import annotations

import itertools
import signal
import subprocess
import time
from datetime import timedelta

import pytest
import workerproc
from sqlalchemy import select
from workerproc import EngineSetup

from scheduler.records import FINISHED_STATUSES, as_utc
from scheduler.storage.tables import executions
from tests.support.processes import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def start_planner(setup: EngineSetup) -> subprocess.Popen[bytes]:
    env = dict(setup.env, SCHEDULER_TICK_INTERVAL="200")
    log = (setup.workdir / "planner.log").open("wb")
    return subprocess.Popen(
        [str(workerproc.SYSTEMPROMPT), "scheduler:planner"],
        cwd=str(setup.workdir),
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise


def slots(setup: EngineSetup, task_id: int) -> list[tuple[object, str]]:
    with setup.service.engine.connect() as connection:
        rows = connection.execute(
            select(executions.c.scheduled_for, executions.c.status)
            .where(executions.c.task_id == task_id)
            .order_by(executions.c.scheduled_for)
        ).all()
    return [(as_utc(row.scheduled_for), row.status) for row in rows]


@pytest.mark.timeout(90)
def test_an_interval_task_runs_once_per_slot_with_planner_and_worker(engine_setup: EngineSetup) -> None:
    # The worker gets ready while the planner runs: what it dispatches meanwhile waits on the queue.
    worker = engine_setup.start_worker(wait=False)
    task = engine_setup.create("every-second", "test:echo", schedule="1s", data={"tick": True})
    planner = start_planner(engine_setup)
    try:
        time.sleep(6.5)
    finally:
        assert stop(planner) == 0
    worker.wait_ready()
    # Let the last dispatched executions finish (whatever their outcome: the assertions below judge it).
    wait_for(
        lambda: all(s in FINISHED_STATUSES for _, s in slots(engine_setup, task.id)), 15, "still running"
    )
    rows = slots(engine_setup, task.id)
    times = [at for at, _ in rows]
    assert len(times) == len(set(times)), "a slot ran twice"
    anchor = engine_setup.service.get_task(task.id).anchor_at
    assert times[0] == anchor + timedelta(seconds=1)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(times)), times
    assert 4 <= len(times) <= 8, times
    assert all(status == "completed" for _, status in rows), rows


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_cron_task_fires_at_its_minute(engine_setup: EngineSetup) -> None:
    engine_setup.start_worker()
    task = engine_setup.create("each-minute", "test:echo", schedule="* * * * *")
    first_slot = engine_setup.service.get_task(task.id).next_run_at
    assert first_slot is not None and first_slot.second == 0
    planner = start_planner(engine_setup)
    try:
        done = wait_for(
            lambda: [s for s in slots(engine_setup, task.id) if s[1] == "completed"], 75, interval_s=0.5
        )
    finally:
        stop(planner)
    execution = engine_setup.service.history(task=task.id)[-1]
    assert done[0][0] == first_slot and execution.scheduled_for == first_slot
    assert execution.started_at is not None
    assert execution.started_at - first_slot < timedelta(seconds=3)
