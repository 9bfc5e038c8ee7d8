"""`systemprompt scheduler:health` against real services: a fresh PostgreSQL database, Redis, a real Celery
worker and a real lease row; red when the broker is on a closed port or no planner holds the lease.

The probe runs as the real executable; two checks of the verb's options run the same click application
in-process (``Fleet.health_in_process``: same exit codes and output, no process start)."""

from __future__ import annotations

import json
import os
import random
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
import workerproc
from sqlalchemy import Engine

from scheduler.planning.lease import Lease
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from workers.health import CHECKS, check_planner, run_checks

# A probe's whole answer must fit in the Kubernetes probe timeout of deploy/k8s/planner.yaml.
PROBE_BUDGET_S = 10.0


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Fleet:
    database_url: str
    broker_url: str
    queue: str
    workdir: Path
    engines: list[Engine] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        env = workerproc.scheduler_env(self.database_url, self.broker_url, self.workdir)
        return {**env, **overrides}

    def health(self, *args: str, **env: str) -> workerproc.CliResult:
        return workerproc.run_cli(self.env(**env), "scheduler:health", *args, cwd=self.workdir)

    def health_in_process(self, *args: str) -> workerproc.CliResult:
        from click.testing import CliRunner

        from cli.main import cli

        environment: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SCHEDULER_")}
        environment |= {key: value for key, value in self.env().items() if key.startswith("SCHEDULER_")}
        result = CliRunner(env=environment).invoke(cli, ["scheduler:health", *args], catch_exceptions=False)
        return workerproc.CliResult(result.exit_code, result.stdout, result.stderr)

    def take_lease(self) -> Lease:
        engine = make_engine(self.database_url)
        self.engines.append(engine)
        lease = Lease(engine, ttl=timedelta(seconds=120))
        assert lease.acquire_or_renew()
        return lease


@pytest.fixture
def fleet(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[Fleet]:
    # A Redis database of its own (1-10; 11-15 are test_event_channels' and the Flower tests') so the ping
    # sees few other tests' workers; queues stay unique anyway.
    broker = redis_url.rsplit("/", 1)[0] + f"/{random.randint(1, 10)}"
    fleet = Fleet(pg_url, broker, workerproc.unique_queue("health"), tmp_path)
    yield fleet
    for engine in fleet.engines:
        engine.dispose()


def checks_of(result: workerproc.CliResult) -> dict[str, dict[str, object]]:
    document = json.loads(result.stdout)
    assert [check["name"] for check in document["checks"]] == list(CHECKS)
    assert document["ok"] is all(check["ok"] for check in document["checks"])
    return {check["name"]: check for check in document["checks"]}


def test_health_is_green_with_database_broker_leader_and_a_worker(fleet: Fleet) -> None:
    lease = fleet.take_lease()

    def timed_json() -> tuple[workerproc.CliResult, float]:
        started = time.monotonic()
        return fleet.health("--format", "json"), time.monotonic() - started

    # The JSON probe and the table at the same time (each waits 1 s for the workers' replies).
    with (
        workerproc.running_worker(fleet.env(), fleet.queue, fleet.workdir),
        ThreadPoolExecutor(max_workers=1) as pool,
    ):
        probe = pool.submit(timed_json)
        table = fleet.health()
        result, elapsed = probe.result()
    assert result.code == 0, result
    assert result.stderr == ""
    checks = checks_of(result)
    assert all(check["ok"] for check in checks.values()), checks
    assert json.loads(result.stdout)["ok"] is True
    assert lease.holder in str(checks["planner"]["detail"])
    assert fleet.queue in str(checks["workers"]["detail"])  # our worker's node name answered the ping
    assert elapsed < PROBE_BUDGET_S
    assert table.code == 0 and "FAILED" not in table.stdout
    for name in CHECKS:
        assert name in table.stdout


def test_health_fails_naming_the_broker_when_it_is_on_a_closed_port(fleet: Fleet) -> None:
    fleet.take_lease()
    dead_broker = f"redis://127.0.0.1:{closed_port()}/0"
    started = time.monotonic()
    result = fleet.health("--format", "json", SCHEDULER_BROKER_URL=dead_broker)
    assert time.monotonic() - started < PROBE_BUDGET_S
    assert result.code == 1
    checks = checks_of(result)
    assert checks["broker"]["ok"] is False and "unreachable" in str(checks["broker"]["detail"])
    assert checks["workers"]["ok"] is False  # not pinged through a dead broker
    assert checks["database"]["ok"] is True and checks["planner"]["ok"] is True
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unhealthy: broker (")
    assert "database" not in line and "planner" not in line


def test_health_fails_naming_the_planner_when_no_lease_is_held(fleet: Fleet) -> None:
    result = fleet.health("--check", "database,broker,planner")
    assert result.code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unhealthy: planner (")
    assert "no planner has ever held the lease" in line
    assert "FAILED" in result.stdout  # the table still shows every check


def test_an_expired_lease_is_not_a_leader(fleet: Fleet) -> None:
    lease = fleet.take_lease()
    lease.release()  # what a planner does on a clean stop: expires_at = now
    engine = make_engine(fleet.database_url)
    try:
        result = check_planner(engine)
    finally:
        engine.dispose()
    assert not result.ok
    assert lease.holder in result.detail and "expired" in result.detail


def test_check_subset_answers_for_those_services_only(fleet: Fleet) -> None:
    result = fleet.health_in_process("--check", "broker, database", "--format", "json")
    assert result.code == 0, result
    assert [check["name"] for check in json.loads(result.stdout)["checks"]] == ["database", "broker"]


def test_an_unknown_check_is_a_usage_error(fleet: Fleet) -> None:
    result = fleet.health_in_process("--check", "database,brokr")
    assert result.code == 2
    (line,) = result.stderr.splitlines()
    assert "brokr" in line and "database, broker, planner, workers" in line


def test_an_outdated_schema_is_named_with_the_command_to_run(fleet: Fleet, redis_url: str) -> None:
    from sqlalchemy import text

    engine = make_engine(fleet.database_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0000'"))
    engine.dispose()
    results = run_checks(
        Settings(database_url=fleet.database_url, broker_url=redis_url), ["database", "planner"]
    )
    assert [(r.name, r.ok) for r in results] == [("database", False), ("planner", False)]
    assert "scheduler:migrate" in results[0].detail
    assert results[1].detail == "not checked: the database check failed"


def test_an_unreachable_database_fails_fast_without_a_traceback(fleet: Fleet) -> None:
    dead = f"postgresql+psycopg2://postgres@127.0.0.1:{closed_port()}/nothing"
    result = fleet.health("--check", "database,planner", SCHEDULER_DATABASE_URL=dead)
    assert result.code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith("error: unhealthy: database (unreachable: ")
    assert "Traceback" not in result.stdout + result.stderr
