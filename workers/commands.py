"""The command registry: what a task's ``command`` may name (invariant 7, "no shell, ever").

A command is a *name* in the registry, never a command line. There are two kinds:

- **python**: a registered callable taking a :class:`CommandContext` and returning a JSON-serialisable result.
  Application code registers with the :func:`command` decorator; packages add commands through the
  ``systemprompt.commands`` entry-point group; the built-ins live in :mod:`workers.builtins`.
- **external**: an argv list declared under ``commands:`` in ``module.yaml``. ``{key}`` placeholders are
  filled from the task's ``data``; a placeholder fills part or all of *one* argv element and never splits into
  several, and no shell ever sees the result, so ``$(...)``, ``;`` or spaces in data are inert characters.
  ``{{`` and ``}}`` stand for literal braces; any other brace is an error when the command is declared. The
  executable (``argv[0]``) cannot contain a placeholder: data never chooses the program.

Command names match ``^[a-z][a-z0-9_-]*(:[a-z0-9_-]+)*$`` (``backup:run``, ``system:health``), at most 200
characters. Registering a bad name raises :class:`~scheduler.errors.InvalidField` (field ``command``); looking
up an unregistered one raises :class:`~scheduler.errors.UnknownCommand`.

This module imports neither Celery nor SQLAlchemy.
"""

from __future__ import annotations

import functools
import importlib.metadata
import logging
import re
import shlex
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from scheduler.errors import ConfigError, InvalidField, UnknownCommand

if TYPE_CHECKING:
    from scheduler.settings import Settings

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "CommandContext",
    "CommandRegistry",
    "CommandSpec",
    "PythonCommand",
    "command",
    "load_registry",
    "placeholders",
    "render_argv",
    "validate_name",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "systemprompt.commands"
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_-]*(?::[a-z0-9_-]+)*")
MAX_NAME_LENGTH = 200
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a command receives. ``execution_id`` is the idempotency key for side effects (delivery is
    at-least-once); ``deadline`` is the :func:`time.monotonic` value of the soft time limit, or ``None``."""

    execution_id: int
    task_id: int | None
    task_name: str
    attempt: int
    data: Mapping[str, Any]
    log: Callable[[str, str], None]  # log(level, message); level in DEBUG/INFO/WARNING/ERROR
    deadline: float | None


PythonCommand = Callable[[CommandContext], Any]
_F = TypeVar("_F", bound=PythonCommand)


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One registered command: ``func`` is set for ``python`` commands, ``argv`` (a template) for external."""

    name: str
    kind: Literal["python", "external"]
    description: str
    func: PythonCommand | None = None
    argv: tuple[str, ...] | None = None


# --------------------------------------------------------------------------------------------------- names


def validate_name(name: object) -> str:
    """Return ``name`` if it is a valid command name, else raise :class:`InvalidField` (field ``command``)."""
    if not isinstance(name, str):
        raise InvalidField("command", f"a command name must be a string, not {type(name).__name__}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidField(
            "command", f"command name is {len(name)} characters long (at most {MAX_NAME_LENGTH})"
        )
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidField(
            "command",
            f"{name!r} is not a command name (lower-case words joined by ':', e.g. 'backup:run')",
        )
    return name


def _first_doc_line(obj: object) -> str:
    doc = getattr(obj, "__doc__", None)
    if not isinstance(doc, str) or not doc.strip():
        return ""
    return doc.strip().splitlines()[0].strip()


# ---------------------------------------------------------------------------------------------- templates

_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_-]*)\}|[{}]")


@functools.lru_cache(maxsize=1024)
def _parse(element: str) -> tuple[str | tuple[str], ...]:
    """Split an argv element into literal strings and ``(key,)`` placeholders; ValueError on a stray brace."""
    parts: list[str | tuple[str]] = []
    literal: list[str] = []
    position = 0
    for match in _TOKEN.finditer(element):
        literal.append(element[position : match.start()])
        position = match.end()
        token = match.group(0)
        if token in ("{{", "}}"):
            literal.append(token[0])
        elif match.group(1) is not None:
            parts.append("".join(literal))
            literal.clear()
            parts.append((match.group(1),))
        else:
            raise ValueError(
                f"stray {token!r} at offset {match.start()} in {element!r} "
                "(placeholders are {key}; write {{ or }} for a literal brace)"
            )
    literal.append(element[position:])
    parts.append("".join(literal))
    return tuple(part for part in parts if part != "")


def _check_template(name: str, argv: Sequence[str]) -> tuple[str, ...]:
    if isinstance(argv, str) or not isinstance(argv, Sequence):
        raise InvalidField("command", f"the argv of {name!r} must be a list of strings, not a single string")
    if not argv:
        raise InvalidField("command", f"the argv of {name!r} is empty")
    for index, element in enumerate(argv):
        if not isinstance(element, str):
            raise InvalidField(
                "command", f"argv[{index}] of {name!r} must be a string, not {type(element).__name__}"
            )
        if "\x00" in element:
            raise InvalidField("command", f"argv[{index}] of {name!r} contains a NUL character")
        try:
            parts = _parse(element)
        except ValueError as error:
            raise InvalidField("command", f"argv[{index}] of {name!r}: {error}") from None
        if index == 0 and (not element or any(isinstance(part, tuple) for part in parts)):
            raise InvalidField(
                "command", f"the executable (argv[0]) of {name!r} must be a fixed, non-empty string"
            )
    return tuple(argv)


