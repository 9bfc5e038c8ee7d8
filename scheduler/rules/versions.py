"""A task's versions, numbered from its audit rows (each row's ``after`` is the task as that change left it;
nothing is stored twice), the field diff of two definitions, and what rolling back to one means.

Pure: audit entries and tasks in, records out.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from scheduler.errors import InvalidField, InvalidInput
from scheduler.records import Task, iso_utc
from scheduler.redaction import REDACTED, is_secret_key, public_task
from scheduler.rules.alerts import ALERTS, RULE_FIELDS
from scheduler.rules.validation import UPDATABLE

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import AuditEntry

# The fields a diff shows, in a fixed order: the definition, then the status (a pause is a version too).
DEFINITION_FIELDS: tuple[str, ...] = (
    "name", "command", "schedule", "timezone", "data", "queue", "retries", "retry_delay_ms",
    "retry_backoff", "timeout_ms", "overlap_policy", "misfire_policy", "misfire_grace_ms", "auto_pause_after",
    "start_at", "end_at", "max_runs", "jitter_ms", "exclude", "only_in",
)  # fmt: skip
DIFF_FIELDS: tuple[str, ...] = (*DEFINITION_FIELDS, "schedules", ALERTS, "status")
assert set(DEFINITION_FIELDS) == UPDATABLE


@dataclass(frozen=True, slots=True)
class FieldChange:
    """One field's value before and after (JSON form, secrets redacted)."""

    field: str
    before: Any
    after: Any

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class TaskVersion:
    """Version ``number`` (1 = the creation) of a task: the audit row that made it and the task it left."""

    number: int
    audit_id: int
    at: datetime
    actor: str
    action: str
    task: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "audit_id": self.audit_id,
            "at": iso_utc(self.at),
            "actor": self.actor,
            "action": self.action,
            "task": self.task,
        }


RULE_ACTIONS = frozenset({"create", "update", "rollback"})  # and apply:*, see _records_rules


def versions_of(entries: Iterable[AuditEntry]) -> list[TaskVersion]:
    """The versions in ``entries`` (one task's audit rows, any order), oldest first, numbered from 1: every
    row that left the task changed (not a deletion, not a manual run). A row that records only what it changed
    (the worker's auto-pause: the status) is applied to the version before it; one whose action does not
    record the alert rules (a pause, a resume) keeps those of the version before it."""
    versions: list[TaskVersion] = []
    for entry in sorted(entries, key=lambda e: e.id):
        if entry.action == "run" or not isinstance(entry.after, dict):
            continue
        task = dict(entry.after)
        if "schedule" not in task:
            if not versions:
                continue
            task = versions[-1].task | task
        if (
            ALERTS not in task
            and versions
            and ALERTS in versions[-1].task
            and not _records_rules(entry.action)
        ):
            task[ALERTS] = versions[-1].task[ALERTS]
        versions.append(TaskVersion(len(versions) + 1, entry.id, entry.at, entry.actor, entry.action, task))
    return versions


def with_rules(task_json: Mapping[str, Any], rules: Mapping[str, Any]) -> dict[str, Any]:
    """A task's audited JSON with its own alert rules under ``alerts`` (left out: none), as the actions of
    :func:`_records_rules` write it."""
    return {**task_json, ALERTS: dict(rules)} if rules else dict(task_json)


def _records_rules(action: str) -> bool:
    """Whether an audit row of ``action`` records the task's alert rules (without ``alerts``: it has none);
    the others (a pause, a resume, ...) leave them as they were."""
    return action in RULE_ACTIONS or action.startswith("apply:")


def pick_version(versions: Sequence[TaskVersion], number: int | None, *, field: str) -> TaskVersion:
    """Version ``number`` (None: the latest); :class:`InvalidField` naming ``field`` when there is none."""
    if not versions:
        raise InvalidInput("the task has no recorded versions")
    if number is None:
        return versions[-1]
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= len(versions):
        raise InvalidField(field, f"must be a version between 1 and {len(versions)}, not {number!r}")
    return versions[number - 1]


def diff_tasks(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[FieldChange]:
    """The fields of :data:`DIFF_FIELDS` whose values differ between two task JSON objects (no ``alerts``:
    no rules of its own, as in audit rows written before the rules were recorded)."""
    old = {**before, ALERTS: before.get(ALERTS) or {}}
    new = {**after, ALERTS: after.get(ALERTS) or {}}
    return [
        FieldChange(name, old.get(name), new.get(name))
        for name in DIFF_FIELDS
        if old.get(name) != new.get(name)
    ]


def rollback_changes(target: Mapping[str, Any], current: Task) -> dict[str, Any]:
    """The changes (for ``update_task``'s validation) that make ``current``'s definition equal to the version
    ``target`` (its JSON). A secret the audit kept redacted is restored from the current data when the task
    still has it at the same place; otherwise rolling back cannot restore it and is refused."""
    now = public_task(current)
    changes = {name: target.get(name) for name in DEFINITION_FIELDS if target.get(name) != now.get(name)}
    if target.get("schedules") != now.get("schedules"):  # several schedules: the whole list
        changes["schedule"] = target.get("schedules") or target.get("schedule")
    if "data" in changes:
        changes["data"] = _restore_secrets(changes["data"] or {}, current.data, "data")
    return changes


def rollback_rules(target: Mapping[str, Any]) -> dict[str, Any]:
    """The alert rule changes (``update_task``'s ``alerts``) that make a task's own rules those of the version
    ``target``: every rule, None where the version took the setting's default."""
    rules = target.get(ALERTS) or {}
    return {rule: rules.get(rule) for rule in RULE_FIELDS}


def _restore_secrets(redacted: Any, current: Any, path: str) -> Any:
    if isinstance(redacted, dict):
        out: dict[str, Any] = {}
        for key, value in redacted.items():
            here = current.get(key) if isinstance(current, dict) else None
            where = f"{path}.{key}"
            if is_secret_key(key) and value == REDACTED:
                if not isinstance(current, dict) or key not in current:
                    raise InvalidInput(
                        f"cannot roll back: {where} is a secret the audit keeps redacted and the task no "
                        "longer has it; set it with scheduler:update"
                    )
                out[key] = here
            else:
                out[key] = _restore_secrets(value, here, where)
        return out
    if isinstance(redacted, list):
        items = current if isinstance(current, list) else []
        return [
            _restore_secrets(value, items[i] if i < len(items) else None, f"{path}[{i}]")
            for i, value in enumerate(redacted)
        ]
    return redacted
