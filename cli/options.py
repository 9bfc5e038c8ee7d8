"""Option types and shared option decorators of the verbs.

Values are only parsed here (JSON, ISO-8601 times, task references); whether they are acceptable for a task is
the service's decision, so the CLI and the Python API reject the same inputs with the same messages.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

from cli.context import remember_actor
from scheduler.errors import InvalidField

F = TypeVar("F", bound=Callable[..., Any])

FORMATS = ("table", "json")
OVERLAP_POLICIES = ("allow", "forbid", "replace")
# update --clear NAME: option name -> the service field set to None.
CLEARABLE = {
    "start": "start_at",
    "end": "end_at",
    "max-runs": "max_runs",
    "auto-pause": "auto_pause_after",
    "misfire-grace": "misfire_grace_ms",
    "jitter": "jitter_ms",
    "exclude": "exclude",
    "only-in": "only_in",
}
MISFIRE_POLICIES = ("skip", "run_once", "run_all")
# create/update --alert-* options -> the rule they set (docs/alerts.md); --clear NAME restores its default.
ALERT_RULES = {
    "alert-on-failure": "on_failure",
    "alert-late": "late_ms",
    "alert-missing": "missing_ms",
    "alert-long": "long_ms",
}


# --------------------------------------------------------------------------------------------- parsing


def parse_time(text: str, field: str) -> datetime:
    """An ISO-8601 instant (or ``now``) as an aware UTC datetime; without an offset it means UTC.

    Raises :class:`InvalidField` (exit 2) naming ``field``.
    """
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidField(
            field,
            f"{text!r} is not an ISO-8601 time (e.g. 2026-03-28T02:00:00Z or 2026-03-28T02:00:00+01:00)",
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+14:00 and 9999-12-31T23:59-14:00 have no UTC instant
        raise InvalidField(field, f"{text!r} is out of range (years 1 to 9999 in UTC)") from None


def parse_data(text: str) -> dict[str, Any]:
    """The ``--data`` JSON object; raises :class:`InvalidField` (``invalid data: ...``, exit 2)."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidField(
            "data", f"not valid JSON ({error.msg} at line {error.lineno} column {error.colno})"
        ) from None
    if not isinstance(value, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(value), "a number"
        )
        raise InvalidField("data", f"must be a JSON object ({{...}}), not {kind}")
    return value


def parse_jitter(text: str) -> int:
    """``--jitter``: a duration as an interval is written (``30s``, ``5m``, ``1h``; ``0``: none), in ms."""
    from scheduler.errors import InvalidSchedule
    from scheduler.rules.schedules import parse_interval

    if text.strip() == "0":
        return 0
    try:
        return int(parse_interval(text).total_seconds() * 1000)
    except InvalidSchedule as error:
        raise InvalidField("jitter", f"{text!r}: {error.reason}") from None


def schedule_value(given: tuple[str, ...] | None) -> str | list[str] | None:
    """Repeated ``--schedule`` options: one is the schedule text, several a list (a task with several)."""
    if not given:
        return None
    return given[0] if len(given) == 1 else list(given)


def warn_about_timezone(name: str | None) -> None:
    """``warning: ...`` on stderr for a legacy zone name (``EST``) that is valid but rarely what is meant."""
    if name is None:
        return
    from scheduler.rules.schedules import timezone_warning

    warning = timezone_warning(name)
    if warning is not None:
        click.echo(f"warning: {warning}", err=True)


def task_ref(text: str) -> int | str:
    """A task reference as the service takes it: digits are an id, anything else a name.

    Only ASCII digits of a size an id can have become an int ("²" is a digit to ``str.isdigit`` but not to
    ``int``; 5000 digits exceed ``int``'s conversion limit); anything else is looked up as a name.
    """
    stripped = text.strip()
    return int(stripped) if stripped.isascii() and stripped.isdigit() and len(stripped) <= 19 else text


# --------------------------------------------------------------------------------------------- options


