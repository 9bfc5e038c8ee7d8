"""The records no read verb builds: import them from :mod:`scheduler.records`, which imports this module the
first time one of them is looked up there (see ``scheduler.records.DEFERRED``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from scheduler.records import _JsonRecord

# -------------------------------------- the read verbs' neighbours: backfills, calendars, audit, statistics


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Backfill(_JsonRecord):
    """A backfill of a task over a past range (``status``: running, completed or cancelled).

    ``slots`` is how many slots the range holds, ``created`` how many executions it created (slots that had
    one already are left alone); ``progress`` counts its executions by status (filled in by reads)."""

    id: int
    task_id: int | None
    task_name: str
    range_from: datetime
    range_to: datetime
    max_parallel: int
    data: dict[str, Any] | None
    status: str
    slots: int
    created: int
    actor: str
    created_at: datetime
    finished_at: datetime | None
    progress: dict[str, int] | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class BackfillSlot(_JsonRecord):
    """One slot of a backfill preview: the instant, its wall time in the task's zone (with the UTC offset),
    a DST note when the zone's offset changed since the previous slot or the wall time occurs twice, and the
    execution that already has this slot (None: the backfill would create one)."""

    at: datetime
    local: str
    dst_note: str | None
    execution_id: int | None
    execution_status: str | None
    excluded: str | None = None  # why a calendar of the task excludes this slot (it is not backfilled)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Calendar(_JsonRecord):
    """A named set of local days: ``days`` is ``{"dates": [...], "ranges": [[first, last], ...],
    "weekdays": ["sat", ...]}`` (ISO dates, ranges inclusive); ``tasks`` names the tasks that use it."""

    id: int
    name: str
    days: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    tasks: list[str] | None = None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class AuditEntry(_JsonRecord):
    """One row of the audit trail.

    ``actor`` is the label the caller declared (``--actor``, the OS user): informative, not proof. The
    database identity that wrote the row is authoritative: on PostgreSQL ``db_user`` is ``session_user``
    (the login) and ``db_role`` ``current_user`` (the role it acted as), both taken by the database's insert
    trigger, and ``db_host`` the client address (``local``: a Unix socket); on SQLite ``db_user`` and
    ``db_host`` are the OS user and host of the process that wrote the file and ``db_role`` is None. All
    three are None on rows written before schema revision 0002. ``row_hash`` chains the row to the one
    before it (``prev_hash``): see ``scheduler:audit --verify``.
    """

    id: int
    at: datetime
    actor: str
    action: str
    task_id: int | None
    task_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    db_user: str | None
    db_role: str | None
    db_host: str | None
    prev_hash: str
    row_hash: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class AuditVerdict(_JsonRecord):
    """What verifying the audit chain found: ``intact``, or the first row (``broken_at``) that breaks it and
    why (``problem``). ``rows`` counts the rows checked; ``head_id``/``head_hash`` are the newest row's, worth
    keeping outside the database (a chain whose newest rows were deleted is still a valid, shorter chain)."""

    intact: bool
    rows: int
    head_id: int | None
    head_hash: str | None
    broken_at: int | None
    problem: str | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class TaskStats(_JsonRecord):
    """Execution statistics of one task (``task_id`` set) or of all tasks."""

    task_id: int | None
    total: int
    completed: int
    failed: int
    timed_out: int
    skipped: int
    running: int
    success_rate: (
        float | None
    )  # completed / (completed + failed + timed_out + lost); None when nothing finished
    avg_duration_ms: float | None
    p95_duration_ms: float | None
    runs_today: int
    runs_this_week: int
    runs_this_month: int
    last_run_at: datetime | None


# --------------------------------------------------------------------------------------- between the layers


@dataclass(frozen=True, slots=True)
class Dispatch:
    """An execution id to publish, with what the worker's message carries about it."""

    execution_id: int
    queue: str
    command: str
    task_name: str
    countdown_s: float = 0.0
    # The task's time limit: the soft limit is raised inside the command, the hard limit kills it.
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class TaskAdvance:
    """The new planning state of one task after a tick (``status`` ``completed`` ends it)."""

    task_id: int
    next_run_at: datetime | None
    run_count: int
    last_run_at: datetime | None
    status: str
    status_reason: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimedExecution:
    """An execution this worker now runs. ``task_found`` is False when the task was deleted meanwhile;
    ``log_bytes`` is what earlier attempts logged (the per-execution log budget is shared by all attempts)."""

    id: int
    task_id: int | None
    task_name: str
    command: str
    attempt: int
    max_attempts: int
    queue: str
    trigger: str
    scheduled_for: datetime
    worker: str
    started_at: datetime | None
    task_found: bool
    task_status: str | None
    data: dict[str, Any]
    timeout_ms: int | None
    retry_delay_ms: int
    retry_backoff: float
    log_bytes: int
    took_over_from: str | None = None  # the worker whose stale claim this one replaced
    run_data: dict[str, Any] | None = None  # the execution's own data (already merged into ``data``)


