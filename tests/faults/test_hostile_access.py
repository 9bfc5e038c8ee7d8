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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from faultkit import SYSTEMPROMPT, base_env, figures, unique_queue
from hostile import snapshot
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from cli.main import cli
from scheduler.records import AuditRecord
from scheduler.storage.audit import insert_audit
from scheduler.storage.clock import db_now
from scheduler.storage.db import make_engine
from tests.support.processes import stop_process_group, wait_for
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


# --- Every verb as every role -------------------------------------------------------------------------------
# What each role's login may do with the CLI, as measured: a verb is "allowed" (exit 0) or "refused" (exit 77,
# one "error: permission denied" line, nothing changed). `worker` is measured by a real worker below; `serve`
# (planner and worker in one process, the embedded default) and `flower` (no database) are not role verbs.

READ_VERBS = (
    "list",
    "history",
    "logs",
    "stats",
    "next",
    "validate",
    "commands",
    "config",
    "health",
    "events",
    "backfills",
)
VERB_ARGS: dict[str, tuple[str, ...]] = {
    "list": ("scheduler:list",),
    "history": ("scheduler:history",),
    "logs": ("scheduler:logs", "--execution", "{execution}"),
    "stats": ("scheduler:stats",),
    "next": ("scheduler:next",),
    "validate": ("scheduler:validate", "--schedule", "5m"),
    "commands": ("scheduler:commands",),
    "config": ("scheduler:config",),
    "health": ("scheduler:health", "--check", "database"),
    "events": ("scheduler:events", "--recent", "1"),
    "migrate": ("scheduler:migrate",),
    "audit": ("scheduler:audit",),
    "audit --verify": ("scheduler:audit", "--verify"),
    "create": ("scheduler:create", "--command", "test:echo", "--schedule", "5m", "--name", "made-by-{role}"),
    "update": ("scheduler:update", "--id", "acl-task", "--retries", "{retries}"),
    "pause": ("scheduler:pause", "--id", "acl-task"),
    "pause --until": ("scheduler:pause", "--id", "acl-task", "--until", "2999-01-01T00:00:00Z"),
    "resume": ("scheduler:resume", "--id", "acl-task"),
    "run": ("scheduler:run", "--id", "acl-task"),
    "skip": ("scheduler:skip", "--id", "acl-task"),
    "backfill": ("scheduler:backfill", "--id", "acl-task", "--from", "{past}", "--to", "{now}"),
    "backfills": ("scheduler:backfills",),
    "cleanup": ("scheduler:cleanup",),
    "delete": ("scheduler:delete", "--id", "doomed-{role}", "--confirm"),
    "planner --once": (),  # a subprocess, see _try_planner
}
EVERYONE = frozenset(READ_VERBS) | {"migrate"}
ALLOWED_VERBS: dict[str, frozenset[str]] = {
    "viewer": EVERYONE | {"audit", "audit --verify"},
    "operator": EVERYONE
    | {"audit", "audit --verify", "pause", "pause --until", "resume", "run", "skip", "backfill"},
    # The planner owns scheduling (it may move next_run_at, so pausing, skipping or running a task is within
    # its reach anyway); it cannot read the audit trail, nor define, change or delete a task, nor start a
    # backfill (it only releases a backfill's executions).
    "planner": EVERYONE | {"pause", "pause --until", "resume", "run", "skip", "cleanup", "planner --once"},
    "worker": EVERYONE,
    "admin": frozenset(VERB_ARGS),
}

EXPIRED_EXECUTION = """
    INSERT INTO task_executions (task_id, task_name, command, scheduled_for, trigger, status, attempt,
        max_attempts, queue, finished_at)
    VALUES (NULL, 'expired', 'test:echo', now() - interval '41 days', 'schedule', 'completed', 1, 1,
        'default', now() - interval '40 days')
"""


def _try_planner(world: AccessWorld, role: str) -> tuple[int, str]:
    """One tick as ``role``'s login, in-process like the other verbs here (a real ``planner --once`` process
    ticks as the planner role in test_each_role_may_do_its_job_through_the_cli_and_nothing_more)."""
    tick = CliRunner(env=world.envs[role]).invoke(cli, ["scheduler:planner", "--once", "--format", "json"])
    return tick.exit_code, tick.stderr


