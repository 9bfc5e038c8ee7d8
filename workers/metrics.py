"""Prometheus metrics of a Celery worker: executions by command and outcome, and their durations.

The prefork pool runs executions in child processes, so the worker uses Prometheus' multiprocess mode:

- :func:`install` (called by :func:`workers.app.create_app`) does nothing unless ``settings.metrics_port`` is
  set. Then, when the worker starts (``worker_init``, in the main process, before the pool forks), it points
  ``PROMETHEUS_MULTIPROC_DIR`` at :func:`metrics_dir` (``$PROMETHEUS_MULTIPROC_DIR`` if set, else
  ``<home>/metrics/<node name>``, else a temporary directory), empties it (values of an earlier run would be
  counted again), and switches ``prometheus_client`` to multiprocess values: every pool process, forked
  after that, writes its own files there. The main process then serves ``/metrics`` on
  ``settings.metrics_port`` with a ``MultiProcessCollector`` over the directory: the sum over all pool
  processes, dead ones included (counters must not go backwards when a process is replaced). A port in use
  stops the worker at start (exit 2), like any other bad setting.
- ``worker_process_shutdown`` marks the exiting pool process dead (its live gauges are dropped).
- In ``scheduler:serve`` the planner runs in the worker's main process and records into the same directory:
  one endpoint, on ``settings.metrics_port``, serves planner and worker metrics.

:func:`record_execution` is the hot-path hook (one per recorded attempt, from :mod:`workers.runner`): a
counter and a histogram, no I/O beyond the mmapped file; a no-op while metrics are off.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

from celery import signals
from prometheus_client import Counter, Histogram, values
from prometheus_client.multiprocess import mark_process_dead

from scheduler.observability import metrics as planner_metrics
from scheduler.settings import Settings

logger = logging.getLogger(__name__)

DURATION_BUCKETS = (
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, float("inf"),
)  # fmt: skip


class WorkerMetrics:
    """The worker's metric objects; multiprocess values, so nothing registers in-process."""

    def __init__(self) -> None:
        self.executions = Counter(
            "scheduler_worker_executions_total",
            "Execution attempts recorded, by command and outcome (completed, failed, timed_out, cancelled).",
            ["command", "outcome"],
            registry=None,
        )
        self.duration = Histogram(
            "scheduler_worker_execution_duration_seconds",
            "Duration of execution attempts, by command.",
            ["command"],
            buckets=DURATION_BUCKETS,
            registry=None,
        )


class _State:
    enabled = False
    metrics: WorkerMetrics | None = None


_state = _State()


def record_execution(command: str, outcome: str, duration_ms: int) -> None:
    """Count one recorded attempt of ``command`` and its duration (a no-op while metrics are off)."""
    if not _state.enabled:
        return
    try:
        metrics = _state.metrics
        if metrics is None:
            metrics = _state.metrics = WorkerMetrics()
        metrics.executions.labels(command, outcome).inc()
        metrics.duration.labels(command).observe(duration_ms / 1000)
    except Exception as error:  # metrics never fail an execution
        logger.debug("metrics: recording an execution failed: %s", error)


def metrics_dir(settings: Settings, nodename: str) -> Path:
    """The multiprocess directory of this worker node (see the module docstring)."""
    explicit = os.environ.get(planner_metrics.MULTIPROC_ENV)
    if explicit:
        return Path(explicit)
    safe = re.sub(r"[^A-Za-z0-9_.@-]", "_", nodename) or "worker"
    return settings.home / "metrics" / safe


def prepare_multiprocess(directory: Path) -> Path:
    """Create ``directory`` (or delete the ``*.db`` files of an earlier run in it) and make this process, and
    those it forks, record into it.

    Falls back to a fresh temporary directory when ``directory`` cannot be written.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # only Prometheus' files: the directory may be the user's
            stale.unlink()
    except OSError as error:
        fallback = Path(tempfile.mkdtemp(prefix="systemprompt-metrics-"))
        logger.warning("metrics: cannot use %s (%s); using %s", directory, error, fallback)
        directory = fallback
    os.environ[planner_metrics.MULTIPROC_ENV] = str(directory)
    if not getattr(values.ValueClass, "_multiprocess", False):
        # prometheus_client chose its value class when it was imported; metrics made from now on (ours are
        # made at first use) write to the directory.
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    return directory


def install(app: Any, settings: Settings) -> None:
    """Connect the worker signals of ``app`` that set up metrics (nothing when no metrics port is set)."""
    port = settings.metrics_port
    if port is None:
        return
    servers: list[planner_metrics.MetricsServer] = []

    def on_worker_init(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is not app:
            return
        directory = prepare_multiprocess(metrics_dir(settings, str(sender.hostname or "worker")))
        _state.enabled = True
        try:
            servers.append(planner_metrics.serve_metrics(port, planner_metrics.exposition_registry()))
        except OSError as error:
            print(f"error: cannot serve metrics on port {port}: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        logger.info("metrics: worker metrics in %s", directory)

    def on_worker_shutdown(sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", None) is app:
            while servers:
                servers.pop().close()

    def on_process_shutdown(pid: int | None = None, **_: Any) -> None:
        if _state.enabled:
            mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]

    signals.worker_init.connect(on_worker_init, weak=False)
    signals.worker_shutdown.connect(on_worker_shutdown, weak=False)
    signals.worker_process_shutdown.connect(on_process_shutdown, weak=False)
