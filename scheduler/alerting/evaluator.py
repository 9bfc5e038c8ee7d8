"""The leading planner's alert evaluation (docs/alerts.md): conditions -> incidents -> the delivery outbox.

One :meth:`AlertEvaluator.evaluate` is one transaction fenced by the planner's lease (a deposed leader
changes nothing): read every watched task's facts, decide its conditions
(:func:`scheduler.rules.alerts.active_conditions`), open an incident for each new one, resolve those whose
condition is over, and queue one delivery per channel for what must be told (opened, repeat after
``alertRepeatInterval``, resolved). The incidents and the queued messages are rows, so a standby that takes
over finds them and sends nothing twice. Events ``alert-opened`` / ``alert-resolved`` go out after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine

from scheduler.alerting.messages import incident_payload
from scheduler.observability import events as ev
from scheduler.observability.events import EventBus
from scheduler.observability.metrics import observe_open_incidents
from scheduler.records import AlertRules, Incident, TaskFacts
from scheduler.rules.alerts import active_conditions, effective_rules, repeat_due
from scheduler.settings import Settings
from scheduler.storage import alerts as alerts_sql
from scheduler.storage.clock import db_now
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger(__name__)

Fence = Callable[[Connection], datetime | None]  # the lease's fence: the database clock, or None if deposed


@dataclass
class AlertChanges:
    opened: list[Incident] = field(default_factory=list)
    resolved: list[Incident] = field(default_factory=list)
    queued: int = 0
    open_count: int = 0


class AlertEvaluator:
    """Evaluates the rules of every task; ``fence`` (the planner's lease) makes it leader-only."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        fence: Fence | None = None,
        events: EventBus | None = None,
        idle_timeout_ms: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.fence = fence
        self.events = events
        self.idle_timeout_ms = idle_timeout_ms

    def evaluate(self) -> AlertChanges | None:
        """One evaluation; None when the fence refused (not the leader)."""
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            now = self.fence(connection) if self.fence is not None else db_now(connection)
            if now is None:
                return None
            changes = self._apply(connection, now)
        observe_open_incidents(changes.open_count)
        for incident in changes.opened:
            self._emit(ev.ALERT_OPENED, incident)
        for incident in changes.resolved:
            self._emit(ev.ALERT_RESOLVED, incident)
        return changes

    def _apply(self, connection: Connection, now: datetime) -> AlertChanges:
        changes = AlertChanges()
        channels = list(self.settings.alert_channels)
        silenced = alerts_sql.silenced_task_ids(connection, now=now)
        wanted: dict[str, tuple[TaskFacts, AlertRules, str, str]] = {}
        rules_of: dict[int, AlertRules] = {}
        defaults = effective_rules({}, self.settings)
        for facts in alerts_sql.task_facts(connection, defaults=defaults, now=now):
            rules = rules_of[facts.task_id] = effective_rules(facts.stored_rules, self.settings)
            for condition, detail in active_conditions(facts, rules, now).items():
                wanted[alerts_sql.open_key(facts.task_id, condition)] = (facts, rules, condition, detail)

        def tell(incident: Incident, kind: str) -> None:
            changes.queued += alerts_sql.enqueue(
                connection,
                incident_id=incident.id,
                channels=channels,
                kind=kind,
                payload=incident_payload(incident, kind),
                now=now,
            )

        open_now: dict[str, Incident] = {}
        for incident in alerts_sql.open_incidents(connection):
            key = alerts_sql.open_key(incident.task_id, incident.condition)
            is_silenced = incident.task_id in silenced
            if key not in wanted:  # the condition is over (the task recovered, or is gone)
                resolved = alerts_sql.resolve_incident(connection, incident.id, now=now)
                if resolved is None:
                    continue
                changes.resolved.append(resolved)
                task_rules = rules_of.get(resolved.task_id or 0) or effective_rules({}, self.settings)
                if resolved.notified_at is not None and task_rules.recovered and not is_silenced:
                    tell(resolved, "resolved")
                continue
            open_now[key] = incident
            if is_silenced:
                continue
            if incident.notified_at is None:  # opened while silenced; the silence is over
                tell(incident, "opened")
                alerts_sql.mark_notified(connection, incident.id, now=now)
            elif repeat_due(incident.notified_at, self.settings.alert_repeat_interval, now):
                tell(incident, "repeat")
                alerts_sql.mark_notified(connection, incident.id, now=now)
        for key, (facts, _rules, condition, detail) in wanted.items():
            if key in open_now:
                continue
            incident = alerts_sql.insert_incident(
                connection,
                task_id=facts.task_id,
                task_name=facts.task_name,
                condition=condition,
                detail=detail,
                silenced=facts.task_id in silenced,
                now=now,
            )
            changes.opened.append(incident)
            if not incident.silenced:
                tell(incident, "opened")
        changes.open_count = len(open_now) + len(changes.opened)
        return changes

    def _emit(self, event: str, incident: Incident) -> None:
        if self.events is None:
            return
        try:
            self.events.emit(event, {"incident": incident.to_json()})
        except Exception:  # committed already: a failing listener is logged, it does not fail the planner
            logger.exception("an %s listener failed for incident %s", event, incident.id)