def _try(world: AccessWorld, role: str, verb: str, values: dict[str, str]) -> str:
    """Run ``verb`` as ``role``: "allowed" (exit 0) or "refused" (exit 77, one line, nothing changed)."""
    if verb == "cleanup":  # something for it to delete, whoever ran it before
        with world.engine.begin() as connection:
            connection.execute(text(EXPIRED_EXECUTION))
    before = snapshot(world.engine)
    if verb == "planner --once":
        code, stderr = _try_planner(world, role)
    else:
        result = world.cli(role, *(arg.format(role=role, **values) for arg in VERB_ARGS[verb]))
        code, stderr = result.exit_code, result.stderr
    if code == 0:
        return "allowed"
    assert code == 77, f"{role} {verb}: exit {code}\n{stderr}"
    assert stderr.splitlines()[-1].startswith("error: permission denied"), f"{role} {verb}: {stderr}"
    assert snapshot(world.engine) == before, f"{role} {verb} was refused but changed something"
    return "refused"


@pytest.mark.postgres
@pytest.mark.redis
def test_every_verb_as_every_role_is_allowed_or_refused_as_the_role_says(access: AccessWorld) -> None:
    create = ("scheduler:create", "--command", "test:echo", "--schedule", "5m")
    _allowed(access, "admin", *create, "--name", "acl-task")
    for role in ROLES:
        _allowed(access, "admin", *create, "--name", f"doomed-{role}")
    run = json.loads(
        _allowed(access, "admin", "scheduler:run", "--id", "acl-task", "--format", "json").stdout
    )
    measured: dict[str, set[str]] = {}
    for index, role in enumerate(ROLES):
        now = datetime.now(UTC).isoformat()  # a backfill up to now: its slots are in the past when it runs
        values = {
            "execution": str(run["id"]),
            "retries": str(index + 1),
            "past": "2020-01-01T00:00Z",
            "now": now,
        }
        outcomes = {verb: _try(access, role, verb, values) for verb in VERB_ARGS}
        measured[role] = {verb for verb, outcome in outcomes.items() if outcome == "allowed"}
    assert measured == ALLOWED_VERBS
    for role in ROLES:
        figures(f"verbs-{role}", allowed=",".join(sorted(measured[role])))
    verdict = json.loads(_allowed(access, "viewer", "scheduler:audit", "--verify", "--format", "json").stdout)
    assert verdict["intact"] is True


