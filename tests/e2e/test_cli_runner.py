"""The real ``systemprompt`` executable as a subprocess, plus the checks of the executable itself.

Other ``test_cli_*`` modules import :class:`Cli` from here. ``Cli.run`` starts the real console script (every
verb is run that way at least once); ``Cli.invoke`` runs the same click application in-process through click's
``CliRunner``, for the long lists of cases where a process start per case would be too slow. Both get a clean
environment (no inherited ``SCHEDULER_*``), a temporary working directory (so the repository's ``module.yaml``
is not picked up) and the test's database URL.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

SYSTEMPROMPT = Path(sys.executable).with_name("systemprompt")
TIMEOUT_S = 60


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def json(self) -> Any:
        assert self.code == 0, self.describe()
        return json.loads(self.stdout)

    def describe(self) -> str:
        command = " ".join(self.args)
        return f"systemprompt {command} -> exit {self.code}\nstdout: {self.stdout}\nstderr: {self.stderr}"


class Cli:
    """Runs ``systemprompt`` against one database from one working directory."""

    def __init__(self, database_url: str | None, workdir: Path, **env: str) -> None:
        assert SYSTEMPROMPT.exists(), f"{SYSTEMPROMPT} is missing: run .venv/bin/pip install -e ."
        self.workdir = workdir
        self.own_env = {"SCHEDULER_HOME": str(workdir / ".scheduler"), "NO_COLOR": "1", "COLUMNS": "200"}
        if database_url is not None:
            self.own_env["SCHEDULER_DATABASE_URL"] = database_url
        self.own_env |= env
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
        self.env |= self.own_env

    def run(self, *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None) -> Result:
        """The real executable, as a subprocess."""
        completed = subprocess.run(
            [str(SYSTEMPROMPT), *args],
            input=stdin,
            stdin=subprocess.DEVNULL if stdin is None else None,
            capture_output=True,
            text=True,
            cwd=self.workdir,
            env={**self.env, **(env or {})},
            timeout=TIMEOUT_S,
            check=False,
        )
        return Result(tuple(args), completed.returncode, completed.stdout, completed.stderr)

    def run_many(self, argvs: Sequence[Sequence[str]]) -> list[Result]:
        """Run several invocations at once (each is a separate process), results in order."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            return list(pool.map(lambda argv: self.run(*argv), argvs))

    def invoke(self, *args: str, stdin: str | None = None) -> Result:
        """The same click application in this process (same error policy and exit codes, no process start)."""
        from click.testing import CliRunner

        from cli.main import cli

        inherited: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SCHEDULER_")}
        runner = CliRunner(env={**inherited, **self.own_env})
        with contextlib.chdir(self.workdir):
            result = runner.invoke(cli, list(args), input=stdin, catch_exceptions=False)
        return Result(tuple(args), result.exit_code, result.stdout, result.stderr)

    def ok(self, *args: str, real: bool = False) -> Result:
        result = self.run(*args) if real else self.invoke(*args)
        assert result.code == 0, result.describe()
        return result

    def json(self, *args: str, real: bool = False) -> Any:
        return self.ok(*args, "--format", "json", real=real).json()

    def tasks(self) -> list[dict[str, Any]]:
        tasks: list[dict[str, Any]] = self.json("scheduler:list")
        return tasks

    def create(
        self, name: str, *options: str, command: str = "test:echo", real: bool = False
    ) -> dict[str, Any]:
        args = ("scheduler:create", "--name", name, "--command", command, *options)
        task: dict[str, Any] = self.json(*args, real=real)
        return task


def assert_one_line_error(result: Result, code: int) -> None:
    """Exit ``code``, nothing on stdout, exactly one ``error: ...`` line on stderr."""
    assert result.code == code, result.describe()
    assert result.stdout == "", result.describe()
    assert len(result.stderr_lines) == 1, result.describe()
    assert result.stderr_lines[0].startswith("error: "), result.describe()


# --------------------------------------------------------------------------------- the executable itself

HEAVY = ("celery", "sqlalchemy", "kombu", "alembic")
# What a read verb never needs: the broker clients, Alembic (the schema check is one SELECT), rich (stdout is
# not a terminal here), pydantic (the settings are declared on scheduler.settings_model), blinker (the event
# bus makes its signals for the first handler: none without a Redis broker).
NOT_FOR_READING = ("celery", "kombu", "redis", "alembic", "rich", "pydantic", "pydantic_settings", "blinker")
READ_VERBS = (
    ("scheduler:list",),
    ("scheduler:history",),
    ("scheduler:next",),
    ("scheduler:validate", "--schedule", "*/5 * * * *"),
)


