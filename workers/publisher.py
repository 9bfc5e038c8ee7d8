"""The Celery-backed :class:`scheduler.publisher.Publisher`: execution ids onto their queues.

Messages are standard Celery protocol messages for the one task ``scheduler.execute`` (args
``[execution_id]``), so any Celery worker of this app and Flower understand them. Each carries:

- ``shadow`` ``"<command> [<task name>]"``: the name Flower and the worker logs show;
- the task's time limits: ``soft_time_limit`` = its timeout (raised inside the command), ``time_limit`` = the
  timeout plus a grace (the pool process is killed; prefork pool only);
- ``countdown`` when the dispatch is delayed.

A batch goes out over one producer (one connection). Connection failures give up after a short, bounded retry
(``PUBLISH_RETRY_POLICY``) and raise :class:`~scheduler.errors.BrokerUnavailable`; the rows stay
``pending``/``queued`` for the planner's recovery sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from kombu.exceptions import KombuError

from celeryconfig import PUBLISH_RETRY_POLICY, TASK_NAME, hard_limit_grace_s
from scheduler.errors import BrokerUnavailable
from scheduler.publisher import Dispatch


def shadow_name(dispatch: Dispatch) -> str:
    """``"<command> [<task name>]"``, the name shown for the message in Flower and the worker's log."""
    return f"{dispatch.command} [{dispatch.task_name}]"


def message_options(dispatch: Dispatch) -> dict[str, Any]:
    """The ``send_task`` options of one dispatch (queue, shadow name, time limits, countdown)."""
    options: dict[str, Any] = {"queue": dispatch.queue, "shadow": shadow_name(dispatch)}
    if dispatch.timeout_s is not None and dispatch.timeout_s > 0:
        options["soft_time_limit"] = dispatch.timeout_s
        options["time_limit"] = dispatch.timeout_s + hard_limit_grace_s(dispatch.timeout_s)
    if dispatch.countdown_s > 0:
        options["countdown"] = dispatch.countdown_s
    return options


class CeleryPublisher:
    """Publishes dispatches through ``app`` (a Celery app from :func:`workers.app.create_app`)."""

    def __init__(self, app: Any) -> None:
        self._app = app
        self._connection_errors: tuple[type[BaseException], ...] | None = None

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._connection_errors is None:
            with self._app.connection_for_write() as connection:
                transport_errors = tuple(connection.connection_errors) + tuple(connection.channel_errors)
            self._connection_errors = (KombuError, OSError, *transport_errors)
        return self._connection_errors

    def check(self) -> None:
        """Connect to the broker once; raise :class:`BrokerUnavailable` when it does not answer."""
        errors = self._errors()
        try:
            with self._app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, interval_start=0, interval_step=0.25)
        except errors as error:
            raise BrokerUnavailable(_detail(error)) from error

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        if not dispatches:
            return
        errors = self._errors()
        try:
            with self._app.producer_or_acquire() as producer:
                for dispatch in dispatches:
                    self._app.send_task(
                        TASK_NAME,
                        args=[dispatch.execution_id],
                        producer=producer,
                        retry=True,
                        retry_policy=PUBLISH_RETRY_POLICY,
                        ignore_result=True,
                        **message_options(dispatch),
                    )
        except errors as error:
            raise BrokerUnavailable(_detail(error)) from error


def _detail(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
