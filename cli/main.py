"""The ``systemprompt`` entry point: every verb as ``scheduler:<verb>`` and as ``scheduler <verb>``.

Importing this module imports click and the verb table only; a verb's module is imported when the verb runs
(or help lists it, see :mod:`cli.verbs`), and each verb imports what it needs (SQLAlchemy, Celery, rich) when
it runs, so ``systemprompt --help`` stays fast and ``scheduler:list`` loads no engine verb.
"""

from __future__ import annotations

import functools
import gc
from collections.abc import Iterable, Sequence
from typing import Any

import click

from cli.context import PROG_NAME, RootGroup, get_service, get_settings
from cli.verbs import VERBS, LazyCommands, import_verb

PREFIX = "scheduler:"
DISTRIBUTION = "systemprompt-scheduler"  # the package whose metadata --version reads
# Verbs that run until stopped: their logs go through scheduler.observability.log_setup
# (SCHEDULER_LOG_FORMAT, _LEVEL).
LONG_RUNNING = frozenset({"planner", "worker", "serve", "flower", "web"})
# Verbs that read, print and exit: they run without the cyclic garbage collector (see without_gc).
READ_ONLY = frozenset(
    {"list", "history", "logs", "stats", "audit", "next", "validate", "commands", "config", "plan", "export",
     "versions", "diff"}
)  # fmt: skip

# Verbs that build many objects that live until they exit: also run without the cyclic garbage collector.
BULK = frozenset({"apply"})

EPILOG = """\b
Configuration: module.yaml (or $SCHEDULER_CONFIG_FILE) and SCHEDULER_* variables,
e.g. SCHEDULER_DATABASE_URL (unset: SQLite under ./.scheduler). See 'scheduler:config'.
SCHEDULER_DEBUG=1 prints tracebacks of unexpected errors.
\b
Exit codes: 0 ok, 1 failed, 2 invalid input or usage, 3 not found,
10 'plan' found changes, 69 database or broker unreachable, 77 permission denied."""


def verb_name(command: click.Command) -> str:
    """The bare verb (``list``) of a command, whether or not it was named with the prefix."""
    name = command.name or ""
    return name.removeprefix(PREFIX)


def with_log_setup(command: click.Command) -> click.Command:
    """Make ``command`` call :func:`scheduler.observability.log_setup.configure_logging` first
    (idempotent)."""
    callback = command.callback
    if callback is None or getattr(callback, "_configures_logging", False):
        return command

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        from scheduler.observability.log_setup import configure_logging

        configure_logging(get_settings(click.get_current_context()))
        return callback(*args, **kwargs)

    run._configures_logging = True  # type: ignore[attr-defined]
    command.callback = run
    return command


def with_task_suggestions(command: click.Command) -> click.Command:
    """Make a task name that is not found say which existing names are close (``did you mean 'x'?``)."""
    callback = command.callback
    if callback is None:
        return command

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        from scheduler.errors import NotFound, TaskNotFound

        try:
            return callback(*args, **kwargs)
        except TaskNotFound as error:
            if not isinstance(error.ref, str):
                raise
            close = get_service(click.get_current_context()).similar_task_names(error.ref)
            if not close:
                raise
            raise NotFound(f"{error}; did you mean {' or '.join(map(repr, close))}?") from None

    command.callback = run
    return command


def without_gc(command: click.Command) -> click.Command:
    """Make ``command`` run with the cyclic garbage collector off.

    A read verb spends most of its time importing (SQLAlchemy above all): hundreds of thousands of objects
    that live until the process exits, which the collector would traverse again and again for nothing.
    Reference counting still frees everything else. Afterwards the objects the verb allocated join the
    oldest generation untraversed (freeze, then unfreeze: two list splices), so turning the collector back
    on does not start with one huge young collection; an in-process caller (tests) collects them later.
    """
    callback = command.callback
    if callback is None:
        return command

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        gc.disable()
        try:
            return callback(*args, **kwargs)
        finally:
            gc.freeze()
            gc.unfreeze()
            gc.enable()

    command.callback = run
    return command


@functools.cache
def load_verb(verb: str) -> click.Command:
    """The command of ``verb`` with what the root group adds: logging set-up for the long-running verbs,
    no cyclic GC for the read-only ones, and suggestions for a task name that is not found."""
    command = import_verb(verb)
    if verb in LONG_RUNNING:
        with_log_setup(command)
    if verb in READ_ONLY or verb in BULK:
        without_gc(command)
    return with_task_suggestions(command)


def build_cli(verbs: Iterable[str]) -> click.Group:
    """The root group with each verb under both spellings, each loaded by :func:`load_verb` when needed."""
    names = list(verbs)
    root = RootGroup(
        name=PROG_NAME,
        commands=LazyCommands({PREFIX + name: name for name in names}, load_verb),
        help="systemprompt-scheduler: cron, interval, one-time and manual tasks on PostgreSQL and Celery.",
        epilog=EPILOG,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    )
    sub = click.Group(
        name="scheduler",
        commands=LazyCommands({name: name for name in names}, load_verb),
        help="The scheduler verbs, also available as 'scheduler:<verb>' (this spelling completes in shells).",
        epilog=EPILOG,
    )
    click.version_option(
        package_name=DISTRIBUTION,
        prog_name=PROG_NAME,
        message="%(prog)s (systemprompt-scheduler) %(version)s",
        help="Show the installed version and exit.",
    )(root)
    root.add_command(sub)
    return root


cli = build_cli(VERBS)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; exits with the verb's exit code.

    On the way out, everything still allocated is frozen (:func:`gc.freeze`): the interpreter's final
    collections then skip it instead of traversing every SQLAlchemy object (and the rest) once more just
    before the process ends (a quarter of the CPU time of ``scheduler:list``). Exit handlers, stream flushes
    and the verb's own clean-up (the engine's pool is disposed when the click context closes) run as before.
    """
    try:
        cli.main(args=argv, prog_name=PROG_NAME)
    finally:
        gc.freeze()


if __name__ == "__main__":
    main()
