"""The scheduler's frozen records, in one package that imports nothing else of the scheduler.

- what the service and the CLI return (:class:`Task`, :class:`Execution`, ...), with their stable JSON form
  (:meth:`to_json`: the fields in declaration order);
- what the layers hand each other: the planner's :class:`Dispatch` and :class:`TaskAdvance`, the worker's
  :class:`ClaimedExecution` and :class:`PendingLog`, the sweep's :class:`OpenExecution`, the audit's
  :class:`AuditRecord`, a tick's :class:`TickReport`. Storage, planning, execution and observability all
  import them from here, so none of them needs another's modules for its types.

Every record is imported from here; those no read verb builds are defined in :mod:`scheduler.records.deferred`
when one of them is first looked up (see :data:`DEFERRED`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from reprlib import recursive_repr
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, get_args

# ``completed``: nothing more to run (a once task: it succeeded); ``failed``: a once task whose run failed.
TaskStatus = Literal["active", "paused", "completed", "failed"]
# ``waiting``: a backfill's execution the planner has not released yet (at most max_parallel at a time).
ExecutionStatus = Literal[
    "waiting",
    "pending",
    "queued",
    "running",
    "completed",
    "failed",
    "timed_out",
    "retrying",
    "cancelled",
    "lost",
    "skipped",
]
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
EXECUTION_STATUSES: tuple[str, ...] = get_args(ExecutionStatus)
BACKFILL_STATUSES: tuple[str, ...] = ("running", "completed", "cancelled")
FINISHED_STATUSES: tuple[str, ...] = ("completed", "failed", "timed_out", "cancelled", "lost", "skipped")
# How a run ended (a skipped slot is a decision, not a run).
OUTCOME_STATUSES: tuple[str, ...] = ("completed", "failed", "timed_out", "cancelled", "lost")
SUCCESS_STATUSES: tuple[str, ...] = ("completed",)
FAILURE_STATUSES: tuple[str, ...] = ("failed", "timed_out", "lost")


def iso_utc(value: datetime | None) -> str | None:
    """ISO-8601 in UTC with a trailing ``Z``: the one time format of the JSON output."""
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive values; everything is stored in UTC.
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def as_utc(value: datetime | None) -> datetime | None:
    """The same instant, aware and in UTC (SQLite returns naive UTC)."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(record: type) -> tuple[str, ...]:
    names = _FIELD_NAMES.get(record)
    if names is None:
        names = _FIELD_NAMES[record] = tuple(field.name for field in fields(record))
    return names


def _values(record: object) -> tuple[Any, ...]:
    return tuple([getattr(record, name) for name in _field_names(type(record))])


class _JsonRecord:
    """The base of the records with a JSON form (each a frozen dataclass with ``eq=False, repr=False``).

    Equality, hash and repr are defined here once, as dataclass would generate them for each record (its
    fields in order; equal only to a record of its own class; ``Task(id=1, name='x', ...)``), instead of
    being compiled for every record when this package is imported: for the 37 fields of a task, they were
    half of the time to define it.
    """

    def to_json(self) -> dict[str, Any]:
        """Field name -> value, datetimes as ISO-8601 UTC strings."""
        out: dict[str, Any] = {}
        for field in fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            out[field.name] = iso_utc(value) if isinstance(value, datetime) else value
        return out

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return _values(self) == _values(other)

    def __hash__(self) -> int:
        return hash(_values(self))

    @recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in _field_names(type(self)))
        return f"{self.__class__.__qualname__}({shown})"


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class TaskDefinition(_JsonRecord):
    """What a task's definition sets: the columns a new task is inserted with (validated, times aware UTC)."""

    name: str
    command: str
    schedule: str
    schedule_kind: str
    timezone: str
    data: dict[str, Any]
    status: str
    queue: str
    retries: int
    retry_delay_ms: int
    retry_backoff: float
    timeout_ms: int
    overlap_policy: str
    misfire_policy: str
    misfire_grace_ms: int | None
    auto_pause_after: int | None
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    anchor_at: datetime
    next_run_at: datetime | None
    # Several schedules: every schedule's text (``schedule`` is the first); None with one schedule.
    schedules: list[str] | None = None
    jitter_ms: int | None = None  # each slot runs at a deterministic offset in [0, jitter) after it
    exclude: list[str] | None = None  # names of exclusion calendars: their days do not run
    only_in: list[str] | None = None  # names of calendars: only their days run

    def columns(self) -> dict[str, Any]:
        """The definition's columns, by name (a :class:`Task`'s own fields excluded)."""
        return {field.name: getattr(self, field.name) for field in fields(TaskDefinition)}


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Task(TaskDefinition):
    """A stored task: its definition, and what the database and the planner keep about it."""

    id: int
    status_reason: str | None
    last_run_at: datetime | None
    run_count: int
    consecutive_failures: int
    created_at: datetime
    updated_at: datetime
    # Who owns the task (docs/tasks-as-code.md) and its key in its tasks file; the defaults are the column's.
    source: str = "cli"
    key: str | None = None
    paused_until: datetime | None = None  # a timed pause: the planner resumes the task then


