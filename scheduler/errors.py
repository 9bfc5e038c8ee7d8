"""Every error the scheduler raises on purpose derives from :class:`SchedulerError`.

Errors carry the data that caused them; ``str(error)`` is one line a user can act on. The CLI maps the classes
to exit codes through :attr:`SchedulerError.exit_code`.
"""

from __future__ import annotations

from collections.abc import Iterable


class SchedulerError(Exception):
    """The scheduler could not do what was asked."""

    exit_code = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or type(self).__name__).strip())


class InvalidInput(SchedulerError, ValueError):
    """The input is not valid."""

    exit_code = 2


class InvalidSchedule(InvalidInput):
    """The schedule is not valid."""

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"invalid schedule {expression!r}: {reason}")


class InvalidTimezone(InvalidInput):
    """The time zone is not a known IANA zone."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown time zone {name!r} (use an IANA name such as 'Europe/Berlin' or 'UTC')")


class InvalidField(InvalidInput):
    """A task field is not valid."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {field}: {reason}")


class UnknownCommand(InvalidInput):
    """The command is not registered (in the registry of ``worker``, when a worker looked it up)."""

    def __init__(self, name: str, known: Iterable[str] = (), *, worker: str | None = None) -> None:
        self.name = name
        self.worker = worker
        from difflib import get_close_matches  # not imported by every CLI start

        self.suggestion = next(iter(get_close_matches(name, list(known), n=1)), None)
        if worker is not None:
            super().__init__(
                f"worker {worker} has no command {name!r}: it was started before the command was installed "
                "or configured; restart that worker"
            )
            return
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        super().__init__(
            f"unknown command {name!r}{hint} ('systemprompt scheduler:commands' lists the registered ones; "
            "docs/commands.md shows how to add one)"
        )


class NameTaken(InvalidInput):
    """A task with this name exists already."""

    def __init__(self, name: str, *, detail: str | None = None) -> None:
        self.name = name
        super().__init__(f"a task named {name!r} exists already" + (f" (created {detail})" if detail else ""))


class UnknownCalendar(InvalidInput):
    """No calendar has this name (bad input: exit 2, like an unknown command)."""

    def __init__(self, name: str, known: Iterable[str] = ()) -> None:
        self.name = name
        from difflib import get_close_matches

        match = next(iter(get_close_matches(name, list(known), n=1)), None)
        hint = f"; did you mean {match!r}?" if match else ""
        super().__init__(
            f"unknown calendar {name!r}{hint} ('systemprompt scheduler:calendar list' lists them)"
        )


class ConfigError(InvalidInput):
    """The configuration is not valid."""


class CommandCollision(ConfigError):
    """Two definitions give one command name (a built-in, an entry point, a ``module.yaml`` key...)."""

    def __init__(self, name: str, first: str, second: str) -> None:
        self.name = name
        self.first = first
        self.second = second
        super().__init__(f"command {name!r} is defined twice: {first}, and {second}; rename one of them")


class NotFound(SchedulerError, LookupError):
    """The object was not found."""

    exit_code = 3


class TaskNotFound(NotFound):
    """No task has this id or name."""

    def __init__(self, ref: str | int) -> None:
        self.ref = ref
        super().__init__(f"no task with id or name {str(ref)!r}")


class ExecutionNotFound(NotFound):
    """No execution has this id."""

    def __init__(self, execution_id: int) -> None:
        self.execution_id = execution_id
        super().__init__(f"no execution with id {execution_id}")


class BackfillNotFound(NotFound):
    """No backfill has this id."""

    def __init__(self, backfill_id: int) -> None:
        self.backfill_id = backfill_id
        super().__init__(f"no backfill with id {backfill_id}")


class Unavailable(SchedulerError):
    """A service the scheduler needs is unreachable."""

    exit_code = 69


class DatabaseUnavailable(Unavailable):
    """The database is unreachable."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("database unreachable" + (f": {detail}" if detail else ""))


class BrokerUnavailable(Unavailable):
    """The broker is unreachable."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("broker unreachable" + (f": {detail}" if detail else ""))


class PublishUncertain(BrokerUnavailable):
    """The broker took a publish but its reply was lost: the messages may be on their queues or not."""

    def __init__(self, detail: str = "") -> None:
        Unavailable.__init__(self, "publish outcome unknown" + (f": {detail}" if detail else ""))


class SchemaOutdated(SchedulerError):
    """The database schema is not this code's: older (migrate upgrades it), or ``newer`` than any
    revision this code has (a later release migrated it; no migration of ours can go back)."""

    exit_code = 69

    def __init__(self, current: str | None, expected: str, *, newer: bool = False) -> None:
        self.current = current
        self.expected = expected
        if newer:
            super().__init__(
                f"the database schema is at revision {current}, newer than this version knows (it needs "
                f"{expected}): a newer systemprompt-scheduler migrated it; "
                "run that version or upgrade this one"
            )
            return
        if current is None:
            found = "the database has no scheduler tables yet (a new database?)"
            fix = "to create them"
        else:
            found = f"the database schema is at revision {current}, this version needs {expected}"
            fix = "to upgrade it"
        super().__init__(f"{found}: run 'systemprompt scheduler:migrate' {fix}")


class PermissionDenied(SchedulerError, PermissionError):
    """The database refused this operation for the connected role."""

    exit_code = 77


class DeliveryFailed(Unavailable):
    """An alert channel did not take a message (the reason never contains a secret)."""

    def __init__(self, channel: str, reason: str) -> None:
        self.channel = channel
        self.reason = reason
        super().__init__(f"alert channel {channel!r}: {reason}")
