"""``SchedulerService``: the Python API. It orchestrates: validation decides, the repository talks SQL.

Every mutation validates first (a typed :class:`~scheduler.errors.InvalidInput`: nothing stored, no event),
then writes the change and its ``task_audit`` row in one transaction, then emits one event per changed task
with the task's JSON (secret-looking data redacted). Times come from the database clock.

The tasks-file modules (parsing with PyYAML, planning, writing a plan) are imported by the methods that use
them: the read verbs (list, history, next) build a service too and do not pay for them.
"""

from __future__ import annotations

import getpass
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, exc

from scheduler.commands.loading import load_registry
from scheduler.commands.registry import CommandRegistry
from scheduler.errors import (
    BrokerUnavailable,
    ExecutionNotFound,
    InvalidField,
    NameTaken,
    TaskNotFound,
    UnknownCalendar,
)
from scheduler.observability import events as ev
from scheduler.observability.events import EventBus, Handler
from scheduler.records import (
    BACKFILL_STATUSES,
    FINISHED_STATUSES,
    AuditRecord,
    Execution,
    ListedTask,
    LogLine,
    NextRun,
    Task,
    iso_utc,
)
from scheduler.redaction import public_task, redact
from scheduler.rules import timing
from scheduler.rules.calendars import (
    CalendarRule,
    parse_entries,
    parse_ics,
    task_calendar_rule,
    validate_calendar_name,
)
from scheduler.rules.combined import slot_of
from scheduler.rules.fields import (
    check_actor,
    check_count,
    check_limit,
    check_reason,
    check_status,
    validate_data,
    validate_instant,
    validate_int,
    validate_timezone_name,
)
from scheduler.settings import Settings, load_settings
from scheduler.storage import backfills as backfill_sql
from scheduler.storage import calendars as calendars_sql
from scheduler.storage import history as history_sql
from scheduler.storage import tasks as tasks_sql
from scheduler.storage.clock import db_now
from scheduler.storage.errors import translate_db_errors
from scheduler.storage.schema import open_database
from scheduler.storage.tables import storable_id
from scheduler.storage.transactions import write_transaction

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.planning.publisher import Publisher
    from scheduler.records import (
        AlertDelivery,
        AlertRules,
        AuditEntry,
        AuditVerdict,
        Backfill,
        BackfillSlot,
        Calendar,
        Incident,
        Silence,
        TaskStats,
    )
    from scheduler.rules import backfills as backfill_rules
    from scheduler.rules.taskplan import TaskPlan
    from scheduler.rules.versions import FieldChange, TaskVersion
    from scheduler.storage import console as console_sql

logger = logging.getLogger(__name__)

WAIT_POLL_S = 0.1
MANUAL_SLOT_ATTEMPTS = 5
MAX_SILENCE = timedelta(days=366)


def _os_user() -> str:
    try:
        return check_actor(getpass.getuser())
    except Exception:  # no login name (a container without a passwd entry), or one we would not store
        return "unknown"


TaskRef = int | str


_TASK_FIELDS = tuple(field.name for field in fields(Task))


def _listed(task: Task, outcome: str | None) -> ListedTask:
    """``task`` as ``list`` shows it. Its values are taken as they are, not deep-copied as ``asdict`` would
    (the records are frozen and ``task`` is dropped): the copies were two thirds of the CPU time of
    ``list_tasks(limit=100)``."""
    upcoming = timing.upcoming_runs(task, 1)
    values = {name: getattr(task, name) for name in _TASK_FIELDS}
    values["next_run_at"] = upcoming[0] if upcoming else None
    return ListedTask(**values, last_outcome=outcome)


