"""Driver errors -> the scheduler's typed errors, so callers (and CLI exit codes) see one family."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc

from scheduler.errors import DatabaseUnavailable, NameTaken, PermissionDenied

INSUFFICIENT_PRIVILEGE = "42501"
NAME_CONSTRAINT = "uq_scheduled_tasks_name"


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _is_permission_error(error: exc.DBAPIError) -> bool:
    # diag.sqlstate: psycopg2's and psycopg 3's common spelling of the PostgreSQL error code.
    if getattr(getattr(error.orig, "diag", None), "sqlstate", None) == INSUFFICIENT_PRIVILEGE:
        return True
    # SQLite's equivalent: the file (or its directory) is read-only for this process.
    return "readonly database" in str(error.orig).lower()


def _is_name_conflict(error: exc.IntegrityError) -> bool:
    diag = getattr(error.orig, "diag", None)
    if diag is not None and getattr(diag, "constraint_name", None) == NAME_CONSTRAINT:
        return True
    message = str(error.orig)
    return NAME_CONSTRAINT in message or "scheduled_tasks.name" in message


def _is_unreachable(error: exc.DBAPIError) -> bool:
    # No statement: the error came from opening the connection; an invalidated connection: it dropped.
    return isinstance(error, exc.OperationalError | exc.InterfaceError) and (
        error.statement is None or error.connection_invalidated
    )


@contextmanager
def translate_db_errors(*, task_name: str | None = None) -> Iterator[None]:
    """Re-raise driver errors as scheduler errors; anything else passes through unchanged.

    - database unreachable (connect failure, dropped link, pool timeout) -> :class:`DatabaseUnavailable`;
    - PostgreSQL ``insufficient_privilege`` (42501) or a read-only SQLite file -> :class:`PermissionDenied`;
    - the unique constraint on ``scheduled_tasks.name`` -> :class:`NameTaken` (``task_name`` names it).
    """
    try:
        yield
    except exc.IntegrityError as error:
        if _is_name_conflict(error):
            raise NameTaken(task_name or "?") from error
        raise
    except exc.DBAPIError as error:
        if _is_permission_error(error):
            raise PermissionDenied(f"permission denied: {_first_line(error)}") from error
        if _is_unreachable(error):
            raise DatabaseUnavailable(_first_line(error)) from error
        raise
    except exc.TimeoutError as error:
        raise DatabaseUnavailable(f"no connection available: {error}") from error
