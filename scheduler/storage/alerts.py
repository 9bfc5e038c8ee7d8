"""Alert statements: per-task rules, the facts the rules are evaluated on, incidents, the delivery outbox and
silences (docs/alerts.md). Callers own the transactions; times are the database clock, passed in."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Select, and_, case, delete, func, insert, or_, select, update

from scheduler.records import as_utc
from scheduler.storage.mapping import record_from_row
from scheduler.storage.tables import alert_rules, deliveries, executions, incidents, silences, tasks
from scheduler.storage.task_outcomes import auto_pause_reason

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AlertDelivery, AlertRules, Incident, Silence, TaskFacts

# A task the scheduler paused itself (a failure streak, a stored schedule that no longer parses) is still
# watched: its missing runs count.
AUTO_PAUSE_PREFIX = auto_pause_reason(0).partition("0")[0]
PARKED_PREFIX = "schedule does not parse: "  # the planner's reason (scheduler.planning.batch)
RULE_COLUMNS = ("on_failure", "late_ms", "missing_ms", "long_ms", "recovered")
UNSTARTED = ("pending", "queued")
RULES_CHUNK = 1000  # task ids per IN list

# ------------------------------------------------------------------------------------------------ rules


def task_rules(connection: Connection, task_id: int) -> dict[str, Any]:
    """The task's own rule columns that are set (an empty dict: every rule from the settings)."""
    return rules_of_tasks(connection, [task_id]).get(task_id, {})


