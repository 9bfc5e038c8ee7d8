"""The files under deploy/: they parse, run only real CLI verbs, let SIGTERM reach Python, give workers longer
to stop than the longest task, and the PostgreSQL roles grant each process exactly what it needs (proved with
SET ROLE on a freshly migrated database)."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from scheduler.storage.audit_chain import verify
from tests.support.roles import apply_roles

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"

# What a deploy file may run (`systemprompt scheduler:<verb>`): a renamed verb fails here, not in production.
DEPLOY_VERBS = {"migrate", "planner", "worker", "flower", "health", "serve", "web", "alerts"}
# SCHEDULER_TASK_TIMEOUT's default (1 h): a worker's stop timeout must exceed it (acks_late redelivers).
LONGEST_TASK_S = 3600
# Preceded by a word character, "/", "." or "-" it is an image tag or URL user ("systemprompt-scheduler:0.1").
VERB_PATTERN = re.compile(r"(?<![\w./-])scheduler:([a-z][a-z-]*)")
SHELLS = {"sh", "bash", "dash", "zsh", "env"}


def _duration_s(value: str | int) -> float:
    """Seconds in a Compose ("65m", "1h5m") or systemd ("65min", "30s") duration; a bare number is seconds."""
    if isinstance(value, int):
        return value
    units = {"h": 3600, "min": 60, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+)\s*(min|ms|h|m|s)", value)
    assert parts, f"not a duration: {value!r}"
    return sum(int(amount) * units[unit] for amount, unit in parts)


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return document


def _manifests() -> list[dict[str, Any]]:
    documents = []
    for path in sorted(K8S.glob("*.yaml")):
        documents.extend(document for document in yaml.safe_load_all(path.read_text()) if document)
    return documents


def _one(kind: str, name: str) -> dict[str, Any]:
    matches = [m for m in _manifests() if m["kind"] == kind and m["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def _containers() -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in _manifests():
        if manifest["kind"] in ("Deployment", "Job"):
            for container in manifest["spec"]["template"]["spec"]["containers"]:
                yield manifest["metadata"]["name"], container


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    logical, pending = [], ""
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1].strip()) for line in logical]


def _unit(path: Path) -> dict[str, list[tuple[str, str]]]:
    """A systemd unit as {section: [(key, value), ...]}, keeping repeated keys (EnvironmentFile=)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", ";")):
            continue
        if stripped.startswith("["):
            current = stripped.strip("[]")
            sections[current] = []
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, _, value = stripped.partition("=")
        sections[current].append((key, value))
    return sections


def _values(unit: dict[str, list[tuple[str, str]]], key: str) -> list[str]:
    return [value for name, value in unit["Service"] if name == key]


UNITS = sorted(SYSTEMD.glob("*.service"))


# --- Compose ------------------------------------------------------------------------------------------------


def test_compose_defines_the_stack_and_every_long_running_service_has_a_health_check() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", "migrate", "planner", "worker", "flower", "web"}
    for name in ("postgres", "redis", "planner", "worker", "flower", "web"):
        assert services[name]["healthcheck"]["test"], f"{name} has no health check"
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])


def test_compose_migrates_once_before_planners_and_workers_start() -> None:
    services = _compose()["services"]
    migrate = services["migrate"]
    assert migrate["command"] == ["scheduler:migrate"]
    assert migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("planner", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_compose_runs_a_leader_and_a_standby_planner() -> None:
    planner = _compose()["services"]["planner"]
    assert planner["command"] == ["scheduler:planner"]
    assert planner["deploy"]["replicas"] == 2


def test_compose_workers_scale_out_and_outlast_the_longest_task_on_stop() -> None:
    worker = _compose()["services"]["worker"]
    assert "container_name" not in worker, "a fixed name forbids --scale worker=N"
    assert "ports" not in worker, "a published port forbids --scale worker=N"
    assert worker["stop_signal"] == "SIGTERM"
    assert _duration_s(worker["stop_grace_period"]) > LONGEST_TASK_S


def test_compose_publishes_flower_on_loopback_only_and_requires_basic_auth() -> None:
    flower = _compose()["services"]["flower"]
    assert flower["ports"], "flower publishes no port"
    assert all(str(port).startswith("127.0.0.1:") for port in flower["ports"])
    assert flower["environment"]["SCHEDULER_FLOWER_BASIC_AUTH"].startswith("${SCHEDULER_FLOWER_BASIC_AUTH:?")
    assert "SCHEDULER_DATABASE_URL" not in flower["environment"]


def test_compose_publishes_the_web_console_on_loopback_only_and_requires_users() -> None:
    web = _compose()["services"]["web"]
    assert web["command"][:2] == ["scheduler:web", "--address=0.0.0.0"]
    assert web["ports"] and all(str(port).startswith("127.0.0.1:") for port in web["ports"])
    assert web["environment"]["SCHEDULER_WEB_USERS"].startswith("${SCHEDULER_WEB_USERS:?")
    assert "/healthz" in " ".join(web["healthcheck"]["test"])


def test_env_example_lists_every_variable_compose_reads() -> None:
    read = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DEPLOY / "compose.yaml").read_text()))
    listed = set(re.findall(r"^#?([A-Z_][A-Z0-9_]*)=", (DEPLOY / ".env.example").read_text(), re.MULTILINE))
    assert read, "compose.yaml reads no variable"
    assert read <= listed, f".env.example misses {sorted(read - listed)}"


