"""What the fault scenarios share: planner processes, the broker's view of a queue, slot accounting, figures.

A planner here is a real process: ``systemprompt scheduler:planner`` (leased), or ``planner_runner.py`` for
what the CLI does not offer (no lease). Each gets its own log file and process group and a libpq
``application_name`` (``PGAPPNAME``) naming it, so a test can find its database sessions.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, select, text, update

from scheduler.commands.loading import load_registry
from scheduler.records import Execution
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.leases import read_lease
from scheduler.storage.mapping import execution_from_row
from scheduler.storage.tables import executions, tasks
from tests.support.processes import stop_process_group, wait_for
from tests.support.services import delete_queue_keys

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
BIN = Path(sys.executable).parent
SYSTEMPROMPT = BIN / "systemprompt"
RUNNER = HERE / "planner_runner.py"
SKEW_DIR = HERE / "skew"

TICK_MS = 100
LEASE_TTL_MS = 1500


def figures(scenario: str, **values: Any) -> str:
    """Print (and return) the one ``FIGURES:`` line of a scenario, for docs/reliability.md."""
    shown = " ".join(f"{key}={_shown(value)}" for key, value in values.items())
    line = f"FIGURES: scenario={scenario} {shown}"
    print(f"\n{line}")
    return line


def run_figures(runs: Mapping[int, Sequence[Any]], rows: Iterable[Any]) -> dict[str, int]:
    """The figures every delivery scenario reports: command runs (one entry per run of an execution id in
    ``runs``), the runs beyond an id's first, and the ``rows`` (executions) that ended ``lost``."""
    return {
        "runs": sum(len(lines) for lines in runs.values()),
        "duplicates": sum(len(lines) - 1 for lines in runs.values() if lines),
        "lost": sum(row.status == "lost" for row in rows),
    }


def _shown(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class PlannerProcess:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, signum: int) -> None:
        os.kill(self.process.pid, signum)

    def wait_dead(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"planner {self.name} still alive after {timeout_s} s") from None

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGCONT (in case it is frozen), SIGTERM (clean stop: lease released), SIGKILL if it lingers."""
        if self.stopped:
            return self.process.returncode
        self.stopped = True
        return stop_process_group(self.process, timeout_s, signals=(signal.SIGCONT, signal.SIGTERM))


@dataclass
class FaultSetup:
    """One scenario's world: a fresh PostgreSQL database, Redis with a unique queue, planners started here."""

    database_url: str
    broker_url: str
    queue: str
    workdir: Path
    engine: Engine
    env: dict[str, str]
    planners: list[PlannerProcess] = field(default_factory=list)
    _service: SchedulerService | None = None

    def planner(
        self,
        name: str,
        *,
        fault: str | None = None,
        no_lease: bool = False,
        skew_s: float | None = None,
        env: Mapping[str, str] | None = None,
    ) -> PlannerProcess:
        """Start a planner process: the CLI's (leased) or, with ``no_lease``, the runner's."""
        child_env = {**self.env, "PGAPPNAME": name, **(env or {})}
        if fault is not None:
            child_env["SCHEDULER_TEST_FAULT"] = fault
        if skew_s is not None:
            child_env["SCHEDULER_TEST_CLOCK_SKEW_S"] = str(skew_s)
            child_env["PYTHONPATH"] = os.pathsep.join([str(SKEW_DIR), child_env["PYTHONPATH"]])
        if no_lease:
            argv = [sys.executable, str(RUNNER), "--holder", name, "--no-lease"]
        else:
            argv = [str(SYSTEMPROMPT), "scheduler:planner"]
        log_path = self.workdir / f"planner-{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=str(self.workdir),
                env=child_env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = PlannerProcess(name, process, log_path)
        self.planners.append(started)
        return started

    def worker(self, name: str, *, env: Mapping[str, str] | None = None) -> PlannerProcess:
        """Start ``systemprompt scheduler:worker`` (prefork, one process) on the queue; wait until ready."""
        argv = [
            str(SYSTEMPROMPT), "scheduler:worker", "-P", "prefork", "-c", "1", "-Q", self.queue,
            "-n", f"{name}-{self.queue}@%h", "--without-mingle", "--without-gossip",
        ]  # fmt: skip
        log_path = self.workdir / f"worker-{name}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                argv,
                cwd=str(self.workdir),
                env={**self.env, **(env or {})},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        started = PlannerProcess(name, process, log_path)
        self.planners.append(started)
        wait_for(lambda: " ready." in started.log() or not started.alive(), 60, f"worker {name} not ready")
        assert started.alive(), started.log()[-3000:]
        return started

    @property
    def service(self) -> SchedulerService:
        """An in-process service on the scenario's database (no publisher: it only defines tasks)."""
        if self._service is None:
            settings = Settings(database_url=self.database_url, default_queue=self.queue, actor="faults")
            self._service = SchedulerService(self.engine, settings, commands=load_registry(settings))
        return self._service

    def interval_tasks(
        self,
        count: int,
        *,
        every: str = "1s",
        grace_ms: int | None = 60_000,
        prefix: str = "t",
        due_now: bool = False,
    ) -> dict[int, datetime]:
        """``count`` interval tasks of ``test:echo`` (``due_now``: anchored at now, so due at the next tick);
        returns task id -> its first slot."""
        first: dict[int, datetime] = {}
        for i in range(count):
            task = self.service.create_task(
                name=f"{prefix}{i}", command="test:echo", schedule=every, misfire_grace_ms=grace_ms
            )
            assert task.next_run_at is not None
            first[task.id] = task.next_run_at
        if due_now:
            now = self.now()
            self.due_from(first, now)
            first = dict.fromkeys(first, now)
        return first

    def close(self) -> None:
        for planner in self.planners:
            planner.stop()
        self.engine.dispose()
        delete_queue_keys(self.broker_url, self.queue)

    # ------------------------------------------------------------------------------------------ database

    def now(self) -> datetime:
        with self.engine.connect() as connection:
            return db_now(connection)

    def lease(self) -> tuple[str, int, datetime] | None:
        """(holder, term, renewed_at) of the planner lease, or None."""
        with self.engine.connect() as connection:
            state = read_lease(connection)
        return None if state is None else (state.holder, state.term, state.renewed_at)

    def executions(self, task_ids: Iterable[int] | None = None) -> list[Execution]:
        query = select(executions).order_by(executions.c.task_id, executions.c.scheduled_for)
        if task_ids is not None:
            query = query.where(executions.c.task_id.in_(list(task_ids)))
        with self.engine.connect() as connection:
            return [execution_from_row(row) for row in connection.execute(query)]

    def next_runs(self, task_ids: Iterable[int]) -> dict[int, datetime | None]:
        query = select(tasks.c.id, tasks.c.next_run_at).where(tasks.c.id.in_(list(task_ids)))
        with self.engine.connect() as connection:
            return {int(row.id): row.next_run_at for row in connection.execute(query)}

    def due_from(self, task_ids: Iterable[int], moment: datetime) -> None:
        """Make the tasks due: next slot (and interval anchor) at ``moment``."""
        with self.engine.begin() as connection:
            connection.execute(
                update(tasks)
                .where(tasks.c.id.in_(list(task_ids)))
                .values(next_run_at=moment, anchor_at=moment)
            )

    def sessions_of(self, application_name: str) -> list[int]:
        """Backend pids of the database sessions a planner (by its PGAPPNAME) holds open."""
        query = text(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = :name"
        )
        with self.engine.connect() as connection:
            return [int(pid) for pid in connection.execute(query, {"name": application_name}).scalars()]

    # -------------------------------------------------------------------------------------------- broker

    def published_ids(self) -> Counter[int]:
        """How many messages the broker holds for each execution id (on this setup's queue)."""
        client = redis.Redis.from_url(self.broker_url)
        found: Counter[int] = Counter()
        try:
            for key in client.scan_iter(match=f"{self.queue}*", count=1000):
                if client.type(key) != b"list":
                    continue
                for raw in client.lrange(key, 0, -1):
                    found[message_execution_id(raw)] += 1
        finally:
            client.close()
        return found


