"""What an alert says: the JSON payload of a delivery and its one-line summary (docs/alerts.md)."""

from __future__ import annotations

from typing import Any, Final

from scheduler.records import Incident

# Delivery kinds -> the event name in the payload.
KIND_EVENTS: Final = {
    "opened": "alert-opened",
    "repeat": "alert-repeat",
    "resolved": "alert-resolved",
    "test": "alert-test",
}
LABELS: Final = {"opened": "ALERT", "repeat": "STILL FAILING", "resolved": "RESOLVED", "test": "TEST"}


def incident_payload(incident: Incident, kind: str) -> dict[str, Any]:
    """The message of ``incident`` for a delivery of ``kind`` (opened, repeat, resolved)."""
    return {
        "event": KIND_EVENTS[kind],
        "summary": summary(incident, kind),
        "incident": incident.to_json(),
        "source": "systemprompt-scheduler",
    }


def test_payload(channel: str) -> dict[str, Any]:
    return {
        "event": KIND_EVENTS["test"],
        "summary": f"[TEST] systemprompt-scheduler: a test message to channel {channel}",
        "incident": None,
        "source": "systemprompt-scheduler",
    }


def summary(incident: Incident, kind: str) -> str:
    subject = "the scheduler" if incident.task_id is None else f"task {incident.task_name}"
    return f"[{LABELS[kind]}] {subject}: {incident.condition} - {incident.detail}"