class SchedulerService:
    """Create, change and inspect tasks; run one now. Thread-safe as far as the engine is."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        commands: CommandRegistry | None = None,
        publisher: Publisher | None = None,
        actor: str | None = None,
        source: str = "api",
    ) -> None:
        self.engine = engine
        # Who owns the tasks this service creates: "api", "cli" (the CLI sets it), or a tasks file's source.
        self.source = source
        self.settings = settings
        self._commands = commands
        self.publisher = publisher
        given = actor or settings.actor  # empty means unset, as before
        # Checked here, before anything is written: the audit row of every change carries it.
        self.actor = _os_user() if given is None else check_actor(given)
        self.events = EventBus()

    @property
    def commands(self) -> CommandRegistry:
        """The command registry (default: :func:`~scheduler.commands.loading.load_registry` of the settings,
        built on
        first use; :meth:`from_settings` builds it up front, so a registry that does not load stops every
        process that uses the service, reading verbs included)."""
        if self._commands is None:
            self._commands = load_registry(self.settings)
        return self._commands

    @commands.setter
    def commands(self, registry: CommandRegistry) -> None:
        self._commands = registry

    @classmethod
    def from_settings(
        cls,
        settings: Settings | None = None,
        *,
        publisher: Publisher | None = None,
        actor: str | None = None,
        commands: CommandRegistry | None = None,
        events: EventBus | None = None,
    ) -> SchedulerService:
        """A service on the database of ``settings``: the command registry first (a registry that does not
        load, e.g. a command defined twice, fails before a database is touched or created), then the
        database (:func:`~scheduler.storage.schema.open_database`: an embedded schema is upgraded, an outdated
        server one refused).

        ``events``: the bus to emit on (default: an in-process one). :func:`workers.wiring.open_service`
        passes one that also reaches the deployment's Redis channel, and a publisher: use it to get a
        service wired like the CLI's (see docs/architecture.md).
        """
        settings = settings or load_settings().settings
        commands = commands or load_registry(settings)
        service = cls(open_database(settings), settings, commands=commands, publisher=publisher, actor=actor)
        if events is not None:
            service.events = events
        return service

    def as_actor(self, actor: str, *, source: str | None = None) -> SchedulerService:
        """The same service (engine, registry, publisher, event bus) acting as ``actor`` (checked): what the
        web console uses for each signed-in user, so their changes are audited under their name. ``source``:
        the owner of the tasks it creates (default: this service's)."""
        other = SchedulerService(
            self.engine, self.settings, commands=self._commands, publisher=self.publisher, actor=actor,
            source=self.source if source is None else source,
        )  # fmt: skip
        other.events = self.events
        return other

    def on(self, event: str, handler: Handler) -> None:
        """Call ``handler(payload)`` on ``event`` (see :mod:`scheduler.observability.events`)."""
        self.events.on(event, handler)

    # ------------------------------------------------------------------------------------------ plumbing

    @contextmanager
    def _write(self, *, task_name: str | None = None) -> Iterator[Connection]:
        # SQLite: BEGIN IMMEDIATE, so what a mutation reads is what its writes apply to.
        with translate_db_errors(task_name=task_name), write_transaction(self.engine) as connection:
            yield connection

    def _audit(self, connection: Connection, records: list[AuditRecord], now: datetime) -> None:
        from scheduler.storage import audit as audit_sql

        audit_sql.insert_audit(connection, records, actor=self.actor, at=now)

    def _emit(self, event: str, tasks: list[Task]) -> None:
        # The change is committed by now: a failing listener is logged, it does not fail the call.
        for task in tasks:
            try:
                self.events.emit(event, {"task": public_task(task)})
            except Exception:
                logger.exception("a %s listener failed for task %s", event, task.id)

    # --------------------------------------------------------------------------------------------- reads

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with translate_db_errors(), self.engine.connect() as connection:
            yield connection

    def get_task(self, ref: TaskRef) -> Task:
        """The task with this id or name; :class:`~scheduler.errors.TaskNotFound` otherwise."""
        with self._read() as connection:
            return tasks_sql.get_task(connection, ref)

    def similar_task_names(self, name: str, *, limit: int = 3) -> list[str]:
        """Up to ``limit`` existing task names closest to ``name`` (difflib's ratio >= 0.6), best first."""
        with self._read() as connection:
            names = tasks_sql.task_names(connection)
        from difflib import get_close_matches

        return get_close_matches(name.strip(), names, n=limit)

    def list_tasks(self, *, status: str | None = None, limit: int | None = None) -> list[ListedTask]:
        """Tasks by id, optionally of one status (active, paused, completed, failed), at most ``limit``;
        each with its last outcome, and the next run :meth:`next_runs` would show first (None when paused)."""
        status = check_status("status", status, task=True)
        limit = None if limit is None else check_limit(limit)
        with self._read() as connection:
            rows = tasks_sql.list_tasks(connection, status=status, limit=limit)
        return [_listed(task, outcome) for task, outcome in rows]

    def count_tasks(self, *, status: str | None = None) -> int:
        """How many tasks there are, optionally of one status."""
        status = check_status("status", status, task=True)
        with self._read() as connection:
            return tasks_sql.count_tasks(connection, status=status)

    def task_page(
        self,
        where: console_sql.TaskFilter,
        *,
        sort: str = "id",
        descending: bool = False,
        after: tuple[Any, int] | None = None,
        limit: int = 50,
    ) -> list[console_sql.PageRow]:
        """One page of tasks for the web console (see :func:`scheduler.storage.console.task_page`)."""
        from scheduler.storage import console as console_sql

        status = check_status("status", where.status, task=True)
        limit = check_limit(limit)
        with self._read() as connection:
            return console_sql.task_page(
                connection,
                replace(where, status=status),
                sort=sort,
                descending=descending,
                after=after,
                limit=limit,
            )

    def task_queues(self) -> list[str]:
        """The distinct queues of existing tasks, sorted."""
        with self._read() as connection:
            return tasks_sql.task_queues(connection)

    def task_sources(self) -> list[str]:
        """The distinct sources (owners) of existing tasks, sorted."""
        from scheduler.storage import console as console_sql

        with self._read() as connection:
            return console_sql.task_sources(connection)

    def paused_by(self, task_ids: list[int]) -> dict[int, tuple[str, datetime]]:
        """task id -> (actor, when) of the latest pause of each of these tasks that was ever paused."""
        from scheduler.storage import console as console_sql

        with self._read() as connection:
            return console_sql.paused_by(connection, task_ids)

    def duration_percentiles(self, task: TaskRef, quantiles: tuple[float, ...]) -> dict[float, float | None]:
        """Duration percentiles (ms) of one task's executions, nearest lower rank (as stats' p95)."""
        from scheduler.storage import console as console_sql

        with self._read() as connection:
            task_id = tasks_sql.get_task(connection, task).id
            return console_sql.duration_percentiles(connection, task_id, quantiles)

    def runs_per_day(self, task: TaskRef, *, days: int = 7) -> float:
        """The task's runs (skipped slots excluded) per day over the last ``days`` days (database clock)."""
        from scheduler.storage import console as console_sql

        days = check_count(days)
        with self._read() as connection:
            task_id = tasks_sql.get_task(connection, task).id
            since = db_now(connection) - timedelta(days=days)
            return console_sql.runs_since(connection, task_id, since) / days

    def logs_after(self, execution_id: int, position: int) -> list[LogLine]:
        """The execution's log lines after the first ``position`` (a live tail's next lines)."""
        from scheduler.storage import console as console_sql

        with self._read() as connection:
            if history_sql.find_execution(connection, execution_id) is None:
                raise ExecutionNotFound(execution_id)
            return console_sql.logs_after(connection, execution_id, max(0, position))

    def get_execution(self, execution_id: int) -> Execution:
        """One execution; :class:`~scheduler.errors.ExecutionNotFound` otherwise."""
        with self._read() as connection:
            execution = history_sql.find_execution(connection, execution_id)
        if execution is None:
            raise ExecutionNotFound(execution_id)
        return execution

    def history(
        self, *, task: TaskRef | None = None, status: str | None = None, limit: int = 50
    ) -> list[Execution]:
        """Executions newest first, optionally of one task and/or one status.

        ``task`` may name a deleted task, by its id or the name its executions bear (they keep it);
        :class:`~scheduler.errors.TaskNotFound` when no task, live or deleted, ever had this reference.
        """
        status = check_status("status", status, task=False)
        limit = check_limit(limit)
        with self._read() as connection:
            if task is None:
                return history_sql.list_executions(connection, status=status, limit=limit)
            found = tasks_sql.find_task(connection, task)
            if found is not None:
                return history_sql.list_executions(connection, task_id=found.id, status=status, limit=limit)
            names = self._deleted_task_names(connection, task)
            return history_sql.list_executions(
                connection, deleted_task_names=names, status=status, limit=limit
            )

    @staticmethod
    def _deleted_task_names(connection: Connection, ref: TaskRef) -> set[str]:
        """The names the executions of deleted task ``ref`` bear; TaskNotFound when no task had ``ref``."""
        names: set[str] = set()
        if isinstance(ref, int) and storable_id(ref):
            names = history_sql.audited_task_names(connection, task_id=ref)
        elif isinstance(ref, str) and (name := tasks_sql.stored_name(ref)) is not None:
            orphans = history_sql.list_executions(connection, deleted_task_names=[name], limit=1)
            names = {name} if orphans else history_sql.audited_task_names(connection, name=name)
        if not names:
            raise TaskNotFound(ref if isinstance(ref, int | str) else repr(ref))
        return names

    def logs(self, execution_id: int) -> list[LogLine]:
        """The execution's log lines in order; :class:`~scheduler.errors.ExecutionNotFound` if unknown."""
        with self._read() as connection:
            if history_sql.find_execution(connection, execution_id) is None:
                raise ExecutionNotFound(execution_id)
            return history_sql.list_logs(connection, execution_id)

    def audit(self, *, task: TaskRef | None = None, limit: int = 50) -> list[AuditEntry]:
        """Audit entries newest first; ``task`` may name a deleted task (by its id or last name)."""
        from scheduler.storage import audit as audit_sql

        limit = check_limit(limit)
        with self._read() as connection:
            if task is None:
                return audit_sql.list_audit(connection, limit=limit)
            found = tasks_sql.find_task(connection, task)
            if found is not None:
                return audit_sql.list_audit(connection, task_id=found.id, limit=limit)
            if isinstance(task, int):
                return audit_sql.list_audit(connection, task_id=task, limit=limit)
            return audit_sql.list_audit(connection, task_name=task.strip(), limit=limit)

    def verify_audit(self) -> AuditVerdict:
        """Check the audit trail's hash chain: intact, or the first row that was changed, or after which rows
        were deleted (see :mod:`scheduler.storage.audit_chain`). Reads every audit row."""
        from scheduler.storage import audit_chain

        with self._read() as connection:
            return audit_chain.verify(connection)

    def next_runs(
        self, *, task: TaskRef | None = None, count: int = 5, after: datetime | None = None
    ) -> list[NextRun]:
        """The next ``count`` fire times of one task, or the ``count`` soonest over all active tasks.

        Without ``after`` the list starts at each task's ``next_run_at`` (an overdue slot included); with it,
        only fire times strictly after ``after``. Paused, completed and manual tasks have none.
        """
        count = check_count(count)
        after = validate_instant("after", after)  # aware, in UTC (SQLite compares UTC text)
        with self._read() as connection:
            if task is not None:
                candidates = [tasks_sql.get_task(connection, task)]
            else:
                candidates = tasks_sql.soonest_tasks(connection, count, after=after)
                if after is not None:  # tasks whose next run is before `after` may still fire after it
                    candidates += tasks_sql.tasks_due_by(connection, after)
            names = [n for t in candidates for n in [*(t.exclude or ()), *(t.only_in or ())]]
            stored = calendars_sql.calendar_days(connection, names)
            runs = [
                run
                for item in candidates
                for run in _next_runs(
                    item, count, after, task_calendar_rule(item.timezone, item.exclude, item.only_in, stored)
                )
            ]
            runs = sorted(runs, key=lambda run: (run.at, run.task_id))[:count]
            if not runs:
                return runs
            since = min(run.slot or run.at for run in runs)
            skips = backfill_sql.user_skips(connection, sorted({run.task_id for run in runs}), since)
        return [replace(run, skipped=skips.get((run.task_id, run.slot or run.at))) for run in runs]

    def get_task_stats(self, task: TaskRef | None = None) -> TaskStats:
        """Statistics of one task's executions or of all (see :mod:`scheduler.storage.stats`)."""
        from scheduler.storage import stats as stats_sql

        with self._read() as connection:
            task_id = None if task is None else tasks_sql.get_task(connection, task).id
            return stats_sql.task_stats(connection, task_id=task_id, now=db_now(connection))

    # --------------------------------------------------------------------------------------------- calendars

    def create_calendar(
        self, name: str, entries: list[str] | tuple[str, ...] = (), *, ics: str | None = None
    ) -> Calendar:
        """Store a calendar of ``entries`` (``2026-12-25``, ``2026-12-24..2026-12-31``, ``sat``) and the
        all-day events of ``ics`` (the text of an iCalendar file); audited ``calendar_create``."""
        name = validate_calendar_name(name)
        if isinstance(entries, str):
            raise InvalidField("calendar", "entries must be a list of strings, not one string")
        days = parse_entries(entries)
        if ics is not None:
            days = days.merged(parse_ics(ics))
        if days.empty:
            raise InvalidField("calendar", "no days given (dates, ranges A..B, weekdays or --ics FILE)")
        with self._write() as connection:
            if calendars_sql.find_calendar(connection, name) is not None:
                raise InvalidField("calendar", f"a calendar named {name!r} exists already")
            now = db_now(connection)
            calendar = calendars_sql.insert_calendar(connection, name, days.to_json(), now=now)
            after = {"calendar": name, "days": calendar.days}
            self._audit(connection, [AuditRecord("calendar_create", None, None, None, after)], now)
        return calendar

    def list_calendars(self) -> list[Calendar]:
        """Every calendar by name, each with the tasks that use it."""
        with self._read() as connection:
            return [
                replace(c, tasks=calendars_sql.tasks_using(connection, c.name))
                for c in calendars_sql.list_calendars(connection)
            ]

    def get_calendar(self, name: str) -> Calendar:
        """One calendar with the tasks that use it; :class:`~scheduler.errors.UnknownCalendar` otherwise."""
        with self._read() as connection:
            calendar = self._calendar(connection, name)
            return replace(calendar, tasks=calendars_sql.tasks_using(connection, calendar.name))

    def delete_calendar(self, name: str) -> Calendar:
        """Delete a calendar no task uses (refused, naming them, otherwise); audited ``calendar_delete``."""
        with self._write() as connection:
            calendar = self._calendar(connection, name, lock=True)
            users = calendars_sql.tasks_using(connection, calendar.name)
            if users:
                shown = ", ".join(repr(user) for user in users[:5]) + (" ..." if len(users) > 5 else "")
                raise InvalidField("calendar", f"{calendar.name!r} is used by task {shown}; detach it first")
            now = db_now(connection)
            calendars_sql.delete_calendar(connection, calendar.id)
            before = {"calendar": calendar.name, "days": calendar.days}
            self._audit(connection, [AuditRecord("calendar_delete", None, None, before, None)], now)
        return calendar

    def calendar_rule(
        self,
        *,
        timezone: str = "UTC",
        exclude: list[str] | None = None,
        only_in: list[str] | None = None,
    ) -> CalendarRule | None:
        """The rule of these calendars, judged in ``timezone`` (what ``validate`` shows); an unknown name
        raises :class:`~scheduler.errors.UnknownCalendar`."""
        with self._read() as connection:
            stored = self._require_calendars(connection, {"exclude": exclude, "only_in": only_in}, lock=False)
        return task_calendar_rule(validate_timezone_name(timezone), exclude, only_in, stored)

    def _calendar(self, connection: Connection, name: str, *, lock: bool = False) -> Calendar:
        found = (
            calendars_sql.find_calendar(connection, name.strip(), lock=lock)
            if isinstance(name, str)
            else None
        )
        if found is None:
            known = [c.name for c in calendars_sql.list_calendars(connection)]
            raise UnknownCalendar(str(name), known)
        return found

    @staticmethod
    def _require_calendars(
        connection: Connection, fields: Mapping[str, Any], *, lock: bool = True
    ) -> dict[str, dict[str, Any]]:
        """The stored days of the calendars ``fields`` (``exclude``, ``only_in``) name; UnknownCalendar for
        a name no calendar has. ``lock`` (writes): share-lock them until the commit (a read needs no lock,
        and a reading role may not take one)."""
        names = [name for key in ("exclude", "only_in") for name in fields.get(key) or ()]
        stored = calendars_sql.calendar_days(connection, names, lock=lock)
        missing = next((name for name in names if name not in stored), None)
        if missing is not None:
            known = [c.name for c in calendars_sql.list_calendars(connection)]
            raise UnknownCalendar(missing, known)
        return stored

    def validate_schedule(
        self,
        schedule: str | list[str],
        *,
        timezone: str = "UTC",
        count: int = 5,
        after: datetime | None = None,
        jitter_ms: int | None = None,
    ) -> list[datetime]:
        """The first ``count`` fire times of ``schedule`` (one text, or a list of several): from the first
        run a new task would get, or after ``after`` when given (see
        :func:`scheduler.rules.timing.preview_schedule`; host clock). ``jitter_ms`` is checked against the
        schedule; the times are the nominal slots (a task's offsets depend on its id).

        Raises what ``create_task`` raises for the same schedule (:class:`~scheduler.errors.InvalidSchedule`
        for an instant in the past too, :class:`~scheduler.errors.InvalidTimezone`); needs no database.
        """
        count = check_count(count)
        preview = timing.preview_schedule(
            schedule,
            timezone=validate_timezone_name(timezone),
            now=datetime.now(UTC),
            count=count,
            after=validate_instant("after", after),
            jitter=None if not jitter_ms else timedelta(milliseconds=validate_int("jitter_ms", jitter_ms)),
        )
        return preview.fire_times

    # ----------------------------------------------------------------------------------------- mutations

    def create_task(self, spec: Mapping[str, Any] | None = None, /, **fields: Any) -> Task:
        """Validate and store a new task (``spec`` and keywords merged, keywords win); emit task-created.

        ``alerts={rule: value}``: the task's own alert rules (``on_failure``, ``late_ms``, ``missing_ms``,
        ``long_ms``, ``recovered``; docs/alerts.md); the settings' defaults apply to the others.
        """
        from scheduler.rules.alerts import check_rules
        from scheduler.rules.validation import validate_new_task
        from scheduler.rules.versions import with_rules
        from scheduler.storage import alerts as alerts_sql

        if spec is not None and not isinstance(spec, Mapping):
            raise InvalidField("spec", f"must be a mapping of fields, not {type(spec).__name__}")
        merged = {**(spec or {}), **fields}
        rules = check_rules(merged.pop("alerts")) if "alerts" in merged else {}
        raw_name = merged.get("name")
        with self._write(task_name=raw_name.strip() if isinstance(raw_name, str) else None) as connection:
            now = db_now(connection)
            definition = validate_new_task(merged, settings=self.settings, commands=self.commands, now=now)
            if tasks_sql.name_taken(connection, definition.name):
                raise NameTaken(definition.name)
            self._require_calendars(connection, definition.columns())
            task = tasks_sql.insert_task(connection, {**definition.columns(), "source": self.source}, now=now)
            if task.jitter_ms:  # the offsets hash the task id, known only now
                fire = timing.task_first_fire(task, now)
                task = tasks_sql.update_task(connection, task.id, {"next_run_at": fire}, now=now)
            alerts_sql.put_task_rules(connection, task.id, rules)
            after = with_rules(public_task(task), alerts_sql.task_rules(connection, task.id))
            self._audit(connection, [AuditRecord("create", task.id, task.name, None, after)], now)
        self._emit(ev.TASK_CREATED, [task])
        return task

    def update_task(self, ref: TaskRef, **changes: Any) -> Task:
        """Change fields of a task (not ``once``); a no-op change returns the task without audit or event.

        Changing schedule, timezone, start_at, end_at or max_runs recomputes the next run from now.
        ``alerts={rule: value}`` changes the task's alert rules (docs/alerts.md; None: back to the default).
        """
        from scheduler.rules.alerts import check_rules

        if "alerts" in changes:
            check_rules(changes["alerts"])  # before the transaction; _change takes them from the changes
        new_name = changes.get("name")
        return self._change(ref, lambda _connection, _task: changes, "update", new_name)

    def _change(
        self,
        ref: TaskRef,
        changes_of: Callable[[Connection, Task], Mapping[str, Any]],
        action: str,
        new_name: object = None,
    ) -> Task:
        """Validate and write what ``changes_of`` returns for the locked task (its ``alerts``: changes to the
        task's alert rules); audit it as ``action``."""
        from scheduler.rules.alerts import check_rules
        from scheduler.rules.validation import validate_changes
        from scheduler.rules.versions import with_rules
        from scheduler.storage import alerts as alerts_sql

        with self._write(task_name=new_name.strip() if isinstance(new_name, str) else None) as connection:
            task = tasks_sql.get_task(connection, ref, lock=True)
            now = db_now(connection)
            changes = dict(changes_of(connection, task))
            rule_changes = check_rules(changes.pop("alerts")) if "alerts" in changes else {}
            columns = validate_changes(task, changes, settings=self.settings, commands=self.commands, now=now)
            rules_before = alerts_sql.task_rules(connection, task.id)
            rules_after = {**rules_before, **rule_changes}
            rules_after = {key: value for key, value in rules_after.items() if value is not None}
            if not columns and rules_after == rules_before:
                return task
            if "name" in columns and tasks_sql.name_taken(connection, columns["name"], except_id=task.id):
                raise NameTaken(columns["name"])
            self._require_calendars(connection, columns)
            updated = tasks_sql.update_task(connection, task.id, columns, now=now) if columns else task
            if rules_after != rules_before:
                alerts_sql.put_task_rules(connection, task.id, rules_after)
            before = with_rules(public_task(task), rules_before)
            record = AuditRecord(
                action, task.id, updated.name, before, with_rules(public_task(updated), rules_after)
            )
            self._audit(connection, [record], now)
        self._emit(ev.TASK_UPDATED, [updated])
        return updated

    def delete_task(self, ref: TaskRef) -> Task:
        """Delete a task and cancel its executions that have not started; return the task as it was."""
        from scheduler.storage import manual_runs

        with self._write() as connection:
            task = tasks_sql.get_task(connection, ref, lock=True)
            now = db_now(connection)
            manual_runs.cancel_open_executions(connection, task.id, now=now, reason="task deleted")
            tasks_sql.delete_task(connection, task.id)
            self._audit(connection, [AuditRecord("delete", task.id, task.name, public_task(task), None)], now)
        self._emit(ev.TASK_DELETED, [task])
        return task

    def pause(
        self, ref: TaskRef | None = None, *, reason: str | None = None, until: datetime | None = None
    ) -> list[Task]:
        """Pause one task, or every active task (``ref=None``); return the tasks that changed.

        Only active tasks pause: pausing a paused or completed task is a no-op that returns ``[]`` (no audit,
        no event). A paused task keeps its ``next_run_at`` but is never due; it accrues no misses.

        ``until`` (a future instant, else :class:`~scheduler.errors.InvalidField`): a timed pause the planner
        lifts at that instant (audited, actor ``planner``); the task then runs from its first slot at or after
        ``until``, never the paused span. Given for a task paused already, it sets that task's end of pause
        (and ``reason``, its note).
        """
        from scheduler.rules.backfills import pause_until

        status_reason = check_reason(reason)
        until = validate_instant("until", until)
        with self._write() as connection:
            now = db_now(connection)
            if until is not None:
                until = pause_until(until, now=now)
            if ref is None:
                targets = tasks_sql.tasks_with_status(connection, "active", lock=True)
            else:
                targets = [tasks_sql.get_task(connection, ref, lock=True)]
            changes = {"status": "paused", "status_reason": status_reason, "paused_until": until}
            pausable = ("active", "paused") if until is not None else ("active",)
            pairs = [
                (task, tasks_sql.update_task(connection, task.id, changes, now=now))
                for task in targets
                if task.status in pausable
            ]
            self._audit(connection, [_change("pause", before, after) for before, after in pairs], now)
        changed = [after for _, after in pairs]
        self._emit(ev.TASK_PAUSED, changed)
        return changed

    def resume(self, ref: TaskRef | None = None) -> list[Task]:
        """Resume one paused task, or every paused task (``ref=None``); return the tasks that changed.

        The next run is recomputed from now, so the paused period is never replayed; the consecutive-failure
        count restarts at zero. A task with no fire time left (a once instant that passed while paused, end_at
        passed) becomes ``completed``. Resuming a task that is not paused is a no-op returning ``[]``.
        """
        with self._write() as connection:
            now = db_now(connection)
            if ref is None:
                targets = tasks_sql.tasks_with_status(connection, "paused", lock=True)
            else:
                targets = [tasks_sql.get_task(connection, ref, lock=True)]
            pairs = [
                (task, tasks_sql.update_task(connection, task.id, _resumed(task, now), now=now))
                for task in targets
                if task.status == "paused"
            ]
            self._audit(connection, [_change("resume", before, after) for before, after in pairs], now)
        changed = [after for _, after in pairs]
        self._emit(ev.TASK_RESUMED, changed)
        return changed

    def skip(self, ref: TaskRef, *, count: int = 1, note: str | None = None) -> list[Execution]:
        """Skip the task's next ``count`` slots (1..1000) that have no execution yet: each is recorded now as
        a ``skipped`` execution, reason ``skipped_by_user``, its error naming who skipped it and ``note``;
        when the slot comes, the planner finds it taken and moves on. Audited (``skip``). Only an active task
        with upcoming slots can skip (:class:`~scheduler.errors.InvalidField` otherwise)."""
        from scheduler.rules import backfills as backfill_rules

        count = backfill_rules.check_skip_count(count)
        note = check_reason(note)
        with self._write() as connection:
            task = tasks_sql.get_task(connection, ref, lock=True)
            now = db_now(connection)
            if task.status != "active" or task.next_run_at is None:
                raise InvalidField(
                    "id", f"task {task.name!r} is {task.status}: it has no upcoming slot to skip"
                )
            schedule = timing.task_schedule(task)  # rows keep nominal slots (a jitter moves only the run)
            taken = backfill_sql.future_slots(connection, task.id, slot_of(schedule, task.next_run_at)[0])
            upcoming = [slot_of(schedule, at) for at in timing.upcoming_runs(task, count + len(taken))]
            slots = [(slot, source) for slot, source in upcoming if slot not in taken][:count]
            if not slots:
                raise InvalidField("id", f"task {task.name!r} has no upcoming slot to skip")
            error = f"skipped by {self.actor}" + (f": {note}" if note else "")
            skipped = backfill_sql.skip_slots(connection, task, slots, error=error, now=now)
            after = {"slots": [iso_utc(e.scheduled_for) for e in skipped], "note": note}
            self._audit(connection, [AuditRecord("skip", task.id, task.name, None, after)], now)
        return skipped

    # ------------------------------------------------------------------------------------------ backfills

    def preview_backfill(
        self, ref: TaskRef, *, start: datetime, end: datetime, force: bool = False
    ) -> list[BackfillSlot]:
        """The slots a backfill of ``[start, end]`` would cover (the dry run): each with its wall time in the
        task's zone, a DST note, and the execution that has it already (None: the backfill would create one).
        Raises what :meth:`backfill` raises for bad input."""
        from scheduler.rules import backfills as backfill_rules

        with self._read() as connection:
            task = tasks_sql.get_task(connection, ref)
            found = self._backfill_range(connection, task, start, end, force)
            existing = backfill_sql.slot_executions(connection, task.id, found.range_from, found.range_to)
        from scheduler.records import BackfillSlot

        zone = ZoneInfo(task.timezone)
        notes = backfill_rules.dst_notes(found.slots, zone)
        return [
            BackfillSlot(
                at=slot,
                local=backfill_rules.local_time(slot, zone),
                dst_note=note,
                execution_id=existing[slot][0] if slot in existing else None,
                execution_status=existing[slot][1] if slot in existing else None,
                excluded=excluded,
            )
            for slot, note, excluded in zip(found.slots, notes, found.excluded, strict=True)
        ]

    def backfill(
        self,
        ref: TaskRef,
        *,
        start: datetime,
        end: datetime,
        max_parallel: int = 1,
        data: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> Backfill:
        """Run the task's slots in ``[start, end]`` (both inclusive, in the past) that have no execution yet:
        one execution per slot (trigger ``backfill``, status ``waiting``), which the planner releases at most
        ``max_parallel`` at a time (one at a time unless the overlap policy is ``allow``), within the
        concurrency cap. ``data`` is merged over the task's for each of them, like :meth:`run_task_now`'s.

        :class:`~scheduler.errors.InvalidField`, with nothing stored: a reversed range, one reaching past now,
        more than 10,000 slots without ``force`` (100,000 at most), bad ``data``. Audited (``backfill``).
        A backfill that finds every slot taken is ``completed`` at once.
        """
        from scheduler.rules import backfills as backfill_rules

        max_parallel = backfill_rules.check_max_parallel(max_parallel)
        run_data = None if data is None else validate_data(data)
        with self._write() as connection:
            task = tasks_sql.get_task(connection, ref, lock=True)
            now = db_now(connection)
            found = self._backfill_range(connection, task, start, end, force)
            backfill_id = backfill_sql.insert_backfill(
                connection,
                {
                    "task_id": task.id, "task_name": task.name, "range_from": found.range_from,
                    "range_to": found.range_to, "max_parallel": max_parallel, "data": run_data,
                    "status": "running", "slots": len(found.slots), "created": 0, "actor": self.actor,
                    "created_at": now,
                },
            )  # fmt: skip
            runs = [
                (slot, source)
                for slot, source, excluded in zip(found.slots, found.sources, found.excluded, strict=True)
                if excluded is None  # a calendar's excluded day does not run, backfilled or not
            ]
            created = backfill_sql.insert_backfill_executions(
                connection, task, backfill_id, runs, data=run_data, now=now
            )
            finished = {"status": "completed", "finished_at": now} if not created else {}
            backfill_sql.set_backfill(connection, backfill_id, created=created, **finished)
            backfill = backfill_sql.get_backfill(connection, backfill_id)
            after = backfill.to_json() | {"data": None if run_data is None else redact(run_data)}
            after.pop("progress")
            self._audit(connection, [AuditRecord("backfill", task.id, task.name, None, after)], now)
        return backfill

    def _backfill_range(
        self, connection: Connection, task: Task, start: datetime, end: datetime, force: bool
    ) -> backfill_rules.BackfillRange:
        from scheduler.rules import backfills as backfill_rules

        checked_start = validate_instant("from", start)
        checked_end = validate_instant("to", end)
        if checked_start is None or checked_end is None:
            raise InvalidField("from" if checked_start is None else "to", "is required")
        names = [*(task.exclude or ()), *(task.only_in or ())]
        rule = task_calendar_rule(
            task.timezone, task.exclude, task.only_in, calendars_sql.calendar_days(connection, names)
        )
        return backfill_rules.backfill_range(
            task, checked_start, checked_end, now=db_now(connection), force=force, rule=rule
        )

    def get_backfill(self, backfill_id: int) -> Backfill:
        """One backfill with its progress (its executions counted by status); BackfillNotFound otherwise."""
        with self._read() as connection:
            return backfill_sql.get_backfill(connection, backfill_id)

    def backfills(
        self, *, task: TaskRef | None = None, status: str | None = None, limit: int = 50
    ) -> list[Backfill]:
        """Backfills newest first, optionally of one task and/or one status (running, completed or
        cancelled)."""
        limit = check_limit(limit)
        if status is not None and status not in BACKFILL_STATUSES:
            raise InvalidField("status", f"must be one of {', '.join(BACKFILL_STATUSES)}")
        with self._read() as connection:
            task_id = None if task is None else tasks_sql.get_task(connection, task).id
            return backfill_sql.list_backfills(connection, task_id=task_id, status=status, limit=limit)

    def cancel_backfill(self, backfill_id: int) -> Backfill:
        """Cancel a running backfill: its executions not started yet (waiting, or released and not yet
        published) become ``cancelled`` (reason ``backfill cancelled``); those running finish. Audited
        (``cancel-backfill``). Cancelling one that is not running changes nothing and returns it."""
        with self._write() as connection:
            backfill = backfill_sql.get_backfill(connection, backfill_id, lock=True)
            if backfill.status != "running":
                return backfill
            now = db_now(connection)
            cancelled = backfill_sql.cancel_unstarted(connection, backfill_id, now=now)
            backfill_sql.set_backfill(connection, backfill_id, status="cancelled", finished_at=now)
            after = {"backfill_id": backfill_id, "status": "cancelled", "cancelled_executions": cancelled}
            record = AuditRecord("cancel-backfill", backfill.task_id, backfill.task_name, None, after)
            self._audit(connection, [record], now)
            return backfill_sql.get_backfill(connection, backfill_id)

    # ------------------------------------------------------------------------------------ tasks as code

    def plan_tasks_file(
        self,
        content: bytes,
        *,
        path: str = "<stdin>",
        source: str | None = None,
        prune: bool = False,
        prune_mode: str = "delete",
    ) -> TaskPlan:
        """What applying the tasks file ``content`` (read from ``path``) would change; writes nothing.

        Raises :class:`~scheduler.rules.taskfile.TaskFileError` (an :class:`InvalidInput`) naming the file,
        the line and the field for the first invalid thing in the file. See docs/tasks-as-code.md.
        """
        from scheduler import task_files
        from scheduler.rules.taskfile import parse_tasks_file

        parsed = parse_tasks_file(path, content)
        with self._read() as connection:
            return task_files.make_plan(
                connection, parsed, source=task_files.file_source(parsed, source), prune=prune,
                prune_mode=prune_mode, settings=self.settings, commands=self.commands,
            )  # fmt: skip

    def apply_tasks_file(
        self,
        content: bytes,
        *,
        path: str = "<stdin>",
        source: str | None = None,
        prune: bool = False,
        prune_mode: str = "delete",
        dry_run: bool = False,
    ) -> TaskPlan:
        """Make the tasks of the file's source match the file, in one transaction (all or nothing): the plan
        :meth:`plan_tasks_file` shows, written with one audit row per changed task (action ``apply:create``,
        ``apply:update``, ``apply:delete``, ``apply:pause``) and one event each. Nothing to change: nothing
        written. ``dry_run``: the plan only."""
        if dry_run:
            return self.plan_tasks_file(content, path=path, source=source, prune=prune, prune_mode=prune_mode)
        from scheduler import task_files
        from scheduler.rules.taskfile import parse_tasks_file

        parsed = parse_tasks_file(path, content)
        name = task_files.file_source(parsed, source)
        try:
            with self._write() as connection:
                plan = task_files.make_plan(
                    connection, parsed, source=name, prune=prune, prune_mode=prune_mode,
                    settings=self.settings, commands=self.commands, lock=True,
                )  # fmt: skip
                done = task_files.write_plan(connection, plan, actor=self.actor)
        except NameTaken as error:
            taken = error.name if error.name != "?" else _conflicting_name(error.__cause__)
            raise NameTaken(taken, detail="by another change while applying; nothing was applied") from None
        self._emit(ev.TASK_DELETED, done.deleted)
        self._emit(ev.TASK_UPDATED, done.updated)
        self._emit(ev.TASK_CREATED, done.created)
        self._emit(ev.TASK_PAUSED, done.paused)
        return plan

    def export_tasks(self, *, source: str | None = None, status: str | None = None) -> dict[str, Any]:
        """The tasks (of one source, one status) as a tasks file document that :meth:`apply_tasks_file`
        accepts (unredacted: it holds the tasks' data as stored)."""
        from scheduler.rules.taskfile import export_document
        from scheduler.storage import alerts as alerts_sql
        from scheduler.storage import task_sets

        status = check_status("status", status, task=True)
        with self._read() as connection:
            found = task_sets.tasks_of_source(connection, source, status=status)
            rules = alerts_sql.rules_of_source(connection, source)
        return export_document(found, source=source, rules=rules)

    def task_versions(self, ref: TaskRef) -> list[TaskVersion]:
        """The task's versions, numbered from 1 (its creation), from its audit rows."""
        from scheduler.rules.versions import versions_of
        from scheduler.storage import task_sets

        with self._read() as connection:
            task = tasks_sql.get_task(connection, ref)
            return versions_of(task_sets.audit_of_task(connection, task.id))

    def diff_task_versions(
        self, ref: TaskRef, *, from_version: int | None = None, to_version: int | None = None
    ) -> tuple[TaskVersion, TaskVersion, list[FieldChange]]:
        """The fields that differ from version ``from_version`` (default: the one before ``to_version``) to
        ``to_version`` (default: the latest)."""
        from scheduler.rules.versions import diff_tasks, pick_version

        versions = self.task_versions(ref)
        after = pick_version(versions, to_version, field="to")
        before = pick_version(versions, max(after.number - 1, 1) if from_version is None else from_version,
                              field="from")  # fmt: skip
        return before, after, diff_tasks(before.task, after.task)

    def rollback_task(self, ref: TaskRef, *, to: int) -> Task:
        """Make the task's definition equal to version ``to`` again: a new version (audit action
        ``rollback``), validated like an update; a changed schedule's next run is computed from now (no slot
        is replayed); the task's own alert rules become the version's. The status is not rolled back. Equal
        already: the task is returned unchanged."""
        from scheduler.rules.versions import pick_version, rollback_changes, rollback_rules, versions_of
        from scheduler.storage import task_sets

        def changes(connection: Connection, task: Task) -> Mapping[str, Any]:
            target = pick_version(versions_of(task_sets.audit_of_task(connection, task.id)), to, field="to")
            return {**rollback_changes(target.task, task), "alerts": rollback_rules(target.task)}

        return self._change(ref, changes, "rollback")

    def run_task_now(
        self,
        ref: TaskRef,
        *,
        wait: bool = False,
        timeout_s: float | None = None,
        data: Mapping[str, Any] | None = None,
    ) -> Execution:
        """Insert a manual execution (slot = database now) with an audit row ``run``; publish it if there is a
        publisher (then it is ``queued``), else leave it ``pending`` for the planner's relay. A broker failure
        is logged and leaves it ``pending`` too. With ``wait``, poll until it finishes or ``timeout_s`` passes
        (None: no limit) and return its state then. Works on paused and completed tasks too.

        ``data``: this run's own data, merged over the task's (top-level keys, the run's win: see
        docs/semantics.md "Per-run data"); a JSON object of at most 64 KiB, else
        :class:`~scheduler.errors.InvalidField` and nothing is stored.
        """
        from scheduler.storage import manual_runs

        run_data = None if data is None else validate_data(data)
        task, execution = self._insert_manual_run(ref, run_data)
        if self.publisher is not None:
            from scheduler.records import Dispatch

            dispatch = Dispatch(
                execution.id,
                execution.queue,
                execution.command,
                execution.task_name,
                timeout_s=task.timeout_ms / 1000,
            )
            try:
                self.publisher.publish([dispatch])
            except BrokerUnavailable as error:
                logger.warning(
                    "execution %s stays pending for the planner to publish: %s", execution.id, error
                )
            else:
                with self._write() as connection:
                    manual_runs.mark_queued(connection, execution.id, now=db_now(connection))
        if wait:
            return self._wait_until_finished(execution.id, timeout_s)
        return self.get_execution(execution.id)

    def _insert_manual_run(self, ref: TaskRef, data: dict[str, Any] | None) -> tuple[Task, Execution]:
        from scheduler.storage import manual_runs

        for attempt in range(MANUAL_SLOT_ATTEMPTS):
            try:
                with self._write() as connection:
                    task = tasks_sql.get_task(connection, ref)
                    now = db_now(connection)
                    execution = manual_runs.insert_manual_execution(
                        connection, task, scheduled_for=now, data=data
                    )
                    tasks_sql.stamp_last_run(connection, task.id, at=now)
                    after = {
                        "execution_id": execution.id,
                        "scheduled_for": execution.to_json()["scheduled_for"],
                    }
                    if data is not None:
                        after["data"] = redact(data)
                    self._audit(connection, [AuditRecord("run", task.id, task.name, None, after)], now)
                return task, execution
            except exc.IntegrityError:  # the same (task, slot) within one clock tick: take the next tick
                if attempt == MANUAL_SLOT_ATTEMPTS - 1:
                    raise
                time.sleep(0.002)
        raise AssertionError("unreachable")

    def _wait_until_finished(self, execution_id: int, timeout_s: float | None) -> Execution:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            execution = self.get_execution(execution_id)
            if execution.status in FINISHED_STATUSES:
                return execution
            if deadline is not None and time.monotonic() >= deadline:
                return execution
            time.sleep(WAIT_POLL_S)

    # -------------------------------------------------------------------------------------------- alerts

    def alert_rules(self, ref: TaskRef) -> AlertRules:
        """The task's effective alert rules: its own where set, else the settings' defaults."""
        from scheduler.rules.alerts import effective_rules
        from scheduler.storage import alerts as alerts_sql

        with self._read() as connection:
            task = tasks_sql.get_task(connection, ref)
            return effective_rules(alerts_sql.task_rules(connection, task.id), self.settings)

    def alerts(self, *, task: TaskRef | None = None, limit: int = 50) -> list[Incident]:
        """Open incidents, then the most recent closed ones, at most ``limit`` (of one task if given)."""
        from scheduler.storage import alerts as alerts_sql

        limit = check_limit(limit)
        with self._read() as connection:
            task_id = None if task is None else tasks_sql.get_task(connection, task).id
            return alerts_sql.recent_incidents(connection, limit=limit, task_id=task_id)

    def unsent_alerts(self, *, limit: int = 50) -> list[AlertDelivery]:
        """Alert deliveries that failed at least once: still retried (``pending``) or given up."""
        from scheduler.storage import alerts as alerts_sql

        limit = check_limit(limit)
        with self._read() as connection:
            return alerts_sql.unsent_deliveries(connection, limit=limit)

    def silence(
        self,
        ref: TaskRef,
        *,
        duration: timedelta | None = None,
        until: datetime | None = None,
        note: str | None = None,
    ) -> Silence:
        """Silence the task's alerts for ``duration`` or until ``until`` (one of them): its incidents are
        still recorded, not sent. Audited (action ``silence``). Expires by itself."""
        from scheduler.storage import alerts as alerts_sql

        if (duration is None) == (until is None):
            raise InvalidField("silence", "give either a duration (--for) or an end time (--until)")
        if duration is not None and not timedelta(0) < duration <= MAX_SILENCE:
            raise InvalidField("for", f"must be longer than zero and at most {MAX_SILENCE.days} days")
        until = validate_instant("until", until)
        text = check_reason(note)
        with self._write() as connection:
            task = tasks_sql.get_task(connection, ref)
            now = db_now(connection)
            ends_at = now + duration if duration is not None else until
            assert ends_at is not None
            if not now < ends_at <= now + MAX_SILENCE:
                raise InvalidField(
                    "until", f"must be in the future and at most {MAX_SILENCE.days} days ahead"
                )
            silence = alerts_sql.insert_silence(
                connection,
                task_id=task.id,
                task_name=task.name,
                starts_at=now,
                ends_at=ends_at,
                note=text,
                actor=self.actor,
            )
            after = {"silence_id": silence.id, "until": silence.to_json()["ends_at"], "note": text}
            self._audit(connection, [AuditRecord("silence", task.id, task.name, None, after)], now)
        return silence

    def silences(self, *, include_expired: bool = False, limit: int = 100) -> list[Silence]:
        """Silences ending last first; only those in force unless ``include_expired``."""
        from scheduler.storage import alerts as alerts_sql

        limit = check_limit(limit)
        with self._read() as connection:
            return alerts_sql.list_silences(
                connection, now=db_now(connection), include_expired=include_expired, limit=limit
            )


def _conflicting_name(error: BaseException | None) -> str:
    """The name in PostgreSQL's unique-violation detail (``Key (name)=(x) already exists.``), else ``?``."""
    detail = getattr(getattr(getattr(error, "orig", None), "diag", None), "message_detail", None) or ""
    match = re.search(r"\(name\)=\((.*)\) already exists", detail)
    return match.group(1) if match else "?"


def _change(action: str, before: Task, after: Task) -> AuditRecord:
    return AuditRecord(action, after.id, after.name, public_task(before), public_task(after))


def _next_runs(task: Task, count: int, after: datetime | None, rule: CalendarRule | None) -> list[NextRun]:
    """The task's coming runs: real time, nominal slot, producing schedule, and a calendar's reason."""
    schedule = timing.task_schedule(task)
    runs = []
    for at in timing.upcoming_runs(task, count, after=after):
        slot, source = slot_of(schedule, at)
        excluded = None if rule is None else rule.reason(slot)
        runs.append(
            NextRun(
                task_id=task.id,
                task_name=task.name,
                at=at,
                slot=slot,
                schedule=source or task.schedule,
                excluded=excluded,
            )
        )
    return runs


def _resumed(task: Task, now: datetime) -> dict[str, Any]:
    from scheduler.rules import backfills as backfill_rules

    return backfill_rules.resumed_columns(task, timing.task_first_fire(task, now))
