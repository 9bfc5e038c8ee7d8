"""Real Celery workers (and the ``systemprompt`` CLI) as subprocesses for the worker tests.

This module is also the ``-A`` module of those workers (``celery -A workerproc worker``): importing it
registers the misbehaving commands below, and ``app`` is :mod:`workers.app`'s app built from the worker's
environment. Each worker gets its own queue, database and process group (started and stopped by
:mod:`tests.support.celery_worker`). :class:`EngineSetup` is what the ``engine_setup`` fixture (registered by
this directory's ``conftest.py``) hands to a test; :mod:`shared_world` hands one with a worker that the tests
of a module share.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandContext
from scheduler.records import FINISHED_STATUSES, Dispatch, Execution
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from tests.support import celery_worker
from tests.support.celery_worker import SharedWorkerView, WorkerProcess
from tests.support.processes import wait_for

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SYSTEMPROMPT = Path(sys.executable).parent / "systemprompt"


# ------------------------------------------------------------------------------ misbehaving commands


def hang(ctx: CommandContext) -> None:
    ctx.log("INFO", f"hanging in pid {os.getpid()}")
    Path(str(ctx.data["pidfile"])).write_text(str(os.getpid()))
    while True:
        with contextlib.suppress(BaseException):  # swallowing even the time limit is the point of it
            time.sleep(3600)


def spew(ctx: CommandContext) -> str:
    line = "x" * 1023
    for _ in range(int(ctx.data.get("megabytes", 5)) * 1024):
        print(line)
    return "spewed"


def raise_value_error(ctx: CommandContext) -> None:
    def nested() -> None:
        raise ValueError(f"bad value in execution {ctx.execution_id}")

    nested()


def write_pid(ctx: CommandContext) -> int:
    Path(str(ctx.data["pidfile"])).write_text(str(os.getpid()))
    deadline = time.monotonic() + float(ctx.data.get("seconds", 0))
    while time.monotonic() < deadline:
        time.sleep(0.05)
    return os.getpid()


TEST_COMMANDS: dict[str, tuple[Callable[[CommandContext], Any], str]] = {
    "test:hang": (hang, "Ignore every interruption and sleep forever (only the hard time limit ends it)."),
    "test:spew": (spew, "Print data.megabytes of output (default 5)."),
    "test:raise": (raise_value_error, "Raise ValueError from a nested call."),
    "test:pid": (write_pid, "Sleep data.seconds and write the pool process id to data.pidfile."),
}


def __getattr__(name: str) -> Any:
    # Only the worker subprocess asks for `app`: the test commands are registered there, not in the test
    # process (where a global registration would leak into every other test's registry).
    if name == "app":
        return celery_worker.app_with_commands(TEST_COMMANDS)
    raise AttributeError(name)


# ------------------------------------------------------------------------------------------ processes


def clean_env(**overrides: str) -> dict[str, str]:
    """The test process's environment without SCHEDULER_* variables, plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), str(REPO)])
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "200"
    env.update(overrides)
    return env


def scheduler_env(database_url: str, broker_url: str, workdir: Path, **overrides: str) -> dict[str, str]:
    """Environment of a worker/CLI bound to one database and broker, with fast heartbeats."""
    empty = workdir / "module.yaml"
    if not empty.exists():
        empty.write_text("config: {}\n")
    return clean_env(
        SCHEDULER_DATABASE_URL=database_url,
        SCHEDULER_BROKER_URL=broker_url,
        SCHEDULER_CONFIG_FILE=str(empty),
        SCHEDULER_HOME=str(workdir / ".scheduler"),
        SCHEDULER_HEARTBEAT_INTERVAL="500",
        **overrides,
    )


def unique_queue(prefix: str = "wt") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def start_worker(env: Mapping[str, str], queue: str, log_dir: Path, **options: Any) -> WorkerProcess:
    """A worker of this module (``celery -A workerproc worker``) on ``queue``, logging under ``log_dir``;
    ``options``: those of :func:`tests.support.celery_worker.start_worker`."""
    log_path = log_dir / f"worker-{queue}-{uuid.uuid4().hex[:6]}.log"
    return celery_worker.start_worker("workerproc", env, queue, log_path, cwd=HERE, **options)


@contextlib.contextmanager
def running_worker(
    env: Mapping[str, str], queue: str, log_dir: Path, **options: Any
) -> Iterator[WorkerProcess]:
    worker = start_worker(env, queue, log_dir, **options)
    try:
        yield worker
    finally:
        worker.stop_later()


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        assert self.code == 0, f"exit {self.code}: {self.stderr}"
        return json.loads(self.stdout)


