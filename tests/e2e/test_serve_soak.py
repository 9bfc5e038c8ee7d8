"""Soak: ``scheduler:serve`` on the embedded default under concurrent publishing and consuming.

Two tasks fire every second (published by serve's planner) while other processes run a third task by hand
(``scheduler:run --wait``, each publishing from its own process), and ``celery inspect ping`` asks serve
through the broker's fanout. Each execution runs an external command that appends its execution id to a
file, so "completed exactly once" is checked against what actually ran, not only the rows' status.

The short variant (``make test``) runs 20 s of load (~40 s in all); the slow one four minutes.
"""

from __future__ import annotations

import collections
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tests.support.processes import wait_for
from tests.support.serving import clean_env, cli, fatal_lines, serving, stop

SCHEDULED = ("every-second-a", "every-second-b")
MANUAL = "by-hand"
MANUAL_RUNNERS = 2  # processes running `scheduler:run --wait` back to back
# Appends SYSTEMPROMPT_EXECUTION_ID to the file named by its argument (O_APPEND: one write per line).
MARK = (
    "import os, sys; fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT); "
    "os.write(fd, (os.environ['SYSTEMPROMPT_EXECUTION_ID'] + '\\n').encode())"
)


def soak(workdir: Path, load_s: float) -> dict[str, Any]:
    marks = workdir / "ran.txt"
    command = {"soak:mark": [sys.executable, "-I", "-S", "-c", MARK, str(marks)]}
    env = clean_env(SCHEDULER_COMMANDS=json.dumps(command))

    def create(name: str, schedule: str) -> None:
        # A long grace: a slot due before serve started, or while it was busy, still runs (none is skipped).
        created = cli(
            workdir, "scheduler:create", "--name", name, "--command", "soak:mark", "--schedule", schedule,
            "--retries", "0", "--misfire-grace", "600000", env=env,
        )  # fmt: skip
        assert created.returncode == 0, created.stderr

    first, *others = [*((name, "1s") for name in SCHEDULED), (MANUAL, "manual")]
    create(*first)  # creates the embedded database; then the others at once
    with ThreadPoolExecutor(len(others)) as pool:
        list(pool.map(lambda task: create(*task), others))
    log = workdir / "serve.log"
    manual_exits: list[int] = []
    pings: list[subprocess.CompletedProcess[str]] = []
    with serving(workdir, env=env, wait_ready=True) as process:
        started = time.monotonic()
        until = started + load_s

        def run_by_hand() -> None:
            while time.monotonic() < until:
                run = cli(workdir, "scheduler:run", "--id", MANUAL, "--wait", "--timeout", "60", env=env)
                manual_exits.append(run.returncode)

        runners = [threading.Thread(target=run_by_hand) for _ in range(MANUAL_RUNNERS)]
        for runner in runners:
            runner.start()
        # One ping per 10 s of load, at the start of each 10 s (a ping waits its whole 5 s timeout for
        # replies): every ping runs under the load, and none outlasts it.
        while (chunk := time.monotonic()) < until:
            assert process.poll() is None, f"serve died:\n{log.read_text()}"
            ping = subprocess.run(
                [sys.executable, "-m", "celery", "-A", "workers.app", "inspect", "ping", "--timeout", "5"],
                cwd=workdir, env=env, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            pings.append(ping)
            time.sleep(max(min(chunk + 10.0, until) - time.monotonic(), 0))
        assert process.poll() is None, f"serve died:\n{log.read_text()}"
        for runner in runners:
            runner.join(120)
        paused = cli(workdir, "scheduler:pause", env=env)
        assert paused.returncode == 0, paused.stderr
        database = create_engine(f"sqlite:///{workdir / '.scheduler' / 'scheduler.db'}")

        def executions() -> list[Any]:
            with database.connect() as connection:
                return list(
                    connection.execute(text("SELECT id, task_name, status, attempt FROM task_executions"))
                )

        def settled() -> list[Any]:
            rows = executions()
            return rows if all(row.status not in ("pending", "queued", "running") for row in rows) else []

        rows = wait_for(settled, 60, "executions still pending, queued or running", interval_s=0.1)
        assert process.poll() is None, f"serve died:\n{log.read_text()}"
        assert stop(process) == 0
        database.dispose()

    ran = collections.Counter(int(line) for line in marks.read_text().split())
    by_task = collections.Counter(row.task_name for row in rows)
    figures = {
        "elapsed_s": round(time.monotonic() - started),
        "executions": len(rows),
        "scheduled": sum(by_task[name] for name in SCHEDULED),
        "manual": by_task[MANUAL],
        "manual_runs_ok": manual_exits.count(0),
        "pings": len(pings),
    }
    print(f"soak figures: {figures}")

    assert fatal_lines(log.read_text()) == []
    assert all(ping.returncode == 0 and "pong" in ping.stdout for ping in pings), pings
    assert manual_exits and set(manual_exits) == {0}
    assert by_task[MANUAL] == len(manual_exits)
    assert all(by_task[name] >= load_s / 2 for name in SCHEDULED), by_task  # every second, give or take
    assert [row for row in rows if row.status != "completed" or row.attempt != 1] == []
    assert sorted(ran) == sorted(row.id for row in rows)  # every execution ran ...
    assert set(ran.values()) == {1}  # ... exactly once
    return figures


@pytest.mark.timeout(240)
def test_serve_survives_a_short_soak_and_completes_every_execution_once(tmp_path: Path) -> None:
    soak(tmp_path, load_s=20)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_serve_survives_a_four_minute_soak_and_completes_every_execution_once(tmp_path: Path) -> None:
    soak(tmp_path, load_s=240)
