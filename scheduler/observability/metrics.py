"""Prometheus metrics of the planner, served on ``settings.metrics_port`` (``/metrics``).

Recording is off until :func:`start_metrics_server` (``scheduler:planner``) or :func:`enable`
(``scheduler:serve``, whose worker endpoint exposes these too) turns it on; while off every hook returns at
once. The hooks:

- :func:`observe_tick` (once per tick, from :meth:`scheduler.planning.planner.Planner.run_forever`): the
  leader gauge, the tick duration, the counters of the :class:`~scheduler.records.TickReport`, lease
  renewals and, on the leader only and at most every :data:`STATUS_REFRESH_S`, the executions per active
  status (:func:`scheduler.storage.monitoring.active_status_counts`); :func:`observe_failed_tick` (once per
  failed tick): the failure counter and the leader gauge;
- :func:`observe_queued` (per relayed batch, after its transaction): the dispatch lag of first attempts,
  ``enqueued_at - scheduled_for``, read for the batch's ids by primary key.

The hooks take plain values and records, not the planner: planning imports this module, never the reverse.

Metric objects are created on first use, so a process that switched to Prometheus' multiprocess mode first
(``PROMETHEUS_MULTIPROC_DIR``, as a prefork worker does: :mod:`workers.metrics`) records them in its files.
A hook never fails the planner: a metrics error is logged at debug level and dropped.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import Engine

from scheduler.errors import ConfigError
from scheduler.records import Dispatch, TickReport
from scheduler.storage.dispatch import ACTIVE_STATUSES
from scheduler.storage.monitoring import active_status_counts, first_attempt_enqueue_times

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from scheduler.settings import Settings

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
STATUS_REFRESH_S = 5.0
STATUS_QUERY_TIMEOUT_MS = 2000
TICK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
LAG_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, float("inf"))


class PlannerMetrics:
    """The planner's metric objects (one set per process)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        def counter(name: str, doc: str, labels: Sequence[str] = ()) -> Counter:
            return Counter(name, doc, labels, registry=registry)

        # livemax: in serve the main process sets these, its pool processes never do.
        self.leader = Gauge(
            "scheduler_planner_leader",
            "1 while this planner holds the leader lease, else 0.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.tick_duration = Histogram(
            "scheduler_planner_tick_duration_seconds",
            "Duration of planner ticks, by role (leader or standby).",
            ["role"],
            buckets=TICK_BUCKETS,
            registry=registry,
        )
        self.tick_failures = counter(
            "scheduler_planner_tick_failures_total", "Ticks that failed (database unreachable, a bug)."
        )
        self.due = counter("scheduler_planner_due_total", "Due tasks the leader handled.")
        self.created = counter("scheduler_planner_created_total", "Executions the leader created to run.")
        self.dispatched = counter(
            "scheduler_planner_dispatched_total", "Execution ids published (new, relayed and republished)."
        )
        self.skipped = counter("scheduler_planner_skipped_total", "Slots recorded skipped or cancelled.")
        self.misfired = counter("scheduler_planner_misfired_total", "Slots missed beyond their grace.")
        self.recovered = counter(
            "scheduler_planner_recovered_total",
            "Executions of the recovery sweep: requeued (next attempt), lost (worker gone), or republished "
            "(unclaimed, message not on the broker).",
            ["kind"],
        )
        self.cleaned = counter("scheduler_planner_cleaned_total", "Finished executions deleted by retention.")
        self.publish_errors = counter(
            "scheduler_planner_publish_errors_total", "Ticks whose publishing to the broker failed."
        )
        self.publish_uncertain = counter(
            "scheduler_planner_publish_uncertain_total",
            "Executions whose publish got no answer (marked queued, not sent again).",
        )
        self.lease_renewals = counter(
            "scheduler_planner_lease_renewals_total", "Times this planner took or renewed the leader lease."
        )
        self.grants_seen: dict[str, int] = {}
        self.dispatch_lag = Histogram(
            "scheduler_planner_dispatch_lag_seconds",
            "Enqueue time minus scheduled time of first attempts, by trigger (schedule, manual, catchup).",
            ["trigger"],
            buckets=LAG_BUCKETS,
            registry=registry,
        )
        self.alert_deliveries = counter(
            "scheduler_alert_deliveries_total",
            "Alert delivery attempts by channel and outcome: sent, retry (failed, tried again), failed "
            "(given up after alertDeliveryAttempts; listed by scheduler:alerts).",
            ["channel", "outcome"],
        )
        self.alert_incidents = Gauge(
            "scheduler_alert_incidents_open",
            "Open alert incidents (silenced ones included); set by the leader when it evaluates the rules.",
            multiprocess_mode="livemax",
            registry=registry,
        )
        self.executions = Gauge(
            "scheduler_executions",
            "Executions per active status (pending, queued, running, retrying); set by the leader only.",
            ["status"],
            multiprocess_mode="livemax",
            registry=registry,
        )


