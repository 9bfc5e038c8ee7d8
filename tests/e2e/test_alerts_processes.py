"""Alerts with real processes: ``systemprompt scheduler:planner`` (two of them: a leader and a standby) and
``systemprompt scheduler:worker`` on the local broker, on SQLite and on PostgreSQL, sending to a local HTTP
receiver (webhook) and a local SMTP server (aiosmtpd).

- a task that fails opens one incident: one signed webhook and one e-mail; killing the leading planner while
  it is open makes the standby take over without sending it again; the task's next success resolves it, told
  once; the channel's secret is in no log, no CLI output;
- killing every worker of a 1 s task opens exactly one ``missing`` incident within W (+ the task's interval
  and one check); restarting a worker resolves it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from scheduler.storage.db import make_engine
from scheduler.storage.tables import executions
from tests.support import background
from tests.support.alert_receivers import HttpReceiver, SmtpReceiver, http_receiver, smtp_receiver
from tests.support.processes import kill_process_group, stop_process_group, wait_at_most, wait_for
from tests.support.serving import SYSTEMPROMPT, clean_env, cli

SECRET = "e2e-hmac-secret-0a1b2c3d"
SECRET_ENV = "TEST_E2E_ALERT_SECRET"
MISSING_MS = 5000  # W: a loaded machine still runs a 1 s task well within it
CHECK_MS = 100
TICK_MS = 100


def checks(count: int) -> float:
    """How long ``count`` alert checks of a leading planner take (seconds)."""
    return count * CHECK_MS / 1000


@dataclass
class Fleet:
    workdir: Path
    db_url: str
    env: dict[str, str]
    hook: HttpReceiver
    smtp: SmtpReceiver
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        with (self.workdir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [str(SYSTEMPROMPT), *args],
                cwd=self.workdir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes[name] = process
        return process

    def start_worker(self, name: str = "worker") -> None:
        self.worker_ready(name, self.launch_worker(name))

    def launch_worker(self, name: str = "worker") -> int:
        """Start a worker without waiting for it; the size of its log before (for :meth:`worker_ready`)."""
        size = self.log_size(name)
        self.start(name, "scheduler:worker", "--concurrency", "2")
        return size

    def worker_ready(self, name: str, since: int) -> None:
        wait_for(lambda: " ready." in self.log(name)[since:], 60, f"{name} did not get ready", interval_s=0.1)

    def kill(self, name: str) -> None:
        kill_process_group(self.processes.pop(name))

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_size(self, name: str) -> int:
        return len(self.log(name))

    def all_logs(self) -> str:
        return "".join(path.read_text(errors="replace") for path in self.workdir.glob("*.log"))

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        result = cli(self.workdir, *args, env=self.env)
        self.outputs.append(result.stdout + result.stderr)
        return result

    def run_many(self, *argvs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Several independent CLI calls at once (each its own process); results in order."""
        with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
            return list(pool.map(lambda argv: self.run(*argv), argvs))

    def json(self, *args: str) -> Any:
        return self.parsed(self.run(*args, "--format", "json"))

    @staticmethod
    def parsed(result: subprocess.CompletedProcess[str]) -> Any:
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def completed_runs(self) -> int:
        """Completed executions, read from the database (cheaper to poll than the CLI)."""
        engine = make_engine(self.db_url)
        try:
            with engine.connect() as connection:
                query = select(func.count()).where(executions.c.status == "completed")
                return int(connection.execute(query).scalar_one())
        finally:
            engine.dispose()

    def incidents(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.json("scheduler:alerts")["incidents"]
        return rows

    def leader(self) -> str | None:
        """The planner (its process name) holding the lease, by the holder id it logged."""
        for name in ("planner-a", "planner-b"):
            if name in self.processes and ": leader (term" in self.log(name).rsplit(": standby", 1)[-1]:
                return name
        return None

    outputs: list[str] = field(default_factory=list)


@pytest.fixture
def fleet(tmp_path: Path, db_url: str) -> Iterator[Fleet]:
    with http_receiver() as hook, smtp_receiver() as smtp:
        channels = {
            "hook": {"type": "webhook", "url": hook.url, "secretEnv": SECRET_ENV},
            "mail": {
                "type": "email",
                "smtpHost": "127.0.0.1",
                "smtpPort": smtp.port,
                "to": ["ops@example.com"],
            },
        }
        env = clean_env(
            SCHEDULER_DATABASE_URL=db_url,
            SCHEDULER_TICK_INTERVAL=str(TICK_MS),
            SCHEDULER_LEASE_TTL="1500",
            SCHEDULER_HEARTBEAT_INTERVAL="300",
            SCHEDULER_DEFAULT_RETRIES="0",
            SCHEDULER_ALERT_CHECK_INTERVAL=str(CHECK_MS),
            SCHEDULER_ALERT_RETRY_DELAY="50",
            SCHEDULER_ALERT_CHANNELS=json.dumps(channels),
            **{SECRET_ENV: SECRET},
        )
        world = Fleet(tmp_path, db_url, env, hook, smtp)
        try:
            yield world
        finally:
            # SIGTERM to all at once; their exits (an idle worker's warm shutdown on the embedded broker takes
            # several seconds) are waited for in the background, SIGKILL for any that lingers.
            for name in list(world.processes):
                process = world.processes.pop(name)
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGTERM)
                    background.later(stop_process_group, process, 15, ())


