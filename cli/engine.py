"""Engine verbs (run, planner, worker, serve, cleanup, events); filled in by the execution engine."""

from __future__ import annotations

import click

ENGINE_COMMANDS: list[click.Command] = []