def message_execution_id(raw: bytes) -> int:
    """The execution id a Celery message (protocol 2, JSON body) carries as its first argument."""
    message = json.loads(raw)
    body = message["body"]
    if message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args = json.loads(body)[0]
    return int(args[0])


def unique_queue() -> str:
    return f"ft-{uuid.uuid4().hex[:10]}"


def base_env(database_url: str, broker_url: str, workdir: Path, queue: str) -> dict[str, str]:
    """A child's environment: no inherited SCHEDULER_* variables; this scenario's database, broker and queue;
    a fast tick, a short lease, no concurrency cap to speak of."""
    config = workdir / "module.yaml"
    config.write_text("config: {}\n")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("SCHEDULER_", "PG"))}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        NO_COLOR="1",
        SCHEDULER_DATABASE_URL=database_url,
        SCHEDULER_BROKER_URL=broker_url,
        SCHEDULER_CONFIG_FILE=str(config),
        SCHEDULER_HOME=str(workdir / ".scheduler"),
        SCHEDULER_DEFAULT_QUEUE=queue,
        SCHEDULER_TICK_INTERVAL=str(TICK_MS),
        SCHEDULER_LEASE_TTL=str(LEASE_TTL_MS),
        # No worker consumes these queues: the concurrency cap must not hold executions back as pending, and
        # the recovery sweep must not republish unclaimed messages (that would blur the duplicate count).
        SCHEDULER_MAX_CONCURRENT_TASKS="1000000",
        SCHEDULER_RECOVERY_AFTER="600000",
        SCHEDULER_LOG_LEVEL="INFO",
    )
    return env


# ---------------------------------------------------------------------------------------------- accounting


@dataclass(frozen=True)
class SlotAccount:
    """Per-task slot bookkeeping of interval tasks: every slot from the first to the last, exactly once."""

    expected: int  # slots from each task's first slot to its last planned one
    executions: int  # rows that run (not skipped or cancelled)
    duplicates: int  # (task, slot) pairs with more than one row
    gaps: int  # slots without a row between the first and the last
    missed_in_grace: int  # rows recorded skipped although the task's grace covered them


def account_slots(rows: list[Execution], every: timedelta, first: Mapping[int, datetime]) -> SlotAccount:
    """Check rows of interval tasks (``first``: task id -> its first slot) against their schedule."""
    per_task: dict[int, list[Execution]] = {task_id: [] for task_id in first}
    for row in rows:
        per_task.setdefault(row.task_id or 0, []).append(row)
    expected = gaps = 0
    counts = Counter((row.task_id, row.scheduled_for) for row in rows)
    for task_id, mine in per_task.items():
        if not mine:
            continue
        last = max(row.scheduled_for for row in mine)
        slots = int((last - first[task_id]) / every) + 1
        expected += slots
        gaps += slots - len({row.scheduled_for for row in mine})
    return SlotAccount(
        expected=expected,
        executions=sum(1 for row in rows if row.status not in ("skipped", "cancelled")),
        duplicates=sum(count - 1 for count in counts.values() if count > 1),
        gaps=gaps,
        missed_in_grace=sum(1 for row in rows if row.status == "skipped"),
    )