class DueTask(NamedTuple):
    """A due task as the planner reads it: only the columns it plans with, each the :class:`Task` field of
    that name (the planner's SELECT and its mapping follow these fields). A tuple, not a frozen dataclass: the
    planner builds a thousand per batch, and a frozen dataclass's ``__init__`` (a ``setattr`` per field) cost
    as much as planning them."""

    id: int
    name: str
    command: str
    queue: str
    schedule: str
    schedule_kind: str
    schedules: list[str] | None
    timezone: str
    anchor_at: datetime
    jitter_ms: int | None
    exclude: list[str] | None
    only_in: list[str] | None
    next_run_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    run_count: int
    last_run_at: datetime | None
    status_reason: str | None
    misfire_policy: str
    misfire_grace_ms: int | None
    overlap_policy: str
    retries: int
    timeout_ms: int


# What the planning rules take: a due task as the planner reads it, or a whole stored task.
TaskToPlan = Task | DueTask


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class ListedTask(Task):
    """A task as ``scheduler:list`` shows it: ``last_outcome`` is the status of its latest finished run
    (:data:`OUTCOME_STATUSES`; None before the first), and ``next_run_at`` is None unless the planner will
    fire it (as ``scheduler:next`` says: a paused task has none)."""

    last_outcome: str | None


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class Execution(_JsonRecord):
    id: int
    task_id: int | None
    task_name: str
    command: str
    scheduled_for: datetime
    trigger: str
    status: str
    reason: str | None
    attempt: int
    max_attempts: int
    queue: str
    worker: str | None
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    result: Any
    error: str | None
    data: dict[str, Any] | None = None  # per-run data, merged over the task's when it runs (None: none)
    backfill_id: int | None = None  # the backfill that created it
    schedule: str | None = None  # the schedule text that produced the slot (None: a manual run)


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class LogLine(_JsonRecord):
    execution_id: int
    attempt: int
    at: datetime
    level: str
    message: str


@dataclass(frozen=True, slots=True, kw_only=True, eq=False, repr=False)
class NextRun(_JsonRecord):
    """A coming fire time: ``at`` is when it runs (its ``slot`` plus the task's jitter), ``schedule`` the
    text that produced the slot, ``excluded`` why a calendar leaves it out (it is then recorded skipped),
    ``skipped`` who skipped it ahead of time and why (``scheduler:skip``)."""

    task_id: int
    task_name: str
    at: datetime
    slot: datetime | None = None
    schedule: str | None = None
    excluded: str | None = None
    skipped: str | None = None


# ------------------------------------------------------------------------------- between the layers


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One audit row to write: ``before``/``after`` are task JSON, secrets redacted (None: no side)."""

    action: str
    task_id: int | None
    task_name: str | None
    before: dict[str, Any] | None
    after: dict[str, Any] | None


# ------------------------------------------------------------------------------------------------ alerts

ALERT_CONDITIONS: tuple[str, ...] = ("failure", "late", "missing", "long", "no_leader")


# ------------------------------------------------------------------------------------ defined on first use

# The records no read verb (list, history, next) builds are defined in scheduler.records.deferred, imported
# the first time one of them is looked up here: ``from scheduler.records import Dispatch`` works as before,
# and they are the same classes. Defining a frozen slotted dataclass compiles six methods; these were two
# thirds of this package's import time (~14 ms of every CLI start).
DEFERRED: frozenset[str] = frozenset(
    {
        "AlertDelivery",
        "AlertRules",
        "AuditEntry",
        "AuditVerdict",
        "Backfill",
        "BackfillSlot",
        "Calendar",
        "ClaimedExecution",
        "Dispatch",
        "FinishedExecution",
        "Incident",
        "LeaseState",
        "LostExecution",
        "OpenExecution",
        "PendingLog",
        "Silence",
        "TaskAdvance",
        "TaskFacts",
        "TaskOutcome",
        "TaskStats",
        "TickReport",
    }
)

if TYPE_CHECKING:
    from scheduler.records.deferred import AlertDelivery as AlertDelivery
    from scheduler.records.deferred import AlertRules as AlertRules
    from scheduler.records.deferred import AuditEntry as AuditEntry
    from scheduler.records.deferred import AuditVerdict as AuditVerdict
    from scheduler.records.deferred import Backfill as Backfill
    from scheduler.records.deferred import BackfillSlot as BackfillSlot
    from scheduler.records.deferred import Calendar as Calendar
    from scheduler.records.deferred import ClaimedExecution as ClaimedExecution
    from scheduler.records.deferred import Dispatch as Dispatch
    from scheduler.records.deferred import FinishedExecution as FinishedExecution
    from scheduler.records.deferred import Incident as Incident
    from scheduler.records.deferred import LeaseState as LeaseState
    from scheduler.records.deferred import LostExecution as LostExecution
    from scheduler.records.deferred import OpenExecution as OpenExecution
    from scheduler.records.deferred import PendingLog as PendingLog
    from scheduler.records.deferred import Silence as Silence
    from scheduler.records.deferred import TaskAdvance as TaskAdvance
    from scheduler.records.deferred import TaskFacts as TaskFacts
    from scheduler.records.deferred import TaskOutcome as TaskOutcome
    from scheduler.records.deferred import TaskStats as TaskStats
    from scheduler.records.deferred import TickReport as TickReport
else:

    def __getattr__(name: str) -> Any:
        if name not in DEFERRED:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        from scheduler.records import deferred

        globals().update({record: getattr(deferred, record) for record in DEFERRED})
        return globals()[name]

    def __dir__() -> list[str]:
        return sorted({*globals(), *DEFERRED})