@pytest.mark.timeout(180)
def test_a_failing_task_alerts_once_across_a_planner_failover_and_its_success_resolves_it(
    fleet: Fleet,
) -> None:
    fleet.start("planner-a", "scheduler:planner")
    worker_log = fleet.launch_worker()  # gets ready while the task is created and planner-a takes the lead
    created = fleet.run("scheduler:create", "--name", "nightly", "--command", "test:fail", "--schedule", "1s")
    assert created.returncode == 0, created.stderr
    wait_for(fleet.leader, 30, "planner-a did not lead")
    fleet.start("planner-b", "scheduler:planner")
    fleet.worker_ready("worker", worker_log)

    opened = wait_for(lambda: fleet.hook.events("alert-opened"), 60, "no alert-opened webhook")
    wait_for(lambda: fleet.smtp.messages, 10, "no alert e-mail")
    assert len(opened) == 1 and opened[0].signed_by(SECRET)
    assert opened[0].json["incident"]["task_name"] == "nightly"
    assert opened[0].json["incident"]["condition"] == "failure"
    assert "[ALERT] task nightly: failure" in fleet.smtp.messages[0]["Subject"]
    [incident] = fleet.incidents()
    assert incident["condition"] == "failure" and incident["resolved_at"] is None

    # The leader dies with the incident open (the task keeps failing); the standby takes over.
    old = fleet.leader()
    assert old == "planner-a"
    fleet.kill(old)
    wait_for(lambda: ": leader (term" in fleet.log("planner-b"), 30, "the standby did not take over")
    wait_at_most(lambda: len(fleet.hook.received) > 1, checks(10))  # several alert checks of the new leader
    assert len(fleet.hook.events("alert-opened")) == 1 and len(fleet.smtp.messages) == 1
    assert len(fleet.incidents()) == 1

    fixed = fleet.run("scheduler:update", "--id", "nightly", "--command", "test:echo")
    assert fixed.returncode == 0, fixed.stderr
    resolved = wait_for(lambda: fleet.hook.events("alert-resolved"), 30, "no alert-resolved webhook")
    wait_at_most(lambda: len(fleet.hook.received) > 2, checks(5))
    assert len(resolved) == 1 and resolved[0].signed_by(SECRET)
    assert len(fleet.hook.received) == 2

    listed, tested, config, alerts_table = fleet.run_many(
        ("scheduler:alerts", "--format", "json"),
        ("scheduler:alert-test", "--channel", "hook"),
        ("scheduler:config", "--format", "json"),
        ("scheduler:alerts",),
    )  # independent reads (and a test message): at once
    [incident] = fleet.parsed(listed)["incidents"]
    assert incident["resolved_at"] is not None
    assert tested.returncode == 0, tested.stderr
    assert fleet.hook.events("alert-test")[0].signed_by(SECRET)
    shown = {row["name"]: row["value"] for row in fleet.parsed(config)["settings"]}
    assert shown["alert_channels"]["hook"]["secretEnv"] == SECRET_ENV  # the variable's name, not its value
    assert alerts_table.returncode == 0 and "nightly" in alerts_table.stdout
    assert "failed (attempt" not in fleet.all_logs()  # every delivery was taken at once
    assert SECRET not in fleet.all_logs()
    assert not [output for output in fleet.outputs if SECRET in output]


@pytest.mark.timeout(180)
def test_killing_every_worker_of_a_one_second_task_opens_one_missing_incident_and_a_restart_resolves_it(
    fleet: Fleet,
) -> None:
    fleet.start("planner-a", "scheduler:planner")
    worker_log = fleet.launch_worker()  # gets ready while the task is created
    created = fleet.run(
        "scheduler:create",
        "--name",
        "pulse",
        "--command",
        "test:echo",
        "--schedule",
        "1s",
        "--alert-missing",
        str(MISSING_MS),
        "--alert-on-failure",
        "0",  # a run cut short by the kill is lost, a failure: only the missing rule is under test
    )
    assert created.returncode == 0, created.stderr
    fleet.worker_ready("worker", worker_log)
    wait_for(fleet.completed_runs, 60, "pulse never ran", interval_s=0.1)
    history, listed = fleet.run_many(
        ("scheduler:history", "--task", "pulse", "--format", "json"), ("scheduler:alerts", "--format", "json")
    )
    assert any(r["status"] == "completed" for r in fleet.parsed(history))
    assert fleet.parsed(listed)["incidents"] == []

    fleet.kill("worker")
    opened = wait_for(lambda: fleet.hook.events("alert-opened"), 30, "no missing alert")
    assert opened[0].json["incident"]["condition"] == "missing"
    wait_at_most(lambda: len(fleet.hook.received) > 1, checks(8))
    assert len(fleet.hook.received) == 1
    listed, history = fleet.run_many(
        ("scheduler:alerts", "--format", "json"),
        ("scheduler:history", "--task", "pulse", "--limit", "1000", "--format", "json"),
    )
    [incident] = fleet.parsed(listed)["incidents"]
    assert incident["condition"] == "missing" and incident["resolved_at"] is None
    # Within W plus one alert check and one tick of the first slot that no run completed (database clock;
    # a little more for a loaded machine).
    runs = fleet.parsed(history)
    last_ok = max(_instant(r["scheduled_for"]) for r in runs if r["status"] == "completed")
    due = min(_instant(r["scheduled_for"]) for r in runs if _instant(r["scheduled_for"]) > last_ok)
    late_by = (_instant(incident["opened_at"]) - due).total_seconds()
    assert MISSING_MS / 1000 < late_by <= (MISSING_MS + CHECK_MS + TICK_MS) / 1000 + 0.5, late_by

    fleet.start_worker()
    wait_for(lambda: fleet.hook.events("alert-resolved"), 60, "the missing alert did not resolve")
    [incident] = fleet.incidents()
    assert incident["resolved_at"] is not None


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))