@dataclass
class _State:
    enabled: bool = False
    metrics: PlannerMetrics | None = None
    next_refresh: float = 0.0
    statuses_shown: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


_state = _State()


def multiprocess_mode() -> bool:
    """Whether this process records into Prometheus' multiprocess files (``PROMETHEUS_MULTIPROC_DIR``)."""
    return bool(os.environ.get(MULTIPROC_ENV))


def exposition_registry() -> CollectorRegistry:
    """What ``/metrics`` serves: every process's files in multiprocess mode, else this process's registry."""
    if not multiprocess_mode():
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


@dataclass
class MetricsServer:
    """A running ``/metrics`` endpoint; :meth:`close` stops it."""

    port: int
    server: WSGIServer
    thread: threading.Thread

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def serve_metrics(port: int, registry: CollectorRegistry, *, addr: str = "0.0.0.0") -> MetricsServer:
    """Serve ``registry`` on ``addr:port`` from a daemon thread; OSError when the port is taken."""
    server, thread = start_http_server(port, addr=addr, registry=registry)
    logger.info("metrics: serving Prometheus metrics on %s:%d/metrics", addr, port)
    return MetricsServer(port=port, server=server, thread=thread)


def enable(settings: Settings | None = None) -> None:
    """Record planner metrics from now on (with ``settings``: only when a metrics port is set).

    The metric objects are created at first use. ``scheduler:serve`` calls this: its worker's endpoint
    serves them.
    """
    if settings is None or settings.metrics_port is not None:
        _state.enabled = True


def disable() -> None:
    """Stop recording (metric objects and values stay; the status counts refresh when re-enabled)."""
    _state.enabled = False
    _state.next_refresh = 0.0


def enabled() -> bool:
    return _state.enabled


def start_metrics_server(settings: Settings, *, addr: str = "0.0.0.0") -> MetricsServer | None:
    """Enable planner metrics and serve them on ``settings.metrics_port``; None when no port is set.

    Raises :class:`~scheduler.errors.ConfigError` (exit 2) when the port cannot be bound.
    """
    port = settings.metrics_port
    if port is None:
        return None
    enable()
    _metrics()  # the series exist (at zero) before the first scrape
    try:
        return serve_metrics(port, exposition_registry(), addr=addr)
    except OSError as error:
        raise ConfigError(f"cannot serve metrics on port {port} (SCHEDULER_METRICS_PORT): {error}") from None


def _metrics() -> PlannerMetrics:
    metrics = _state.metrics
    if metrics is None:
        with _state.lock:
            if _state.metrics is None:
                # Multiprocess mode: the files are the registry, so nothing registers in-process.
                _state.metrics = PlannerMetrics(None if multiprocess_mode() else REGISTRY)
            metrics = _state.metrics
    return metrics


# ------------------------------------------------------------------------------------------------ hooks


def observe_tick(report: TickReport, *, engine: Engine, holder: str, lease_grants: int | None) -> None:
    """Record one tick's :class:`~scheduler.records.TickReport` (a no-op while metrics are off).

    ``holder``: the planner's lease holder id; ``lease_grants``: how many times it took or renewed its lease
    so far (None: it plans without a lease); ``engine``: where the leader reads the status counts.
    """
    if not _state.enabled:
        return
    try:
        _observe_tick(report, engine, holder, lease_grants)
    except Exception as error:  # metrics never fail a tick
        logger.debug("metrics: recording the tick failed: %s", error)


