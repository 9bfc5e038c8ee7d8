"""A once task ends as its run ends: ``completed`` when it succeeded, ``failed`` when its last attempt failed.

Real processes: a planner tick (``scheduler:planner --once``) dispatches the once slots, a Celery worker runs
them (retries included), ``scheduler:run --wait`` runs one again; ``scheduler:list`` shows the outcome, as a
table and as JSON (it and ``scheduler:resume`` run in-process: the same click application, no process start).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from workerproc import EngineSetup

from scheduler.records import Execution, Task
from tests.support.processes import wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]


def _only_execution(setup: EngineSetup, task: Task) -> Execution:
    (execution,) = setup.service.history(task=task.id)
    return execution


def _finished(setup: EngineSetup, task: Task) -> Execution:
    history = setup.service.history(task=task.id)
    assert len(history) == 1, history
    return setup.wait_finished(history[0].id, timeout_s=60)


def _listed(setup: EngineSetup) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """``scheduler:list`` as JSON (name -> task object) and as a table (name -> its line)."""
    listed = setup.invoke("scheduler:list", "--format", "json").json()
    table = setup.invoke("scheduler:list")
    assert table.code == 0, table.stderr
    lines = {line.split()[1]: line for line in table.stdout.splitlines()[1:] if len(line.split()) > 1}
    return {task["name"]: task for task in listed}, lines


def test_a_once_task_whose_run_fails_ends_failed_and_one_that_succeeds_ends_completed(
    engine_setup: EngineSetup,
) -> None:
    setup = engine_setup
    worker = setup.start_worker(wait=False)  # gets ready while the tasks are created and planned
    failing = setup.create(
        "once-fails", "test:fail", schedule="now", retries=0, data={"message": "disk full"}
    )
    retried = setup.create(
        "once-retried",
        "test:fail",
        schedule="now",
        retries=1,
        retry_delay_ms=2000,
        data={"message": "no route"},
    )
    fine = setup.create("once-fine", "test:echo", schedule="now", data={"ok": True})

    tick = setup.cli("scheduler:planner", "--once", "--format", "json")
    assert tick.json()["created"] == 3, tick.stdout
    worker.wait_ready()

    # While its run is retrying, a once task is still active: nothing is decided yet.
    wait_for(lambda: _only_execution(setup, retried).status == "retrying", 30, "never retrying")
    assert setup.service.get_task(retried.id).status == "active"

    outcomes = {task.name: _finished(setup, task) for task in (failing, retried, fine)}
    assert {name: (e.status, e.attempt) for name, e in outcomes.items()} == {
        "once-fails": ("failed", 1),
        "once-retried": ("failed", 2),
        "once-fine": ("completed", 1),
    }
    assert "RuntimeError: disk full" in (outcomes["once-fails"].error or "")
    assert "RuntimeError: no route" in (outcomes["once-retried"].error or "")

    by_name, lines = _listed(setup)
    for name in ("once-fails", "once-retried"):
        execution = outcomes[name]
        assert (by_name[name]["status"], by_name[name]["status_reason"]) == (
            "failed",
            f"execution {execution.id} failed",
        )
        assert f"failed (execution {execution.id} failed)" in lines[name], lines[name]
    assert (by_name["once-fine"]["status"], by_name["once-fine"]["status_reason"]) == (
        "completed",
        "ran once",
    )
    assert "completed (ran once)" in lines["once-fine"]
    failed = setup.invoke("scheduler:list", "--status", "failed", "--format", "json").json()
    assert sorted(task["name"] for task in failed) == ["once-fails", "once-retried"]

    # A failed once task is not paused: resume leaves it alone; a manual run runs it again, and the outcome
    # of that run is the task's.
    resumed = setup.invoke("scheduler:resume", "--id", "once-fails")
    assert (resumed.code, resumed.stdout.strip()) == (0, "no task to resume"), resumed.stderr
    assert setup.cli("scheduler:run", "--id", "once-fails", "--wait").code == 1
    again = max(execution.id for execution in setup.service.history(task=failing.id))
    task = setup.service.get_task(failing.id)
    assert (task.status, task.status_reason) == ("failed", f"execution {again} failed")
    # A new fire time does not re-arm it: its one run is spent (docs/cli.md, task statuses).
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    moved = setup.service.update_task(failing.id, schedule=later)
    assert (moved.status, moved.next_run_at) == ("failed", None)
    setup.service.update_task(failing.id, command="test:echo")  # the cause fixed
    assert setup.cli("scheduler:run", "--id", "once-fails", "--wait").code == 0
    task = setup.service.get_task(failing.id)
    assert (task.status, task.status_reason) == ("completed", "ran once")
