"""``scheduler:run --wait`` on the embedded default with no worker, as a person at a terminal and as a script:
it says nobody consumes the queue, keeps waiting, and Ctrl-C leaves the execution queued."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_runner import SYSTEMPROMPT, Cli

from tests.support.terminal import TerminalRun

NO_WORKER = (
    "warning: no worker consumes queue 'default': start one with 'systemprompt scheduler:worker -Q default'"
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(None, tmp_path)  # the embedded default: SQLite and the filesystem broker under the workdir
    cli.create("nightly")  # in-process: the subject is run --wait, which runs as the real executable
    return cli


def test_at_a_terminal_it_shows_queued_warns_that_no_worker_runs_it_and_ctrl_c_leaves_it_queued(
    cli: Cli,
) -> None:
    terminal = TerminalRun(
        [str(SYSTEMPROMPT), "scheduler:run", "--id", "nightly", "--wait"], env=cli.env, cwd=cli.workdir
    )
    try:
        terminal.wait_for("execution 1 (nightly) queued on queue 'default'", 30)
        terminal.wait_for(NO_WORKER, 30)
        terminal.interrupt()
        code, stdout = terminal.finish(30)
    finally:
        terminal.close()
    assert code == 130, terminal.screen
    assert "stopped waiting: execution 1 stays queued and will still run" in terminal.screen
    assert stdout == ""
    (execution,) = cli.json("scheduler:history")
    assert execution["status"] == "queued"


def test_piped_it_prints_no_progress_only_the_warning_and_the_json(cli: Cli) -> None:
    result = cli.run("scheduler:run", "--id", "nightly", "--wait", "--timeout", "2.5", "--format", "json")
    assert result.code == 1, result.describe()
    assert json.loads(result.stdout)["status"] == "queued"
    assert result.stderr_lines[0].startswith(NO_WORKER), result.describe()
    assert result.stderr_lines[1:] == ["error: execution 1 is still queued after 2.5 s"]
