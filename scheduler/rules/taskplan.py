"""What applying a tasks file would change: per task create, update (a field diff), unchanged, and with
prune delete or pause; with the drift (changes made since the last apply by anything but an apply).

Pure: the parsed file, the source's stored tasks, the tasks holding the file's names elsewhere and the
drift are passed in; the database clock is ``now``. Every task is validated with the rules of ``create``
(:func:`~scheduler.rules.validation.validate_new_task`) or ``update``
(:func:`~scheduler.rules.validation.validate_changes`); an error names the file, the line and the field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from scheduler.commands.registry import CommandRegistry
from scheduler.errors import InvalidField, InvalidInput
from scheduler.records import Task, TaskDefinition, iso_utc
from scheduler.redaction import redact
from scheduler.rules import timing
from scheduler.rules.alerts import ALERTS, check_rules
from scheduler.rules.fields import validate_command, validate_name
from scheduler.rules.taskfile import FileTask, TaskFileError, TasksFile, error_field
from scheduler.rules.validation import validate_changes, validate_new_task, validate_plain_fields
from scheduler.rules.versions import DEFINITION_FIELDS, FieldChange
from scheduler.settings import Settings

PRUNE_MODES = ("delete", "pause")
# The owners of tasks made by hand: scheduler:create, the Python API, the web console (never a file's source).
RESERVED_SOURCES = ("cli", "api", "web")
_PLAIN_FIELDS = tuple(name for name in DEFINITION_FIELDS if name not in ("name", "command", "schedule"))


@dataclass(frozen=True, slots=True)
class Drift:
    """A change to a task by something other than an apply, after the task's last apply."""

    task_id: int
    actor: str
    at: datetime
    action: str

    def to_json(self) -> dict[str, Any]:
        return {"actor": self.actor, "at": iso_utc(self.at), "action": self.action}


@dataclass(frozen=True, slots=True)
class PlannedTask:
    """One task's part of a plan. ``definition`` (create), ``columns`` (update) and ``rules`` (the task's own
    alert rules, when they are to be set) are what apply writes."""

    action: str  # create, update, unchanged, delete, pause
    key: str
    name: str
    line: int | None = None
    task: Task | None = None
    changes: tuple[FieldChange, ...] = ()
    drift: tuple[Drift, ...] = ()
    definition: TaskDefinition | None = None
    columns: dict[str, Any] = field(default_factory=dict)
    rules: dict[str, Any] | None = None

    def columns_to_create(self) -> dict[str, Any]:
        """The columns of the task a ``create`` inserts."""
        assert self.definition is not None
        return self.definition.columns()

    def to_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "key": self.key,
            "name": self.name,
            "task_id": None if self.task is None else self.task.id,
            "line": self.line,
            "changes": [change.to_json() for change in self.changes],
            "drift": [item.to_json() for item in self.drift],
        }


@dataclass(frozen=True, slots=True)
class TaskPlan:
    path: str
    source: str
    prune: bool
    tasks: list[PlannedTask]

    def count(self, action: str) -> int:
        return sum(1 for task in self.tasks if task.action == action)

    @property
    def has_changes(self) -> bool:
        return any(task.action != "unchanged" for task in self.tasks)

    @property
    def drifted(self) -> list[PlannedTask]:
        return [task for task in self.tasks if task.drift]

    def summary(self) -> dict[str, int]:
        return {action: self.count(action) for action in ("create", "update", "delete", "pause", "unchanged")}

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.path,
            "source": self.source,
            "prune": self.prune,
            "changes": self.has_changes,
            "summary": self.summary(),
            "drifted": len(self.drifted),
            "tasks": [task.to_json() for task in self.tasks],
        }


def check_source(value: object, field_name: str = "source") -> str:
    """A file source name: 1-200 characters of text, not ``cli``, ``api`` or ``web`` (tasks made by hand)."""
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > 200:
        raise InvalidField(field_name, "must be 1-200 characters of text")
    name = value.strip()
    if name in RESERVED_SOURCES:
        raise InvalidField(
            field_name,
            f"{name!r} is reserved for tasks created by hand (cli), the API (api) or the web console (web)",
        )
    return name


@contextmanager
def _at(path: str, task: FileTask) -> Iterator[None]:
    """Re-raise a validation error as ``<file>:<line>: task <key>: <error>`` at the line of its field."""
    try:
        yield
    except TaskFileError:
        raise
    except InvalidInput as error:
        line = task.line_of(error_field(error))
        raise TaskFileError(path, line, f"task {task.key!r}: {error}") from None


def _json_value(value: Any, name: str) -> Any:
    if name == "data":
        return redact(value)
    return iso_utc(value) if isinstance(value, datetime) else value


def desired_definition(
    task: FileTask, *, settings: Settings, commands: CommandRegistry, now: datetime
) -> dict[str, Any]:
    """The definition fields the file gives ``task`` (defaults filled in), normalised like stored values:
    what a stored task is compared with. Unlike create, a once instant in the past is not an error here (an
    exported task that already ran must compare equal)."""
    fields = dict(task.fields)
    fields.pop(ALERTS, None)
    once = fields.pop("once", False)
    if not isinstance(once, bool):
        raise InvalidField("once", "must be true or false")
    given = {k: v for k, v in fields.items() if k not in ("command", "schedule")}
    values = validate_plain_fields(dict.fromkeys(_PLAIN_FIELDS) | given, settings)
    if fields.get("name") is None or fields.get("command") is None:
        raise InvalidField("name" if fields.get("name") is None else "command", "is required")
    values["command"] = validate_command(fields["command"], commands, values["data"])
    schedules = fields.get("schedule")
    texts: list[str] = []
    for item in schedules if isinstance(schedules, list) else [schedules]:
        text, schedule = timing.parse_task_schedule(item, timezone=values["timezone"], anchor=now)
        if once and schedule.kind != "once":
            raise InvalidField("once", "in a tasks file, give a once task its instant as the schedule")
        if text not in texts:
            texts.append(text)
    values["schedule"] = texts if len(texts) > 1 else texts[0] if texts else "manual"
    return values


