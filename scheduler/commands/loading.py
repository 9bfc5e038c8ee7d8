"""Build a command registry from everything that defines commands: :func:`load_registry`.

The CLI, the service and every worker process build theirs with it, so they agree on what a task may name.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from scheduler.commands.builtins import RuntimeCommands, register_builtins
from scheduler.commands.registry import CommandRegistry, PythonCommand, register_plugins
from scheduler.errors import ConfigError, InvalidField

if TYPE_CHECKING:
    from scheduler.settings import Settings

__all__ = ["load_registry"]


def _commands_source(settings: Settings) -> str:
    """Where ``settings.commands`` came from, for an error message: the config file (an absolute path) or the
    variable that :func:`~scheduler.settings.load_settings` read them from in this process, when they are
    these commands; else ``the settings``."""
    from scheduler.settings import load_settings

    try:
        loaded = load_settings()
    except ConfigError:
        return "the settings"
    source = loaded.sources["commands"]
    if loaded.settings.commands != settings.commands or source == "default":
        return "the settings"
    return source if source.startswith("env ") else str(Path(source).resolve())


def load_registry(
    settings: Settings,
    extra: Mapping[str, tuple[PythonCommand, str]] | None = None,
    *,
    runtime: RuntimeCommands | None = None,
    worker: str | None = None,
) -> CommandRegistry:
    """Build the command registry. In order:

    1. the built-ins of :mod:`scheduler.commands.builtins`: the test helpers, and ``system:health`` and
       ``scheduler:cleanup``, which run on ``runtime``: a worker passes itself, the CLI a
       :class:`~scheduler.commands.builtins.DeferredRuntime` of a worker runtime; without one (the service,
       which validates tasks but runs no command) they are known and fail when called;
    2. ``extra``: name -> (callable, description), for a program that embeds the scheduler;
    3. entry points of the ``systemprompt.commands`` group and ``@command``-decorated functions
       (:func:`~scheduler.commands.registry.register_plugins`);
    4. ``settings.commands``, the external argv lists of ``module.yaml``; a bad one raises
       :class:`~scheduler.errors.ConfigError` naming the key.

    A name given by two of these (or by two entry points) raises :class:`~scheduler.errors.CommandCollision`
    naming both: the built-in, the entry point and its distribution, the file and key.

    ``worker``: the node name of the worker it is for (see :class:`CommandRegistry`).
    """
    registry = CommandRegistry(worker)
    register_builtins(registry, runtime)
    for name, (func, description) in (extra or {}).items():
        registry.register(name, func, description)
    register_plugins(registry)

    source = _commands_source(settings) if settings.commands else ""
    for name, argv in settings.commands.items():
        try:
            registry.add_external(name, argv, origin=f"by {source} (key commands.{name})")
        except InvalidField as error:
            raise ConfigError(f"invalid setting commands.{name}: {error.reason}") from None
    return registry
