"""``system:health``, the runtime command a worker runs: it names the planner holding the lease, and fails
with "planner" among the problems when none does (embedded default: a SQLite file and the filesystem
broker)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.commands.registry import CommandContext
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.leases import PLANNER_LEASE, acquire_or_renew
from scheduler.storage.schema import open_database
from scheduler.storage.transactions import write_transaction
from workers.runtime import WorkerRuntime


def _context(lines: list[tuple[str, str]]) -> CommandContext:
    return CommandContext(
        execution_id=1,
        task_id=None,
        task_name="health-check",
        attempt=1,
        data={},
        log=lambda level, message: lines.append((level, message)),
        deadline=None,
    )


def _runtime(tmp_path: Path) -> WorkerRuntime:
    settings = Settings(home=tmp_path / ".scheduler")
    open_database(settings).dispose()  # the embedded schema
    return WorkerRuntime(settings)


def test_system_health_names_the_planner_that_holds_the_lease(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    with write_transaction(runtime.engine) as connection:
        now = db_now(connection)
        acquire_or_renew(connection, name=PLANNER_LEASE, holder="p-1", now=now, ttl=timedelta(minutes=5))
    lines: list[tuple[str, str]] = []
    report: dict[str, Any] = runtime.check_health(_context(lines))
    assert report["database"] == "ok" and report["broker"] == "ok"
    assert report["planner"] == {"lease": PLANNER_LEASE, "holder": "p-1"}
    assert ("INFO", "planner: {'lease': 'planner', 'holder': 'p-1'}") in lines


def test_system_health_fails_naming_the_planner_when_the_lease_expired(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path)
    with write_transaction(runtime.engine) as connection:
        past = db_now(connection) - timedelta(minutes=10)
        acquire_or_renew(connection, name=PLANNER_LEASE, holder="p-1", now=past, ttl=timedelta(minutes=5))
    lines: list[tuple[str, str]] = []
    with pytest.raises(RuntimeError, match=r"^unhealthy: planner$"):
        runtime.check_health(_context(lines))
    assert ("ERROR", "planner: None") in lines
