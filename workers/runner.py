"""The worker's side of running an execution: :mod:`scheduler.execution.runner` with what a Celery worker
adds. Celery's soft time limit (``SoftTimeLimitExceeded``, raised only in a running command:
:mod:`workers.soft_limit`) counts as the attempt's time limit passing, and every recorded outcome goes to the
worker's metrics (:func:`workers.metrics.record_execution`).
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from scheduler.execution import runner
from scheduler.execution.host import ExecutionHooks
from scheduler.execution.outcomes import Decision
from scheduler.records import Dispatch
from workers.metrics import record_execution
from workers.runtime import WorkerRuntime

WORKER_HOOKS = ExecutionHooks(time_limit_errors=(SoftTimeLimitExceeded,), recorded=record_execution)


def execute(runtime: WorkerRuntime, execution_id: int, *, worker: str, rechecks: int = 0) -> Decision:
    """Run one attempt of ``execution_id`` as ``worker`` (``host:pid``):
    :func:`scheduler.execution.runner.execute`."""
    return runner.execute(runtime, execution_id, worker=worker, rechecks=rechecks, hooks=WORKER_HOOKS)


def record_hard_timeout(
    runtime: WorkerRuntime, execution_id: int, *, nodename: str, limit_s: float | None
) -> Dispatch | None:
    """Record an attempt whose process the hard time limit killed:
    :func:`scheduler.execution.runner.record_hard_timeout`."""
    return runner.record_hard_timeout(
        runtime, execution_id, nodename=nodename, limit_s=limit_s, hooks=WORKER_HOOKS
    )
