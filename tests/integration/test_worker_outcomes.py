"""What a real Celery worker (prefork) on PostgreSQL and Redis records when an attempt fails or times out.

- every timed-out attempt ends ``timed_out``: nothing of Celery's lands in the outcome's bookkeeping, so none
  is left ``running`` for the planner's sweep to call ``lost``;
- the Celery task ends FAILURE (a retry: RETRY) with our error, and its message is acknowledged, not
  redelivered; the worker's log says so in one line, without a traceback.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis
from sqlalchemy import text
from workerproc import EngineSetup

from scheduler.records import FINISHED_STATUSES
from tests.support.processes import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def run_timeouts(
    engine_setup: EngineSetup, count: int, *, workers: Sequence[Sequence[str]] = ((),)
) -> Counter[str]:
    """``count`` manual runs of a 1 s ``test:sleep`` with a 100 ms timeout on one worker of 4 processes per
    item of ``workers`` (its extra arguments); the status of each once all ended (any left ``running`` reaped
    by a planner tick: ``lost``)."""
    for extra in workers:
        engine_setup.start_worker(concurrency=4, extra=extra)
    task = engine_setup.create("naps", "test:sleep", data={"seconds": 1}, timeout_ms=100, retries=0)
    ids = [engine_setup.service.run_task_now(task.id).id for _ in range(count)]

    def statuses() -> list[str]:
        return [engine_setup.service.get_execution(execution_id).status for execution_id in ids]

    def settled() -> bool:
        current = statuses()
        if all(status in FINISHED_STATUSES for status in current):
            return True
        # An outcome whose bookkeeping was interrupted leaves the row running and silent.
        return current.count("running") > 0 and all(s in (*FINISHED_STATUSES, "running") for s in current)

    try:
        wait_for(settled, 5 + count * 0.3, interval_s=0.5)
    except AssertionError as error:
        raise AssertionError(f"the runs did not settle: {Counter(statuses())} ({error})") from None
    if "running" in statuses():
        time.sleep(engine_setup.settings.heartbeat_interval * 4 / 1000)  # stale for the sweep
        assert engine_setup.cli("scheduler:planner", "--once").code == 0
    return Counter(statuses())


@pytest.mark.timeout(120)
def test_every_timed_out_attempt_ends_timed_out_not_lost(engine_setup: EngineSetup) -> None:
    count = 100
    assert run_timeouts(engine_setup, count) == {"timed_out": count}


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_five_hundred_timed_out_attempts_on_two_workers_all_end_timed_out(engine_setup: EngineSetup) -> None:
    """One of the workers asks Celery for a soft limit of its own: it interrupts only a running command."""
    count = 500
    workers = [(), ("--soft-time-limit", "0.1")]
    assert run_timeouts(engine_setup, count, workers=workers) == {"timed_out": count}


@pytest.mark.timeout(120)
def test_a_failed_attempt_fails_its_celery_task_in_one_log_line_and_is_acked(
    worker_setup: EngineSetup,
) -> None:
    worker = worker_setup.worker
    worker_setup.create("flaky", "test:fail", data={"message": "disk full"}, retries=1, retry_delay_ms=100)
    worker_setup.create("nap", "test:sleep", data={"seconds": 5}, timeout_ms=300, retries=0)
    worker_setup.create("fine", "test:echo", data={"ok": True})
    expected = {"flaky": 1, "nap": 1, "fine": 0}  # exit codes of run --wait

    def run_wait(name: str) -> int:
        return worker_setup.cli("scheduler:run", "--id", name, "--wait").code

    with ThreadPoolExecutor(len(expected)) as runs:  # three independent runs, side by side
        assert dict(zip(expected, runs.map(run_wait, expected), strict=True)) == expected

    def celery_lines(shadow: str, final: str) -> list[str] | None:
        ours = [line for line in worker.log().splitlines() if shadow in line]
        return ours if any(final in line for line in ours) else None

    flaky = wait_for(lambda: celery_lines("test:fail [flaky]", "raised"), 15, message=worker.log()[-3000:])
    assert any(
        "retry:" in line and "attempt 1 of 2 failed: RuntimeError: disk full" in line for line in flaky
    )
    assert any("attempt 2 of 2 failed: RuntimeError: disk full" in line for line in flaky), flaky
    assert not any("succeeded" in line for line in flaky), flaky
    nap = wait_for(lambda: celery_lines("test:sleep [nap]", "raised"), 15, message=worker.log()[-3000:])
    assert any("timed_out" in line and "time limit of 0.3 s" in line for line in nap), nap
    assert not any("succeeded" in line for line in nap), nap
    assert wait_for(lambda: celery_lines("test:echo [fine]", "succeeded"), 15)
    log = worker.log()
    assert "Traceback" not in log, log[-3000:]
    # A failed attempt is a warning in the worker's log, a completed one is not.
    ended = [line for line in log.splitlines() if "scheduler.execution.runner: attempt ended" in line]
    assert {line.split()[1] for line in ended if "ended failed" in line or "ended timed_out" in line} == {
        "WARNING"
    }, ended
    assert {line.split()[1] for line in ended if "ended completed" in line} == {"INFO"}, ended
    # acks_late acknowledges a failed message too: nothing of this queue is left unacknowledged.
    client = redis.Redis.from_url(worker_setup.broker_url)
    unacked = [json.loads(value) for value in client.hvals("unacked")]  # [message, exchange, routing key]
    ours = [message for message in unacked if message[2] == worker_setup.queue]
    assert ours == [] and client.llen(worker_setup.queue) == 0


@pytest.mark.timeout(120)
def test_an_attempt_reaped_as_lost_while_it_ran_fails_its_celery_task(worker_setup: EngineSetup) -> None:
    """The sweep called the attempt lost (its heartbeats stalled) while the command still ran: the worker
    stops it and records nothing, and Flower's state must not call that delivery a success."""
    worker = worker_setup.worker
    task = worker_setup.create("reaped", "test:sleep", data={"seconds": 30}, retries=0)
    execution_id = worker_setup.service.run_task_now(task.id).id
    wait_for(lambda: worker_setup.service.get_execution(execution_id).status == "running", 15)
    with worker_setup.service.engine.begin() as connection:  # what the sweep's reaping writes
        connection.execute(
            text("UPDATE task_executions SET status = 'lost', error = 'lost: no heartbeat' WHERE id = :id"),
            {"id": execution_id},
        )

    def celery_lines() -> list[str] | None:
        ours = [line for line in worker.log().splitlines() if "test:sleep [reaped]" in line]
        return ours if any("raised" in line or "succeeded" in line for line in ours) else None

    lines = wait_for(celery_lines, 15, message=worker.log()[-3000:])
    assert any("raised expected: AttemptFailed" in line and "no longer ours" in line for line in lines), lines
    assert not any("succeeded" in line for line in lines), lines
    assert worker_setup.service.get_execution(execution_id).status == "lost"
