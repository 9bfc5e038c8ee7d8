"""What a user meets when configuring: a misspelt ``SCHEDULER_*`` variable, the embedded database's file, and
database URLs of other spellings or unsupported kinds. Real processes: the CLI, the planner, the worker."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from test_cli_runner import SYSTEMPROMPT, Cli, assert_one_line_error

TYPO_WARNING = (
    "warning: SCHEDULER_DATABSE_URL is not a setting and is ignored (did you mean SCHEDULER_DATABASE_URL?)"
)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(None, workdir, SCHEDULER_DATABSE_URL="postgresql://nobody@127.0.0.1:1/typo")


def _worker_stderr_until(cli: Cli, text: str) -> str:
    """Start ``scheduler:worker`` (embedded default) and stop it once its stderr shows ``text`` (or it is
    ready, or 45 s passed); what it printed."""
    process = subprocess.Popen(
        [str(SYSTEMPROMPT), "scheduler:worker", "-P", "solo"],
        cwd=cli.workdir,
        env=cli.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen = ""
    try:
        deadline = time.monotonic() + 45
        assert process.stderr is not None
        while text not in seen and " ready." not in seen and time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            seen += line
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    return seen


def test_a_misspelt_variable_is_warned_about_by_the_cli_the_planner_and_the_worker(cli: Cli) -> None:
    listed = cli.run("scheduler:list")
    assert listed.code == 0, listed.describe()
    assert TYPO_WARNING in listed.stderr_lines
    planner = cli.run("scheduler:planner", "--once")
    assert planner.code == 0, planner.describe()
    assert TYPO_WARNING in planner.stderr_lines
    assert TYPO_WARNING in _worker_stderr_until(cli, TYPO_WARNING).splitlines()


def test_the_variables_read_outside_the_settings_are_not_warned_about(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path, SCHEDULER_DEBUG="1", SCHEDULER_TABLES="plain", SCHEDULER_TEST_FAULT="")
    result = cli.run("scheduler:list")
    assert result.code == 0, result.describe()
    assert not [line for line in result.stderr_lines if line.startswith("warning:")], result.describe()


def test_creating_the_embedded_database_names_its_absolute_path_once(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path)
    del cli.env["SCHEDULER_HOME"]  # the default: ./.scheduler of the working directory
    first = cli.run("scheduler:list")
    assert first.code == 0, first.describe()
    database = (tmp_path / ".scheduler" / "scheduler.db").resolve()
    assert first.stderr_lines == [f"note: created the embedded database {database}"]
    again = cli.run("scheduler:list")
    assert again.code == 0 and again.stderr == "", again.describe()


def test_a_postgres_url_works_as_postgresql(pg_url: str, tmp_path: Path) -> None:
    url = make_url(pg_url).set(drivername="postgres").render_as_string(hide_password=False)
    assert url.startswith("postgres://")
    cli = Cli(url, tmp_path)
    created = cli.create("pg-by-short-scheme", real=True)
    assert [task["id"] for task in cli.json("scheduler:list", real=True)] == [created["id"]]


@pytest.mark.parametrize(
    "url", ["mysql://root@127.0.0.1/scheduler", "mongodb://127.0.0.1/x", "postgresql+asyncpg://u@h/d"]
)
def test_an_unsupported_database_url_is_one_line_naming_the_setting(url: str, tmp_path: Path) -> None:
    result = Cli(url, tmp_path).run("scheduler:list")
    assert_one_line_error(result, 2)
    assert result.stderr.startswith(
        "error: invalid setting database_url (SCHEDULER_DATABASE_URL): unsupported database"
    )
    assert not (tmp_path / ".scheduler").exists()


def test_an_unsupported_database_url_in_module_yaml_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "module.yaml").write_text("config:\n  databaseUrl: mysql://root@db/scheduler\n")
    result = Cli(None, tmp_path).run("scheduler:list")
    assert_one_line_error(result, 2)
    assert result.stderr.startswith(
        "error: invalid setting database_url (databaseUrl in module.yaml): unsupported"
    )