def stored_schedule(task: Task) -> str | list[str]:
    """A stored task's schedule as a file gives it: its text, or the list of several."""
    return list(task.schedules) if task.schedules else task.schedule


def file_rules(task: FileTask) -> dict[str, Any]:
    """The alert rules the file gives ``task``, checked like create's ``alerts={...}``: the rules set (a rule
    given as null, like one left out, takes the setting's default)."""
    raw = task.fields.get(ALERTS)
    rules = {} if raw is None else check_rules(raw)
    return {rule: value for rule, value in rules.items() if value is not None}


def _stored_value(task: Task, name: str) -> Any:
    return stored_schedule(task) if name == "schedule" else getattr(task, name)


def _compare(task: FileTask, stored: Task, desired: Mapping[str, Any]) -> dict[str, Any]:
    return {name: desired[name] for name in DEFINITION_FIELDS if _stored_value(stored, name) != desired[name]}


def plan_file(
    parsed: TasksFile,
    *,
    source: str,
    stored: Sequence[Task],
    holders: Mapping[str, Task],
    drift: Mapping[int, Sequence[Drift]],
    stored_rules: Mapping[int, Mapping[str, Any]],
    prune: bool,
    prune_mode: str,
    settings: Settings,
    commands: CommandRegistry,
    now: datetime,
) -> TaskPlan:
    """The plan of ``parsed`` against ``stored`` (the tasks owned by ``source``). ``holders``: the tasks that
    hold one of the file's names (any source), by name; ``drift`` and ``stored_rules`` (the stored tasks' own
    alert rules): by task id."""
    if prune_mode not in PRUNE_MODES:
        raise InvalidField("prune_mode", f"must be one of {', '.join(PRUNE_MODES)}, not {prune_mode!r}")
    by_key = {task.key: task for task in stored if task.key is not None}
    keys = {entry.key for entry in parsed.tasks}
    pruned = [task for task in stored if task.key not in keys] if prune else []
    freed = {task.id for task in pruned} if prune_mode == "delete" else set()
    planned: list[PlannedTask] = []
    names: dict[str, FileTask] = {}
    for entry in parsed.tasks:
        with _at(parsed.path, entry):
            name = validate_name(entry.fields.get("name"))
            if name in names:
                raise InvalidField("name", f"{name!r} is used twice (also on line {names[name].line})")
            names[name] = entry
            current = by_key.get(entry.key)
            holder = holders.get(name)
            if holder is not None and holder.id not in freed and (current is None or holder.id != current.id):
                raise InvalidField("name", _taken(holder, source, keys))
            rules = stored_rules.get(current.id, {}) if current is not None else {}
            planned.append(
                _plan_one(entry, current, drift, rules, settings=settings, commands=commands, now=now)
            )
    action = "delete" if prune_mode == "delete" else "pause"
    for task in pruned:
        if action == "pause" and task.status != "active":
            continue
        planned.append(
            PlannedTask(
                action, task.key or task.name, task.name, task=task, drift=tuple(drift.get(task.id, ()))
            )
        )
    return TaskPlan(path=parsed.path, source=source, prune=prune, tasks=planned)


def _taken(holder: Task, source: str, keys: set[str]) -> str:
    owner = "by hand" if holder.source == "cli" else f"by {holder.source}"
    if holder.source == source and holder.key in keys:
        return (
            f"{holder.name!r} is still task {holder.id} (key {holder.key!r}), which this file renames: "
            "a name cannot pass from one task to another in one apply (apply that rename first, alone)"
        )
    if holder.source == source:
        return (
            f"{holder.name!r} is task {holder.id} (key {holder.key!r}), which this file no longer lists: "
            "rename it in the file (keep its key) or apply with --prune"
        )
    return f"{holder.name!r} is taken by task {holder.id}, created {owner}; rename one of them"


def _plan_one(
    entry: FileTask,
    current: Task | None,
    drift: Mapping[int, Sequence[Drift]],
    stored_rules: Mapping[str, Any],
    *,
    settings: Settings,
    commands: CommandRegistry,
    now: datetime,
) -> PlannedTask:
    fields = {name: value for name, value in entry.fields.items() if name != ALERTS}
    if current is None:
        definition = validate_new_task(fields, settings=settings, commands=commands, now=now)
        rules = file_rules(entry)
        return PlannedTask(
            "create", entry.key, definition.name, entry.line, definition=definition, rules=rules or None
        )
    desired = desired_definition(entry, settings=settings, commands=commands, now=now)
    rules = file_rules(entry)
    found = tuple(drift.get(current.id, ()))
    wanted = _compare(entry, current, desired)
    if not wanted and rules == stored_rules:
        return PlannedTask("unchanged", entry.key, current.name, entry.line, task=current, drift=found)
    columns = validate_changes(current, wanted, settings=settings, commands=commands, now=now)
    changes = tuple(
        FieldChange(name, _json_value(_stored_value(current, name), name), _json_value(desired[name], name))
        for name in DEFINITION_FIELDS
        if name in wanted
    )
    if rules != stored_rules:
        changes += (FieldChange(ALERTS, dict(stored_rules) or None, rules or None),)
    return PlannedTask(
        "update", entry.key, desired["name"], entry.line, task=current, changes=changes, drift=found,
        columns=columns, rules=rules if rules != stored_rules else None,
    )  # fmt: skip
