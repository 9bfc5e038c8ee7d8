"""Access control end to end: the CLI run as a login user in each role of deploy/sql/roles.sql.

A viewer reads but cannot create, pause, run or delete; an operator pauses, resumes and runs tasks but
cannot create, change or delete them; a refusal is exit 77 with one ``error:`` line and changes nothing. A
planner tick works with exactly the planner role's privileges. (tests/unit/test_deploy_files.py checks the
grants statement by statement; this checks the programs against them.)

Login users are created per run with unique names, as members of the roles, and dropped afterwards.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from faultkit import SYSTEMPROMPT, base_env, figures, unique_queue
from hostile import snapshot
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from cli.main import cli
from scheduler.storage.audit import AuditRecord, insert_audit
from scheduler.storage.clock import db_now
from scheduler.storage.db import make_engine
from tests.support.roles import apply_roles

ROLES = ("admin", "operator", "viewer", "planner", "worker")


class AccessWorld:
    def __init__(self, pg_url: str, redis_url: str, workdir: Path) -> None:
        self.engine: Engine = make_engine(pg_url)
        self.queue = unique_queue()
        self.redis_url = redis_url
        self.workdir = workdir
        suffix = uuid.uuid4().hex[:8]
        self.logins = {role: f"sched_t_{role}_{suffix}" for role in ROLES}
        apply_roles(pg_url)
        with self.engine.begin() as connection:
            for role, login in self.logins.items():
                connection.execute(text(f'CREATE ROLE "{login}" LOGIN IN ROLE scheduler_{role}'))
        self.envs = {
            role: base_env(
                make_url(pg_url).set(username=login).render_as_string(hide_password=False),
                redis_url,
                workdir,
                self.queue,
            )
            for role, login in self.logins.items()
        }

    def cli(self, role: str, *args: str) -> Result:
        env = {**self.envs[role], "SCHEDULER_ACTOR": f"{role}-on-call"}
        return CliRunner(env=env).invoke(cli, list(args))

    def close(self) -> None:
        with self.engine.begin() as connection:
            for login in self.logins.values():
                connection.execute(
                    text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :u"),
                    {"u": login},
                )
                connection.execute(text(f'DROP ROLE IF EXISTS "{login}"'))
        self.engine.dispose()
        import redis

        client = redis.Redis.from_url(self.redis_url)
        keys = list(client.scan_iter(match=f"{self.queue}*")) + list(
            client.scan_iter(match=f"_kombu.binding.{self.queue}*")
        )
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture
def access(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[AccessWorld]:
    world = AccessWorld(pg_url, redis_url, tmp_path)
    try:
        yield world
    finally:
        world.close()


def _refused(world: AccessWorld, role: str, *args: str) -> Result:
    before = snapshot(world.engine)
    result = world.cli(role, *args)
    assert result.exit_code == 77, f"{role} {args}: exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: permission denied"), result.stderr
    assert snapshot(world.engine) == before, f"{role} {args} was refused but changed something"
    return result


def _allowed(world: AccessWorld, role: str, *args: str) -> Result:
    result = world.cli(role, *args)
    assert result.exit_code == 0, f"{role} {args}: exit {result.exit_code}\n{result.stderr}"
    return result


@pytest.mark.postgres
@pytest.mark.redis
def test_each_role_may_do_its_job_through_the_cli_and_nothing_more(access: AccessWorld) -> None:
    create = ("scheduler:create", "--command", "test:echo", "--schedule", "5m")
    _allowed(access, "admin", *create, "--name", "acl-task")
    refusals = 0

    listed = json.loads(_allowed(access, "viewer", "scheduler:list", "--format", "json").stdout)
    assert [task["name"] for task in listed] == ["acl-task"]
    _allowed(access, "viewer", "scheduler:audit", "--format", "json")
    for args in (
        (*create, "--name", "viewer-made"),
        ("scheduler:update", "--id", "acl-task", "--schedule", "1m"),
        ("scheduler:pause", "--id", "acl-task"),
        ("scheduler:run", "--id", "acl-task"),
        ("scheduler:delete", "--id", "acl-task", "--confirm"),
    ):
        _refused(access, "viewer", *args)
        refusals += 1

    for args in (
        (*create, "--name", "operator-made"),
        ("scheduler:update", "--id", "acl-task", "--schedule", "1m"),
        ("scheduler:update", "--id", "acl-task", "--data", '{"x": 1}'),
        ("scheduler:delete", "--id", "acl-task", "--confirm"),
    ):
        _refused(access, "operator", *args)
        refusals += 1
    paused = json.loads(
        _allowed(access, "operator", "scheduler:pause", "--id", "acl-task", "--format", "json").stdout
    )
    assert paused[0]["status"] == "paused"
    _allowed(access, "operator", "scheduler:resume", "--id", "acl-task")
    run = json.loads(
        _allowed(access, "operator", "scheduler:run", "--id", "acl-task", "--format", "json").stdout
    )
    assert run["status"] == "queued"

    audit = json.loads(_allowed(access, "viewer", "scheduler:audit", "--format", "json").stdout)
    assert [(entry["action"], entry["actor"]) for entry in reversed(audit)] == [
        ("create", "admin-on-call"),
        ("pause", "operator-on-call"),
        ("resume", "operator-on-call"),
        ("run", "operator-on-call"),
    ]

    # A planner tick needs nothing beyond the planner role: plan, relay, sweep, clean up, and audit the pause
    # of a task whose stored schedule no longer parses.
    _allowed(access, "admin", *create, "--name", "acl-broken")
    with access.engine.begin() as connection:
        connection.execute(text("UPDATE scheduled_tasks SET next_run_at = anchor_at"))  # its first slot, due
        connection.execute(
            text("UPDATE scheduled_tasks SET timezone = 'Nowhere/Gone' WHERE name = 'acl-broken'")
        )
    tick = subprocess.run(
        [str(SYSTEMPROMPT), "scheduler:planner", "--once", "--format", "json"],
        cwd=str(access.workdir),
        env=access.envs["planner"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert tick.returncode == 0, tick.stderr
    report = json.loads(tick.stdout)
    assert report["leader"] and report["created"] == 1 and report["dispatched"] == 1, report
    audit = json.loads(_allowed(access, "viewer", "scheduler:audit", "--format", "json").stdout)
    assert (audit[0]["action"], audit[0]["actor"], audit[0]["task_name"]) == (
        "pause",
        "planner",
        "acl-broken",
    )
    _refused(access, "planner", *create, "--name", "planner-made")
    refusals += 1
    figures("access-control", roles=len(ROLES), refusals=refusals, refused_changes=0)


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.parametrize("role", ["planner", "worker", "operator"])
def test_roles_that_may_only_append_to_the_audit_log_can_write_it_through_the_repository(
    access: AccessWorld, role: str
) -> None:
    # The planner (a schedule that no longer parses) and the worker (auto-pause) append audit rows they may
    # not read: the insert must not ask for the new row back.
    engine = make_engine(access.envs[role]["SCHEDULER_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            record = AuditRecord("pause", 1, "probe", {"status": "active"}, {"status": "paused"})
            insert_audit(connection, [record], actor=role, at=db_now(connection))
    finally:
        engine.dispose()
    with access.engine.connect() as connection:
        assert connection.execute(text("SELECT actor FROM task_audit")).scalars().all() == [role]
