"""A tasks file (YAML, or JSON, which the same parser reads) -> its tasks as raw fields, each with the line
it starts on and the line of every field; or one :class:`TaskFileError` naming the file, the line and the
field. The format is in docs/tasks-as-code.md.

Pure: bytes in, records out. Safe by construction: a size limit, strict UTF-8, PyYAML's safe resolver (no
tags that build objects), and no aliases of mappings or lists (a file that refers to one node twice, the
way "a billion laughs" expands, is refused before anything walks it), duplicate mapping keys refused (YAML
would keep the last).
Field values are validated later, with the rules of ``create`` (:mod:`scheduler.rules.validation`).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from scheduler.errors import InvalidField, InvalidInput, InvalidSchedule, InvalidTimezone, UnknownCommand
from scheduler.records import Task
from scheduler.rules.alerts import ALERTS
from scheduler.rules.validation import CREATABLE

MAX_FILE_BYTES = 32 * 1024 * 1024
MAX_TASKS = 100_000
FORMAT_VERSION = 1
TASK_FIELDS = frozenset(CREATABLE | {"key", ALERTS})  # ALERTS: in defaults, merged with a task's per rule
DEFAULT_FIELDS = frozenset(TASK_FIELDS - {"name", "key"})  # what ``defaults:`` may set for every task
TOP_LEVEL = ("version", "source", "defaults", "tasks")

try:  # libyaml's parser when PyYAML was built with it (10x faster); the same safe resolver either way
    _Loader: type[Any] = yaml.CSafeLoader
except AttributeError:  # pragma: no cover - depends on the PyYAML build
    _Loader = yaml.SafeLoader
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_SCALARS: dict[str, Callable[[Any], Any]] = {
    "tag:yaml.org,2002:str": str,
    "tag:yaml.org,2002:int": _CONSTRUCTOR.construct_yaml_int,
    "tag:yaml.org,2002:float": _CONSTRUCTOR.construct_yaml_float,
    "tag:yaml.org,2002:bool": _CONSTRUCTOR.construct_yaml_bool,
    "tag:yaml.org,2002:null": lambda node: None,
    # An unquoted 2030-01-01T00:00:00Z stays text: start_at, end_at and schedules take ISO-8601 text.
    "tag:yaml.org,2002:timestamp": str,
}


_COLLECTIONS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class TaskFileError(InvalidInput):
    """A tasks file is not valid: ``<file>:<line>: <what>``."""

    def __init__(self, path: str, line: int | None, message: str) -> None:
        self.path = path
        self.line = line
        super().__init__(f"{path}:{line}: {message}" if line else f"{path}: {message}")


@dataclass(frozen=True, slots=True)
class FileTask:
    """One task of a file: its fields with the file's defaults applied (``key`` apart), where it is."""

    key: str
    fields: dict[str, Any]
    line: int
    lines: dict[str, int] = field(default_factory=dict)

    def line_of(self, name: str | None) -> int:
        """The line of field ``name`` (or of the file's default it took; ``alerts.late_ms``: of that rule,
        else of ``alerts``), else of the task."""
        name = name or ""
        return self.lines.get(name) or self.lines.get(name.partition(".")[0], self.line)


@dataclass(frozen=True, slots=True)
class TasksFile:
    path: str
    source: str | None
    tasks: list[FileTask]


def did_you_mean(name: str, known: frozenset[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(known))})"


def error_field(error: InvalidInput) -> str | None:
    """The task field a validation error is about, when it says."""
    if isinstance(error, InvalidField):
        return error.field
    if isinstance(error, InvalidSchedule):
        return "schedule"
    if isinstance(error, InvalidTimezone):
        return "timezone"
    if isinstance(error, UnknownCommand):
        return "command"
    return None


# ------------------------------------------------------------------------------------------------ parsing


def _decode(path: str, content: bytes) -> str:
    if len(content) > MAX_FILE_BYTES:
        raise TaskFileError(path, None, f"is {len(content)} bytes (at most {MAX_FILE_BYTES})")
    try:
        return content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = content[: error.start].count(b"\n") + 1
        raise TaskFileError(path, line, f"is not UTF-8 (byte 0x{content[error.start]:02x})") from None


def _compose(path: str, text: str) -> yaml.Node | None:
    try:
        node: yaml.Node | None = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = None if mark is None else mark.line + 1
        raise TaskFileError(path, line, f"is not valid YAML: {error.problem or error.context}") from None
    except yaml.YAMLError as error:
        raise TaskFileError(path, None, f"is not valid YAML: {error}") from None
    return node