def placeholders(spec: CommandSpec) -> set[str]:
    """The ``data`` keys an external command's argv needs (empty for python commands)."""
    if spec.argv is None:
        return set()
    return {part[0] for element in spec.argv for part in _parse(element) if isinstance(part, tuple)}


def _render_value(spec: CommandSpec, key: str, value: object) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        kind = "null" if value is None else type(value).__name__
        raise InvalidField(
            "data", f"key {key!r} for command {spec.name!r} must be a string, number or boolean, not {kind}"
        )
    if "\x00" in text:
        raise InvalidField("data", f"key {key!r} for command {spec.name!r} contains a NUL character")
    return text


def render_argv(spec: CommandSpec, data: Mapping[str, Any]) -> list[str]:
    """The argv of an external command with its placeholders filled from ``data``.

    Each element of the template yields exactly one argument. Values are strings, numbers or booleans
    (``true``/``false``); a missing key or another type raises :class:`InvalidField` (field ``data``).
    """
    if spec.kind != "external" or spec.argv is None:
        raise InvalidField("command", f"{spec.name!r} is not an external command")
    argv: list[str] = []
    for element in spec.argv:
        pieces: list[str] = []
        for part in _parse(element):
            if isinstance(part, str):
                pieces.append(part)
                continue
            key = part[0]
            if key not in data:
                raise InvalidField("data", f"missing key {key!r} for command {spec.name!r}")
            pieces.append(_render_value(spec, key, data[key]))
        argv.append("".join(pieces))
    return argv


# ----------------------------------------------------------------------------------------------- registry


def _redefined(a: object, b: object) -> bool:
    """True for the same object, or the same module-level function defined again (its module re-imported or
    reloaded). Lambdas and nested functions only match themselves."""
    if a is b:
        return True
    module, qualname = getattr(a, "__module__", None), getattr(a, "__qualname__", None)
    return (
        isinstance(module, str)
        and isinstance(qualname, str)
        and "<" not in qualname
        and module == getattr(b, "__module__", None)
        and qualname == getattr(b, "__qualname__", None)
    )


class CommandRegistry:
    """Names to :class:`CommandSpec`. Registering a name twice is a no-op for the same command and an
    :class:`InvalidField` error for a different one. ``worker``: the worker whose registry it is, named by a
    failed lookup."""

    def __init__(self, worker: str | None = None) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self.worker = worker

    def register(self, name: str, func: PythonCommand, description: str = "") -> None:
        """Register a python command; ``description`` defaults to the first line of its docstring."""
        validate_name(name)
        if not callable(func):
            raise InvalidField(
                "command", f"{name!r} must be registered with a callable, not {type(func).__name__}"
            )
        existing = self._specs.get(name)
        if existing is not None:
            if existing.kind == "python" and existing.func is func:
                return
            raise InvalidField("command", f"{name!r} is already registered ({self._origin(existing)})")
        self._specs[name] = CommandSpec(
            name=name, kind="python", description=description or _first_doc_line(func), func=func
        )

    def add_external(self, name: str, argv: Sequence[str], description: str = "") -> None:
        """Register an external program by its argv template (see the module docstring for placeholders)."""
        validate_name(name)
        template = _check_template(name, argv)
        existing = self._specs.get(name)
        if existing is not None:
            if existing.kind == "external" and existing.argv == template:
                return
            raise InvalidField("command", f"{name!r} is already registered ({self._origin(existing)})")
        self._specs[name] = CommandSpec(
            name=name,
            kind="external",
            description=description or f"runs {shlex.join(template)}",
            argv=template,
        )

    def get(self, name: str) -> CommandSpec:
        """The spec of ``name``; :class:`UnknownCommand` if it is not registered."""
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise UnknownCommand(str(name), worker=self.worker)
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def specs(self) -> list[CommandSpec]:
        """Every command, sorted by name."""
        return [self._specs[name] for name in sorted(self._specs)]

    @staticmethod
    def _origin(spec: CommandSpec) -> str:
        if spec.kind == "external":
            return f"as external {shlex.join(spec.argv or ())}"
        module = getattr(spec.func, "__module__", "?")
        qualname = getattr(spec.func, "__qualname__", repr(spec.func))
        return f"as {module}.{qualname}"


# -------------------------------------------------------------------------------------- decorated commands


@dataclass(frozen=True, slots=True)
class _Decorated:
    func: PythonCommand
    description: str
    plugin: str | None  # the entry point whose import registered it, if any


