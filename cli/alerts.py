"""Verbs of alerts (docs/alerts.md): alerts, silence, silences, alert-test."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from cli.cells import Column
from cli.context import get_service, get_settings
from cli.options import actor_option, format_option, parse_time, task_ref
from cli.render import json_form, print_json, print_note, render, render_one
from scheduler.errors import InvalidField, InvalidSchedule

if TYPE_CHECKING:
    from scheduler.records import Incident


def _state(incident: Incident) -> str:
    state = "open" if incident.is_open else "resolved"
    return f"{state} (silenced)" if incident.silenced else state


INCIDENT_COLUMNS = (
    Column("id"),
    Column("task_name", "task"),
    Column("condition"),
    Column("state", get=_state),
    Column("opened_at", "opened"),
    Column("resolved_at", "resolved", drop_order=1),
    Column("detail", max_width=60, flow="text", drop_order=2),
)
DELIVERY_COLUMNS = (
    Column("id"),
    Column("incident_id", "incident"),
    Column("channel"),
    Column("kind"),
    Column("status"),
    Column("attempts"),
    Column("next_attempt_at", "next attempt", drop_order=1),
    Column("last_error", "last error", max_width=60, flow="text"),
)
SILENCE_COLUMNS = (
    Column("id"),
    Column("task_name", "task"),
    Column("starts_at", "from", drop_order=1),
    Column("ends_at", "until"),
    Column("actor", drop_order=2),
    Column("note", max_width=60, flow="text"),
)


@click.command("alerts")
@click.option("--task", "ref", metavar="ID|NAME", help="Only this task's incidents.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True, metavar="N")
@format_option
@click.pass_context
def alerts(ctx: click.Context, ref: str | None, limit: int, output_format: str) -> None:
    """Show alert incidents, open ones first, and deliveries that failed.

    An incident is one condition (failure, late, missing, long, no_leader) of one task from when it opened
    to when it resolved; a silenced one was recorded but not sent. Below: messages a channel did not take,
    still retried (pending) or given up (failed). With --task, first the task's effective rules. JSON:
    {"incidents": [...], "unsent_deliveries": [...]}, and "rules" with --task.
    """
    service = get_service(ctx)
    task = None if ref is None else task_ref(ref)
    rules = None if task is None else service.alert_rules(task)
    incidents = service.alerts(task=task, limit=limit)
    unsent = service.unsent_alerts(limit=limit)
    if output_format == "json":
        out = {
            "incidents": [json_form(i) for i in incidents],
            "unsent_deliveries": [json_form(d) for d in unsent],
        }
        print_json(out if rules is None else {"rules": rules.to_json(), **out})
        return
    if rules is not None:
        shown = ", ".join(
            f"{name} {'off' if value is None else value}" for name, value in rules.to_json().items()
        )
        print_note(f"rules: {shown}")
    render(incidents, INCIDENT_COLUMNS, output_format, empty="no alert incidents")
    if unsent:
        render(unsent, DELIVERY_COLUMNS, output_format, title="deliveries not sent", empty="")


@click.command("silence")
@click.option("--id", "ref", required=True, metavar="ID|NAME", help="The task's id or name.")
@click.option("--for", "duration", metavar="DURATION", help="How long, e.g. 30m, 2h, 1d.")
@click.option("--until", metavar="T", help="Until this ISO-8601 time (no offset: UTC).")
@click.option("--note", help="Why (kept with the silence and in the audit log).")
@actor_option
@format_option
@click.pass_context
def silence(
    ctx: click.Context,
    ref: str,
    duration: str | None,
    until: str | None,
    note: str | None,
    output_format: str,
) -> None:
    """Silence a task's alerts for a while.

    Its incidents are still opened, resolved and shown by scheduler:alerts, but not sent. The silence ends by
    itself; scheduler:silences lists them, the audit log records who set it. JSON: the silence object.
    """
    if (duration is None) == (until is None):
        raise InvalidField("silence", "give either --for DURATION or --until T")
    span = None
    if duration is not None:
        from scheduler.rules.schedules import parse_interval

        try:
            span = parse_interval(duration)
        except InvalidSchedule as error:
            raise InvalidField("for", error.reason) from None
    end = None if until is None else parse_time(until, "until")
    made = get_service(ctx).silence(task_ref(ref), duration=span, until=end, note=note)
    render_one(
        made,
        output_format,
        title=f"silenced task {made.task_id} ({made.task_name}) until {made.to_json()['ends_at']}",
    )


@click.command("silences")
@click.option("--all", "show_all", is_flag=True, help="Expired silences too.")
@format_option
@click.pass_context
def silences(ctx: click.Context, show_all: bool, output_format: str) -> None:
    """List alert silences in force (--all: expired ones too), ending last first.

    JSON: an array of silence objects.
    """
    rows = get_service(ctx).silences(include_expired=show_all)
    render(rows, SILENCE_COLUMNS, output_format, empty="no silences" + ("" if show_all else " in force"))


@click.command("alert-test")
@click.option("--channel", required=True, metavar="NAME", help="A channel of alertChannels.")
@format_option
@click.pass_context
def alert_test(ctx: click.Context, channel: str, output_format: str) -> None:
    """Send a test message to an alert channel, now.

    Exit 0 when the channel took it; 69 with the channel's one-line reason when it did not. JSON: {"channel",
    "type", "sent"}.
    """
    from scheduler.alerting.messages import test_payload
    from workers import wiring

    settings = get_settings(ctx)
    config = settings.alert_channels.get(channel)
    if config is None:
        known = ", ".join(sorted(settings.alert_channels)) or "none configured (alertChannels)"
        raise InvalidField("channel", f"no alert channel {channel!r}; channels: {known}")
    wiring.alert_senders(settings)[channel].send(test_payload(channel), delivery_id=0)
    if output_format == "json":
        print_json({"channel": channel, "type": config.type, "sent": True})
    else:
        print_note(f"sent a test message to channel {channel} ({config.type})")


ALERT_COMMANDS: tuple[click.Command, ...] = (alerts, silence, silences, alert_test)
