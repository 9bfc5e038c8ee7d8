"""The alert verbs and flags as a person and a script use them: ``create``/``update --alert-*``,
``scheduler:alerts``, ``silence``, ``silences``, ``alert-test`` and ``health --alert``, on the embedded
default, against a local HTTP receiver. Bad input: exit 2, one line, nothing stored; a failing channel: exit
69, one line, and the channel's secret in no output."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.db import make_engine
from scheduler.storage.schema import open_database
from scheduler.storage.tables import leases
from tests.support.alert_receivers import HttpReceiver, http_receiver, refused_port
from tests.support.serving import clean_env, cli

SECRET = "cli-secret-token-9f8e7d"


@dataclass
class AlertCli:
    workdir: Path
    env: dict[str, str]
    hook: HttpReceiver

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        result = cli(self.workdir, *args, env={**self.env, **env})
        assert SECRET not in result.stdout + result.stderr
        return result

    def run_many(self, *argvs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
        """Independent invocations at once (each its own process); results in order."""
        with ThreadPoolExecutor(max_workers=len(argvs)) as pool:
            return list(pool.map(lambda argv: self.run(*argv), argvs))

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


def parsed(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def one_line_error(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def alert_cli(tmp_path: Path) -> Iterator[AlertCli]:
    with http_receiver() as hook, refused_port() as dead_port:
        channels = {
            "hook": {"type": "webhook", "url": hook.url, "secretEnv": "TEST_CLI_SECRET"},
            "tokened": {"type": "webhook", "urlEnv": "TEST_CLI_URL"},
            "dead": {"type": "slack", "url": f"http://127.0.0.1:{dead_port}/services/x", "timeout": 500},
        }
        env = clean_env(
            SCHEDULER_ALERT_CHANNELS=json.dumps(channels),
            TEST_CLI_SECRET=SECRET,
            TEST_CLI_URL=f"{hook.url}?token={SECRET}",
        )
        # The embedded database exists (as the CLI creates it: open_database), so that no verb under test
        # prints the "created the embedded database" note.
        open_database(Settings(home=tmp_path / ".scheduler")).dispose()
        yield AlertCli(tmp_path, env, hook)


def test_alert_rules_are_set_by_create_and_update_flags_shown_by_alerts_and_audited(
    alert_cli: AlertCli,
) -> None:
    created = alert_cli.run(
        "scheduler:create", "--name", "etl", "--command", "test:echo", "--alert-on-failure", "3",
        "--alert-missing", "60000", "--no-alert-recovered",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    shown = alert_cli.json("scheduler:alerts", "--task", "etl")
    assert shown["rules"] == {
        "on_failure": 3, "late_ms": None, "missing_ms": 60000, "long_ms": None, "recovered": False
    }  # fmt: skip
    assert shown["incidents"] == [] and shown["unsent_deliveries"] == []

    updated = alert_cli.run(
        "scheduler:update", "--id", "etl", "--clear", "alert-missing", "--alert-long", "5000"
    )
    assert updated.returncode == 0, updated.stderr
    shown_json, table, audit = alert_cli.run_many(  # three reads of the same state: at once
        ("scheduler:alerts", "--task", "etl", "--format", "json"),
        ("scheduler:alerts", "--task", "etl"),
        ("scheduler:audit", "--task", "etl", "--format", "json"),
    )
    rules = parsed(shown_json)["rules"]
    assert (rules["missing_ms"], rules["long_ms"], rules["on_failure"]) == (None, 5000, 3)
    assert "rules: on_failure 3, late_ms off, missing_ms off, long_ms 5000" in table.stdout
    [latest, *_] = parsed(audit)
    assert latest["action"] == "update" and latest["after"]["alerts"] == {"on_failure": 3, "long_ms": 5000,
                                                                           "recovered": False}  # fmt: skip


def test_a_bad_rule_is_refused_in_one_line_and_nothing_is_stored(alert_cli: AlertCli) -> None:
    bad = alert_cli.run("scheduler:create", "--name", "x", "--command", "test:echo", "--alert-late", "-5")
    assert "alerts.late_ms" in one_line_error(bad, 2)
    assert alert_cli.json("scheduler:list") == []
    ok = alert_cli.run("scheduler:create", "--name", "x", "--command", "test:echo")
    assert ok.returncode == 0, ok.stderr
    bad = alert_cli.run("scheduler:update", "--id", "x", "--alert-on-failure", "-1")
    assert "alerts.on_failure" in one_line_error(bad, 2)
    shown, audit = alert_cli.run_many(
        ("scheduler:alerts", "--task", "x", "--format", "json"),
        ("scheduler:audit", "--task", "x", "--format", "json"),
    )
    assert parsed(shown)["rules"]["on_failure"] == 1
    assert [e["action"] for e in parsed(audit)] == ["create"]


def test_silence_is_listed_audited_and_bad_input_is_refused(alert_cli: AlertCli) -> None:
    assert alert_cli.run("scheduler:create", "--name", "noisy", "--command", "test:echo").returncode == 0
    made = alert_cli.json("scheduler:silence", "--id", "noisy", "--for", "2h", "--note", "maintenance")
    assert made["task_name"] == "noisy" and made["note"] == "maintenance"
    table, listing, audit = alert_cli.run_many(  # three reads of the same state: at once
        ("scheduler:silences",),
        ("scheduler:silences", "--format", "json"),
        ("scheduler:audit", "--task", "noisy", "--format", "json"),
    )
    assert "noisy" in table.stdout and "maintenance" in table.stdout
    [listed] = parsed(listing)
    assert listed["id"] == made["id"] and listed["ends_at"] == made["ends_at"]
    [entry, *_] = parsed(audit)
    assert entry["action"] == "silence" and entry["after"]["note"] == "maintenance"

    bad_for, both, past, nobody = alert_cli.run_many(  # each refused: independent of one another
        ("scheduler:silence", "--id", "noisy", "--for", "2x"),
        ("scheduler:silence", "--id", "noisy", "--for", "1h", "--until", "2099-01-01T00:00:00Z"),
        ("scheduler:silence", "--id", "noisy", "--until", "2001-01-01T00:00:00Z"),
        ("scheduler:silence", "--id", "nobody", "--for", "1h"),
    )
    assert "invalid for" in one_line_error(bad_for, 2)
    assert "either" in one_line_error(both, 2)
    assert "future" in one_line_error(past, 2)
    one_line_error(nobody, 3)
    assert len(alert_cli.json("scheduler:silences")) == 1


def test_alert_test_sends_a_signed_message_and_a_failing_channel_exits_69_without_its_secret(
    alert_cli: AlertCli,
) -> None:
    sent = alert_cli.run("scheduler:alert-test", "--channel", "hook")
    assert sent.returncode == 0, sent.stderr
    assert "sent a test message to channel hook (webhook)" in sent.stderr + sent.stdout
    [message] = alert_cli.hook.received
    assert message.signed_by(SECRET) and message.json["event"] == "alert-test"

    alert_cli.hook.statuses = [500]
    failed = alert_cli.run("scheduler:alert-test", "--channel", "tokened")
    assert one_line_error(failed, 69) == "error: alert channel 'tokened': HTTP 500 Internal Server Error"
    assert SECRET in alert_cli.hook.received[-1].path  # the URL held the secret; no output shows it
    dead, nope = alert_cli.run_many(  # neither reaches the receiver: at once
        ("scheduler:alert-test", "--channel", "dead"), ("scheduler:alert-test", "--channel", "nope")
    )
    unreachable = one_line_error(dead, 69)
    assert "cannot reach the channel" in unreachable
    unknown = one_line_error(nope, 2)
    assert "dead, hook, tokened" in unknown


def _expire_the_planner_lease(alert_cli: AlertCli) -> None:
    once = alert_cli.run("scheduler:planner", "--once")
    assert once.returncode == 0, once.stderr
    engine = make_engine(f"sqlite:///{alert_cli.workdir / '.scheduler' / 'scheduler.db'}")
    try:
        with engine.begin() as connection:  # the planner is gone: its lease expired a minute ago
            expired = db_now(connection) - timedelta(minutes=1)
            connection.execute(update(leases).values(expires_at=expired))
    finally:
        engine.dispose()


def test_health_alert_tells_once_that_no_planner_leads(alert_cli: AlertCli) -> None:
    _expire_the_planner_lease(alert_cli)
    env = {"SCHEDULER_ALERT_NO_LEADER_AFTER": "30000"}
    args = ("scheduler:health", "--check", "database,planner", "--alert")

    first = alert_cli.run(*args, **env)
    second = alert_cli.run(*args, **env)

    assert first.returncode == 1 and second.returncode == 1
    assert "warning: alert 1 open: no planner has led for" in first.stderr
    assert "warning: alert 1 open" in second.stderr
    opened = [r for r in alert_cli.hook.events("alert-opened") if r.path == "/hook"]  # channel "hook"
    assert len(opened) == 1 and opened[0].signed_by(SECRET)
    assert opened[0].json["incident"]["condition"] == "no_leader"
    [incident] = alert_cli.json("scheduler:alerts")["incidents"]
    assert incident["condition"] == "no_leader" and incident["resolved_at"] is None


@pytest.mark.redis
def test_alert_opened_reaches_the_deployments_event_channel_without_a_secret(
    alert_cli: AlertCli, redis_url: str
) -> None:
    alert_cli.env |= {
        "SCHEDULER_BROKER_URL": redis_url,
        "SCHEDULER_EVENTS_PREFIX": f"alerts-{uuid.uuid4().hex}",
    }
    _expire_the_planner_lease(alert_cli)
    health = alert_cli.run("scheduler:health", "--check", "database,planner", "--alert")
    assert health.returncode == 1 and "warning: alert 1 open" in health.stderr

    events = alert_cli.run("scheduler:events", "--recent", "100")

    assert events.returncode == 0, events.stderr
    [opened] = [json.loads(line) for line in events.stdout.splitlines() if '"alert-opened"' in line]
    assert opened["event"] == "alert-opened" and opened["incident"]["condition"] == "no_leader"