def format_option(func: F) -> F:
    return click.option(
        "--format",
        "output_format",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output: a table for people, or JSON (stable field names, ISO-8601 UTC times) for scripts.",
    )(func)


def actor_option(func: F) -> F:
    """``--actor``: who is recorded in the audit log; read by :func:`cli.context.get_service`."""
    return click.option(
        "--actor",
        envvar="SCHEDULER_ACTOR",
        show_envvar=True,
        expose_value=False,
        is_eager=True,
        callback=remember_actor,
        help="Actor recorded in the audit log [default: the OS user].",
    )(func)


def task_definition_options(*, creating: bool) -> Callable[[F], F]:
    """The options of ``create`` and ``update``; unset ones are not sent to the service (defaults apply)."""

    def settings_default(env: str) -> str:
        return f" [default: {env}]" if creating else ""

    options: list[Callable[[F], F]] = [
        click.option("--name", required=creating, help="Unique task name (at most 200 characters)."),
        click.option(
            "--command",
            "command_name",
            required=creating,
            help="Registered command name, e.g. 'backup:run' (see scheduler:commands). Never a shell line.",
        ),
        click.option(
            "--schedule",
            multiple=True,
            help="Cron ('0 2 * * *', '@daily'), interval ('5m', '1h30m'), 'now' or an ISO-8601 instant, or "
            "'manual'. Repeat it for several schedules (cron and interval ones): a slot two share runs once."
            + (" Omitted: manual." if creating else " Given: replaces all of them."),
        ),
        click.option(
            "--jitter",
            metavar="DURATION",
            help="Run each slot at a fixed pseudo-random offset in [0, DURATION) ('30s', '5m'; at most the "
            "schedule's interval), the same for a slot every time.",
        ),
        click.option(
            "--exclude",
            multiple=True,
            metavar="CALENDAR",
            help="Skip slots on this calendar's days (scheduler:calendar), in the task's time zone. "
            "Repeatable." + ("" if creating else " Given: replaces the list."),
        ),
        click.option(
            "--only-in",
            multiple=True,
            metavar="CALENDAR",
            help="Run only on this calendar's days (several: on any of them); other slots are skipped."
            + ("" if creating else " Given: replaces the list."),
        ),
        click.option("--data", "data_json", metavar="JSON", help="JSON object passed to the command."),
        click.option(
            "--timezone",
            metavar="TZ",
            help="IANA time zone the cron schedule is evaluated in."
            + (" [default: UTC]" if creating else ""),
        ),
        click.option(
            "--retries",
            type=int,
            metavar="N",
            help="Retry attempts after a failure." + settings_default("SCHEDULER_DEFAULT_RETRIES"),
        ),
        click.option(
            "--retry-delay",
            type=int,
            metavar="MS",
            help="Delay before the first retry (ms)." + settings_default("SCHEDULER_RETRY_DELAY"),
        ),
        click.option(
            "--retry-backoff",
            type=float,
            metavar="X",
            help="Multiplier of each further retry delay." + settings_default("SCHEDULER_RETRY_BACKOFF"),
        ),
        click.option(
            "--timeout",
            type=int,
            metavar="MS",
            help="Time limit of one attempt (ms)." + settings_default("SCHEDULER_TASK_TIMEOUT"),
        ),
        click.option(
            "--overlap",
            type=click.Choice(OVERLAP_POLICIES),
            help="When the previous run is still running." + settings_default("SCHEDULER_OVERLAP_POLICY"),
        ),
        click.option(
            "--misfire",
            type=click.Choice(MISFIRE_POLICIES),
            help="Slots missed while no planner ran." + settings_default("SCHEDULER_MISFIRE_POLICY"),
        ),
        click.option(
            "--misfire-grace",
            type=int,
            metavar="MS",
            help="How late a missed slot may still run (ms)."
            + (" [default: one interval, at most 1 h]" if creating else ""),
        ),
        click.option(
            "--auto-pause",
            type=int,
            metavar="N",
            help="Pause the task after N consecutive failed executions.",
        ),
        click.option(
            "--queue",
            metavar="Q",
            help="Celery queue of its executions." + settings_default("SCHEDULER_DEFAULT_QUEUE"),
        ),
        click.option("--start", metavar="T", help="Not before this ISO-8601 time (no offset: UTC)."),
        click.option("--end", metavar="T", help="Not after this ISO-8601 time (no offset: UTC)."),
        click.option("--max-runs", type=int, metavar="N", help="Complete the task after N runs."),
        click.option(
            "--alert-on-failure",
            type=int,
            metavar="N",
            help="Alert after N consecutive failed executions; 0: never."
            + settings_default("SCHEDULER_ALERT_ON_FAILURE"),
        ),
        click.option(
            "--alert-late",
            type=int,
            metavar="MS",
            help="Alert when an execution has not started MS after its slot; 0: off."
            + settings_default("SCHEDULER_ALERT_LATE"),
        ),
        click.option(
            "--alert-missing",
            type=int,
            metavar="MS",
            help="Alert when no run succeeded within MS after a slot was due (dead-man's switch); 0: off."
            + settings_default("SCHEDULER_ALERT_MISSING"),
        ),
        click.option(
            "--alert-long",
            type=int,
            metavar="MS",
            help="Alert when an execution runs longer than MS; 0: off."
            + settings_default("SCHEDULER_ALERT_LONG"),
        ),
        click.option(
            "--alert-recovered/--no-alert-recovered",
            default=None,
            help="Notify when an alert's condition is over." + settings_default("SCHEDULER_ALERT_RECOVERED"),
        ),
    ]
    if creating:
        options.append(
            click.option("--once", is_flag=True, help="Run only at the schedule's first fire time.")
        )
    else:
        options.append(
            click.option(
                "--clear",
                type=click.Choice((*CLEARABLE, *ALERT_RULES)),
                multiple=True,
                help="Unset an optional field (repeatable), e.g. --clear end.",
            )
        )

    def apply(func: F) -> F:
        for option in reversed(options):
            func = option(func)
        return func

    return apply