def rules_of_tasks(connection: Connection, task_ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The own rules (the columns set) of those of ``task_ids`` that have any, by task id."""
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(task_ids), RULES_CHUNK):
        chunk = task_ids[start : start + RULES_CHUNK]
        out |= _rules(connection, select(alert_rules).where(alert_rules.c.task_id.in_(chunk)))
    return out


def rules_of_source(connection: Connection, source: str | None) -> dict[int, dict[str, Any]]:
    """The own rules of the tasks ``source`` owns (None: every task) that have any, by task id: one
    statement."""
    query = select(alert_rules)
    if source is not None:
        owned = select(tasks.c.id).where(tasks.c.source == source)
        query = query.where(alert_rules.c.task_id.in_(owned))
    return _rules(connection, query)


def _rules(connection: Connection, query: Select[Any]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for row in connection.execute(query):
        rules = {name: row._mapping[name] for name in RULE_COLUMNS if row._mapping[name] is not None}
        if rules:
            out[row.task_id] = rules
    return out


def put_task_rules(connection: Connection, task_id: int, rules: dict[str, Any]) -> None:
    """Store the task's own rules (absent keys unset: the settings' defaults apply)."""
    put_rules_of_tasks(connection, {task_id: rules})


def put_rules_of_tasks(connection: Connection, rules: Mapping[int, Mapping[str, Any]]) -> None:
    """Replace the own rules of each task in ``rules`` (by id; absent keys unset), in a few statements."""
    task_ids = list(rules)
    for start in range(0, len(task_ids), RULES_CHUNK):
        chunk = task_ids[start : start + RULES_CHUNK]
        connection.execute(delete(alert_rules).where(alert_rules.c.task_id.in_(chunk)))
    rows = [
        {"task_id": task_id, **{name: own.get(name) for name in RULE_COLUMNS}}
        for task_id, own in rules.items()
    ]
    rows = [row for row in rows if any(row[name] is not None for name in RULE_COLUMNS)]
    if rows:
        connection.execute(insert(alert_rules), rows)


# ------------------------------------------------------------------------------------------------ facts


def task_facts(connection: Connection, *, defaults: AlertRules, now: datetime) -> list[TaskFacts]:
    """The facts of the tasks for which :func:`scheduler.rules.alerts.active_conditions` can find a condition
    at ``now``, and of those with an open incident (whose rules decide how it resolves), in one statement.
    ``defaults``: the rules of a task that sets none of its own (each rule of the task: its own, else this).

    A task is left out in SQL when no rule of its that is on can hold: a failure streak counts when its
    ``on_failure`` rule is on and the streak reaches it, an unstarted execution when ``late`` is on, a running
    one when ``long`` is on, a slot due by ``now`` when ``missing`` is on. So a healthy fleet costs the
    evaluation a scan, not a row per task in Python, and so does a burst of unstarted executions with ``late``
    off (the default).

    Unstarted and running executions come from grouped scans of the active statuses (few rows, the index on
    ``status``); the oldest slot not followed by a success from two correlated subqueries on the index
    ``(task_id, scheduled_for)``, evaluated only for tasks whose ``missing`` rule is on.

    PostgreSQL: JIT compilation is off for the rest of the caller's transaction. Those correlated subqueries
    make the estimated cost of the statement huge (a subplan per task row), so the server compiled it each
    time: 0.6-1.1 s of a 10k-task database's evaluation for a statement that runs in ~15 ms.
    """
    from scheduler.records import TaskFacts

    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL jit = off")
    e = executions.alias("e")
    last_ok = (
        select(func.max(e.c.scheduled_for))
        .where(e.c.task_id == tasks.c.id, e.c.status == "completed", e.c.trigger == "schedule")
        .scalar_subquery()
    )
    o = executions.alias("o")
    first_open = (
        select(func.min(o.c.scheduled_for))
        .where(
            o.c.task_id == tasks.c.id,
            o.c.trigger == "schedule",
            o.c.status != "completed",
            or_(last_ok.is_(None), o.c.scheduled_for > last_ok),
        )
        .scalar_subquery()
    )
    missing_on = func.coalesce(alert_rules.c.missing_ms, defaults.missing_ms or 0) > 0
    on_failure = func.coalesce(alert_rules.c.on_failure, defaults.on_failure or 0)
    late_on = func.coalesce(alert_rules.c.late_ms, defaults.late_ms or 0) > 0
    long_on = func.coalesce(alert_rules.c.long_ms, defaults.long_ms or 0) > 0
    failing = and_(on_failure > 0, tasks.c.consecutive_failures >= on_failure)
    unstarted = (
        select(executions.c.task_id, func.min(executions.c.scheduled_for).label("unstarted"))
        .where(executions.c.status.in_(UNSTARTED), executions.c.trigger == "schedule")
        .group_by(executions.c.task_id)
        .subquery("unstarted")
    )
    running = (
        select(executions.c.task_id, func.min(executions.c.started_at).label("running_since"))
        .where(executions.c.status == "running")
        .group_by(executions.c.task_id)
        .subquery("running")
    )
    by_scheduler = or_(
        tasks.c.status_reason.startswith(AUTO_PAUSE_PREFIX), tasks.c.status_reason.startswith(PARKED_PREFIX)
    )
    watched = or_(tasks.c.status == "active", and_(tasks.c.status == "paused", by_scheduler))
    joined = (
        tasks.outerjoin(alert_rules, alert_rules.c.task_id == tasks.c.id)
        .outerjoin(unstarted, unstarted.c.task_id == tasks.c.id)
        .outerjoin(running, running.c.task_id == tasks.c.id)
    )
    query = (
        select(
            tasks.c.id,
            tasks.c.name,
            tasks.c.status,
            tasks.c.status_reason,
            tasks.c.next_run_at,
            tasks.c.consecutive_failures,
            tasks.c.updated_at,
            *(alert_rules.c[name] for name in RULE_COLUMNS),
            case((missing_on, first_open), else_=None).label("first_open"),
            missing_on.label("missing_on"),
            unstarted.c.unstarted,
            running.c.running_since,
        )
        .select_from(joined)
        .where(
            or_(watched, tasks.c.consecutive_failures > 0),
            or_(
                failing,
                and_(late_on, unstarted.c.unstarted.is_not(None)),
                and_(long_on, running.c.running_since.is_not(None)),
                and_(missing_on, or_(tasks.c.status == "paused", tasks.c.next_run_at <= now)),
                and_(missing_on, first_open.is_not(None)),
                tasks.c.id.in_(select(incidents.c.task_id).where(incidents.c.resolved_at.is_(None))),
            ),
        )
        .order_by(tasks.c.id)
    )
    facts = []
    for row in connection.execute(query):
        m = row._mapping
        paused_by_scheduler = m["status"] == "paused" and (m["status_reason"] or "").startswith(
            (AUTO_PAUSE_PREFIX, PARKED_PREFIX)
        )
        due = _time(m["first_open"])
        next_run = _time(m["next_run_at"]) if m["status"] == "active" else None
        if next_run is not None and (due is None or next_run < due):
            due = next_run  # a slot the planner has not planned yet (no planner, or it is behind)
        if paused_by_scheduler and due is None and m["missing_on"]:
            due = _time(m["updated_at"])  # parked: no slot comes any more; it is due since it was paused
        facts.append(
            TaskFacts(
                task_id=m["id"],
                task_name=m["name"],
                watched=m["status"] == "active" or paused_by_scheduler,
                consecutive_failures=m["consecutive_failures"],
                stored_rules={name: m[name] for name in RULE_COLUMNS if m[name] is not None},
                due_slot=due,
                oldest_unstarted=_time(m["unstarted"]),
                running_since=_time(m["running_since"]),
            )
        )
    return facts


def _time(value: Any) -> datetime | None:
    if isinstance(value, str):  # SQLite hands back text for an aggregate of a datetime column
        value = datetime.fromisoformat(value)
    return as_utc(value) if isinstance(value, datetime) else None


# ------------------------------------------------------------------------------------------------ incidents


def open_incidents(connection: Connection) -> list[Incident]:
    from scheduler.records import Incident

    query = select(incidents).where(incidents.c.resolved_at.is_(None)).order_by(incidents.c.id)
    return [record_from_row(Incident, row) for row in connection.execute(query)]


def recent_incidents(connection: Connection, *, limit: int, task_id: int | None = None) -> list[Incident]:
    """Open incidents first, then the most recently opened ones, at most ``limit`` in all."""
    from scheduler.records import Incident

    query = (
        select(incidents).order_by(incidents.c.resolved_at.is_not(None), incidents.c.id.desc()).limit(limit)
    )
    if task_id is not None:
        query = query.where(incidents.c.task_id == task_id)
    return [record_from_row(Incident, row) for row in connection.execute(query)]


def open_key(task_id: int | None, condition: str) -> str:
    return f"{'scheduler' if task_id is None else task_id}:{condition}"


def insert_incident(
    connection: Connection,
    *,
    task_id: int | None,
    task_name: str,
    condition: str,
    detail: str,
    silenced: bool,
    now: datetime,
) -> Incident:
    """Open an incident (the unique ``open_key`` refuses a second open one for the task and condition)."""
    from scheduler.records import Incident

    values = {
        "task_id": task_id,
        "task_name": task_name,
        "condition": condition,
        "open_key": open_key(task_id, condition),
        "detail": detail,
        "silenced": silenced,
        "opened_at": now,
        "notified_at": None if silenced else now,
    }
    row = connection.execute(insert(incidents).values(values).returning(*incidents.c)).one()
    return record_from_row(Incident, row)


def resolve_incident(connection: Connection, incident_id: int, *, now: datetime) -> Incident | None:
    from scheduler.records import Incident

    statement = (
        update(incidents)
        .where(incidents.c.id == incident_id, incidents.c.resolved_at.is_(None))
        .values(resolved_at=now, open_key=None)
        .returning(*incidents.c)
    )
    row = connection.execute(statement).first()
    return None if row is None else record_from_row(Incident, row)


def mark_notified(connection: Connection, incident_id: int, *, now: datetime) -> None:
    connection.execute(update(incidents).where(incidents.c.id == incident_id).values(notified_at=now))


# ------------------------------------------------------------------------------------------------ outbox


def enqueue(
    connection: Connection,
    *,
    incident_id: int | None,
    channels: Iterable[str],
    kind: str,
    payload: dict[str, Any],
    now: datetime,
) -> int:
    """One pending delivery of ``payload`` per channel; the number queued."""
    rows = [
        {
            "incident_id": incident_id,
            "channel": channel,
            "kind": kind,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for channel in channels
    ]
    if rows:
        connection.execute(insert(deliveries), rows)
    return len(rows)


def claim_due_deliveries(
    connection: Connection, *, now: datetime, claim_until: datetime, limit: int
) -> list[AlertDelivery]:
    """Take up to ``limit`` pending deliveries due at ``now``, oldest first: each one's ``next_attempt_at``
    moves to ``claim_until``, so a second sender (a ``scheduler:health --alert`` next to a planner, a leader
    that overlaps its successor) does not take it too; a sender that dies leaves it due again then."""
    from scheduler.records import AlertDelivery

    query = (
        select(deliveries.c.id)
        .where(deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at, deliveries.c.id)
        .limit(limit)
    )
    ids = list(connection.execute(query).scalars())
    if not ids:
        return []
    claimed = connection.execute(
        update(deliveries)
        .where(
            deliveries.c.id.in_(ids), deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now
        )
        .values(next_attempt_at=claim_until)
        .returning(*deliveries.c)
    )
    rows = [record_from_row(AlertDelivery, row) for row in claimed]
    return sorted(rows, key=lambda delivery: delivery.id)


def release_delivery(connection: Connection, delivery_id: int, *, now: datetime) -> None:
    """A claimed, unsent delivery is due again at ``now``."""
    connection.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "pending")
        .values(next_attempt_at=now)
    )


def record_attempt(
    connection: Connection,
    delivery_id: int,
    *,
    now: datetime,
    error: str | None,
    next_attempt_at: datetime | None,
) -> None:
    """One attempt's outcome: sent (``error`` None), pending again at ``next_attempt_at``, or failed for good
    (``next_attempt_at`` None). Only a pending delivery changes: a second sender's late outcome is ignored."""
    if error is None:
        values: dict[str, Any] = {"status": "sent", "sent_at": now, "last_error": None}
    elif next_attempt_at is None:
        values = {"status": "failed", "last_error": error}
    else:
        values = {"last_error": error, "next_attempt_at": next_attempt_at}
    connection.execute(
        update(deliveries)
        .where(deliveries.c.id == delivery_id, deliveries.c.status == "pending")
        .values(attempts=deliveries.c.attempts + 1, **values)
    )