def _start_worker(world: AccessWorld) -> subprocess.Popen[bytes]:
    argv = [
        str(SYSTEMPROMPT), "scheduler:worker", "-P", "solo", "-Q", world.queue, "-n", f"acl-{world.queue}@%h",
        "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    log_path = world.workdir / "worker.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            argv,
            cwd=str(world.workdir),
            env=world.envs["worker"],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    wait_for(lambda: " ready." in log_path.read_text() or process.poll() is not None, 60, "worker not ready")
    assert process.poll() is None, log_path.read_text()[-3000:]
    return process


def _as_login(world: AccessWorld, role: str, sql: str, params: dict[str, Any]) -> str | None:
    """Run ``sql`` logged in as ``role``'s login user and commit; None, or the SQLSTATE that refused it."""
    engine = make_engine(world.envs[role]["SCHEDULER_DATABASE_URL"])
    try:
        with engine.begin() as connection:
            connection.execute(text(sql), params)
    except DBAPIError as error:
        return str(getattr(error.orig, "pgcode", None))
    finally:
        engine.dispose()
    return None


@pytest.mark.postgres
@pytest.mark.redis
def test_a_worker_login_pauses_a_task_only_when_the_tasks_own_rule_says_so(access: AccessWorld) -> None:
    create = ("scheduler:create", "--command", "test:fail", "--schedule", "manual", "--retries", "0")
    _allowed(access, "admin", *create, "--name", "fragile", "--auto-pause", "2")
    _allowed(access, "admin", *create, "--name", "keep")
    tasks_by_name = {
        t["name"]: t
        for t in json.loads(_allowed(access, "viewer", "scheduler:list", "--format", "json").stdout)
    }
    worker = _start_worker(access)
    try:
        runs = [
            json.loads(
                _allowed(access, "operator", "scheduler:run", "--id", name, "--format", "json").stdout
            )["id"]
            for name in ("fragile", "keep", "fragile", "keep", "keep")
        ]

        def finished() -> bool:
            with access.engine.connect() as connection:
                statuses = connection.execute(
                    text("SELECT status FROM task_executions WHERE id = ANY(:ids)"), {"ids": runs}
                ).scalars()
                return all(status == "failed" for status in statuses)

        wait_for(finished, 90, "the worker did not fail all five runs")
    finally:
        stop_process_group(worker, 20)
    listed = {
        t["name"]: t
        for t in json.loads(_allowed(access, "viewer", "scheduler:list", "--format", "json").stdout)
    }
    assert (listed["fragile"]["status"], listed["fragile"]["consecutive_failures"]) == ("paused", 2)
    assert listed["fragile"]["status_reason"] == "auto-paused after 2 consecutive failures"
    assert (listed["keep"]["status"], listed["keep"]["consecutive_failures"]) == ("active", 3)
    audit = json.loads(_allowed(access, "viewer", "scheduler:audit", "--format", "json").stdout)
    (pause,) = [entry for entry in audit if entry["action"] == "pause"]
    assert pause["task_name"] == "fragile"
    assert pause["actor"].startswith("worker:")
    # The database says who wrote it: the worker's login, acting as itself (the trigger, not the client).
    assert (pause["db_user"], pause["db_role"]) == (access.logins["worker"], access.logins["worker"])
    assert [e["db_user"] for e in audit if e["action"] == "run"] == [access.logins["operator"]] * 5

    keep = {"task": tasks_by_name["keep"]["id"], "run": runs[-1]}
    # A plain pause (or any other write to a task) by the worker's login is refused ...
    assert (
        _as_login(access, "worker", "UPDATE scheduled_tasks SET status = 'paused' WHERE id = :task", keep)
        == "42501"
    )
    assert (
        _as_login(
            access, "worker", "UPDATE scheduled_tasks SET consecutive_failures = 99 WHERE id = :task", keep
        )
        == "42501"
    )
    # ... and replaying its failures through the function pauses nothing the task's rule does not ask for.
    for _ in range(3):
        assert (
            _as_login(access, "worker", "SELECT * FROM scheduler_task_outcome(:task, :run, 'failed')", keep)
            is None
        )
    assert (
        _as_login(access, "worker", "SELECT * FROM scheduler_task_outcome(:task, 0, 'failed')", keep) is None
    )
    listed = {
        t["name"]: t
        for t in json.loads(_allowed(access, "viewer", "scheduler:list", "--format", "json").stdout)
    }
    assert (listed["keep"]["status"], listed["keep"]["consecutive_failures"]) == ("active", 6)
    # Nobody but the owner rewrites or removes audit rows; a forged identity or hash is overwritten.
    for role in ("worker", "planner", "operator", "viewer"):
        assert _as_login(access, role, "UPDATE task_audit SET actor = 'someone else'", {}) == "42501"
        assert _as_login(access, role, "DELETE FROM task_audit", {}) == "42501"
        assert _as_login(access, role, "SELECT scheduler_prune_audit(1, 1000, 'x')", {}) == (
            None if role == "planner" else "42501"
        )
    forged = (
        "INSERT INTO task_audit (id, at, actor, action, db_user, db_role, db_host, prev_hash, row_hash)"
        " VALUES (1, now(), 'x', 'pause', 'postgres', 'postgres', 'elsewhere', 'f', 'f')"
    )
    assert _as_login(access, "worker", forged, {}) is None
    with access.engine.connect() as connection:
        row = connection.execute(text("SELECT * FROM task_audit ORDER BY id DESC LIMIT 1")).one()
    assert (row.db_user, row.db_role, row.db_host) == (
        access.logins["worker"],
        access.logins["worker"],
        "127.0.0.1",
    )
    assert row.id > 1 and row.row_hash != "f"
    verdict = json.loads(_allowed(access, "viewer", "scheduler:audit", "--verify", "--format", "json").stdout)
    assert verdict["intact"] is True and verdict["head_id"] == row.id
