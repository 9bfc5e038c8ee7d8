"""The CLI against a running fleet (PostgreSQL, Redis, a real worker subprocess): what ``scheduler:list``
says about a task that keeps failing, what ``run --wait`` shows while it waits, and what a worker that lacks
a task's command says."""

from __future__ import annotations

import json
import socket
from concurrent.futures import ThreadPoolExecutor

from workerproc import SYSTEMPROMPT, EngineSetup

from tests.support.terminal import TerminalRun


def test_list_shows_the_last_outcome_and_the_failure_streak_of_a_task_that_always_fails(
    worker_setup: EngineSetup,
) -> None:
    setup = worker_setup
    setup.create("always-fails", "test:fail", retries=0)
    setup.create("never-ran", "test:echo")
    for _ in range(3):
        run = setup.service.run_task_now("always-fails")
        assert setup.wait_finished(run.id).status == "failed"
    reads = [("scheduler:list", "--format", "json"), ("scheduler:list",)]
    with ThreadPoolExecutor(max_workers=2) as pool:  # two independent reads, at once
        as_json, as_table = pool.map(lambda args: setup.cli(*args), reads)
    listed = {task["name"]: task for task in as_json.json()}
    failing = listed["always-fails"]
    assert (failing["status"], failing["last_outcome"], failing["consecutive_failures"]) == (
        "active",
        "failed",
        3,
    )
    assert listed["never-ran"]["last_outcome"] is None
    table = as_table.stdout
    (row,) = [line for line in table.splitlines() if "always-fails" in line]
    assert "failed (3 in a row)" in row, table


def _install_command_after_the_worker_started(setup: EngineSetup) -> None:
    """Declare the external command ``report:disk`` in the module.yaml the CLI reads, once the worker runs."""
    (setup.workdir / "module.yaml").write_text("commands:\n  report:disk: [echo, disk report]\n")


def test_a_worker_started_before_a_command_was_installed_fails_its_runs_and_health_warns(
    worker_setup: EngineSetup,
) -> None:
    setup = worker_setup
    worker = setup.worker
    node = worker.name.replace("%h", socket.gethostname())
    _install_command_after_the_worker_started(setup)
    created = setup.cli(
        "scheduler:create", "--name", "disk", "--command", "report:disk", "--queue", setup.queue
    )
    assert created.code == 0, created.stderr  # the CLI reads the new module.yaml: it knows the command
    setup.create("echo-here", "test:echo")
    setup.service.create_task(name="echo-nowhere", command="test:echo", queue=f"{setup.queue}-unserved")

    # The table and the JSON at once: each waits its whole 1 s for the workers' replies.
    with ThreadPoolExecutor(max_workers=2) as pool:
        health, as_json = pool.map(
            lambda extra: setup.cli("scheduler:health", "--check", "database,broker,workers", *extra),
            [(), ("--format", "json")],
        )
    assert health.code == 0, health.stderr  # warnings, not failures
    warnings = sorted(line for line in health.stderr.splitlines() if line.startswith("warning: "))
    assert len(warnings) == 2, health.stderr
    assert warnings[0].startswith("warning: task 'disk': no live worker on queue ")
    assert f"has command 'report:disk' ({node})" in warnings[0]
    assert warnings[0].endswith("restart them so they load it")
    assert warnings[1] == (
        f"warning: task 'echo-nowhere': no worker consumes queue '{setup.queue}-unserved': "
        f"start one with 'systemprompt scheduler:worker -Q {setup.queue}-unserved'"
    )
    checks = as_json.json()
    (workers,) = [check for check in checks["checks"] if check["name"] == "workers"]
    assert [warning.split(":")[0] for warning in workers["warnings"]] == [
        "task 'disk'",
        "task 'echo-nowhere'",
    ]

    result = setup.cli("scheduler:run", "--id", "disk", "--wait", "--timeout", "30", "--format", "json")
    assert result.code == 1, result.stderr
    assert json.loads(result.stdout)["status"] == "failed"  # at once: no retry can help
    error = result.stderr.splitlines()[-1]
    assert error.startswith("error: execution "), result.stderr
    assert f"worker {node} has no command 'report:disk'" in error, error
    assert error.endswith("restart that worker"), error


def run_wait_on_terminal(setup: EngineSetup, task: str) -> tuple[str, str, list[str]]:
    """``scheduler:run --id task --wait`` on a pseudo-terminal, which must succeed and show the progress
    queued -> running -> completed; returns the screen, stdout and the progress lines."""
    argv = [str(SYSTEMPROMPT), "scheduler:run", "--id", task, "--wait", "--timeout", "60"]
    terminal = TerminalRun(argv, env=setup.env, cwd=setup.workdir)
    try:
        code, stdout = terminal.finish(60)
    finally:
        terminal.close()
    assert code == 0, terminal.screen
    lines = [line for line in terminal.screen.splitlines() if line.startswith("execution ")]
    assert [line.split(")")[1].split()[0] for line in lines] == ["queued", "running", "completed"], (
        terminal.screen
    )
    return terminal.screen, stdout, lines


def test_run_wait_at_a_terminal_shows_queued_running_and_the_outcome(worker_setup: EngineSetup) -> None:
    setup = worker_setup
    setup.create("slow", "test:sleep", data={"seconds": 1.5})
    screen, stdout, lines = run_wait_on_terminal(setup, "slow")
    assert lines[1].endswith("(attempt 1/4)") and " running on " in lines[1]
    assert "warning" not in screen
    assert "completed" in stdout  # the execution itself, on stdout as without a terminal


def test_run_wait_at_a_terminal_shows_queued_even_when_the_worker_starts_it_before_the_first_look(
    worker_setup: EngineSetup,
) -> None:
    setup = worker_setup
    setup.create("quick", "test:echo")
    setup.service.run_task_now("quick")  # the worker is warm: the next run starts as soon as it is published
    run_wait_on_terminal(setup, "quick")