def unsent_deliveries(connection: Connection, *, limit: int) -> list[AlertDelivery]:
    """Deliveries not sent (pending after a failed attempt, or failed), newest first."""
    from scheduler.records import AlertDelivery

    query = (
        select(deliveries)
        .where(
            or_(
                deliveries.c.status == "failed",
                and_(deliveries.c.status == "pending", deliveries.c.attempts > 0),
            )
        )
        .order_by(deliveries.c.id.desc())
        .limit(limit)
    )
    return [record_from_row(AlertDelivery, row) for row in connection.execute(query)]


def deliveries_of(connection: Connection, incident_ids: Sequence[int]) -> list[AlertDelivery]:
    from scheduler.records import AlertDelivery

    query = select(deliveries).where(deliveries.c.incident_id.in_(incident_ids)).order_by(deliveries.c.id)
    return [record_from_row(AlertDelivery, row) for row in connection.execute(query)]


def delivery_counts(connection: Connection) -> dict[str, int]:
    """Deliveries per status (for the metrics)."""
    query = select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    return {status: count for status, count in connection.execute(query).tuples()}


# ------------------------------------------------------------------------------------------------ silences


def insert_silence(
    connection: Connection,
    *,
    task_id: int,
    task_name: str,
    starts_at: datetime,
    ends_at: datetime,
    note: str | None,
    actor: str,
) -> Silence:
    from scheduler.records import Silence

    values = {
        "task_id": task_id,
        "task_name": task_name,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "note": note,
        "actor": actor,
    }
    row = connection.execute(insert(silences).values(values).returning(*silences.c)).one()
    return record_from_row(Silence, row)


def silenced_task_ids(connection: Connection, *, now: datetime) -> set[int]:
    query = select(silences.c.task_id).where(silences.c.starts_at <= now, silences.c.ends_at > now)
    return set(connection.execute(query).scalars())


def list_silences(
    connection: Connection, *, now: datetime, include_expired: bool, limit: int
) -> list[Silence]:
    from scheduler.records import Silence

    query = select(silences).order_by(silences.c.ends_at.desc(), silences.c.id.desc()).limit(limit)
    if not include_expired:
        query = query.where(silences.c.ends_at > now)
    return [record_from_row(Silence, row) for row in connection.execute(query)]
