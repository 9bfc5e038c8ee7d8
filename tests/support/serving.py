"""``systemprompt scheduler:serve`` as a real subprocess in a directory of its own (the embedded default:
SQLite + the local broker under ``.scheduler/``), and the CLI run against that directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.processes import kill_process_group, wait_for

SYSTEMPROMPT = Path(sys.executable).with_name("systemprompt")
READY_S = 60.0  # serve is ready once Celery's worker logs "ready." (forked its pool, planner started)


def clean_env(**extra: str) -> dict[str, str]:
    """The test's environment without any ``SCHEDULER_*`` setting (plus ``extra``): the embedded default."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    return env | {"NO_COLOR": "1", "COLUMNS": "200"} | extra


def cli(
    workdir: Path, *args: str, env: dict[str, str] | None = None, timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SYSTEMPROMPT), *args],
        cwd=workdir,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def history(workdir: Path, env: dict[str, str] | None = None, limit: int = 500) -> list[dict[str, Any]]:
    result = cli(workdir, "scheduler:history", "--limit", str(limit), "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


@contextmanager
def serving(
    workdir: Path, *args: str, env: dict[str, str] | None = None, wait_ready: bool = False
) -> Iterator[subprocess.Popen[bytes]]:
    """``scheduler:serve *args`` running in ``workdir``, its output in ``workdir/serve.log``; killed (whole
    process group) on exit if it still runs. ``wait_ready``: return once the worker logged "ready."."""
    log = workdir / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [str(SYSTEMPROMPT), "scheduler:serve", *args],
            cwd=workdir,
            env=env or clean_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        if wait_ready:
            wait_for(lambda: is_ready(process, log), READY_S, "serve did not get ready", interval_s=0.2)
        yield process
    finally:
        if process.poll() is None:
            kill_process_group(process)


def is_ready(process: subprocess.Popen[bytes], log: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"serve exited with {process.returncode}:\n{log.read_text()}")
    return " ready." in log.read_text()


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30) -> int:
    """SIGTERM (serve's warm shutdown) and its exit code."""
    process.send_signal(signal.SIGTERM)
    return process.wait(timeout_s)


def fatal_lines(
    log_text: str, markers: Sequence[str] = ("CRITICAL", "Unrecoverable", "Traceback")
) -> list[str]:
    """Lines of serve's log that say it (or a part of it) broke."""
    return [line for line in log_text.splitlines() if any(marker in line for marker in markers)]