class _Converter:
    """Nodes -> plain values, refusing aliases of mappings and lists (a node met twice: how an alias bomb
    expands) and duplicate keys. An alias of a scalar cannot expand; it reads as its value."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: set[int] = set()

    def fail(self, node: yaml.Node, message: str) -> TaskFileError:
        return TaskFileError(self.path, node.start_mark.line + 1, message)

    def visit(self, node: yaml.Node) -> None:
        if id(node) in self.seen:
            raise self.fail(node, "YAML anchors and aliases are not allowed (use the file's defaults)")
        self.seen.add(id(node))
        if not isinstance(node, yaml.ScalarNode) and node.tag not in _COLLECTIONS:
            raise self.fail(node, f"unsupported YAML tag {node.tag!r}")

    def value(self, node: yaml.Node) -> Any:
        """A node as plain data; iterative, so nesting depth cannot exhaust the stack."""
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node)
        self.visit(node)
        root: Any = {} if isinstance(node, yaml.MappingNode) else []
        stack: list[tuple[yaml.Node, Any]] = [(node, root)]
        while stack:
            current, out = stack.pop()
            children = (
                self.pairs(current) if isinstance(current, yaml.MappingNode) else enumerate(current.value)
            )
            for key, child in children:
                if isinstance(child, yaml.ScalarNode):
                    item = self.scalar(child)
                else:
                    self.visit(child)
                    item = {} if isinstance(child, yaml.MappingNode) else []
                    stack.append((child, item))
                if isinstance(out, dict):
                    out[key] = item
                else:
                    out.append(item)
        return root

    def pairs(self, node: yaml.Node) -> list[tuple[str, yaml.Node]]:
        """A mapping's (key, value node) pairs: string keys, each once."""
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, "must be a mapping")
        out: list[tuple[str, yaml.Node]] = []
        keys: set[str] = set()
        for key_node, value_node in node.value:
            key = self.scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str):
                raise self.fail(key_node, "mapping keys must be text")
            if key in keys:
                raise self.fail(key_node, f"{key!r} is given twice in one mapping")
            keys.add(key)
            out.append((key, value_node))
        return out

    def scalar(self, node: yaml.ScalarNode) -> Any:
        build = _SCALARS.get(node.tag)
        if build is None:
            raise self.fail(node, f"unsupported YAML tag {node.tag!r}")
        try:
            return node.value if build is str else build(node)
        except (ValueError, yaml.YAMLError) as error:
            raise self.fail(node, f"bad value {node.value!r}: {error}") from None


def parse_tasks_file(path: str, content: bytes) -> TasksFile:
    """Parse ``content`` (the bytes of file ``path``): structure, field names, keys; not the field values."""
    text = _decode(path, content)
    root = _compose(path, text)
    if root is None:
        raise TaskFileError(path, None, "is empty (expected a mapping with 'tasks:')")
    convert = _Converter(path)
    if isinstance(root, yaml.SequenceNode):  # a bare list of tasks
        convert.visit(root)
        top: dict[str, yaml.Node] = {"tasks": root}
    else:
        convert.visit(root)
        top = dict(convert.pairs(root))
    for name, node in top.items():
        if name not in TOP_LEVEL:
            raise convert.fail(
                node, f"unknown top-level field {name!r}{did_you_mean(name, frozenset(TOP_LEVEL))}"
            )
    version = convert.value(top["version"]) if "version" in top else FORMAT_VERSION
    if version != FORMAT_VERSION:
        raise convert.fail(top["version"], f"version must be {FORMAT_VERSION}, not {version!r}")
    source = convert.value(top["source"]) if "source" in top else None
    if source is not None and not isinstance(source, str):
        raise convert.fail(top["source"], "source must be text")
    defaults, default_lines = _defaults(convert, top.get("defaults"))
    tasks_node = top.get("tasks")
    if tasks_node is None:
        raise TaskFileError(path, None, "has no 'tasks:' list")
    if not isinstance(tasks_node, yaml.SequenceNode):
        raise convert.fail(tasks_node, "tasks must be a list")
    convert.visit(tasks_node)
    if len(tasks_node.value) > MAX_TASKS:
        raise convert.fail(tasks_node, f"has {len(tasks_node.value)} tasks (at most {MAX_TASKS})")
    tasks = [_task(convert, node, defaults, default_lines) for node in tasks_node.value]
    _check_unique_keys(path, tasks)
    return TasksFile(path=path, source=source, tasks=tasks)


