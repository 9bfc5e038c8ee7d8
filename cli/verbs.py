"""Where each verb is defined, and a command mapping that imports a verb's module only when it is looked up.

``systemprompt scheduler:list`` then imports ``cli.tasks`` alone, not the engine, admin and operations verbs
(their click options and their imports); ``--help`` and shell completion look every verb up, as before.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping

import click

# verb -> "module:attribute" of its click command. tests/unit/test_cli_verbs.py keeps it equal to the modules'
# own lists (TASK_COMMANDS, ...), which cli.docgen documents.
VERBS: dict[str, str] = {
    "list": "cli.tasks:list_tasks",
    "create": "cli.tasks:create",
    "update": "cli.tasks:update",
    "delete": "cli.tasks:delete",
    "pause": "cli.tasks:pause",
    "resume": "cli.tasks:resume",
    "skip": "cli.backfills:skip",
    "backfill": "cli.backfills:backfill",
    "backfills": "cli.backfills:backfills",
    "plan": "cli.task_files:plan",
    "apply": "cli.task_files:apply",
    "export": "cli.task_files:export",
    "versions": "cli.task_files:versions",
    "diff": "cli.task_files:diff",
    "rollback": "cli.task_files:rollback",
    "history": "cli.reports:history",
    "logs": "cli.reports:logs",
    "stats": "cli.reports:stats",
    "audit": "cli.reports:audit",
    "next": "cli.reports:next_runs",
    "validate": "cli.reports:validate",
    "calendar": "cli.calendars:calendar",
    "commands": "cli.admin:commands",
    "config": "cli.admin:config",
    "migrate": "cli.admin:migrate",
    "run": "cli.engine:run",
    "planner": "cli.engine:planner",
    "worker": "cli.engine:worker",
    "serve": "cli.engine:serve",
    "cleanup": "cli.engine:cleanup",
    "events": "cli.engine:events",
    "alerts": "cli.alerts:alerts",
    "silence": "cli.alerts:silence",
    "silences": "cli.alerts:silences",
    "alert-test": "cli.alerts:alert_test",
    "health": "cli.operations:health",
    "flower": "cli.operations:flower",
    "web": "cli.operations:web_console",
}


def import_verb(verb: str) -> click.Command:
    """The click command of ``verb``, importing its module."""
    module, _, attribute = VERBS[verb].partition(":")
    command = getattr(importlib.import_module(module), attribute)
    assert isinstance(command, click.Command), VERBS[verb]
    return command


class LazyCommands(MutableMapping[str, click.Command]):
    """A group's commands by name: ``lazy`` names (name -> verb) are loaded by ``load`` on first lookup;
    commands added to the group are kept as they are. Iteration lists every name without loading any."""

    def __init__(self, lazy: Mapping[str, str], load: Callable[[str], click.Command]) -> None:
        self._lazy = dict(lazy)
        self._load = load
        self._loaded: dict[str, click.Command] = {}

    def __getitem__(self, name: str) -> click.Command:
        if name not in self._loaded:
            if name not in self._lazy:
                raise KeyError(name)
            self._loaded[name] = self._load(self._lazy[name])
        return self._loaded[name]

    def __setitem__(self, name: str, command: click.Command) -> None:
        self._lazy.pop(name, None)
        self._loaded[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._lazy and name not in self._loaded:
            raise KeyError(name)
        self._lazy.pop(name, None)
        self._loaded.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        yield from self._loaded
        yield from (name for name in self._lazy if name not in self._loaded)

    def __len__(self) -> int:
        return len(self._loaded.keys() | self._lazy.keys())

    def __contains__(self, name: object) -> bool:
        return name in self._loaded or name in self._lazy
