"""The command registry: what a task's ``command`` may name ("no shell, ever":
invariant 7 of docs/architecture.md).

A command is a *name* in the registry, never a command line. There are two kinds:

- **python**: a registered callable taking a :class:`CommandContext` and returning a JSON-serialisable result.
  Application code registers with the :func:`command` decorator; packages add commands through the
  ``systemprompt.commands`` entry-point group; the built-ins live in :mod:`scheduler.commands.builtins`;
  :func:`scheduler.commands.loading.load_registry` gathers them all.
- **external**: an argv list declared under ``commands:`` in ``module.yaml``. ``{key}`` placeholders are
  filled from the task's ``data``; a placeholder fills part or all of *one* argv element and never splits into
  several, and no shell ever sees the result, so ``$(...)``, ``;`` or spaces in data are inert characters.
  ``{{`` and ``}}`` stand for literal braces; any other brace is an error when the command is declared. The
  executable (``argv[0]``) cannot contain a placeholder: data never chooses the program.

Command names match ``^[a-z][a-z0-9_-]*(:[a-z0-9_-]+)*$`` (``backup:run``, ``system:health``), at most 200
characters. Registering a bad name raises :class:`~scheduler.errors.InvalidField` (field ``command``); a name
defined twice (a built-in, an entry point, a ``module.yaml`` key) raises
:class:`~scheduler.errors.CommandCollision` when the registry loads; looking up an unregistered one raises
:class:`~scheduler.errors.UnknownCommand`, which suggests the closest registered name.

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
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from scheduler.errors import CommandCollision, InvalidField, UnknownCommand

__all__ = [
    "ENTRY_POINT_GROUP",
    "MAX_NAME_LENGTH",
    "NAME_PATTERN",
    "CommandContext",
    "CommandRegistry",
    "CommandSpec",
    "PythonCommand",
    "command",
    "placeholders",
    "register_plugins",
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
    """One registered command: ``func`` is set for ``python`` commands, ``argv`` (a template) for external.
    ``origin`` says where it was defined (``as a built-in ...``, ``by <entry point>``, ``by <file> (key)``).
    """

    name: str
    kind: Literal["python", "external"]
    description: str
    func: PythonCommand | None = None
    argv: tuple[str, ...] | None = None
    origin: str = field(default="", compare=False)  # where it was defined, as a collision names it


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


def _function_origin(func: object) -> str:
    return f"by {getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', repr(func))}"


class CommandRegistry:
    """Names to :class:`CommandSpec`. Registering a name again is a no-op for the same command; a different
    one raises :class:`~scheduler.errors.CommandCollision` naming where each was defined (``origin``).
    ``worker``: the worker whose registry it is, named by a failed lookup."""

    def __init__(self, worker: str | None = None) -> None:
        self._specs: dict[str, CommandSpec] = {}
        self.worker = worker

    def register(
        self, name: str, func: PythonCommand, description: str = "", *, origin: str | None = None
    ) -> None:
        """Register a python command; ``description`` defaults to the first line of its docstring, ``origin``
        (how a collision names it, e.g. ``by an entry point ...``) to the function's dotted name."""
        validate_name(name)
        if not callable(func):
            raise InvalidField(
                "command", f"{name!r} must be registered with a callable, not {type(func).__name__}"
            )
        spec = CommandSpec(
            name=name,
            kind="python",
            description=description or _first_doc_line(func),
            func=func,
            origin=origin or _function_origin(func),
        )
        self._add(spec, lambda existing: existing.kind == "python" and _redefined(existing.func, func))

    def add_external(
        self, name: str, argv: Sequence[str], description: str = "", *, origin: str | None = None
    ) -> None:
        """Register an external program by its argv template (see the module docstring for placeholders)."""
        validate_name(name)
        template = _check_template(name, argv)
        spec = CommandSpec(
            name=name,
            kind="external",
            description=description or f"runs {shlex.join(template)}",
            argv=template,
            origin=origin or f"as external {shlex.join(template)}",
        )
        self._add(spec, lambda existing: existing.kind == "external" and existing.argv == template)

    def _add(self, spec: CommandSpec, same: Callable[[CommandSpec], bool]) -> None:
        existing = self._specs.get(spec.name)
        if existing is None:
            self._specs[spec.name] = spec
        elif not same(existing):
            raise CommandCollision(spec.name, existing.origin, spec.origin)

    def get(self, name: str) -> CommandSpec:
        """The spec of ``name``; :class:`UnknownCommand` (naming the closest registered one) if none."""
        spec = self._specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise UnknownCommand(str(name), self._specs, worker=self.worker)
        return spec

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._specs

    def __len__(self) -> int:
        return len(self._specs)

    def specs(self) -> list[CommandSpec]:
        """Every command, sorted by name."""
        return [self._specs[name] for name in sorted(self._specs)]