def _defaults(convert: _Converter, node: yaml.Node | None) -> tuple[dict[str, Any], dict[str, int]]:
    if node is None:
        return {}, {}
    convert.visit(node)
    values: dict[str, Any] = {}
    lines: dict[str, int] = {}
    for name, child in convert.pairs(node):
        if name not in DEFAULT_FIELDS:
            hint = " (each task has its own)" if name in TASK_FIELDS else did_you_mean(name, DEFAULT_FIELDS)
            raise convert.fail(child, f"defaults: field {name!r} cannot be a default{hint}")
        values[name] = convert.value(child)
        lines |= _field_lines(convert, name, child)
    return values, lines


def _task(
    convert: _Converter, node: yaml.Node, defaults: Mapping[str, Any], default_lines: Mapping[str, int]
) -> FileTask:
    convert.visit(node)
    line = node.start_mark.line + 1
    own: dict[str, Any] = {}
    lines = dict(default_lines)
    for name, child in convert.pairs(node):
        if name not in TASK_FIELDS:
            raise convert.fail(child, f"unknown field {name!r}{did_you_mean(name, TASK_FIELDS)}")
        own[name] = convert.value(child)
        lines |= _field_lines(convert, name, child)
    fields = {**defaults, **own}
    if isinstance(defaults.get(ALERTS), dict) and isinstance(own.get(ALERTS), dict):
        fields[ALERTS] = {**defaults[ALERTS], **own[ALERTS]}  # a task's rules over the file's, per rule
    key = fields.pop("key", None)
    if key is None:
        key = fields.get("name")
    if not isinstance(key, str) or not key.strip() or len(key) > 200:
        field_name = "key" if "key" in own else "name"
        raise TaskFileError(
            convert.path,
            lines.get(field_name, line),
            f"invalid {field_name}: must be text of 1-200 characters (a task's key defaults to its name)",
        )
    return FileTask(key=key.strip(), fields=fields, line=line, lines=lines)


def _field_lines(convert: _Converter, name: str, node: yaml.Node) -> dict[str, int]:
    """The line of field ``name``, and of each rule when it is ``alerts`` (``alerts.late_ms``)."""
    lines = {name: node.start_mark.line + 1}
    if name == ALERTS and isinstance(node, yaml.MappingNode):
        lines |= {f"{name}.{rule}": child.start_mark.line + 1 for rule, child in convert.pairs(node)}
    return lines


def _check_unique_keys(path: str, tasks: list[FileTask]) -> None:
    first: dict[str, FileTask] = {}
    for task in tasks:
        other = first.setdefault(task.key, task)
        if other is not task:
            what = "key" if "key" in task.lines else "name (the key of a task without one)"
            raise TaskFileError(
                path, task.line_of("key"), f"{what} {task.key!r} is used twice (also on line {other.line})"
            )


# ------------------------------------------------------------------------------------------------ export

EXPORTED_FIELDS = (
    "name", "command", "schedule", "timezone", "data", "queue", "retries", "retry_delay_ms", "retry_backoff",
    "timeout_ms", "overlap_policy", "misfire_policy", "misfire_grace_ms", "auto_pause_after", "start_at",
    "end_at", "max_runs", "jitter_ms", "exclude", "only_in",
)  # fmt: skip


def export_document(
    tasks: Iterable[Task], *, source: str | None, rules: Mapping[int, Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """A tasks file document holding ``tasks``, every field spelled out (so the file does not depend on the
    settings' defaults); optional fields only when set; ``alerts``: a task's own alert rules in ``rules``
    (by task id), when it has any."""
    entries = []
    for task in tasks:
        values = task.to_json()
        entry: dict[str, Any] = {"key": task.key or task.name}
        entry |= {name: values[name] for name in EXPORTED_FIELDS if values[name] is not None}
        if task.schedules:  # several schedules: the list
            entry["schedule"] = list(task.schedules)
        own = (rules or {}).get(task.id)
        if own:
            entry[ALERTS] = dict(own)
        entries.append(entry)
    document: dict[str, Any] = {"version": FORMAT_VERSION}
    if source is not None:
        document["source"] = source
    document["tasks"] = entries
    return document


def dump_document(document: Mapping[str, Any], output_format: str) -> str:
    """``document`` as YAML (``yaml``) or JSON text, ready to save as a tasks file."""
    if output_format == "json":
        return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    dumper: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(document, Dumper=dumper, sort_keys=False, allow_unicode=True, width=1_000_000))
