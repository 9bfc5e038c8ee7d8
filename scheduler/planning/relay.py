"""The outbox relay: ``pending`` executions go to the broker, oldest first, within the concurrency cap.

``pending`` rows come from the planner's batches, from ``run_task_now`` without a publisher (or whose publish
failed), and from the recovery sweep (a lost attempt's retry). :meth:`Relay.relay_pending` publishes up to
``max_concurrent_tasks`` minus the executions queued, running or retrying, then marks them ``queued``. A
publish failure leaves the rows ``pending``: nothing is lost, the next tick tries again; a publish whose
outcome is unknown marks them ``queued`` (see :meth:`Relay.publish`).
:meth:`Relay.relay_created` is the planner's shortcut right after a batch commits: when the batch's rows are
all the pending rows there are and fit under the cap, it publishes them without reading them back.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from scheduler.errors import PublishUncertain
from scheduler.observability.metrics import observe_queued
from scheduler.planning.fault_injection import fault_point
from scheduler.planning.publisher import Publisher
from scheduler.records import Dispatch
from scheduler.settings import Settings
from scheduler.storage.dispatch import (
    first_pending_id,
    in_flight_count,
    mark_queued,
    pending_dispatches,
    relay_counts,
)
from scheduler.storage.transactions import write_transaction

logger = logging.getLogger("scheduler.planning.planner")


class Relay:
    """Publishes for one planner; remembers whether the broker is down so an outage is logged once.

    ``may_publish`` is asked right before each publish (a leader that lost its lease meanwhile stops there);
    ``idle_timeout_ms`` bounds how long its transactions may sit idle (see
    :func:`~scheduler.storage.transactions.write_transaction`).
    """

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        publisher: Publisher,
        *,
        may_publish: Callable[[], bool] | None = None,
        idle_timeout_ms: int | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.publisher = publisher
        self.may_publish = may_publish or (lambda: True)
        self.idle_timeout_ms = idle_timeout_ms
        self._broker_down = False
        self._in_flight: int | None = None  # see new_tick
        self.uncertain = 0  # executions whose publish outcome was unknown (see publish)

    def publish(self, dispatches: list[Dispatch]) -> str | None:
        """Publish ``dispatches``; return None when they are (or may be) on the broker, else the error text
        (logged once per outage, not per tick).

        A publish whose outcome is unknown (:class:`~scheduler.errors.PublishUncertain`: sent, the reply
        lost) counts as done, so the caller marks the rows: publishing them again would put every id that did
        arrive on its queue twice. The recovery sweep republishes, after ``recovery_after``, those whose
        message it does not find on the queue. Counted in :attr:`uncertain`.
        """
        try:
            self.publisher.publish(dispatches)
        except PublishUncertain as error:
            self.uncertain += len(dispatches)
            logger.warning(
                "planner: the broker's answer to a publish of %d executions was lost (%s); they count as "
                "queued, the recovery sweep republishes any whose message is not on the queue",
                len(dispatches),
                error,
            )
            return None
        except Exception as error:  # whatever the publisher raises, rows stay as they are: nothing is lost
            if not self._broker_down:
                logger.error("planner: publishing failed, executions stay pending until it works: %s", error)
            self._broker_down = True
            return str(error) or type(error).__name__
        if self._broker_down:
            logger.info("planner: publishing works again")
        self._broker_down = False
        return None

    def relay_created(self, dispatches: Sequence[Dispatch]) -> tuple[int, str | None]:
        """Publish the pending executions a planning batch just committed and mark them queued.

        When no older execution is pending (the smallest pending id is theirs: nothing waits for capacity, no
        manual run, no requeued attempt) and they fit under the cap, they go out as given, without reading
        them back; otherwise this is :meth:`relay_pending`, oldest first. Returns what
        :meth:`relay_pending` returns.
        """
        if not dispatches:
            return 0, None
        with self.engine.connect() as connection:
            if self._in_flight is None:
                self._in_flight, first_pending = relay_counts(connection)
            else:  # counted earlier this tick: counting again would scan every queued row per batch
                first_pending = first_pending_id(connection)
        ours = min(d.execution_id for d in dispatches)
        room = self.settings.max_concurrent_tasks - self._in_flight
        if first_pending != ours or len(dispatches) > room:
            self._in_flight = None
            return self.relay_pending()
        fault_point("before_publish")
        if not self.may_publish():  # leadership lost since the commit: the new leader sends them
            return 0, None
        error = self.publish(list(dispatches))
        if error is not None:
            return 0, error
        with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
            mark_queued(connection, [d.execution_id for d in dispatches])  # the database clock
        observe_queued(self.engine, dispatches)
        self._in_flight += len(dispatches)
        return len(dispatches), None

    def new_tick(self) -> None:
        """Forget the in-flight count :meth:`relay_created` keeps within a tick.

        Within a tick the count only grows by what this relay published: executions that finished meanwhile
        only make room, so the kept count errs on the safe side of the cap; the next tick counts afresh.
        """
        self._in_flight = None

    def relay_pending(self) -> tuple[int, str | None]:
        """Publish pending executions within the cap, oldest first, and mark them queued.

        Returns (how many were published, the publish error or None). Database errors propagate.
        """
        published = 0
        while True:  # until the cap is reached or no pending row is left
            with self.engine.connect() as connection:
                room = self.settings.max_concurrent_tasks - in_flight_count(connection)
                limit = min(room, self.settings.planner_batch_size)
                timeout = self.settings.task_timeout
                dispatches = pending_dispatches(connection, limit, default_timeout_ms=timeout)
            if not dispatches:
                return published, None
            fault_point("before_publish")
            if not self.may_publish():  # leadership lost since the rows were read: the new leader sends them
                return published, None
            error = self.publish(dispatches)
            if error is not None:
                return published, error
            with write_transaction(self.engine, idle_timeout_ms=self.idle_timeout_ms) as connection:
                mark_queued(connection, [d.execution_id for d in dispatches])  # the database clock
            observe_queued(self.engine, dispatches)
            published += len(dispatches)
            if len(dispatches) < limit:
                return published, None


class BackgroundRelay:
    """A relay that runs in a helper thread, so a batch is published while the planner plans the next one.

    The planner :meth:`submit` s each batch's new executions (in commit order); the thread calls
    :meth:`Relay.relay_created` for each, one after the other. On PostgreSQL the two threads overlap what
    each waits for (the planning transaction's statements; the broker round trip and the ``queued``
    update). After a publish error or an exception the thread stops relaying (the rows stay ``pending``);
    :attr:`failed` tells the planner to stop submitting. :meth:`finish` waits for the thread, returns (how
    many were published, the publish error or None) and raises what the thread raised.
    """

    def __init__(self, relay: Relay) -> None:
        self._relay = relay
        self._work: queue.SimpleQueue[Sequence[Dispatch] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._published = 0
        self._error: str | None = None
        self._failure: BaseException | None = None

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def failed(self) -> bool:
        """A publish failed or the thread raised: it relays nothing more this tick."""
        return self._error is not None or self._failure is not None

    @property
    def crashed(self) -> bool:
        """The thread raised (say the database went away): :meth:`finish` raises it."""
        return self._failure is not None

    def submit(self, dispatches: Sequence[Dispatch]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="planner-relay", daemon=True)
            self._thread.start()
        self._work.put(dispatches)

    def _run(self) -> None:
        while (dispatches := self._work.get()) is not None:
            if self.failed:
                continue  # the rows stay pending for the next tick
            try:
                published, error = self._relay.relay_created(dispatches)
            except BaseException as failure:  # handed to the planner's thread by finish()
                self._failure = failure
                continue
            self._published += published
            self._error = error

    def finish(self) -> tuple[int, str | None]:
        if self._thread is not None:
            self._work.put(None)
            self._thread.join()
            self._thread = None
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return self._published, self._error
