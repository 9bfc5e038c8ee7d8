"""The CLI against a running fleet (PostgreSQL, Redis, a real worker subprocess): what ``scheduler:list``
says about a task that keeps failing, what ``run --wait`` shows while it waits, and what a worker that lacks
a task's command says."""

from __future__ import annotations

from workerproc import EngineSetup


def test_list_shows_the_last_outcome_and_the_failure_streak_of_a_task_that_always_fails(
    engine_setup: EngineSetup,
) -> None:
    setup = engine_setup
    setup.start_worker()
    setup.create("always-fails", "test:fail", retries=0)
    setup.create("never-ran", "test:echo")
    for _ in range(3):
        result = setup.cli("scheduler:run", "--id", "always-fails", "--wait", "--timeout", "30")
        assert result.code == 1, result.stderr
    listed = {task["name"]: task for task in setup.cli("scheduler:list", "--format", "json").json()}
    failing = listed["always-fails"]
    assert (failing["status"], failing["last_outcome"], failing["consecutive_failures"]) == (
        "active",
        "failed",
        3,
    )
    assert listed["never-ran"]["last_outcome"] is None
    table = setup.cli("scheduler:list").stdout
    (row,) = [line for line in table.splitlines() if "always-fails" in line]
    assert "failed (3 in a row)" in row, table