def run_with_importtime(*args: str, cli: Cli | None = None) -> tuple[set[str], str]:
    """The modules (dotted names) the real console script imports to answer ``args`` (from ``-X importtime``),
    and its stdout; run where ``cli`` runs (its directory and environment) when given. It must exit 0."""
    completed = subprocess.run(
        [sys.executable, "-X", "importtime", str(SYSTEMPROMPT), *args],
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
        **({} if cli is None else {"cwd": cli.workdir, "env": cli.env}),
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    names = set()
    for line in completed.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    assert "click" in names, completed.stderr[-2000:]
    return names, completed.stdout


def top_level(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


def imported_top_level_modules(*args: str) -> set[str]:
    """Top-level packages the real console script imports to answer ``args``."""
    return top_level(run_with_importtime(*args)[0])


@pytest.mark.parametrize(
    "args",
    [("--help",), ("scheduler:create", "--help"), ("scheduler", "--help"), ("scheduler", "list", "--help")],
)
def test_help_imports_neither_celery_nor_sqlalchemy(args: tuple[str, ...]) -> None:
    heavy = imported_top_level_modules(*args) & set(HEAVY)
    assert heavy == set()


@pytest.mark.parametrize("args", READ_VERBS, ids=lambda args: args[0])
def test_read_verbs_import_no_broker_client_and_no_alembic(
    db_url: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    cli = Cli(db_url, tmp_path)
    cli.create("hourly", "--schedule", "1h")
    modules, stdout = run_with_importtime(*args, cli=cli)
    imported = top_level(modules)
    assert imported & set(NOT_FOR_READING) == set()
    # No module.yaml here: nothing to parse, so no PyYAML; the tasks-file modules serve apply, plan, export.
    tasks_files = {"yaml", "scheduler.task_files", "scheduler.rules.taskfile", "scheduler.rules.taskplan"}
    assert modules & tasks_files == set()
    # The records no read verb builds stay undefined (scheduler.records.DEFERRED), and the service's writing
    # parts unimported: validation, versions, alerts, audit, the planner's SQL, the web console's queries.
    assert "scheduler.records.deferred" not in modules
    writing = {
        *("scheduler.rules.validation", "scheduler.rules.versions", "scheduler.rules.alerts"),
        *("scheduler.storage.alerts", "scheduler.storage.audit", "scheduler.storage.audit_chain"),
        *("scheduler.storage.dispatch", "scheduler.storage.task_outcomes", "scheduler.storage.task_sets"),
        *("scheduler.storage.manual_runs", "scheduler.storage.console", "scheduler.planning"),
    }
    assert modules & writing == set()
    # The embedded default never loads the PostgreSQL dialect package (the JSONB type is resolved lazily).
    postgres = "sqlalchemy.dialects.postgresql" in modules
    assert postgres == (db_url.startswith("postgresql") and args[0] != "scheduler:validate")
    # Each verb did its work: list and next show the task; validate needs no database, the others open it.
    assert ("hourly" in stdout) == (args[0] in ("scheduler:list", "scheduler:next")), stdout
    assert ("sqlalchemy" in imported) == (args[0] != "scheduler:validate")


def test_help_lists_every_verb_under_both_spellings(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path)
    root, sub = cli.run_many([["--help"], ["scheduler", "--help"]])
    verbs = [
        *("list", "create", "update", "delete", "pause", "resume", "history", "next", "validate", "stats"),
        *("logs", "commands", "config", "migrate", "audit"),
    ]
    for verb in verbs:
        assert f"scheduler:{verb} " in root.stdout, root.stdout
        assert f"  {verb} " in sub.stdout, sub.stdout
    assert "69" in root.stdout and "77" in root.stdout  # the exit codes are documented in --help


def test_options_name_their_environment_variable(tmp_path: Path) -> None:
    result = Cli(None, tmp_path).ok("scheduler:create", "--help")
    assert "SCHEDULER_ACTOR" in result.stdout
    assert "SCHEDULER_DEFAULT_RETRIES" in result.stdout


def test_a_usage_error_is_one_line_and_exits_2(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path)
    for result in cli.run_many(
        [["scheduler:create", "--bogus"], ["scheduler:create", "--name", "x"], ["scheduler:nonsense"]]
    ):
        assert_one_line_error(result, 2)
    assert not (tmp_path / ".scheduler").exists()  # a usage error never opens the database
    bare = cli.run("scheduler")
    assert bare.code == 2 and bare.stdout == "" and bare.stderr.startswith("Usage: systemprompt scheduler")


def test_shell_completion_offers_the_subgroup_verbs_and_options(tmp_path: Path) -> None:
    cli = Cli(None, tmp_path)
    verbs, options = (
        cli.run(env={"_SYSTEMPROMPT_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": "2"})
        for words in ("systemprompt scheduler li", "systemprompt scheduler:create --ov")
    )
    assert verbs.code == 0 and "plain,list" in verbs.stdout.splitlines()
    assert options.code == 0 and "plain,--overlap" in options.stdout.splitlines()
