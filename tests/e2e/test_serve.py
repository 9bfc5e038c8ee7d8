"""``systemprompt scheduler:serve`` as a subprocess: the embedded default (SQLite + local broker, no servers,
no configuration) runs tasks end to end; an outdated PostgreSQL schema is refused."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from tests.support.processes import wait_for
from tests.support.serving import clean_env, cli, history, serving, stop


@pytest.mark.timeout(120)
def test_serve_runs_tasks_end_to_end_on_the_embedded_default(tmp_path: Path) -> None:
    database = tmp_path / ".scheduler" / "scheduler.db"
    with serving(tmp_path, "--demo") as process:

        def demo_runs() -> list[dict[str, Any]]:
            rows = [row for row in history(tmp_path) if row["task_name"] == "demo-echo-2s"]
            return [row for row in rows if row["status"] == "completed"]

        def completed_in_database() -> int:
            """Completed demo runs, read from the file (cheaper to poll than a CLI process each time)."""
            if process.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text())
            if not database.exists():
                return 0
            engine = create_engine(f"sqlite:///{database}")
            try:
                with engine.connect() as connection:
                    return int(
                        connection.execute(
                            text(
                                "SELECT count(*) FROM task_executions"
                                " WHERE task_name = 'demo-echo-2s' AND status = 'completed'"
                            )
                        ).scalar_one()
                    )
            except OperationalError:  # the schema is still being created
                return 0
            finally:
                engine.dispose()

        wait_for(lambda: completed_in_database() >= 2, 60, "the demo task did not run twice", interval_s=0.2)
        runs = demo_runs()  # as the CLI shows them
        assert len(runs) >= 2
        assert runs[0]["result"] == {"message": "hello from systemprompt scheduler:serve --demo"}

        created = cli(
            tmp_path,
            "scheduler:create",
            "--name",
            "manual-echo",
            "--command",
            "test:echo",
            "--data",
            '{"a": 1}',
        )
        assert created.returncode == 0, created.stderr
        run = cli(
            tmp_path, "scheduler:run", "--id", "manual-echo", "--wait", "--timeout", "30", "--format", "json"
        )
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["result"] == {"a": 1}

        assert stop(process) == 0
    log = (tmp_path / "serve.log").read_text()
    assert re.search(r"planner \S+ stopped: its lease is released", log), log[-3000:]
    assert not [row for row in history(tmp_path) if row["status"] == "running"]
    assert (tmp_path / ".scheduler" / "broker" / "queue").is_dir()


@pytest.fixture
def empty_pg_url(pg_url: str) -> str:
    """A fresh PostgreSQL database with no schema at all (the migrated test database, downgraded)."""
    from sqlalchemy import text

    from scheduler.storage.db import make_engine

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