@dataclass(frozen=True, slots=True)
class PendingLog:
    """A log line captured by the worker, not yet stored."""

    at: datetime
    level: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishedExecution:
    """An attempt's outcome as the worker recorded it; ``task_paused``: this failure paused its task."""

    status: str
    consecutive_failures: int | None
    task_paused: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskOutcome:
    """A task after one of its runs ended: its failure count, and whether this outcome auto-paused it."""

    consecutive_failures: int
    task_paused: bool


@dataclass(frozen=True, slots=True)
class OpenExecution:
    """A ``running`` or ``retrying`` execution as the recovery sweep sees it, with its task's time limit and
    retry delay."""

    id: int
    status: str
    attempt: int
    max_attempts: int
    worker: str | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    enqueued_at: datetime | None
    timeout_ms: int | None
    retry_delay_ms: int | None
    retry_backoff: float | None
    task_id: int | None = None


@dataclass(frozen=True, slots=True)
class LostExecution:
    """An execution the sweep marked ``lost``, and its task after counting the failure (None: no task)."""

    id: int
    task_id: int | None
    task: TaskOutcome | None


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease row as stored (times aware, UTC)."""

    name: str
    holder: str
    term: int
    expires_at: datetime
    renewed_at: datetime


@dataclass(frozen=True, slots=True)
class TickReport:
    """What one planner tick did. ``leader`` False: a standby (or fenced) tick that did nothing else.

    ``due`` tasks handled; ``created`` executions to run; ``dispatched`` ids published (new, relayed and
    republished); ``skipped`` rows recorded skipped or cancelled; ``misfired`` slots missed beyond grace;
    ``more`` True when the time budget ended the tick with due tasks left; ``broker_error`` why a publish
    failed; ``republished`` of ``dispatched``, the ids the recovery sweep published again (their first
    message was not found on the broker: each may reach a worker twice, whose claim then does nothing);
    ``uncertain`` of ``dispatched``, ids whose publish got no answer (:meth:`Relay.publish
    <scheduler.planning.relay.Relay.publish>`); ``resumed`` tasks whose timed pause ended; ``released``
    backfill executions handed to the relay.
    """

    leader: bool
    due: int = 0
    dispatched: int = 0
    skipped: int = 0
    misfired: int = 0
    duration_s: float = 0.0
    created: int = 0
    requeued: int = 0
    lost: int = 0
    cleaned: int = 0
    more: bool = False
    broker_error: str | None = None
    republished: int = 0
    uncertain: int = 0
    resumed: int = 0  # tasks whose timed pause ended
    released: int = 0  # backfill executions released to the relay


# --------------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class AlertRules(_JsonRecord):
    """A task's effective alert rules (docs/alerts.md); None or 0 means the rule is off."""

    on_failure: int
    late_ms: int | None
    missing_ms: int | None
    long_ms: int | None
    recovered: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFacts:
    """What the alert rules of one task are evaluated on, read in one statement by the leading planner.

    ``stored_rules``: the task's own rule columns (None: the setting's default); ``due_slot``: the oldest slot
    not yet followed by a success (its next_run_at when due and not planned yet); ``oldest_unstarted``: the
    slot of its oldest pending or queued scheduled execution; ``running_since``: when its longest running
    execution started.
    """

    task_id: int
    task_name: str
    watched: bool  # active, or paused by the scheduler itself: a missing run counts
    consecutive_failures: int
    stored_rules: dict[str, Any]
    due_slot: datetime | None
    oldest_unstarted: datetime | None
    running_since: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Incident(_JsonRecord):
    """One alert incident: a condition of a task (or of the scheduler) from its start to its end."""

    id: int
    task_id: int | None
    task_name: str
    condition: str
    detail: str
    silenced: bool
    opened_at: datetime
    notified_at: datetime | None
    resolved_at: datetime | None

    @property
    def is_open(self) -> bool:
        return self.resolved_at is None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class AlertDelivery(_JsonRecord):
    """One message to one channel in the delivery outbox (``pending``, ``sent`` or ``failed``)."""

    id: int
    incident_id: int | None
    channel: str
    kind: str
    payload: dict[str, Any]
    status: str
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Silence(_JsonRecord):
    """Incidents of ``task_id`` between ``starts_at`` and ``ends_at`` are recorded but not sent."""

    id: int
    task_id: int
    task_name: str
    starts_at: datetime
    ends_at: datetime
    note: str | None
    actor: str