_DECORATED: dict[str, _Decorated] = {}
_loading_plugin: str | None = None


def command(name: str, description: str = "") -> Callable[[_F], _F]:
    """Decorator: register the function as python command ``name`` (collected by :func:`load_registry`).

    ``@command("backup:run")`` on ``def run(ctx: CommandContext) -> dict[str, Any]``. The name is validated at
    decoration time; decorating a different function with a name already taken raises :class:`InvalidField`
    (re-importing or reloading the same module is fine).
    """
    validate_name(name)

    def decorate(func: _F) -> _F:
        if not callable(func):
            raise InvalidField("command", f"@command({name!r}) must decorate a callable")
        existing = _DECORATED.get(name)
        if existing is not None and not _redefined(existing.func, func):
            raise InvalidField(
                "command",
                f"{name!r} is already registered as "
                f"{getattr(existing.func, '__module__', '?')}.{getattr(existing.func, '__qualname__', '?')}",
            )
        _DECORATED[name] = _Decorated(func, description or _first_doc_line(func), _loading_plugin)
        return func

    return decorate


def _load_plugins() -> list[tuple[str, str, PythonCommand]]:
    """Load every entry point of the group; return (plugin label, name, callable) for callable entry points.

    A module entry point registers its commands with :func:`command` when imported. A plugin that fails to
    load is logged and skipped, and whatever it had decorated before failing is dropped.
    """
    global _loading_plugin
    try:
        entry_points = list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
    except Exception as error:  # a corrupt installed distribution must not stop the worker
        logger.warning("cannot list %s entry points: %s", ENTRY_POINT_GROUP, error)
        return []
    callables: list[tuple[str, str, PythonCommand]] = []
    seen: set[tuple[str, str]] = set()
    for entry_point in sorted(entry_points, key=lambda ep: (ep.name, ep.value)):
        if (entry_point.name, entry_point.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((entry_point.name, entry_point.value))
        label = f"{entry_point.name} = {entry_point.value}"
        before = dict(_DECORATED)
        _loading_plugin = label
        try:
            loaded = entry_point.load()
        except Exception as error:
            _DECORATED.clear()
            _DECORATED.update(before)
            logger.warning(
                "skipping command plugin %r (%s): %s: %s",
                entry_point.name,
                entry_point.value,
                type(error).__name__,
                error,
            )
            continue
        finally:
            _loading_plugin = None
        if isinstance(loaded, types.ModuleType):
            continue
        if not callable(loaded):
            logger.warning(
                "skipping command plugin %r (%s): not a module or callable",
                entry_point.name,
                entry_point.value,
            )
            continue
        if any(item.func is loaded for item in _DECORATED.values()):
            continue  # a @command-decorated function: registered under its decorated name
        callables.append((label, entry_point.name, loaded))
    return callables


def load_registry(
    settings: Settings,
    extra: Mapping[str, tuple[PythonCommand, str]] | None = None,
    *,
    worker: str | None = None,
) -> CommandRegistry:
    """Build the registry a worker, planner or CLI uses.

    In order (the first registration of a name wins, later clashes are errors or skipped as noted):

    1. the test helpers of :mod:`workers.builtins` (``test:echo``, ``test:sleep``, ``test:fail``);
    2. ``extra``: name -> (callable, description). The runtime built-ins ``system:health`` and
       ``scheduler:cleanup`` need the database and broker, so whoever owns those passes them here
       (:func:`workers.builtins.runtime_commands` builds the mapping with their names and descriptions);
    3. entry points of the ``systemprompt.commands`` group: each loads a module (whose ``@command`` functions
       register themselves) or a callable (registered under the entry point's name). A plugin that fails to
       import, names a bad command, or clashes with an existing name is logged as a warning and skipped;
    4. every ``@command``-decorated function imported so far (a clash with 1-2 raises :class:`InvalidField`);
    5. ``settings.commands``, the external argv lists of ``module.yaml``; a bad one raises
       :class:`~scheduler.errors.ConfigError` naming the command.

    ``worker``: the node name of the worker it is for (see :class:`CommandRegistry`).
    """
    from workers.builtins import register_builtins

    registry = CommandRegistry(worker)
    register_builtins(registry)
    for name, (func, description) in (extra or {}).items():
        registry.register(name, func, description)

    plugin_callables = _load_plugins()
    for name, item in sorted(_DECORATED.items()):
        try:
            registry.register(name, item.func, item.description)
        except InvalidField as error:
            if item.plugin is None:
                raise
            logger.warning("skipping command %r of plugin %r: %s", name, item.plugin, error)
    for label, name, func in plugin_callables:
        try:
            registry.register(name, func)
        except InvalidField as error:
            logger.warning("skipping command plugin %r: %s", label, error)

    for name, argv in settings.commands.items():
        try:
            registry.add_external(name, argv)
        except InvalidField as error:
            raise ConfigError(f"invalid setting commands.{name}: {error.reason}") from None
    return registry