# --- Kubernetes ---------------------------------------------------------------------------------------------


def test_k8s_manifests_parse_with_the_expected_kinds_and_no_namespace() -> None:
    manifests = _manifests()
    assert Counter(m["kind"] for m in manifests) == {
        "Deployment": 4,
        "Job": 1,
        "ScaledObject": 1,
        "TriggerAuthentication": 1,
        "Secret": 1,
        "Service": 2,
        "PodDisruptionBudget": 1,
    }
    assert [m["metadata"]["name"] for m in manifests if "namespace" in m["metadata"]] == []


def test_k8s_planner_runs_two_replicas_probed_by_the_fleet_health_check() -> None:
    planner = _one("Deployment", "scheduler-planner")
    assert planner["spec"]["replicas"] == 2
    (container,) = planner["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["scheduler:planner"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["exec"]["command"] == ["systemprompt", "scheduler:health"]
    # Liveness must ride out a lease takeover (10 s) and short outages elsewhere before restarting a planner.
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_k8s_workers_outlast_the_longest_task_and_leave_the_replica_count_to_keda() -> None:
    worker = _one("Deployment", "scheduler-worker-default")
    assert "replicas" not in worker["spec"]
    pod = worker["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > LONGEST_TASK_S
    (container,) = pod["containers"]
    assert container["args"][0] == "scheduler:worker"
    assert "livenessProbe" not in container, "a fleet-wide liveness probe would kill busy workers"


def test_k8s_scaledobject_scales_the_worker_deployment_on_its_own_queue() -> None:
    scaled = _one("ScaledObject", "scheduler-worker-default")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    worker = _one("Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    args = worker["spec"]["template"]["spec"]["containers"][0]["args"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    assert trigger["metadata"]["listName"] == args[args.index("-Q") + 1]
    assert scaled["spec"]["minReplicaCount"] >= 1, "the planners' health check needs a worker to answer"
    auth = _one("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"


def test_k8s_secret_references_resolve_to_keys_of_the_example_secret() -> None:
    secret = _one("Secret", "scheduler-secrets")
    keys = set(secret["stringData"])
    assert {"SCHEDULER_DATABASE_URL", "SCHEDULER_BROKER_URL", "SCHEDULER_FLOWER_BASIC_AUTH"} <= keys
    references = [
        env["valueFrom"]["secretKeyRef"]
        for _, container in _containers()
        for env in container.get("env", [])
        if "valueFrom" in env
    ]
    references += _one("TriggerAuthentication", "scheduler-redis")["spec"]["secretTargetRef"]
    assert references
    assert {(ref["name"], ref["key"]) for ref in references} <= {("scheduler-secrets", key) for key in keys}
    flower_env = {
        env["name"]: env
        for env in _one("Deployment", "scheduler-flower")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert (
        flower_env["SCHEDULER_FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["name"] == "scheduler-secrets"
    )


def test_k8s_flower_service_selects_the_flower_pods_on_a_declared_port() -> None:
    service = _one("Service", "scheduler-flower")
    flower = _one("Deployment", "scheduler-flower")["spec"]["template"]
    assert service["spec"]["selector"].items() <= flower["metadata"]["labels"].items()
    port_names = {port["name"] for port in flower["spec"]["containers"][0]["ports"]}
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names


def test_k8s_web_service_selects_the_web_pods_which_need_users_and_a_shared_csrf_key() -> None:
    service = _one("Service", "scheduler-web")
    web = _one("Deployment", "scheduler-web")["spec"]["template"]
    assert service["spec"]["selector"].items() <= web["metadata"]["labels"].items()
    container = web["spec"]["containers"][0]
    assert service["spec"]["ports"][0]["targetPort"] in {port["name"] for port in container["ports"]}
    env = {item["name"]: item for item in container["env"]}
    for name in ("SCHEDULER_DATABASE_URL", "SCHEDULER_WEB_USERS", "SCHEDULER_WEB_SECRET"):
        assert env[name]["valueFrom"]["secretKeyRef"]["name"] == "scheduler-secrets", name
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"


def test_k8s_containers_keep_the_entrypoint_run_as_non_root_and_declare_resources() -> None:
    containers = list(_containers())
    assert len(containers) == 5
    for name, container in containers:
        assert "command" not in container, f"{name}: command replaces the image's ENTRYPOINT; use args"
        assert VERB_PATTERN.fullmatch(container["args"][0]), name
        assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert container["resources"]["requests"]["memory"], name
        assert container["resources"]["limits"]["memory"], name
    for manifest in _manifests():
        if manifest["kind"] in ("Deployment", "Job"):
            assert manifest["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True


# --- Every file ---------------------------------------------------------------------------------------------


def test_deploy_files_name_only_cli_verbs_that_exist() -> None:
    named: dict[str, set[str]] = {}
    for path in DEPLOY.rglob("*"):
        if path.is_file():
            for verb in VERB_PATTERN.findall(path.read_text()):
                named.setdefault(verb, set()).add(str(path.relative_to(DEPLOY)))
    unknown = {verb: sorted(paths) for verb, paths in named.items() if verb not in DEPLOY_VERBS}
    assert unknown == {}
    assert {"migrate", "planner", "worker", "flower", "health"} <= set(named)


# --- Dockerfile ---------------------------------------------------------------------------------------------


def test_dockerfile_uses_exec_form_entrypoint_and_a_non_root_user() -> None:
    instructions = _dockerfile_instructions()
    (entrypoint,) = [args for name, args in instructions if name == "ENTRYPOINT"]
    argv = json.loads(entrypoint)
    assert isinstance(argv, list), "shell-form ENTRYPOINT puts /bin/sh between the signal and Python"
    assert Path(argv[-1]).name == "systemprompt"
    users = [args for name, args in instructions if name == "USER"]
    assert users, "no USER: the container runs as root"
    assert users[-1].split(":")[0] not in ("root", "0")


def test_dockerfile_builds_slim_python_311_without_caches_or_bytecode() -> None:
    instructions = _dockerfile_instructions()
    arguments = dict(args.split("=", 1) for name, args in instructions if name == "ARG" and "=" in args)
    bases = [
        args.split()[0].replace("${PYTHON_VERSION}", arguments.get("PYTHON_VERSION", "?"))
        for name, args in instructions
        if name == "FROM"
    ]
    assert bases and all(base == "python:3.11-slim" for base in bases)
    environment = " ".join(args for name, args in instructions if name == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in environment
    assert "PYTHONUNBUFFERED=1" in environment
    pip_installs = [args for name, args in instructions if name == "RUN" and "pip install" in args]
    assert pip_installs and all("--no-cache-dir" in args for args in pip_installs)


# --- systemd ------------------------------------------------------------------------------------------------


def test_systemd_units_cover_planner_worker_template_and_flower() -> None:
    assert [path.name for path in UNITS] == [
        "systemprompt-flower.service",
        "systemprompt-planner.service",
        "systemprompt-worker@.service",
    ]


@pytest.mark.parametrize("path", UNITS, ids=[path.name for path in UNITS])
def test_systemd_unit_runs_the_process_directly_and_stops_it_with_sigterm(path: Path) -> None:
    unit = _unit(path)
    (exec_start,) = _values(unit, "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[0].startswith("/"), "systemd needs an absolute path"
    assert Path(argv[0]).name not in SHELLS, "a shell wrapper keeps signals from Python"
    assert not set("|&;<>`") & set(exec_start), "shell syntax in ExecStart: systemd runs no shell"
    assert VERB_PATTERN.fullmatch(argv[1])
    assert _values(unit, "KillSignal") == ["SIGTERM"]
    assert _values(unit, "KillMode") == ["mixed"]
    assert len(_values(unit, "TimeoutStopSec")) == 1
    assert _values(unit, "EnvironmentFile")
    assert _values(unit, "Restart") == ["on-failure"]
    for key, value in (("NoNewPrivileges", "yes"), ("ProtectSystem", "strict"), ("PrivateTmp", "yes")):
        assert _values(unit, key) == [value], f"{path.name}: {key}"


@pytest.mark.parametrize("path", [*UNITS, SYSTEMD / "scheduler.env.example"], ids=lambda path: path.name)
def test_systemd_files_have_no_trailing_comments(path: Path) -> None:
    # systemd has no trailing comments: "KillSignal=SIGTERM # why" would make "SIGTERM # why" the value.
    offending = [
        line
        for line in path.read_text().splitlines()
        if not line.lstrip().startswith("#") and re.search(r"\s[#;]", line.split("=", 1)[-1])
    ]
    assert offending == []


def test_systemd_worker_is_a_per_queue_template_that_outlasts_the_longest_task() -> None:
    unit = _unit(SYSTEMD / "systemprompt-worker@.service")
    (exec_start,) = _values(unit, "ExecStart")
    argv = shlex.split(exec_start)
    assert argv[argv.index("-Q") + 1] == "%i"
    (timeout,) = _values(unit, "TimeoutStopSec")
    assert _duration_s(timeout) > LONGEST_TASK_S


# --- PostgreSQL roles ---------------------------------------------------------------------------------------
# Roles are cluster-wide: the file creates them only when missing and the tests never drop them, so parallel
# runs on one server share them peacefully; every privilege lives in the test's own fresh database.

ROLES = ("scheduler_admin", "scheduler_operator", "scheduler_viewer", "scheduler_planner", "scheduler_worker")
TABLES = (
    "scheduled_tasks",
    "task_executions",
    "task_logs",
    "task_audit",
    "scheduler_leases",
    "alembic_version",
    "task_alert_rules",
    "alert_incidents",
    "alert_deliveries",
    "alert_silences",
)

NEW_TASK = """
    INSERT INTO scheduled_tasks (name, command, schedule, schedule_kind, timezone, data, status, queue,
        retries, retry_delay_ms, retry_backoff, timeout_ms, overlap_policy, misfire_policy, anchor_at,
        next_run_at, run_count, consecutive_failures)
    VALUES (:name, 'test:echo', '*/5 * * * *', 'cron', 'UTC', '{}', 'active', 'default', 3, 5000, 2.0,
        3600000, 'allow', 'run_once', now(), now(), 0, 0)
    RETURNING *
"""
NEW_EXECUTION = """
    INSERT INTO task_executions (task_id, task_name, command, scheduled_for, trigger, status, attempt,
        max_attempts, queue)
    VALUES (:task_id, 'roles-probe', 'test:echo', now() + interval '1 day', 'manual', 'pending', 1, 4,
        'default')
    ON CONFLICT (task_id, scheduled_for) DO NOTHING
    RETURNING *
"""
NEW_AUDIT = """
    INSERT INTO task_audit (at, actor, action, task_id, task_name, before, after)
    VALUES (now(), 'probe', 'pause', :task_id, 'roles-probe', '{"status": "active"}', '{"status": "paused"}')
"""
NEW_LOG = """
    INSERT INTO task_logs (execution_id, attempt, at, level, message)
    VALUES (:queued_id, 1, now(), 'INFO', 'hi')
"""
# The planner's lease statement (scheduler/planning/lease.py): take it when free or expired, renew it when
# ours.
LEASE_UPSERT = """
    INSERT INTO scheduler_leases (name, holder, term, expires_at, renewed_at)
    VALUES ('planner', 'probe', 1, now() + interval '10 seconds', now())
    ON CONFLICT (name) DO UPDATE SET
        term = CASE WHEN scheduler_leases.holder = excluded.holder THEN scheduler_leases.term
               ELSE scheduler_leases.term + 1 END,
        holder = excluded.holder, expires_at = excluded.expires_at, renewed_at = excluded.renewed_at
    WHERE scheduler_leases.holder = excluded.holder OR scheduler_leases.expires_at < excluded.renewed_at
    RETURNING term
"""
NEW_INCIDENT = """
    INSERT INTO alert_incidents (task_id, task_name, condition, open_key, detail, silenced, opened_at)
    VALUES (:task_id, 'roles-probe', 'failure', 'probe:failure', '1 failure', false, now())
"""
NEW_SILENCE = """
    INSERT INTO alert_silences (task_id, task_name, starts_at, ends_at, note, actor)
    VALUES (:task_id, 'roles-probe', now(), now() + interval '1 hour', 'probe', 'probe')
"""
READ_ALERTS = "SELECT * FROM alert_incidents, alert_deliveries, alert_silences, task_alert_rules"
READ_VERSION = "SELECT version_num FROM alembic_version"
REWRITE_AUDIT = "UPDATE task_audit SET actor = 'someone else'"
DELETE_AUDIT = "DELETE FROM task_audit"
PRUNE_AUDIT = "SELECT scheduler_prune_audit(1, 1000, 'probe')"
TASK_OUTCOME = "SELECT * FROM scheduler_task_outcome(:task_id, :finished_id, 'completed')"
PAUSE_TASK = "UPDATE scheduled_tasks SET status = 'paused' WHERE id = :task_id"
DELETE_TASK = "DELETE FROM scheduled_tasks WHERE id = :task_id"
CHANGE_COMMAND = "UPDATE scheduled_tasks SET command = 'x' WHERE id = :task_id"
LOCK_TASK = "SELECT id FROM scheduled_tasks WHERE id = :task_id FOR UPDATE"

# What each role must (True) and must not (False) be able to do, as the statements its process runs.
# Each runs in its own transaction as that role (SET LOCAL ROLE) and is rolled back.
PRIVILEGES: dict[str, dict[str, tuple[str, bool]]] = {
    "scheduler_viewer": {
        "read the schema version": (READ_VERSION, True),
        "read alerts": (READ_ALERTS, True),
        "open an incident": (NEW_INCIDENT, False),
        "silence a task": (NEW_SILENCE, False),
        "read tasks, executions, logs, audit, leases": (
            "SELECT * FROM scheduled_tasks, task_executions, task_logs, task_audit, scheduler_leases",
            True,
        ),
        "create a task": (NEW_TASK, False),
        "delete a task": (DELETE_TASK, False),
        "pause a task": ("UPDATE scheduled_tasks SET status = 'paused' WHERE id = :task_id", False),
        "lock a task": (LOCK_TASK, False),
        "run a task now": (NEW_EXECUTION, False),
        "truncate logs": ("TRUNCATE task_logs", False),
        "delete the schema version": ("DELETE FROM alembic_version", False),
        "rewrite the audit log": (REWRITE_AUDIT, False),
        "delete audit rows": (DELETE_AUDIT, False),
        "prune the audit log": (PRUNE_AUDIT, False),
        "record a task's outcome": (TASK_OUTCOME, False),
    },
    "scheduler_operator": {
        "read the schema version": (READ_VERSION, True),
        "read alerts": (READ_ALERTS, True),
        "silence a task": (NEW_SILENCE, True),
        "open an incident": (NEW_INCIDENT, False),
        "change a task's alert rules": (
            "INSERT INTO task_alert_rules (task_id, on_failure) VALUES (:task_id, 0)",
            False,
        ),
        "read executions and logs": ("SELECT * FROM task_executions, task_logs", True),
        "lock a task to pause it": (LOCK_TASK, True),
        "pause a task": (
            "UPDATE scheduled_tasks SET status = 'paused', status_reason = 'by hand', updated_at = now()"
            " WHERE id = :task_id RETURNING *",
            True,
        ),
        "resume a task": (
            "UPDATE scheduled_tasks SET status = 'active', status_reason = NULL, next_run_at = now(),"
            " consecutive_failures = 0, updated_at = now() WHERE id = :task_id RETURNING *",
            True,
        ),
        "run a task now": (NEW_EXECUTION, True),
        "stamp the task's last run": (
            "UPDATE scheduled_tasks SET last_run_at = now() WHERE id = :task_id",
            True,
        ),
        "mark the manual run queued": (
            "UPDATE task_executions SET status = 'queued', enqueued_at = now()"
            " WHERE id = :queued_id AND status = 'pending'",
            True,
        ),
        "audit a change": (NEW_AUDIT, True),
        "delete a task": (DELETE_TASK, False),
        "create a task": (NEW_TASK, False),
        "change a command": (CHANGE_COMMAND, False),
        "change a schedule": ("UPDATE scheduled_tasks SET schedule = '@hourly' WHERE id = :task_id", False),
        "finish an execution": ("UPDATE task_executions SET result = '{}' WHERE id = :queued_id", False),
        "delete executions": ("DELETE FROM task_executions", False),
        "rewrite the audit log": (REWRITE_AUDIT, False),
        "delete audit rows": (DELETE_AUDIT, False),
        "prune the audit log": (PRUNE_AUDIT, False),
        "record a task's outcome": (TASK_OUTCOME, False),
        "delete the schema version": ("DELETE FROM alembic_version", False),
    },
    "scheduler_planner": {
        "read the schema version": (READ_VERSION, True),
        "read alerts": (READ_ALERTS, True),
        "open an incident": (NEW_INCIDENT, True),
        "resolve an incident": ("UPDATE alert_incidents SET open_key = NULL, resolved_at = now()", True),
        "delete incidents": ("DELETE FROM alert_incidents", False),
        "silence a task": (NEW_SILENCE, False),
        "claim due tasks": (
            "SELECT * FROM scheduled_tasks WHERE status = 'active' AND next_run_at <= now()"
            " ORDER BY next_run_at LIMIT 1000 FOR UPDATE SKIP LOCKED",
            True,
        ),
        "advance a task": (
            "UPDATE scheduled_tasks SET next_run_at = now() + interval '5 minutes',"
            " run_count = run_count + 1, last_run_at = now(), status = 'active', status_reason = NULL"
            " WHERE id = :task_id",
            True,
        ),
        "insert an execution once per slot": (NEW_EXECUTION, True),
        "relay an execution": (
            "UPDATE task_executions SET status = 'queued', enqueued_at = now() WHERE id = :queued_id",
            True,
        ),
        "log a lost attempt": (NEW_LOG, True),
        "take or renew the lease": (LEASE_UPSERT, True),
        "release the lease": ("UPDATE scheduler_leases SET expires_at = now() WHERE holder = 'probe'", True),
        "delete old logs": ("DELETE FROM task_logs WHERE execution_id IN (:finished_id)", True),
        "delete old executions": ("DELETE FROM task_executions WHERE id IN (:finished_id)", True),
        "audit a task it pauses": (NEW_AUDIT, True),
        "count a lost execution's failure": (
            "UPDATE scheduled_tasks SET consecutive_failures = consecutive_failures + 1, status = 'paused',"
            " status_reason = 'auto-paused', updated_at = now() WHERE id = :task_id",
            True,
        ),
        "prune the audit log": (PRUNE_AUDIT, True),
        "create a task": (NEW_TASK, False),
        "delete a task": (DELETE_TASK, False),
        "change a command": (CHANGE_COMMAND, False),
        "change a schedule": ("UPDATE scheduled_tasks SET schedule = '@hourly' WHERE id = :task_id", False),
        "change task data": ("UPDATE scheduled_tasks SET data = '{}' WHERE id = :task_id", False),
        "rewrite the audit log": (REWRITE_AUDIT, False),
        "delete audit rows": (DELETE_AUDIT, False),
        "record a task's outcome": (TASK_OUTCOME, False),
        "read the audit log": ("SELECT * FROM task_audit", False),
        "delete the schema version": ("DELETE FROM alembic_version", False),
    },
    "scheduler_worker": {
        "read the schema version": (READ_VERSION, True),
        "read alerts": (READ_ALERTS, False),
        "open an incident": (NEW_INCIDENT, False),
        "claim an execution": (
            "UPDATE task_executions SET status = 'running', started_at = now(), heartbeat_at = now(),"
            " worker = 'w1' FROM scheduled_tasks WHERE task_executions.id = :queued_id"
            " AND task_executions.status IN ('pending', 'queued')"
            " AND scheduled_tasks.id = task_executions.task_id"
            " RETURNING task_executions.id, scheduled_tasks.data, scheduled_tasks.timeout_ms",
            True,
        ),
        "measure the stored log size": (
            "SELECT coalesce(sum(octet_length(message)), 0) FROM task_logs WHERE execution_id = :queued_id",
            True,
        ),
        "append log lines": (NEW_LOG, True),
        # Only through the function, which auto-pauses only by the task's own rule (migration 0002).
        "record its task's outcome": (TASK_OUTCOME, True),
        "pause its task itself": (PAUSE_TASK, False),
        "count a failure itself": (
            "UPDATE scheduled_tasks SET consecutive_failures = consecutive_failures + 1,"
            " status = 'paused', status_reason = 'auto-paused', updated_at = now() WHERE id = :task_id"
            " RETURNING id, status, status_reason, consecutive_failures",
            False,
        ),
        "audit an auto-pause": (NEW_AUDIT, True),
        "read the lease for health": ("SELECT * FROM scheduler_leases WHERE expires_at > now()", True),
        "create a task": (NEW_TASK, False),
        "delete a task": (DELETE_TASK, False),
        "change a command": (CHANGE_COMMAND, False),
        "change a schedule": ("UPDATE scheduled_tasks SET schedule = '@hourly' WHERE id = :task_id", False),
        "change task data": ("UPDATE scheduled_tasks SET data = '{}' WHERE id = :task_id", False),
        "move the next run": ("UPDATE scheduled_tasks SET next_run_at = now() WHERE id = :task_id", False),
        "move the last run": ("UPDATE scheduled_tasks SET last_run_at = now() WHERE id = :task_id", False),
        "insert an execution": (NEW_EXECUTION, False),
        "re-point an execution": ("UPDATE task_executions SET task_id = NULL WHERE id = :queued_id", False),
        "change an execution's command": (
            "UPDATE task_executions SET command = 'x' WHERE id = :queued_id",
            False,
        ),
        "delete executions": ("DELETE FROM task_executions WHERE id IN (:finished_id)", False),
        "delete logs": ("DELETE FROM task_logs", False),
        "take the lease": (LEASE_UPSERT, False),
        "read the audit log": ("SELECT * FROM task_audit", False),
        "rewrite the audit log": (REWRITE_AUDIT, False),
        "delete audit rows": (DELETE_AUDIT, False),
        "prune the audit log": (PRUNE_AUDIT, False),
        "delete the schema version": ("DELETE FROM alembic_version", False),
    },
    "scheduler_admin": {
        "read the schema version": (READ_VERSION, True),
        "create a task": (NEW_TASK, True),
        "change a command": (CHANGE_COMMAND, True),
        "delete a task": (DELETE_TASK, True),
        "change the schema": ("ALTER TABLE scheduled_tasks ADD COLUMN probe integer", True),
        "add a table": ("CREATE TABLE roles_probe (id bigserial PRIMARY KEY)", True),
        "stamp the schema version": ("UPDATE alembic_version SET version_num = version_num", True),
        # The owner may (so may a superuser): --verify then finds the edit (tests/faults/test_audit_chain.py).
        "rewrite the audit log": (REWRITE_AUDIT, True),
    },
}

SEED_EXECUTION = """
    INSERT INTO task_executions (task_id, task_name, command, scheduled_for, trigger, status, attempt,
        max_attempts, queue, finished_at)
    VALUES (:task_id, 'roles-probe', 'test:echo', now() - make_interval(hours => :hours), 'schedule', :status,
        1, 4, 'default', now() - make_interval(days => :days))
    RETURNING id
"""


@pytest.fixture
def roles_db(pg_url: str) -> Iterator[tuple[Engine, dict[str, int]]]:
    """A fresh migrated database with roles.sql applied twice (it must be re-runnable) and, inserted by the
    superuser, a task, a queued execution, a finished one with a log line, and a lease."""
    apply_roles(pg_url)
    apply_roles(pg_url)
    engine = create_engine(pg_url)
    with engine.begin() as connection:
        task_id = connection.execute(text(NEW_TASK), {"name": "roles-probe"}).scalar_one()
        ids = {"task_id": task_id}
        for key, status, hours_ago, finished_days_ago in (
            ("queued_id", "pending", 1, None),
            ("finished_id", "completed", 2, 40),
        ):
            ids[key] = connection.execute(
                text(SEED_EXECUTION),
                {"task_id": task_id, "status": status, "hours": hours_ago, "days": finished_days_ago},
            ).scalar_one()
        connection.execute(text(NEW_LOG.replace(":queued_id", ":finished_id")), ids)
        connection.execute(text(LEASE_UPSERT))
    yield engine, ids
    engine.dispose()


def _allowed(engine: Engine, role: str, sql: str, ids: dict[str, int]) -> bool:
    """Run ``sql`` as ``role`` and roll back; False only on "permission denied", any other error is raised."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            connection.execute(text(f"SET LOCAL ROLE {role}"))
            connection.execute(text(sql), {"name": "roles-probe-2", **ids})
        except DBAPIError as error:
            if getattr(error.orig, "pgcode", None) == "42501":
                return False
            raise
        finally:
            transaction.rollback()
    return True


@pytest.mark.postgres
@pytest.mark.parametrize("role", list(PRIVILEGES))
def test_role_may_do_exactly_what_its_process_needs(
    roles_db: tuple[Engine, dict[str, int]], role: str
) -> None:
    engine, ids = roles_db
    expected = {action: allowed for action, (_, allowed) in PRIVILEGES[role].items()}
    actual = {action: _allowed(engine, role, sql, ids) for action, (sql, _) in PRIVILEGES[role].items()}
    assert actual == expected


@pytest.mark.postgres
def test_roles_are_group_roles_that_cannot_log_in_and_admin_owns_the_tables(
    roles_db: tuple[Engine, dict[str, int]],
) -> None:
    engine, _ = roles_db
    with engine.connect() as connection:
        can_login = dict(
            connection.execute(
                text("SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = ANY(:roles)"),
                {"roles": list(ROLES)},
            ).all()
        )
        owners = dict(
            connection.execute(
                text("SELECT tablename, tableowner FROM pg_tables WHERE tablename = ANY(:tables)"),
                {"tables": list(TABLES)},
            ).all()
        )
        functions = connection.execute(
            text(
                "SELECT proname, pg_get_userbyid(proowner), has_function_privilege('public', oid, 'EXECUTE')"
                " FROM pg_proc WHERE proname LIKE 'scheduler\\_%'"
            )
        ).all()
    assert can_login == dict.fromkeys(ROLES, False)
    assert owners == dict.fromkeys(TABLES, "scheduler_admin")
    # The functions of migration 0002 (SECURITY DEFINER ones run as their owner): the admin's, and no one
    # may call them unless roles.sql says so.
    assert len(functions) == 7
    assert {(owner, public) for _, owner, public in functions} == {("scheduler_admin", False)}


@pytest.mark.postgres
def test_audit_rows_stay_append_only_even_for_a_role_granted_update_and_delete(
    roles_db: tuple[Engine, dict[str, int]],
) -> None:
    engine, ids = roles_db
    with engine.begin() as connection:
        connection.execute(text(NEW_AUDIT), ids)
    for statement in (REWRITE_AUDIT, DELETE_AUDIT, "TRUNCATE task_audit"):
        with engine.connect() as connection, connection.begin() as transaction:
            connection.execute(text("GRANT UPDATE, DELETE, TRUNCATE ON task_audit TO scheduler_operator"))
            connection.execute(text("SET LOCAL ROLE scheduler_operator"))
            with pytest.raises(DBAPIError) as refused:
                connection.execute(text(statement))
            assert getattr(refused.value.orig, "pgcode", None) == "42501"
            assert "task_audit is append-only" in str(refused.value.orig)
            transaction.rollback()


@pytest.mark.postgres
def test_roles_script_takes_away_privileges_granted_by_hand_when_run_again(
    roles_db: tuple[Engine, dict[str, int]],
) -> None:
    engine, _ = roles_db
    snapshot = text(
        "SELECT c.relname, CAST(c.relacl AS text), a.attname, CAST(a.attacl AS text) FROM pg_class c"
        " LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attacl IS NOT NULL"
        " WHERE c.relnamespace = to_regnamespace(current_schema()) ORDER BY 1, 3"
    )
    with engine.connect() as connection:
        before = connection.execute(snapshot).all()
        connection.execute(text("GRANT DELETE ON scheduled_tasks TO scheduler_viewer"))
        connection.execute(text("GRANT UPDATE (command) ON scheduled_tasks TO scheduler_worker"))
        connection.commit()
        assert connection.execute(snapshot).all() != before
    apply_roles(engine.url.render_as_string(hide_password=False))
    with engine.connect() as connection:
        assert connection.execute(snapshot).all() == before


@pytest.mark.postgres
def test_the_planner_prunes_old_audit_rows_only_through_the_function_which_leaves_a_checkpoint(
    roles_db: tuple[Engine, dict[str, int]],
) -> None:
    engine, ids = roles_db
    with engine.begin() as connection:
        connection.execute(
            text(NEW_AUDIT.replace("VALUES (now(),", "VALUES (now() - interval '10 days',")), ids
        )
        connection.execute(text(NEW_AUDIT), ids)
    with engine.connect() as connection, connection.begin():
        connection.execute(text("SET LOCAL ROLE scheduler_planner"))
        assert connection.execute(text("SELECT scheduler_prune_audit(7, 1000, 'probe')")).scalar_one() == 1
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT action, actor, db_role FROM task_audit ORDER BY id")).all()
        verdict = verify(connection)
    assert [tuple(row) for row in rows] == [
        ("pause", "probe", "postgres"),
        ("checkpoint", "probe", "scheduler_admin"),
    ]
    assert (verdict.intact, verdict.rows) == (True, 2)


# --- Prometheus rules ---------------------------------------------------------------------------------------

PROMETHEUS_RULES = DEPLOY / "prometheus" / "alerts.yaml"
METRIC_SOURCES = (
    DEPLOY.parent / "scheduler" / "observability" / "metrics.py",
    DEPLOY.parent / "workers" / "metrics.py",
)
PROMQL_NAME = re.compile(r"\b(scheduler_[a-z_]+)\b")


def _defined_metrics() -> set[str]:
    """The metric names the planner and the worker register (the string passed to Counter/Gauge/...)."""
    names: set[str] = set()
    for path in METRIC_SOURCES:
        names |= set(re.findall(r'"(scheduler_[a-z_]+)"', path.read_text()))
    return names


def test_prometheus_rules_use_only_metrics_we_serve_and_every_rule_says_what_and_how_bad() -> None:
    document = yaml.safe_load(PROMETHEUS_RULES.read_text())
    rules = [rule for group in document["groups"] for rule in group["rules"]]
    defined = _defined_metrics()
    assert {"scheduler_planner_leader", "scheduler_alert_deliveries_total"} <= defined
    used: set[str] = set()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}
        assert rule["annotations"]["summary"]
        for name in PROMQL_NAME.findall(rule["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert base in defined, f"{rule['alert']}: {name} is not a metric we serve"
            used.add(base)
    assert {
        "scheduler_planner_leader",
        "scheduler_alert_deliveries_total",
        "scheduler_worker_executions_total",
    } <= used
    assert len({rule["alert"] for rule in rules}) == len(rules)