# -------------------------------------------------------------------------------------- decorated commands


@dataclass(frozen=True, slots=True)
class _Decorated:
    func: PythonCommand
    description: str
    origin: str  # the function, and the entry point whose import decorated it, if any


_DECORATED: dict[str, _Decorated] = {}
_loading_plugin: str | None = None


def command(name: str, description: str = "") -> Callable[[_F], _F]:
    """Decorator: register the function as python command ``name`` (collected by :func:`register_plugins`).

    ``@command("backup:run")`` on ``def run(ctx: CommandContext) -> dict[str, Any]``. The name is validated at
    decoration time; decorating a different function with a name already taken raises
    :class:`~scheduler.errors.CommandCollision` (re-importing or reloading the same module is fine).
    """
    validate_name(name)

    def decorate(func: _F) -> _F:
        if not callable(func):
            raise InvalidField("command", f"@command({name!r}) must decorate a callable")
        origin = _function_origin(func) + (f" ({_loading_plugin})" if _loading_plugin else "")
        existing = _DECORATED.get(name)
        if existing is not None and not _redefined(existing.func, func):
            raise CommandCollision(name, existing.origin, origin)
        _DECORATED[name] = _Decorated(func, description or _first_doc_line(func), origin)
        return func

    return decorate


def _entry_point_label(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = entry_point.dist
    of = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point '{entry_point.name} = {entry_point.value}'{of}"


def _declares_group(group: str) -> bool:
    """Whether an installed distribution's ``entry_points.txt`` has a ``[group]`` section: a necessary
    condition for ``importlib.metadata.entry_points(group=group)`` to find any. Reading the files is a third
    of that call, which also parses and groups every entry point of every distribution (~3 ms of every CLI
    start): without a plugin installed, the scan stops here."""
    header = f"[{group}]"
    return any(
        header in (dist.read_text("entry_points.txt") or "") for dist in importlib.metadata.distributions()
    )


def _load_plugins() -> list[tuple[str, str, PythonCommand]]:
    """Load every entry point of the group; return (plugin label, name, callable) for callable entry points.

    A module entry point registers its commands with :func:`command` when imported. A plugin that fails to
    import is logged and skipped, and whatever it had decorated before failing is dropped; one whose
    ``@command`` takes a name already decorated raises :class:`~scheduler.errors.CommandCollision`.
    """
    global _loading_plugin
    try:
        entry_points = (
            list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))
            if _declares_group(ENTRY_POINT_GROUP)
            else []
        )
    except Exception as error:  # a corrupt installed distribution must not stop the worker
        logger.warning("cannot list %s entry points: %s", ENTRY_POINT_GROUP, error)
        return []
    callables: list[tuple[str, str, PythonCommand]] = []
    seen: set[tuple[str, str]] = set()
    for entry_point in sorted(entry_points, key=lambda ep: (ep.name, ep.value)):
        if (entry_point.name, entry_point.value) in seen:  # the same distribution found twice on sys.path
            continue
        seen.add((entry_point.name, entry_point.value))
        label = _entry_point_label(entry_point)
        before = dict(_DECORATED)
        _loading_plugin = label
        try:
            loaded = entry_point.load()
        except CommandCollision:
            raise
        except Exception as error:
            _DECORATED.clear()
            _DECORATED.update(before)
            logger.warning("skipping command plugin %s: %s: %s", label, type(error).__name__, error)
            continue
        finally:
            _loading_plugin = None
        if isinstance(loaded, types.ModuleType):
            continue
        if not callable(loaded):
            logger.warning("skipping command plugin %s: not a module or callable", label)
            continue
        if any(item.func is loaded for item in _DECORATED.values()):
            continue  # a @command-decorated function: registered under its decorated name
        callables.append((f"by {label}", entry_point.name, loaded))
    return callables


def register_plugins(registry: CommandRegistry) -> None:
    """Register the commands of the ``systemprompt.commands`` entry points and every ``@command`` function.

    Each entry point loads a module (whose ``@command`` functions register themselves) or a callable
    (registered under the entry point's name); a plugin that fails to import, or whose entry point name is
    not a command name, is logged as a warning and skipped. Then every ``@command``-decorated function
    imported so far is registered, then the callables.
    """
    plugin_callables = _load_plugins()
    for name, item in sorted(_DECORATED.items()):
        registry.register(name, item.func, item.description, origin=item.origin)
    for origin, name, func in plugin_callables:
        try:
            registry.register(name, func, origin=origin)
        except InvalidField as error:
            logger.warning("skipping command plugin %s: %s", origin.removeprefix("by "), error)
