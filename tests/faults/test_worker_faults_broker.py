"""The broker fails under running workers: scenario 9 (Redis restarted empty with executions queued), 10
(Redis unreachable while the planner dispatches) and 10b (a worker loses Redis mid-execution). All use a
private ``redis-server`` with persistence off, so a restart loses every message; the database is the truth and
nothing runs twice.

The tests take turns on one private Redis and one worker (prefork, 2 pool processes; ``module_redis_turn``):
each test restarts the server empty and waits until the worker consumes again, so the worker is connected
and idle when the next test begins; the database is emptied between tests.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
from faultkit import figures, run_figures
from sqlalchemy import select
from worker_support import (
    MODULE_WORKER_CONCURRENCY,
    ModuleWorker,
    PrivateRedis,
    WorkerWorld,
    module_redis,
    module_redis_turn,
    module_redis_worker,
    turn_on,
)

from scheduler.records import Execution
from scheduler.storage.clock import db_now
from scheduler.storage.mapping import execution_from_row
from scheduler.storage.tables import executions
from tests.support.processes import wait_at_most, wait_for

__all__ = ["module_redis", "module_redis_turn", "module_redis_worker"]

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BLOCKERS = MODULE_WORKER_CONCURRENCY  # one per pool process: they hold the worker busy, the others wait
TICKING_TASKS = 3


def rows_created_since(world: WorkerWorld, since: datetime) -> list[Execution]:
    query = select(executions).where(executions.c.created_at >= since).order_by(executions.c.id)
    with world.engine.connect() as connection:
        return [execution_from_row(row) for row in connection.execute(query)]


def database_now(world: WorkerWorld) -> datetime:
    with world.engine.connect() as connection:
        return db_now(connection)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("queued", [8, pytest.param(200, marks=pytest.mark.slow)])
def test_executions_queued_when_redis_restarts_empty_are_republished_and_run_once(
    module_redis_turn: tuple[ModuleWorker, PrivateRedis], tmp_path: Path, queued: int
) -> None:
    shared, private_redis = module_redis_turn
    with turn_on(shared, tmp_path, max_concurrent_tasks=10_000) as world:
        world.module_worker()
        world.start_planner()
        blocking = [
            world.service.run_task_now(world.create(f"block{i}", "fault:append", data={"seconds": 3}).id)
            for i in range(BLOCKERS)
        ]
        for execution in blocking:
            world.wait_status(execution.id, ["running"], 20)
        waiting = [
            world.service.run_task_now(world.create(f"queued{i}", "fault:append").id) for i in range(queued)
        ]
        for execution in waiting:
            world.wait_status(execution.id, ["queued"], 10)
        sent_before = Counter(world.publisher.sent)

        private_redis.stop()
        private_redis.start()  # empty: the queued messages (and the running ones' unacked copies) are gone
        restarted = time.monotonic()
        everything = [*blocking, *waiting]
        rows = [world.wait_finished(execution.id, 30 + queued / 10) for execution in everything]
        recovery_s = time.monotonic() - restarted
        wait_at_most(world.drained, 1.0)  # late duplicates would start now: nothing may
        runs = {execution.id: world.runs(execution.id) for execution in everything}
        figures(
            f"redis-restarted-empty-{queued}",
            **run_figures(runs, rows),
            recovery_s=recovery_s,
            republished=sum(world.publisher.sent[e.id] > sent_before[e.id] for e in waiting),
        )
        assert [(row.status, row.attempt) for row in rows] == [("completed", 1)] * len(everything), (
            rows,
            world.worker_logs(),
        )
        assert all(len(lines) == 1 for lines in runs.values()), runs
        assert all(world.publisher.sent[e.id] > sent_before[e.id] for e in waiting), "not republished"


def run_redis_outage(turn: tuple[ModuleWorker, PrivateRedis], tmp_path: Path, outage_s: float) -> None:
    # The sweep's republishing is pushed out of the way (recovery after 10 min): what is measured is that
    # the relay publishes each pending execution exactly once when the broker is back.
    shared, redis_server = turn
    with turn_on(shared, tmp_path, recovery_after=600_000) as world:
        world.module_worker()
        world.start_planner()
        tasks = [world.create(f"tick{i}", "fault:append", schedule="1s") for i in range(TICKING_TASKS)]
        wait_for(
            lambda: all(world.service.history(task=t.id, status="completed") for t in tasks),
            20,
            "the tasks never ran before the outage",
        )
        redis_server.stop()
        down_at = database_now(world)
        time.sleep(outage_s)
        during = rows_created_since(world, down_at)
        redis_server.start()
        up_at, up_at_db = time.monotonic(), database_now(world)
        # Every execution of the outage must be published and run; compare counts while planning goes on.
        expected_min = TICKING_TASKS * int(outage_s - 2)
        assert len(during) >= expected_min, f"the planner stopped committing: {len(during)} rows"
        assert {row.status for row in during} == {"pending"}, Counter(row.status for row in during)

        until_up = [row for row in rows_created_since(world, down_at) if row.created_at <= up_at_db]
        finished = [world.wait_finished(row.id, 60) for row in until_up]
        recovery_s = time.monotonic() - up_at
        wait_at_most(world.drained, 1.0)  # late duplicates would start now: nothing may
        runs = {row.id: world.runs(row.id) for row in finished}
        sent = {row.id: world.publisher.sent[row.id] for row in finished}
        figures(
            f"redis-unreachable-{outage_s:g}s",
            **run_figures(runs, finished),
            recovery_s=recovery_s,
            committed_during_outage=len(during),
            published_twice=sum(count > 1 for count in sent.values()),
        )
        assert [(row.status, row.attempt) for row in finished] == [("completed", 1)] * len(finished), (
            world.worker_logs()
        )
        assert all(len(lines) == 1 for lines in runs.values()), runs
        assert set(sent.values()) == {1}, sent  # each published once, after the broker came back


@pytest.mark.timeout(90)
def test_redis_unreachable_for_10_s_keeps_executions_pending_then_publishes_and_runs_each_once(
    module_redis_turn: tuple[ModuleWorker, PrivateRedis], tmp_path: Path
) -> None:
    run_redis_outage(module_redis_turn, tmp_path, outage_s=10)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_redis_unreachable_for_30_s_keeps_executions_pending_then_publishes_and_runs_each_once(
    module_redis_turn: tuple[ModuleWorker, PrivateRedis], tmp_path: Path
) -> None:
    run_redis_outage(module_redis_turn, tmp_path, outage_s=30)


@pytest.mark.timeout(90)
def test_a_worker_that_loses_redis_mid_execution_consumes_again_once_it_is_back(
    module_redis_turn: tuple[ModuleWorker, PrivateRedis], tmp_path: Path
) -> None:
    # When Redis dies, one execution runs (its message unacknowledged) and the other pool process waits for
    # work (a BRPOP in flight). With kombu's own Redis transport the consumer's teardown then failed with
    # AttributeError ('NoneType' object has no attribute 'hostname'; workers.redis_transport says why), which
    # Celery treats as unrecoverable: the worker consumed nothing more, waited for the running execution and
    # exited 1. It must reconnect and take new work as after any other loss.
    shared, private_redis = module_redis_turn
    with turn_on(shared, tmp_path) as world:
        worker = world.module_worker()
        world.start_planner()
        running = world.service.run_task_now(world.create("running", "fault:append", data={"seconds": 4}).id)
        world.wait_status(running.id, ["running"], 20)

        private_redis.stop()
        time.sleep(3)
        private_redis.start()  # empty
        up_at = time.monotonic()
        after = world.service.run_task_now(world.create("after", "fault:append").id)

        assert world.wait_finished(after.id, 30).status == "completed"  # Celery retries after 2, 4, 6 s
        figures("redis-lost-mid-execution", new_execution_done_s=time.monotonic() - up_at)
        assert worker.process.poll() is None, world.worker_logs()  # the same worker took it
        assert "Unrecoverable error" not in world.worker_logs(), world.worker_logs()
        assert world.wait_finished(running.id, 10).status == "completed"
        assert [len(world.runs(execution.id)) for execution in (running, after)] == [1, 1]
