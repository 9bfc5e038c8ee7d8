"""The alert about the scheduler itself: no planner has led for longer than ``alertNoLeaderAfter``.

Nothing leads then, so the leading planner cannot say it: ``scheduler:health --alert`` (run by a probe, a
timer or a CronJob, from any host) opens the ``no_leader`` incident, once, and sends it itself through the
outbox. The next planner that leads resolves it (its evaluation finds a leader: itself) and tells it resolved.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from scheduler.alerting.messages import incident_payload
from scheduler.alerting.outbox import AlertOutbox
from scheduler.alerting.port import Sender
from scheduler.observability import events as ev
from scheduler.observability.events import EventBus
from scheduler.records import Incident
from scheduler.settings import Settings
from scheduler.storage import alerts as alerts_sql
from scheduler.storage.clock import db_now
from scheduler.storage.leases import PLANNER_LEASE, read_lease
from scheduler.storage.transactions import write_transaction

CONDITION = "no_leader"
SEND_BUDGET_S = 10.0


def alert_no_leader(
    engine: Engine, settings: Settings, senders: Mapping[str, Sender], *, events: EventBus | None = None
) -> Incident | None:
    """Open (and send) the ``no_leader`` incident when the planner lease expired more than
    ``alert_no_leader_after`` ago; the open incident (not sent again) when there is one; None while a planner
    leads, led recently, or never did (nothing was ever scheduled by this deployment)."""
    try:
        with write_transaction(engine) as connection:
            now = db_now(connection)
            lease = read_lease(connection, PLANNER_LEASE)
            if lease is None or now - lease.expires_at <= timedelta(
                milliseconds=settings.alert_no_leader_after
            ):
                return None
            already = [i for i in alerts_sql.open_incidents(connection) if i.condition == CONDITION]
            if already:
                return already[0]
            ago = (now - lease.expires_at).total_seconds()
            incident = alerts_sql.insert_incident(
                connection,
                task_id=None,
                task_name="scheduler",
                condition=CONDITION,
                detail=f"no planner has led for {ago:.0f} s (the last was {lease.holder})",
                silenced=False,
                now=now,
            )
            alerts_sql.enqueue(
                connection,
                incident_id=incident.id,
                channels=list(settings.alert_channels),
                kind="opened",
                payload=incident_payload(incident, "opened"),
                now=now,
            )
    except IntegrityError:  # another health check opened it at the same moment: it sends it
        return None
    if events is not None:
        events.emit(ev.ALERT_OPENED, {"incident": incident.to_json()})
    AlertOutbox(engine, settings, senders).deliver(time_budget_s=SEND_BUDGET_S)
    return incident
