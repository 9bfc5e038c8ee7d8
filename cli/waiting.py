"""How ``scheduler:run --wait`` waits for the execution it published, and what it tells a person meanwhile.

- **Progress** (stderr, only when stderr is a terminal and the format is ``table``): one line per change,
  ``queued`` -> ``running on <worker>`` -> ``retrying`` -> the outcome. Piped or ``--format json``, nothing
  but the warnings below is added, so the output stays what scripts parse.
- **Nobody to run it**: while the execution waits, the workers are asked once (the discovery of
  ``scheduler:health``, :func:`workers.health.discover_workers`, on every broker including
  the embedded
  one); when no live worker consumes its queue, or none there has its command, one ``warning:`` line says so
  (always, on stderr) and the wait goes on: a worker started meanwhile still runs it (in the second case
  one of those workers may take it first and fail it, and the warning says so).
- **Ctrl-C** stops the wait, not the execution: one line says it stays queued (or running) and will still run;
  exit 130.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import click

from cli.cells import human_ms, human_time
from cli.render import render_one

if TYPE_CHECKING:
    from scheduler.records import Execution, LogLine
    from scheduler.service import SchedulerService
    from scheduler.settings import Settings
    from workers.health import LiveWorker

POLL_S = 0.25
INTERRUPTED_EXIT = 130  # the shell's code for a command ended by Ctrl-C (SIGINT)


def _print_log_line(line: LogLine, output_format: str) -> None:
    if output_format == "json":
        click.echo(json.dumps(line.to_json(), ensure_ascii=False))
    else:
        click.echo(f"{human_time(line.at)} [attempt {line.attempt}] {line.level:<7} {line.message}")


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0] if (text or "").strip() else ""


def progress_line(execution: Execution) -> str:
    """What a person reads when ``execution`` reaches its current status."""
    head = f"execution {execution.id} ({execution.task_name})"
    attempt = f"attempt {execution.attempt}/{execution.max_attempts}"
    status = execution.status
    if status in ("pending", "queued"):
        return f"{head} {status} on queue {execution.queue!r}"
    if status == "running":
        return f"{head} running on {execution.worker or 'a worker'} ({attempt})"
    if status == "retrying":
        return f"{head} retrying after {attempt} failed: {_first_line(execution.error)}"
    took = "" if execution.duration_ms is None else f" in {human_ms(execution.duration_ms)}"
    error = _first_line(execution.error)
    return f"{head} {status}{took}" + (f": {error}" if error and status != "completed" else "")


class _Discovery:
    """Asks the workers once, in a background thread (the request waits its whole timeout for replies)."""

    def __init__(self, settings: Settings) -> None:
        self.live: list[LiveWorker] | None = None
        self._thread = threading.Thread(target=self._ask, args=(settings,), daemon=True, name="discovery")
        self._thread.start()

    def _ask(self, settings: Settings) -> None:
        from workers.app import create_app
        from workers.health import discover_workers

        try:
            self.live = discover_workers(create_app(settings))
        except Exception:  # a broker that stopped answering: the wait itself goes on
            self.live = None

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()


def nobody_warning(live: Sequence[LiveWorker] | None, execution: Execution) -> str | None:
    """The warning of ``run --wait`` when none of the ``live`` workers (None: not known) will run
    ``execution``, or None."""
    from workers.health import coverage_warning

    if live is None:
        return None
    problem = coverage_warning(live, execution.queue, execution.command)
    if problem is None:
        return None
    if any(execution.queue in worker.queues for worker in live):  # they lack the command: one takes it
        return f"{problem}; execution {execution.id} fails when one of them takes it"
    return f"{problem}; execution {execution.id} stays {execution.status} until a worker that can run it does"


def wait_and_report(
    service: SchedulerService,
    settings: Settings,
    execution: Execution,
    *,
    timeout_s: float | None,
    follow: bool,
    output_format: str,
) -> int:
    """Wait for ``execution`` (published) to finish, print it, and return the exit code of ``run --wait``."""
    from scheduler.records import FINISHED_STATUSES

    show_progress = output_format == "table" and sys.stderr.isatty()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    discovery = _Discovery(settings)
    warned = False
    shown_lines = 0
    last_seen: tuple[str, int] | None = None
    if show_progress:
        # How it was published (queued; pending when the broker refused it), even when a warm worker started
        # it before run_task_now read it back.
        published = execution if execution.status == "pending" else replace(execution, status="queued")
        click.echo(progress_line(published), err=True)
        last_seen = (published.status, published.attempt)
    ran = False
    try:
        while True:
            execution = service.get_execution(execution.id)  # status first: its logs are committed with it
            if follow:
                lines = service.logs(execution.id)
                for line in lines[shown_lines:]:
                    _print_log_line(line, output_format)
                shown_lines = len(lines)
            if show_progress and (execution.status, execution.attempt) != last_seen:
                if execution.status in FINISHED_STATUSES and execution.started_at and not ran:
                    # It ran between two polls: say where, as if the running state had been seen.
                    click.echo(progress_line(replace(execution, status="running")), err=True)
                click.echo(progress_line(execution), err=True)
            last_seen = (execution.status, execution.attempt)
            ran = ran or execution.status == "running"
            if execution.status in FINISHED_STATUSES:
                break
            if not warned and discovery.done and execution.status in ("pending", "queued"):
                warned = True
                warning = nobody_warning(discovery.live, execution)
                if warning is not None:
                    click.echo(f"warning: {warning}", err=True)
            if deadline is not None and time.monotonic() >= deadline:
                break
            time.sleep(POLL_S)
    except KeyboardInterrupt:
        click.echo(_interrupted_line(execution), err=True)
        return INTERRUPTED_EXIT
    render_one(execution, output_format)
    if execution.status not in FINISHED_STATUSES:
        click.echo(
            f"error: execution {execution.id} is still {execution.status} after {timeout_s:g} s", err=True
        )
        return 1
    if execution.status != "completed":
        first_line = _first_line(execution.error) or execution.status
        click.echo(f"error: execution {execution.id} {execution.status}: {first_line}", err=True)
        return 1
    return 0


def _interrupted_line(execution: Execution) -> str:
    where = f"see 'systemprompt scheduler:history --task {execution.task_id}'"
    if execution.status == "running":
        return f"stopped waiting: execution {execution.id} is running and goes on ({where})"
    if execution.status == "retrying":
        return f"stopped waiting: execution {execution.id} will retry and still run ({where})"
    return f"stopped waiting: execution {execution.id} stays {execution.status} and will still run ({where})"