def observe_failed_tick(*, leader: bool) -> None:
    """Record a failed tick (a no-op while metrics are off); ``leader``: whether the planner still trusts its
    lease (the leader gauge follows it)."""
    if not _state.enabled:
        return
    try:
        m = _metrics()
        m.tick_failures.inc()
        m.leader.set(1 if leader else 0)
    except Exception as error:  # metrics never fail a tick
        logger.debug("metrics: recording the tick failed: %s", error)


def _observe_tick(report: TickReport, engine: Engine, holder: str, lease_grants: int | None) -> None:
    m = _metrics()
    m.leader.set(1 if report.leader else 0)
    m.tick_duration.labels("leader" if report.leader else "standby").observe(report.duration_s)
    if lease_grants is not None:  # grants since the last observation, mid-tick renewals included
        seen = m.grants_seen.get(holder, 0)
        m.lease_renewals.inc(lease_grants - seen)
        m.grants_seen[holder] = lease_grants
    for counter, value in (
        (m.due, report.due),
        (m.created, report.created),
        (m.dispatched, report.dispatched),
        (m.skipped, report.skipped),
        (m.misfired, report.misfired),
        (m.cleaned, report.cleaned),
        (m.publish_uncertain, report.uncertain),
    ):
        if value:
            counter.inc(value)
    if report.requeued:
        m.recovered.labels("requeued").inc(report.requeued)
    if report.lost:
        m.recovered.labels("lost").inc(report.lost)
    if report.republished:
        m.recovered.labels("republished").inc(report.republished)
    if report.broker_error is not None:
        m.publish_errors.inc()
    if report.leader:
        _refresh_statuses(m, engine)
    elif _state.statuses_shown:
        # A standby reports no counts: only the leader's are meaningful (and sums over planners stay right).
        for status in ACTIVE_STATUSES:
            m.executions.labels(status).set(0)
        m.executions.clear()
        _state.statuses_shown = False
        _state.next_refresh = 0.0


def _refresh_statuses(m: PlannerMetrics, engine: Engine) -> None:
    now = time.monotonic()
    if now < _state.next_refresh:
        return
    _state.next_refresh = now + STATUS_REFRESH_S
    counts = active_status_counts(engine, timeout_ms=STATUS_QUERY_TIMEOUT_MS)
    for status in ACTIVE_STATUSES:
        m.executions.labels(status).set(counts.get(status, 0))
    _state.statuses_shown = True


def observe_queued(engine: Engine, dispatches: Sequence[Dispatch]) -> None:
    """Record the dispatch lag of the executions just marked ``queued`` (a no-op while metrics are off).

    Called by the relay after the transaction that marked them: one primary-key read of the batch, outside
    that transaction so it can neither hold its locks longer nor fail it. Only first attempts count (a
    retry's ``scheduled_for`` is its slot, long past).
    """
    if not _state.enabled or not dispatches:
        return
    try:
        rows = first_attempt_enqueue_times(engine, [d.execution_id for d in dispatches])
        histogram = _metrics().dispatch_lag
        for trigger, scheduled, enqueued in rows:
            histogram.labels(trigger).observe(max((enqueued - scheduled).total_seconds(), 0.0))
    except Exception as error:  # metrics never fail a relay
        logger.debug("metrics: recording the dispatch lag failed: %s", error)


def observe_delivery(channel: str, outcome: str) -> None:
    """Count one alert delivery attempt (``sent``, ``retry`` or ``failed``); a no-op while metrics are off."""
    if not _state.enabled:
        return
    try:
        _metrics().alert_deliveries.labels(channel=channel, outcome=outcome).inc()
    except Exception as error:  # metrics never fail a tick
        logger.debug("metrics: recording an alert delivery failed: %s", error)


def observe_open_incidents(count: int) -> None:
    """Set the open incidents gauge; a no-op while metrics are off."""
    if not _state.enabled:
        return
    try:
        _metrics().alert_incidents.set(count)
    except Exception as error:  # metrics never fail a tick
        logger.debug("metrics: recording open incidents failed: %s", error)
