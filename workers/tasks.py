"""The one Celery task: ``scheduler.execute(execution_id)`` runs one attempt of one execution.

Everything it does is in :mod:`scheduler.execution.runner` (through :mod:`workers.runner`); this module maps
the runner's decisions to Celery task states (what Flower and the worker's log show), each with the
decision's one-line summary:

- ``done`` -> SUCCESS, the summary as its result (``attempt 1 of 1 completed``);
- ``failed`` (the last attempt failed or timed out, or lost its claim) -> FAILURE: :class:`AttemptFailed`
  with our error (``attempt 3 of 3 failed: RuntimeError: disk full``), one line in the worker's log
  (``throws``), no traceback. The message is acknowledged all the same (``acks_late`` acks a failure:
  ``task_acks_on_failure_or_timeout``), so a failure is never redelivered;
- ``retry`` -> RETRY, ``self.retry(exc=AttemptFailed(...), countdown=...)``: a new message with the same
  task id, shadow name, queue and time limit (the row is already ``retrying``; the next claim makes it
  attempt + 1);
- ``recheck`` -> RETRY with ``rechecks + 1``: the execution runs on another worker with a fresh heartbeat; if
  that worker died, the row's heartbeat goes stale and the recheck takes it over;
- ``noop`` -> SUCCESS, the summary saying why nothing was recorded: a duplicate delivery did its job by doing
  nothing. An attempt whose claim was taken from it while it ran (reaped as lost, cancelled, taken over) is
  ``failed``: the database does not call it a success, so Flower must not either;
- an unreachable database -> ``self.retry`` with backoff (the message is not lost meanwhile).

The hard time limit kills the pool process with its process group, so the command's children die with it
(:mod:`workers.process_group`): Celery then calls :meth:`ExecuteTask.on_failure` in the worker's
main process (Celery >= 5.7), which records ``timed_out`` (or ``retrying`` and republishes). A process that
dies any other way is requeued by ``reject_on_worker_lost``; its redelivery rechecks until the heartbeat is
stale and then takes over, and the planner's sweep reaps it if no message is left.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from celery import Task
from celery.exceptions import TimeLimitExceeded
from sqlalchemy import exc as sa_exc

from scheduler.errors import SchedulerError, Unavailable
from scheduler.limits import TASK_NAME
from workers.publisher import CeleryPublisher
from workers.runner import execute, record_hard_timeout
from workers.runtime import WorkerRuntime
from workers.soft_limit import guard_celery_soft_limit

logger = logging.getLogger(__name__)

DB_RETRY_MAX = 30
DB_RETRY_CAP_S = 60.0


class AttemptFailed(Exception):
    """An attempt failed or timed out (recorded as such): the Celery task's FAILURE, or a RETRY's reason."""


class ExecuteTask(Task):  # type: ignore[misc]
    name = TASK_NAME
    ignore_result = True
    acks_late = True
    reject_on_worker_lost = True
    max_retries = None  # attempts are bounded by the execution's max_attempts, not by Celery
    typing = False
    throws = (AttemptFailed,)  # an expected failure: one log line, no traceback

    @property
    def runtime(self) -> WorkerRuntime:
        runtime: WorkerRuntime = self.app.scheduler_runtime
        return runtime

    def run(self, execution_id: int, rechecks: int = 0) -> str:
        guard_celery_soft_limit()
        execution_id = int(execution_id)
        worker = f"{self.request.hostname or socket.gethostname()}:{os.getpid()}"
        try:
            decision = execute(self.runtime, execution_id, worker=worker, rechecks=rechecks)
        except (Unavailable, sa_exc.OperationalError, sa_exc.InterfaceError) as error:
            retries = int(self.request.retries or 0)
            if retries >= DB_RETRY_MAX:
                raise
            logger.warning("execution %s: database unreachable (%s); retrying", execution_id, error)
            raise self.retry(
                args=[execution_id],
                kwargs={"rechecks": rechecks},
                countdown=min(2.0**retries, DB_RETRY_CAP_S),
            ) from error
        if decision.kind == "failed":
            raise AttemptFailed(decision.summary)
        if decision.kind in ("retry", "recheck"):
            raise self.retry(
                args=[execution_id],
                kwargs={"rechecks": rechecks + 1 if decision.kind == "recheck" else 0},
                countdown=decision.countdown_s,
                exc=AttemptFailed(decision.summary) if decision.kind == "retry" else None,
            )
        return decision.summary

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        if not isinstance(exc, TimeLimitExceeded) or not args:
            return
        nodename = self.runtime.nodename
        if nodename is None:
            return
        limit = exc.args[0] if exc.args and isinstance(exc.args[0], int | float) else None
        try:
            dispatch = record_hard_timeout(self.runtime, int(args[0]), nodename=nodename, limit_s=limit)
            if dispatch is not None:
                CeleryPublisher(self.app).publish([dispatch])
        except (SchedulerError, sa_exc.SQLAlchemyError) as error:
            # The heartbeat stops, so the planner's sweep reaps the execution later.
            logger.error("execution %s: cannot record the hard time limit: %s", args[0], error)


def register_tasks(app: Any) -> Any:
    """Register :class:`ExecuteTask` on ``app``; return the registered task.

    A subclass per app: Celery binds the app to the task *class*, and tests build several apps in one process.
    """
    task_class = type("ExecuteTask", (ExecuteTask,), {"__module__": __name__})
    return app.register_task(task_class())