def run_cli(env: Mapping[str, str], *args: str, cwd: Path, timeout_s: float = 90) -> CliResult:
    """``systemprompt <args>`` as a subprocess."""
    completed = subprocess.run(
        [str(SYSTEMPROMPT), *args],
        cwd=str(cwd),
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr)


# ------------------------------------------------------------------------------------- test set-up


@dataclass
class EngineSetup:
    """One test's engine: database, broker, queue, environment for subprocesses, and an in-process service."""

    database_url: str
    broker_url: str
    queue: str
    workdir: Path
    env: dict[str, str]
    settings: Settings
    service: SchedulerService
    app: Any
    worker: SharedWorkerView | None = None  # the test module's worker (:mod:`shared_world`), already running

    def start_worker(self, **options: Any) -> WorkerProcess:
        assert self.worker is None, "this setup has its module's worker: use setup.worker"
        worker = start_worker(self.env, self.queue, self.workdir, **options)
        self._workers.append(worker)
        return worker

    def create(self, name: str, command: str, **fields: Any) -> Any:
        fields.setdefault("schedule", "manual")
        return self.service.create_task(name=name, command=command, queue=self.queue, **fields)

    def cli(self, *args: str, timeout_s: float = 90) -> CliResult:
        return run_cli(self.env, *args, cwd=self.workdir, timeout_s=timeout_s)

    def invoke(self, *args: str) -> CliResult:
        """``systemprompt <args>`` in this process: the same click application (error policy, exit codes,
        output) through click's ``CliRunner``, with this setup's ``SCHEDULER_*`` environment and working
        directory, without a process start. For the tests that are not about the executable."""
        from click.testing import CliRunner

        from cli.main import cli

        env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SCHEDULER_")}
        env |= {key: value for key, value in self.env.items() if key.startswith("SCHEDULER_")}
        env |= {"NO_COLOR": self.env.get("NO_COLOR"), "COLUMNS": self.env.get("COLUMNS")}
        with contextlib.chdir(self.workdir):
            result = CliRunner(env=env).invoke(cli, list(args), catch_exceptions=False)
        return CliResult(result.exit_code, result.stdout, result.stderr)

    def __post_init__(self) -> None:
        self._workers: list[WorkerProcess] = []
        # The same service without a publisher: its manual runs stay pending, for tests that publish by hand.
        self.offline = SchedulerService(
            self.service.engine, self.settings, commands=self.service.commands, actor="test"
        )

    def pending_run(self, task: Any) -> Execution:
        return self.offline.run_task_now(task.id)

    def publish(
        self, execution: Execution, *, timeout_s: float | None = None, countdown_s: float = 0.0
    ) -> None:
        from workers.publisher import CeleryPublisher

        dispatch = Dispatch(
            execution.id, execution.queue, execution.command, execution.task_name, countdown_s, timeout_s
        )
        CeleryPublisher(self.app).publish([dispatch])

    def wait_finished(self, execution_id: int, timeout_s: float = 30) -> Execution:
        def finished() -> Execution | None:
            execution = self.service.get_execution(execution_id)
            return execution if execution.status in FINISHED_STATUSES else None

        result: Execution = wait_for(
            finished, timeout_s, message=f"execution {execution_id} did not finish within {timeout_s} s"
        )
        return result

    def close(self) -> None:
        for worker in self._workers:
            worker.stop_later()
        self.service.engine.dispose()


def build_setup(database_url: str, broker_url: str, queue: str, workdir: Path) -> EngineSetup:
    """An :class:`EngineSetup` on ``database_url`` (migrated) and ``queue``; close it after the test."""
    from workers.app import create_app
    from workers.publisher import CeleryPublisher

    env = scheduler_env(database_url, broker_url, workdir, SCHEDULER_DEFAULT_QUEUE=queue)
    settings = Settings(
        database_url=database_url,
        broker_url=broker_url,
        home=workdir / ".scheduler",
        heartbeat_interval=500,
        default_queue=queue,
    )
    app = create_app(settings)
    registry = load_registry(settings, extra=TEST_COMMANDS)
    service = SchedulerService.from_settings(
        settings, publisher=CeleryPublisher(app), actor="test", commands=registry
    )
    return EngineSetup(database_url, broker_url, queue, workdir, env, settings, service, app)


@pytest.fixture
def engine_setup(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[EngineSetup]:
    """PostgreSQL + Redis + a unique queue; workers started through it are stopped after the test."""
    setup = build_setup(pg_url, redis_url, unique_queue(), tmp_path)
    try:
        yield setup
    finally:
        setup.close()  # not the app's kombu pools: they are process-wide per broker URL, later tests use them
