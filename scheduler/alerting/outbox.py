"""The delivery outbox's sender (docs/alerts.md): pending deliveries, oldest first, to their channels.

Run by the leading planner; ``may_send`` (its lease, renewed as needed) is asked before each message, so a
deposed leader stops. An attempt that fails is recorded with its one-line reason and tried again after
``alertRetryDelay`` doubling per attempt (at most 5 min); after ``alertDeliveryAttempts`` the delivery is
``failed``: kept, shown by ``scheduler:alerts`` and counted in the metrics, never dropped. A planner that dies
between a channel's answer and the row's update makes its successor send that message again (at least once;
receivers can use the delivery id, sent as ``X-Scheduler-Delivery``, to drop a repeat).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine

from scheduler.alerting.port import Sender
from scheduler.errors import DeliveryFailed
from scheduler.observability.metrics import observe_delivery
from scheduler.records import AlertDelivery
from scheduler.rules.alerts import retry_delay_ms
from scheduler.settings import Settings
from scheduler.storage import alerts as alerts_sql
from scheduler.storage.clock import db_now
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger(__name__)

BATCH = 50
CLAIM_S = 60.0  # a claimed delivery is due again after this, if its sender died before recording the attempt


@dataclass(frozen=True)
class DeliveryReport:
    sent: int = 0
    failed_attempts: int = 0
    given_up: int = 0


class AlertOutbox:
    """Sends due deliveries through ``senders`` (channel name -> :class:`~scheduler.alerting.port.Sender`)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        senders: Mapping[str, Sender],
        *,
        may_send: Callable[[], bool] = lambda: True,
        idle_timeout_ms: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.senders = senders
        self.may_send = may_send
        self.idle_timeout_ms = idle_timeout_ms

    def deliver(self, *, time_budget_s: float) -> DeliveryReport:
        """Send what is due until done, out of time, or no longer allowed to."""
        started = time.monotonic()
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            now = db_now(connection)
            hold = timedelta(seconds=max(CLAIM_S, time_budget_s * 2))
            due = alerts_sql.claim_due_deliveries(connection, now=now, claim_until=now + hold, limit=BATCH)
        sent = failed = given_up = 0
        for delivery in due:
            if time.monotonic() - started >= time_budget_s or not self.may_send():
                self._release(delivery)
                continue
            error = self._send(delivery)
            final = error is not None and (
                delivery.channel not in self.senders
                or delivery.attempts + 1 >= self.settings.alert_delivery_attempts
            )
            with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
                now = db_now(connection)
                delay = timedelta(
                    milliseconds=retry_delay_ms(delivery.attempts + 1, self.settings.alert_retry_delay)
                )
                alerts_sql.record_attempt(
                    connection,
                    delivery.id,
                    now=now,
                    error=error,
                    next_attempt_at=None if final else now + delay,
                )
            observe_delivery(delivery.channel, "sent" if error is None else "failed" if final else "retry")
            if error is None:
                sent += 1
                continue
            failed += 1
            given_up += final
            log = logger.error if final else logger.warning
            log(
                "alert delivery %s to channel %s failed (attempt %d of %d%s): %s",
                delivery.id,
                delivery.channel,
                delivery.attempts + 1,
                self.settings.alert_delivery_attempts,
                ", giving up: see scheduler:alerts" if final else "",
                error,
            )
        return DeliveryReport(sent=sent, failed_attempts=failed, given_up=given_up)

    def _release(self, delivery: AlertDelivery) -> None:
        """Hand a claimed delivery back, due at once (out of time or leadership before sending it)."""
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            alerts_sql.release_delivery(connection, delivery.id, now=db_now(connection))

    def _send(self, delivery: AlertDelivery) -> str | None:
        """None when the channel took the message, else the one-line reason."""
        sender = self.senders.get(delivery.channel)
        if sender is None:
            return f"channel {delivery.channel!r} is not configured (alertChannels)"
        try:
            sender.send(delivery.payload, delivery_id=delivery.id)
        except DeliveryFailed as error:
            return error.reason
        return None
