"""CLI plumbing: the root group's error policy, and the service built lazily from settings.

Nothing heavy is imported at module level: ``systemprompt --help`` must not pay for SQLAlchemy or Celery.

Error policy (one line on stderr, never a traceback for a user error):

- :class:`~scheduler.errors.SchedulerError` -> ``error: <message>``, exit with its ``exit_code``
  (2 invalid input, 3 not found, 69 unreachable, 77 permission denied);
- click usage errors -> ``error: <message> (see '<command> --help')``, exit 2;
- a database driver's connection error that escaped the service -> exit 69;
- anything else -> ``error: unexpected <Type>: <message>``, exit 1; ``SCHEDULER_DEBUG=1`` adds the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

from scheduler.errors import SchedulerError

if TYPE_CHECKING:
    from scheduler.service import SchedulerService
    from scheduler.settings import LoadedSettings, Settings

PROG_NAME = "systemprompt"
DEBUG_ENV = "SCHEDULER_DEBUG"
_SERVICE_KEY = "systemprompt.service"
_SETTINGS_KEY = "systemprompt.settings"
_ACTOR_KEY = "systemprompt.actor"


def fail(message: str, exit_code: int) -> NoReturn:
    """Print ``error: <message>`` on one line of stderr and exit with ``exit_code``."""
    click.echo(f"error: {_one_line(message)}", err=True)
    sys.exit(exit_code)


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip()) or "failed"


def _debug() -> bool:
    # Read directly, not through Settings: it must work even when loading the settings is what failed.
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _database_error_code(error: BaseException) -> int | None:
    """69 for a driver's connection error that reached the CLI unwrapped; None for anything else."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy import exc

    if isinstance(error, exc.OperationalError | exc.InterfaceError):
        return 69
    return None


def _usage_hint(error: click.UsageError) -> str:
    if error.ctx is None:
        return ""
    return f" (see '{error.ctx.command_path} --help')"


def exit_code_for(run: Callable[[], Any]) -> int:
    """Run ``run`` (a non-standalone click ``main``) and turn every outcome into an exit code + one line."""
    try:
        result = run()
    except SchedulerError as error:
        click.echo(f"error: {_one_line(str(error))}", err=True)
        return error.exit_code
    except click.exceptions.NoArgsIsHelpError as error:  # a bare group: its help is the answer, not one line
        error.show()
        return error.exit_code
    except click.UsageError as error:
        click.echo(f"error: {_one_line(error.format_message())}{_usage_hint(error)}", err=True)
        return error.exit_code
    except click.ClickException as error:
        click.echo(f"error: {_one_line(error.format_message())}", err=True)
        return error.exit_code
    except click.Abort as error:
        click.echo("error: aborted", err=True)
        return 130 if isinstance(error.__cause__, KeyboardInterrupt) else 1  # 130: the shell's code for ^C
    except Exception as error:
        if _debug():
            traceback.print_exc()
        code = _database_error_code(error)
        detail = _one_line(str(getattr(error, "orig", None) or error))
        if code is not None:
            click.echo(f"error: database unreachable: {detail}", err=True)
            return code
        click.echo(
            f"error: unexpected {type(error).__name__}: {detail}"
            + ("" if _debug() else f" (set {DEBUG_ENV}=1 for the traceback)"),
            err=True,
        )
        return 1
    return result if isinstance(result, int) else 0


class RootGroup(click.Group):
    """The ``systemprompt`` group: applies the error policy in :func:`exit_code_for` to every verb."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        def run() -> Any:
            return super(RootGroup, self).main(
                args, prog_name or PROG_NAME, complete_var, standalone_mode=False, **extra
            )

        if not standalone_mode:
            return run()
        sys.exit(exit_code_for(run))


# ------------------------------------------------------------------------------------------------ actor


def remember_actor(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Callback of ``--actor``: keep the value where :func:`get_service` finds it."""
    if value:
        ctx.meta[_ACTOR_KEY] = value
    return value


# ------------------------------------------------------------------------------------ settings, service


def get_loaded_settings(ctx: click.Context) -> LoadedSettings:
    """The effective settings (with where each value came from), read once per invocation."""
    loaded: LoadedSettings | None = ctx.meta.get(_SETTINGS_KEY)
    if loaded is None:
        from scheduler.settings import load_settings

        loaded = load_settings()
        ctx.meta[_SETTINGS_KEY] = loaded
    return loaded


def get_settings(ctx: click.Context) -> Settings:
    return get_loaded_settings(ctx).settings


def get_service(ctx: click.Context, *, publisher: Any = None) -> SchedulerService:
    """The :class:`SchedulerService` of this invocation, built on first use and disposed when the CLI exits.

    The actor is ``--actor`` (or ``SCHEDULER_ACTOR``) when a verb takes it; otherwise the service's default.
    """
    service: SchedulerService | None = ctx.meta.get(_SERVICE_KEY)
    if service is None:
        from workers.wiring import open_service

        service = open_service(get_settings(ctx), publisher=publisher, actor=ctx.meta.get(_ACTOR_KEY))
        service.source = "cli"  # tasks created here are owned by hand, not by a tasks file
        ctx.meta[_SERVICE_KEY] = service
        ctx.find_root().call_on_close(service.engine.dispose)
    return service
