"""``systemprompt scheduler:serve`` as a subprocess: the embedded default (SQLite + local broker, no servers,
no configuration) runs tasks end to end; an outdated PostgreSQL schema is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SYSTEMPROMPT = Path(sys.executable).with_name("systemprompt")


def clean_env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    return env | {"NO_COLOR": "1", "COLUMNS": "200"}


def cli(workdir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SYSTEMPROMPT), *args],
        cwd=workdir,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=90,
    )


def history(workdir: Path) -> list[dict[str, Any]]:
    result = cli(workdir, "scheduler:history", "--limit", "500", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows: list[dict[str, Any]] = json.loads(result.stdout)
    return rows


def wait_for(predicate: Any, timeout_s: float, message: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(message)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[bytes]]]:
    """``scheduler:serve --demo`` running in an empty directory with no configuration at all."""
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [str(SYSTEMPROMPT), "scheduler:serve", "--demo"],
        cwd=tmp_path,
        env=clean_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield tmp_path, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


@pytest.mark.timeout(120)
def test_serve_runs_tasks_end_to_end_on_the_embedded_default(
    served: tuple[Path, subprocess.Popen[bytes]],
) -> None:
    workdir, process = served

    def demo_runs() -> list[dict[str, Any]]:
        if process.poll() is not None:
            raise AssertionError((workdir / "serve.log").read_text())
        if not (workdir / ".scheduler" / "scheduler.db").exists():
            return []
        rows = [row for row in history(workdir) if row["task_name"] == "demo-echo-2s"]
        return [row for row in rows if row["status"] == "completed"]

    runs = wait_for(lambda: len(demo_runs()) >= 2 and demo_runs(), 60, "the demo task did not run twice")
    assert runs[0]["result"] == {"message": "hello from systemprompt scheduler:serve --demo"}

    created = cli(
        workdir, "scheduler:create", "--name", "manual-echo", "--command", "test:echo", "--data", '{"a": 1}'
    )
    assert created.returncode == 0, created.stderr
    run = cli(
        workdir, "scheduler:run", "--id", "manual-echo", "--wait", "--timeout", "30", "--format", "json"
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["result"] == {"a": 1}

    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert not [row for row in history(workdir) if row["status"] == "running"]
    assert (workdir / ".scheduler" / "broker" / "queue").is_dir()


@pytest.fixture
def empty_pg_url(pg_url: str) -> str:
    """A fresh PostgreSQL database with no schema at all (the migrated test database, downgraded)."""
    from sqlalchemy import text

    from scheduler.db import make_engine

    engine = make_engine(pg_url)
    with engine.begin() as connection:
        connection.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()
    return pg_url


@pytest.mark.postgres
@pytest.mark.parametrize("verb", [["scheduler:serve"], ["scheduler:worker"], ["scheduler:planner", "--once"]])
def test_an_outdated_postgres_schema_is_refused_naming_migrate(
    tmp_path: Path, empty_pg_url: str, verb: list[str]
) -> None:
    env = clean_env() | {"SCHEDULER_DATABASE_URL": empty_pg_url, "SCHEDULER_BROKER_URL": "filesystem://"}
    result = cli(tmp_path, *verb, env=env)
    assert result.returncode == 69, result.stderr
    assert "systemprompt scheduler:migrate" in result.stderr
    assert result.stderr.startswith("error: ")