def task_fields(options: dict[str, Any]) -> dict[str, Any]:
    """The given ``create``/``update`` options under the service's field names; unset ones are left out."""
    renames = {
        "name": "name",
        "command_name": "command",
        "timezone": "timezone",
        "retries": "retries",
        "retry_delay": "retry_delay_ms",
        "retry_backoff": "retry_backoff",
        "timeout": "timeout_ms",
        "overlap": "overlap_policy",
        "misfire": "misfire_policy",
        "misfire_grace": "misfire_grace_ms",
        "auto_pause": "auto_pause_after",
        "queue": "queue",
        "max_runs": "max_runs",
    }
    fields = {renames[key]: value for key, value in options.items() if key in renames and value is not None}
    if options.get("schedule"):
        fields["schedule"] = schedule_value(options["schedule"])
    if options.get("jitter") is not None:
        fields["jitter_ms"] = parse_jitter(options["jitter"])
    for option, field in (("exclude", "exclude"), ("only_in", "only_in")):
        if options.get(option):
            fields[field] = list(options[option])
    if options.get("data_json") is not None:
        fields["data"] = parse_data(options["data_json"])
    if options.get("start") is not None:
        fields["start_at"] = parse_time(options["start"], "start")
    if options.get("end") is not None:
        fields["end_at"] = parse_time(options["end"], "end")
    if options.get("once"):
        fields["once"] = True
    alerts = {rule: options[name.replace("-", "_")] for name, rule in ALERT_RULES.items()}
    alerts["recovered"] = options.get("alert_recovered")
    alerts = {rule: value for rule, value in alerts.items() if value is not None}
    for name in options.get("clear") or ():
        target, field = (alerts, ALERT_RULES[name]) if name in ALERT_RULES else (fields, CLEARABLE[name])
        if field in target:
            raise InvalidField(field, f"both set and cleared (--{name} and --clear {name})")
        target[field] = None
    if alerts:
        fields["alerts"] = alerts
    return fields
