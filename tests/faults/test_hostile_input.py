"""Hostile input never reaches the database half-way (invariant 8 of docs/architecture.md): every
``scheduler:create``/``update`` option, and every argument of ``SchedulerService.create_task``/``update_task``
(and pause/resume/delete), fuzzed with random text, Unicode, huge values, SQL fragments and shell
metacharacters.

Each call either succeeds (one task row and one audit row more, or a changed task and its audit row) or fails
with a typed error: for the CLI one ``error: ...`` line and exit 2 or 3, never a traceback; for the API a
:class:`~scheduler.errors.InvalidInput` or :class:`~scheduler.errors.NotFound`. After a failure the tasks
table (every column) and the audit and execution row counts are exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hostile import PLAUSIBLE_FIELDS, api_fields, argv_options, hostile_text, python_values, snapshot
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from cli.main import cli
from scheduler.commands.loading import load_registry
from scheduler.errors import InvalidInput, NotFound
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.db import make_engine

FUZZ = settings(
    # FUZZ_EXAMPLES=2000 digs deeper (make test-faults keeps the default).
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "100")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=False,
)
BASE_TASKS = ("base-0", "base-1", "base-2")
CLEARABLE = ("start", "end", "max-runs", "auto-pause", "misfire-grace")


# ------------------------------------------------------------------------------------------------ the CLI


class CliWorld:
    def __init__(self, tmp_path: Path) -> None:
        (tmp_path / "module.yaml").write_text("config: {}\n")
        url = f"sqlite:///{(tmp_path / 'fuzz.db').as_posix()}"
        self.runner = CliRunner(
            env={
                "SCHEDULER_DATABASE_URL": url,
                "SCHEDULER_CONFIG_FILE": str(tmp_path / "module.yaml"),
                "SCHEDULER_HOME": str(tmp_path / ".scheduler"),
                "SCHEDULER_ACTOR": "fuzzer",
                "SCHEDULER_DEBUG": None,
                "NO_COLOR": "1",
                "COLUMNS": "200",
            }
        )
        for name in BASE_TASKS:
            result = self.invoke(
                "scheduler:create", "--name", name, "--command", "test:echo", "--schedule", "5m"
            )
            assert result.exit_code == 0, result.stderr
        self.engine = make_engine(url)

    def invoke(self, *args: str) -> Result:
        return self.runner.invoke(cli, list(args), catch_exceptions=True)


@pytest.fixture
def cli_world(tmp_path: Path) -> Iterator[CliWorld]:
    world = CliWorld(tmp_path)
    yield world
    world.engine.dispose()


def _argv(verb: str, options: dict[str, str], flags: list[str]) -> list[str]:
    argv = [verb]
    for option, value in options.items():
        argv += [option, value]
    return argv + flags


def _check_cli(result: Result, before: Any, after: Any, *, creating: bool) -> None:
    shown = f"exit {result.exit_code}\nstdout: {result.stdout[-2000:]!r}\nstderr: {result.stderr!r}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the CLI raised {result.exception!r}\n{shown}") from result.exception
    assert "Traceback" not in result.stdout + result.stderr, shown
    if result.exit_code != 0:
        assert result.exit_code in ((2,) if creating else (2, 3)), shown
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
        assert after == before, f"a refused call changed the database\n{shown}"
        return
    tasks_before, audits_before, runs_before = before
    tasks_after, audits_after, runs_after = after
    assert runs_after == runs_before
    if creating:
        assert len(tasks_after) == len(tasks_before) + 1 and audits_after == audits_before + 1, shown
    else:
        changed = tasks_after != tasks_before
        assert audits_after == audits_before + int(changed), shown


OPTIONS = (
    "--schedule", "--data", "--timezone", "--retries", "--retry-delay", "--retry-backoff", "--timeout",
    "--overlap", "--misfire", "--misfire-grace", "--auto-pause", "--queue", "--start", "--end", "--max-runs",
    "--actor",
)  # fmt: skip
create_options = argv_options(("--name", "--command"), OPTIONS)
update_options = argv_options((), ("--name", "--command", *OPTIONS))
REFS_ARGV = st.one_of(st.sampled_from([*BASE_TASKS, "1", "2", "999", "0", "9" * 30]), hostile_text(argv=True))


@given(
    options=create_options,
    once=st.booleans(),
    output=st.sampled_from(["table", "json"]),
)
# Found by this fuzz once (fixed): an instant with no UTC equivalent; an actor the database cannot store.
@example(
    options={"--name": "e1", "--command": "test:echo", "--start": "0001-01-01T00:00:00+14:00"},
    once=False,
    output="table",
)
@example(options={"--name": "e2", "--command": "test:echo", "--actor": "x\udcffy"}, once=False, output="json")
@FUZZ
def test_scheduler_create_with_hostile_options_fails_cleanly_or_creates_one_task(
    cli_world: CliWorld, options: dict[str, str], once: bool, output: str
) -> None:
    before = snapshot(cli_world.engine)
    flags = ["--format", output] + (["--once"] if once else [])
    result = cli_world.invoke(*_argv("scheduler:create", options, flags))
    _check_cli(result, before, snapshot(cli_world.engine), creating=True)


@given(
    ref=REFS_ARGV,
    options=update_options,
    clear=st.lists(st.sampled_from(CLEARABLE), max_size=2),
    output=st.sampled_from(["table", "json"]),
)
@example(ref="base-0", options={"--end": "9999-12-31T23:59:59-14:00"}, clear=[], output="table")
@example(ref="9" * 5000, options={"--retries": "1"}, clear=[], output="json")
@example(ref="²", options={"--retries": "1"}, clear=[], output="json")
@FUZZ
def test_scheduler_update_with_hostile_options_fails_cleanly_or_changes_one_task(
    cli_world: CliWorld, ref: str, options: dict[str, str], clear: list[str], output: str
) -> None:
    before = snapshot(cli_world.engine)
    options = {"--id": ref, **options}
    flags = ["--format", output] + [arg for name in clear for arg in ("--clear", name)]
    result = cli_world.invoke(*_argv("scheduler:update", options, flags))
    _check_cli(result, before, snapshot(cli_world.engine), creating=False)


# ---------------------------------------------------------------------------------------- the Python API


class ApiWorld:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.settings = Settings(actor="fuzzer")
        self.commands = load_registry(self.settings)
        self.service = self.make(None)
        for name in BASE_TASKS:
            self.service.create_task(name=name, command="test:echo", schedule="5m")

    def make(self, actor: Any) -> SchedulerService:
        return SchedulerService(self.engine, self.settings, commands=self.commands, actor=actor)


@pytest.fixture
def api_world(engine: Engine) -> ApiWorld:
    return ApiWorld(engine)


def _check_api(call: Any, world: ApiWorld, *, changes: bool) -> None:
    before = snapshot(world.engine)
    try:
        call()
    except (InvalidInput, NotFound):
        assert snapshot(world.engine) == before, "a refused call changed the database"
        return
    except Exception as error:
        raise AssertionError(f"untyped error {type(error).__name__}: {error}") from error
    after = snapshot(world.engine)
    changed = after[0] != before[0]
    assert after[2] == before[2]
    if changes:
        assert after[1] == before[1] + int(changed), "a task changed without its audit row (or vice versa)"


ACTORS = st.one_of(st.none(), st.sampled_from(["alice", "ops@example.com"]), hostile_text(argv=False))
REFS = st.one_of(st.sampled_from([*BASE_TASKS, 1, 2, 999, "2", " base-1 "]), python_values())
FIELDS = tuple(name for name in PLAUSIBLE_FIELDS if name not in ("name", "command", "once"))
api_create = api_fields(("name", "command"), (*FIELDS, "once"))
api_update = api_fields((), ("name", "command", *FIELDS))


@given(fields=api_create, actor=ACTORS, as_spec=st.booleans())
@example(fields={"name": "e1", "command": "test:echo"}, actor="a\x00b", as_spec=False)
@example(fields={"name": "e2", "command": "test:echo"}, actor="a\ud800b", as_spec=True)
@FUZZ
def test_create_task_with_hostile_arguments_raises_a_typed_error_or_creates_one_task(
    api_world: ApiWorld, fields: dict[str, Any], actor: Any, as_spec: bool
) -> None:
    def call() -> Any:
        service = api_world.make(actor)
        return service.create_task(fields) if as_spec else service.create_task(**fields)

    _check_api(call, api_world, changes=True)


@given(ref=REFS, changes=api_update, actor=ACTORS)
@example(ref=2**70, changes={}, actor=None)
@example(ref="9" * 5000, changes={"retries": 1}, actor=None)
@example(ref="base-\x00", changes={}, actor=None)
@FUZZ
def test_update_task_with_hostile_arguments_raises_a_typed_error_or_changes_one_task(
    api_world: ApiWorld, ref: Any, changes: dict[str, Any], actor: Any
) -> None:
    _check_api(lambda: api_world.make(actor).update_task(ref, **changes), api_world, changes=True)


@given(
    verb=st.sampled_from(["pause", "resume", "delete_task", "get_task", "history", "run_task_now"]),
    ref=REFS,
    reason=st.one_of(st.none(), python_values()),
    actor=ACTORS,
)
@FUZZ
def test_other_verbs_with_hostile_references_raise_a_typed_error_or_do_their_job(
    api_world: ApiWorld, verb: str, ref: Any, reason: Any, actor: Any
) -> None:
    def call() -> Any:
        service = api_world.make(actor)
        calls = {
            "pause": lambda: service.pause(ref, reason=reason),
            "resume": lambda: service.resume(ref),
            "delete_task": lambda: service.delete_task(ref),
            "get_task": lambda: service.get_task(ref),
            "history": lambda: service.history(task=ref, limit=reason if isinstance(reason, int) else 5),
            "run_task_now": lambda: service.run_task_now(ref),
        }
        return calls[verb]()

    before = snapshot(api_world.engine)
    try:
        call()
    except (InvalidInput, NotFound):
        assert snapshot(api_world.engine) == before
    except Exception as error:
        raise AssertionError(f"{verb}: untyped error {type(error).__name__}: {error}") from error
