"""A pool process killed mid-run: its message is redelivered and the execution taken over, never doubled.

Both tests share the module's worker (``worker_setup``): Celery replaces a killed pool process, and the worker
is left idle after each test (or replaced, see ``shared_world``)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from workerproc import EngineSetup

from tests.support.processes import wait_for
from tests.support.redis_queue import queue_settles

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]


def test_a_killed_pool_process_is_taken_over_as_the_next_attempt(
    worker_setup: EngineSetup, tmp_path: Path
) -> None:
    pidfile = tmp_path / "victim.pid"
    task = worker_setup.create("victim", "test:pid", data={"pidfile": str(pidfile), "seconds": 3}, retries=1)
    execution = worker_setup.service.run_task_now(task.id)
    first_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20))
    os.kill(first_pid, signal.SIGKILL)
    done = worker_setup.wait_finished(execution.id, timeout_s=40)
    assert (done.status, done.attempt) == ("completed", 2)
    assert done.result != first_pid
    messages = [line.message for line in worker_setup.service.logs(execution.id)]
    assert any("stopped heart-beating" in message for message in messages), messages


def test_a_killed_last_attempt_is_not_run_again_by_the_worker(
    worker_setup: EngineSetup, tmp_path: Path
) -> None:
    worker = worker_setup.worker
    assert worker is not None
    pidfile = tmp_path / "victim.pid"
    task = worker_setup.create("victim2", "test:pid", data={"pidfile": str(pidfile), "seconds": 3}, retries=0)
    execution = worker_setup.service.run_task_now(task.id)
    first_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20))
    pidfile.unlink()
    os.kill(first_pid, signal.SIGKILL)
    # No attempt is left: the redelivered message must not start the command again (the planner's recovery
    # sweep marks it lost; no planner runs here). A redelivery rechecks (3 times, each once the heartbeat
    # could be stale) and then gives up with a no-op: wait for that, and for every copy of the message to be
    # gone from the broker (none waiting, reserved or held for a recheck), then look.
    gave_up = f"nothing to do: execution {execution.id} is running"
    wait_for(lambda: gave_up in worker.log(), 20, f"the worker never logged {gave_up!r}")
    drained = queue_settles(worker_setup.broker_url, worker_setup.queue, 20)
    assert drained, "the redelivered message never left the broker"
    assert not pidfile.exists(), "the killed last attempt was started again"
    assert worker_setup.service.get_execution(execution.id).status == "running"
