"""The planner: the leader turns due slots into executions and hands their ids to the broker.

One :meth:`Planner.tick` (docs/architecture.md: the life of one execution):

1. take the leader lease, or renew it once a third of its TTL has passed (a standby stops here); lift ended
   timed pauses and release backfills' executions (:mod:`scheduler.planning.timed`);
2. in batches of ``planner_batch_size``, each one transaction fenced by the lease: select due tasks by index,
   decide each one's slots (:func:`scheduler.rules.policies.plan_task`), insert the executions with ``ON
   CONFLICT DO NOTHING`` and advance the tasks; until nothing is due or the time budget is spent. Right after
   each batch's commit, the relay publishes: ``pending`` executions oldest first, at most
   ``max_concurrent_tasks`` minus those queued, running or retrying, then marks them ``queued``. A publish
   failure leaves them ``pending`` for the next tick;
3. every few seconds (:data:`SWEEP_INTERVAL_S`, less with short heartbeats) the recovery sweep
   (:mod:`scheduler.planning.recovery`): republish unclaimed ids the broker no longer holds, reap executions
   of dead workers;
4. the relay again when no batch relayed (pending rows of manual runs, of the sweep's requeues);
5. every ``cleanup_interval``, :func:`scheduler.planning.cleanup.run_cleanup`;
6. every ``alert_check_interval``, the alert rules (:mod:`scheduler.alerting.evaluator`) and the alert
   delivery outbox (:mod:`scheduler.alerting.outbox`); an alert failure is logged and never stops planning.

Due-ness uses the database clock; the only host clock read is the monotonic one, for the lease and budgets.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from scheduler.alerting.evaluator import AlertEvaluator
from scheduler.alerting.outbox import AlertOutbox
from scheduler.alerting.port import Sender
from scheduler.errors import SchedulerError
from scheduler.observability.events import EventBus
from scheduler.observability.metrics import observe_failed_tick, observe_tick
from scheduler.planning.batch import BatchReport, ScheduleCache, plan_tasks
from scheduler.planning.cleanup import cleanup_step
from scheduler.planning.fault_injection import fault_point
from scheduler.planning.lease import Lease
from scheduler.planning.publisher import Publisher, QueueInspector
from scheduler.planning.recovery import Recovery, SweepReport
from scheduler.planning.relay import BackgroundRelay, Relay
from scheduler.planning.timed import TimedReport, run_timed_work
from scheduler.records import Dispatch, TickReport
from scheduler.settings import Settings
from scheduler.storage.clock import db_now
from scheduler.storage.dispatch import cancel_executions, due_tasks
from scheduler.storage.leases import PLANNER_LEASE
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger(__name__)

MAX_BACKOFF_S = 10.0
SWEEP_INTERVAL_S = 5.0  # at most this long between recovery sweeps (less with short heartbeat intervals)


def freeze_start_up_heap() -> None:
    """Move what start-up built (modules, the Celery app, the engine) out of the cyclic collector's reach
    (:func:`gc.freeze`). A burst allocates enough to trigger full collections, each of which traversed that
    whole heap again (70-200 ms of a 10k burst's ~1.5 s, holding the GIL); frozen, they traverse only what was
    allocated since. Those objects live as long as the process anyway."""
    gc.collect()
    gc.freeze()


class Planner:
    """The planner loop (see the module docstring). One thread drives one instance.

    ``require_lease=False`` plans without leadership (tests of invariant 2: the unique slot constraint alone
    keeps concurrent planners correct); ``lease_name`` partitions leadership; ``time_budget_s`` bounds a
    tick's batch loop (default: half the lease's trusted span); ``senders``: the alert channels' senders
    (channel name -> :class:`~scheduler.alerting.port.Sender`; without them alerts are evaluated and queued,
    and stay pending until a planner that has them sends them).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        publisher: Publisher,
        *,
        holder: str | None = None,
        events: EventBus | None = None,
        require_lease: bool = True,
        lease_name: str = PLANNER_LEASE,
        time_budget_s: float | None = None,
        senders: Mapping[str, Sender] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self.events = events
        self.require_lease = require_lease
        self.lease = Lease(
            engine, ttl=timedelta(milliseconds=settings.lease_ttl), name=lease_name, holder=holder
        )
        self.holder = self.lease.holder
        trusted = (self.lease.ttl - self.lease.margin).total_seconds()
        self.time_budget_s = time_budget_s if time_budget_s is not None else max(0.5, trusted / 2)
        idle_ms = self.lease.idle_timeout_ms
        self.recovery = Recovery(
            engine, settings, self.lease if require_lease else None, events, idle_timeout_ms=idle_ms
        )
        self.relay = Relay(
            engine, settings, publisher, may_publish=self._may_dispatch, idle_timeout_ms=idle_ms
        )
        self.alerts = AlertEvaluator(
            engine,
            settings,
            fence=self.lease.fence if require_lease else None,
            events=events,
            idle_timeout_ms=idle_ms,
        )
        self.outbox = AlertOutbox(
            engine, settings, senders or {}, may_send=self._still_leader, idle_timeout_ms=idle_ms
        )
        self._next_alert_check: float | None = None
        self._schedules = ScheduleCache()
        # Often enough that stale heartbeats (3 intervals) and unclaimed messages are found in time.
        self.sweep_interval_s = min(
            SWEEP_INTERVAL_S, settings.heartbeat_interval / 1000, settings.recovery_after / 4000
        )
        self._next_sweep: float | None = None
        self._next_cleanup: float | None = None
        self._was_leader: bool | None = None
        self._last_failure: tuple[str, float] | None = None

    # ------------------------------------------------------------------------------------------ the tick

    def tick(self) -> TickReport:
        """Run one tick; database errors propagate (``run_forever`` logs them and backs off).

        The lease is renewed only when a third of its TTL has passed (:meth:`Lease.needs_renewal`); each
        planning transaction still checks it (fencing). Each batch is published right after its commit (on
        PostgreSQL by a helper thread, :class:`~scheduler.planning.relay.BackgroundRelay`, while the next
        batch is planned), so the first slots of a burst are on the broker while later batches are planned;
        after a publish failure the rest of the tick only plans (the rows stay ``pending``). The recovery
        sweep runs every :attr:`sweep_interval_s`, not every tick.
        """
        started = time.monotonic()
        if self.require_lease and self.lease.needs_renewal() and not self.lease.acquire_or_renew():
            return TickReport(leader=False, duration_s=time.monotonic() - started)
        timed = self._timed_work()
        if timed.fenced:
            return TickReport(leader=False, duration_s=time.monotonic() - started)
        uncertain_before = self.relay.uncertain
        self.relay.new_tick()
        # PostgreSQL: publish in a helper thread while the next batch is planned (SQLite has one writer).
        background = BackgroundRelay(self.relay) if self.engine.dialect.name == "postgresql" else None
        try:
            report, more, relayed = self._plan_batches(started, background)
        except Exception:
            if background is not None:
                with contextlib.suppress(Exception):  # the planning error is the one to report
                    background.finish()
            raise
        if background is not None:
            published, error = background.finish()
            report = replace(
                report, dispatched=report.dispatched + published, broker_error=report.broker_error or error
            )
        if not report.leader:
            uncertain = self.relay.uncertain - uncertain_before
            return replace(report, uncertain=uncertain, duration_s=time.monotonic() - started)
        if self._still_leader():
            swept = self._maybe_sweep()
            report = replace(
                report,
                requeued=swept.requeued,
                lost=swept.lost,
                dispatched=report.dispatched + swept.republished,
                republished=swept.republished,
            )
            if not relayed or swept.requeued:  # pending rows the batches' relays did not see
                report = self._relay(report)
            report = replace(report, cleaned=self._maybe_cleanup())
            self._maybe_alert()
        uncertain = self.relay.uncertain - uncertain_before
        return replace(
            report,
            more=more,
            uncertain=uncertain,
            resumed=timed.resumed,
            released=timed.released,
            duration_s=time.monotonic() - started,
        )

    def _timed_work(self) -> TimedReport:
        """Lift ended timed pauses and release backfill executions (:mod:`scheduler.planning.timed`)."""

        def fence(connection: Connection) -> datetime | None:
            return self.lease.fence(connection) if self.require_lease else db_now(connection)

        report = run_timed_work(
            self.engine, fence, events=self.events, idle_timeout_ms=self.lease.idle_timeout_ms
        )
        if report.fenced:
            self.lease.forget()  # deposed: the next tick asks for the lease again
        return report

    def _plan_batches(
        self, started: float, background: BackgroundRelay | None
    ) -> tuple[TickReport, bool, bool]:
        """The batch loop of :meth:`tick`: (its report, whether due tasks are left, whether a batch relayed).

        Each batch's new executions are relayed right after its commit: in ``background`` once a burst
        needs more than one batch, else here. The report's ``leader`` is False when leadership was lost.
        """
        report = TickReport(leader=True)
        more = True
        relayed = False
        while more and time.monotonic() - started < self.time_budget_s:
            if not self._still_leader():
                return replace(report, leader=False), more, relayed
            batch = self.plan_batch()
            if batch.fenced:
                self.lease.forget()  # deposed: the next tick asks for the lease again
                return replace(report, leader=False), more, relayed
            report = replace(
                report,
                due=report.due + batch.due,
                created=report.created + batch.created,
                skipped=report.skipped + batch.skipped,
                misfired=report.misfired + batch.misfired,
            )
            more = batch.due >= self.settings.planner_batch_size
            if not batch.dispatches or report.broker_error is not None or not self._still_leader():
                continue
            relayed = True
            if background is None or not (more or background.started):
                report = self._relay(report, batch.dispatches)
            elif background.crashed:
                break  # its exception ends the tick (finish() raises it)
            elif not background.failed:  # after a publish error the rows stay pending for the next tick
                background.submit(batch.dispatches)
        return report, more, relayed

    def _relay(self, report: TickReport, created: Sequence[Dispatch] = ()) -> TickReport:
        """Relay ``created`` (a batch's new executions) if given, else every pending execution."""
        published, error = self.relay.relay_created(created) if created else self.relay.relay_pending()
        return replace(report, dispatched=report.dispatched + published, broker_error=error)

    def _maybe_sweep(self) -> SweepReport:
        """The recovery sweep on the first leader tick, then every :attr:`sweep_interval_s`."""
        now = time.monotonic()
        if self._next_sweep is not None and now < self._next_sweep:
            return SweepReport()
        inspector = self.publisher if isinstance(self.publisher, QueueInspector) else None
        swept = self.recovery.sweep(self.relay.publish, inspector)
        self._next_sweep = now + self.sweep_interval_s
        return swept

    def _may_dispatch(self) -> bool:
        """Whether this process may still hand executions to the broker: no lease needed, or a trusted one.

        Checked right before every publish: a leader frozen after reading pending rows must not publish them
        when it wakes up on a lost term (the new leader has published them already).
        """
        return not self.require_lease or self.lease.locally_valid()

    def _still_leader(self) -> bool:
        """Renew mid-tick when a third of the TTL passed; False when leadership is (or may be) gone."""
        if not self.require_lease:
            return True
        if self.lease.seconds_since_renewal() * 3 >= self.lease.ttl.total_seconds():
            self.lease.acquire_or_renew()
        return self.lease.locally_valid()

    def plan_batch(self) -> BatchReport:
        """Plan one batch of due tasks in one transaction, fenced by the lease (when one is required)."""
        idle_ms = self.lease.idle_timeout_ms
        # PostgreSQL with a lease: the fencing statement also sets the idle timeout (one round trip less).
        in_fence = idle_ms if self.require_lease and self.engine.dialect.name == "postgresql" else None
        with write_transaction(self.engine, idle_timeout_ms=None if in_fence else idle_ms) as connection:
            if self.require_lease:
                fenced_now = self.lease.fence(connection, idle_timeout_ms=in_fence)
            else:
                fenced_now = db_now(connection)
            if fenced_now is None:
                return BatchReport(fenced=True)
            now = fenced_now
            tasks = due_tasks(connection, now, self.settings.planner_batch_size)
            if not tasks:
                return BatchReport()
            batch = plan_tasks(connection, tasks, now, self._schedules)
            fault_point("before_commit")
        fault_point("after_commit")
        if batch.replaced:
            # A separate transaction, after the task rows are unlocked: a worker finishing one of these holds
            # its execution row and then wants the task row, the reverse order of a planning transaction.
            with write_transaction(self.engine, idle_timeout_ms=self.lease.idle_timeout_ms) as connection:
                cancel_executions(connection, batch.replaced, now=db_now(connection), reason="replaced")
        return batch

    def _maybe_cleanup(self) -> int:
        """Retention clean-up on the first leader tick, then every ``cleanup_interval``; a large backlog is
        worked off a time budget per tick."""
        now = time.monotonic()
        if self._next_cleanup is not None and now < self._next_cleanup:
            return 0
        result = cleanup_step(self.engine, self.settings, time_budget_s=self.time_budget_s / 2)
        self._next_cleanup = now + (self.settings.cleanup_interval / 1000 if result.done else 0.0)
        return result.deleted

    def _maybe_alert(self) -> None:
        """Alert rules and deliveries every ``alert_check_interval``; a failure is logged, not raised."""
        now = time.monotonic()
        if self._next_alert_check is not None and now < self._next_alert_check:
            return
        self._next_alert_check = now + self.settings.alert_check_interval / 1000
        try:
            if self.alerts.evaluate() is not None and self._still_leader():
                self.outbox.deliver(time_budget_s=self.time_budget_s / 2)
        except Exception as error:  # alerts must never stop the planning of the tasks they watch
            logger.error("planner: alert evaluation failed (%s); trying again next check", _one_line(error))

    # ------------------------------------------------------------------------------------------ the loop

    def run_forever(self, stop: threading.Event) -> None:
        """Tick every ``tick_interval`` until ``stop`` is set; never exits because a tick failed.

        A failing tick (database unreachable, or anything unexpected) logs one line, repeated at most once a
        minute while the same failure lasts, and the loop retries with a doubling backoff (at most 10 s). On
        stop, the lease is released so a standby takes over at once.
        """
        freeze_start_up_heap()  # every long-running planner: scheduler:planner and scheduler:serve
        interval = self.settings.tick_interval / 1000
        backoff = 0.0
        while not stop.is_set():
            wait = interval
            try:
                report = self.tick()
            except Exception as error:  # the loop must outlive any failure: log, back off, try again
                backoff = min(MAX_BACKOFF_S, max(interval, backoff * 2))
                self._log_failure(error, backoff)
                observe_failed_tick(leader=self.require_lease and self.lease.locally_valid())
                wait = backoff
            else:
                if backoff:
                    logger.info("planner: ticking again after a failure")
                backoff, self._last_failure = 0.0, None
                self._log_leadership(report.leader)
                observe_tick(
                    report,
                    engine=self.engine,
                    holder=self.holder,
                    lease_grants=self.lease.grants if self.require_lease else None,
                )
                if report.more:
                    wait = 0.0
            stop.wait(wait)
        if self.lease.term is None:
            logger.info("planner %s stopped: it held no lease (a standby): nothing to hand over", self.holder)
            return
        try:
            self.lease.release()
        except Exception as error:  # shutting down anyway; the lease then simply expires
            logger.warning(
                "planner %s stopped without releasing its lease (a standby takes over once it expires): %s",
                self.holder,
                _one_line(error),
            )
        else:
            logger.info(
                "planner %s stopped: its lease is released, so a standby planner takes over", self.holder
            )

    def _log_failure(self, error: Exception, backoff: float) -> None:
        text, now = _one_line(error), time.monotonic()
        last = self._last_failure
        if last is not None and last[0] == text and now - last[1] < 60:
            logger.debug("planner: tick failed again (%s)", text)
            return
        self._last_failure = (text, now)
        expected = isinstance(error, SQLAlchemyError | SchedulerError | OSError)
        log = logger.error if expected else logger.exception  # a bug deserves its traceback
        log("planner: tick failed (%s); retrying every %.2f s up to %.0f s", text, backoff, MAX_BACKOFF_S)

    def _log_leadership(self, leader: bool) -> None:
        if leader != self._was_leader and self.require_lease:
            term = self.lease.term
            logger.info("planner %s: %s", self.holder, f"leader (term {term})" if leader else "standby")
        self._was_leader = leader


def _one_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]
