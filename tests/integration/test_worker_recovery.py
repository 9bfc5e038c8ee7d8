"""A pool process killed mid-run: its message is redelivered and the execution taken over, never doubled."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from workerproc import EngineSetup

from tests.support.processes import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]


def test_a_killed_pool_process_is_taken_over_as_the_next_attempt(
    engine_setup: EngineSetup, tmp_path: Path
) -> None:
    engine_setup.start_worker()
    pidfile = tmp_path / "victim.pid"
    task = engine_setup.create("victim", "test:pid", data={"pidfile": str(pidfile), "seconds": 3}, retries=1)
    execution = engine_setup.service.run_task_now(task.id)
    first_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20))
    os.kill(first_pid, signal.SIGKILL)
    done = engine_setup.wait_finished(execution.id, timeout_s=40)
    assert (done.status, done.attempt) == ("completed", 2)
    assert done.result != first_pid
    messages = [line.message for line in engine_setup.service.logs(execution.id)]
    assert any("stopped heart-beating" in message for message in messages), messages


def test_a_killed_last_attempt_is_not_run_again_by_the_worker(
    engine_setup: EngineSetup, tmp_path: Path
) -> None:
    engine_setup.start_worker()
    pidfile = tmp_path / "victim.pid"
    task = engine_setup.create("victim2", "test:pid", data={"pidfile": str(pidfile), "seconds": 3}, retries=0)
    execution = engine_setup.service.run_task_now(task.id)
    first_pid = int(wait_for(lambda: pidfile.exists() and pidfile.read_text(), 20))
    pidfile.unlink()
    os.kill(first_pid, signal.SIGKILL)
    # No attempt is left: the redelivered message must not start the command again (the planner's recovery
    # sweep marks it lost; no planner runs here).
    with pytest.raises(AssertionError):
        wait_for(pidfile.exists, 6)
    assert engine_setup.service.get_execution(execution.id).status == "running"
