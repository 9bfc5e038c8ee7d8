"""``backup:database`` and ``migrate:run``: harmless commands that show what a command receives and returns.

Each is a function of a :class:`~scheduler.commands.CommandContext`: ``ctx.data`` is the task's data,
``ctx.log(level, message)`` writes a line to the execution's log (``scheduler:logs``), ``ctx.execution_id``
identifies this execution (a redelivered execution keeps its id), and the JSON-serialisable return value is
the execution's result (``scheduler:history``). Raising an exception fails the attempt; the task's retries
apply.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from scheduler.commands import CommandContext, command

BACKUP_DIR_ENV = "BACKUP_DIR"
BACKUP_TYPES = ("full", "incremental")
MIGRATION_STEPS = ("create table archive", "copy rows older than 90 days", "drop the copied rows")


@command("backup:database")
def backup_database(ctx: CommandContext) -> dict[str, Any]:
    """Write a backup manifest of data.type (full or incremental) under $BACKUP_DIR (default ./backups)."""
    kind = ctx.data.get("type", "full")
    if kind not in BACKUP_TYPES:
        raise ValueError(f"data.type must be one of {', '.join(BACKUP_TYPES)}, not {kind!r}")
    directory = Path(os.environ.get(BACKUP_DIR_ENV, "backups")).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    # Named by the execution id: an execution delivered twice rewrites its own file, it never adds a second.
    target = directory / f"backup-{ctx.execution_id}-{kind}.json"
    ctx.log("INFO", f"writing a {kind} backup of task {ctx.task_name!r} to {target}")
    manifest = {"type": kind, "execution_id": ctx.execution_id, "task": ctx.task_name, "attempt": ctx.attempt}
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(manifest), encoding="utf-8")
    partial.replace(target)  # all or nothing: a killed worker leaves no half-written backup under its name
    return {"file": str(target), "type": kind}


@command("migrate:run")
def migrate_run(ctx: CommandContext) -> dict[str, Any]:
    """Walk through the example migration's steps, logging each; data.dry_run=true says so in the log."""
    dry_run = bool(ctx.data.get("dry_run", False))
    for number, step in enumerate(MIGRATION_STEPS, start=1):
        suffix = " (dry run)" if dry_run else ""
        ctx.log("INFO", f"step {number}/{len(MIGRATION_STEPS)}: {step}{suffix}")
    return {"steps": len(MIGRATION_STEPS), "dry_run": dry_run}
