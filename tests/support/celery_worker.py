"""A real Celery worker as a subprocess: ``celery -A <app> worker`` on one queue, in its own process group,
logging to a file; wait for its ready line, stop it (warm shutdown, then SIGKILL) or kill it.

Which commands the worker knows is up to its ``-A`` module (``tests/integration/workerproc.py``,
``tests/faults/worker_support.py``: each registers its own through :func:`app_with_commands`), and its
environment (database, broker, a ``PYTHONPATH`` that reaches that module) is up to the caller.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.commands.registry import CommandContext, command
from tests.support import background
from tests.support.processes import kill_process_group, stop_process_group

CELERY = Path(sys.executable).parent / "celery"
READY_TIMEOUT_S = 45.0


def app_with_commands(commands: Mapping[str, tuple[Callable[[CommandContext], Any], str]]) -> Any:
    """:mod:`workers.app`'s app with ``commands`` (name -> (function, description)) registered: what the
    ``-A`` module of a worker hands Celery as its ``app``. Only in the worker subprocess: the registration is
    global, and in the test process it would leak into every other test's registry."""
    from workers import app as app_module

    for name, (func, description) in commands.items():
        command(name, description)(func)
    return app_module.app


@dataclass
class WorkerProcess:
    process: subprocess.Popen[bytes]
    log_path: Path
    queue: str
    name: str
    stopped: bool = False

    def log(self, since: int = 0) -> str:
        """Its log, from byte ``since`` on (see :meth:`log_size`)."""
        if not self.log_path.exists():
            return ""
        with self.log_path.open("rb") as log_file:
            log_file.seek(since)
            return log_file.read().decode(errors="replace")

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait for the worker's `` ready.`` log line; fail (with its log) if it exits or takes too long."""
        deadline = time.monotonic() + timeout_s
        while " ready." not in self.log():
            if self.process.poll() is not None:
                raise AssertionError(f"worker exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"worker not ready after {timeout_s} s:\n{self.log()[-4000:]}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM (warm shutdown) to its group, SIGKILL if it lingers (pool processes die with it)."""
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        return stop_process_group(self.process, timeout_s)

    def stop_later(self, timeout_s: float = 15.0, then: Callable[[], object] | None = None) -> None:
        """SIGTERM (warm shutdown) to its group now; waiting for its exit (SIGKILL if it lingers), then
        ``then()``, in the background (:mod:`tests.support.background`): for a test that is over."""
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)

        def finish() -> None:
            stop_process_group(self.process, timeout_s, ())
            if then is not None:
                then()

        background.later(finish)

    def kill(self) -> None:
        """SIGKILL at once (after a test: its state is in the database); the pool processes die with it."""
        self.stopped = True
        kill_process_group(self.process)


@dataclass(frozen=True)
class SharedWorkerView:
    """A worker that several tests use in turn, as one of them sees it: the process, and the log written since
    that test began (``since``: the log's size then)."""

    worker: WorkerProcess
    since: int

    @property
    def process(self) -> subprocess.Popen[bytes]:
        return self.worker.process

    @property
    def name(self) -> str:
        return self.worker.name

    def log(self) -> str:
        return self.worker.log(self.since)


def start_worker(
    app: str,
    env: Mapping[str, str],
    queue: str,
    log_path: Path,
    *,
    cwd: Path,
    name: str | None = None,
    pool: str = "prefork",
    concurrency: int = 2,
    extra: Sequence[str] = (),
    wait: bool = True,
) -> WorkerProcess:
    """``celery -A <app> worker`` on ``queue`` (node ``name``, by default ``<queue>@%h``) in its own process
    group, its output in ``log_path``; with ``wait``, wait until it is ready (stopping it if it never is)."""
    name = name or f"{queue}@%h"
    argv = [
        str(CELERY), "-A", app, "worker", "-P", pool, "-c", str(concurrency), "-Q", queue, "-n", name,
        "--without-mingle", "--without-gossip", "--loglevel", "INFO", *extra,
    ]  # fmt: skip
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=str(cwd),
            env=dict(env),
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process=process, log_path=log_path, queue=queue, name=name)
    if wait:
        try:
            worker.wait_ready()
        except BaseException:
            worker.stop()
            raise
    return worker
