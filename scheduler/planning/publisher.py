"""What the planner and ``run_task_now`` need from a broker: publish execution ids.

The Celery-backed implementation lives in ``workers/``; ``scheduler/`` never imports Celery.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

# Records of scheduler.records.DEFERRED: imported where they are built, so importing this module does not
# define them (the read verbs never do).
if TYPE_CHECKING:
    from scheduler.records import Dispatch


class Publisher(Protocol):
    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Put every dispatch on its queue, or raise :class:`scheduler.errors.BrokerUnavailable` (nothing was
        sent) or its subclass :class:`scheduler.errors.PublishUncertain` (sent, the broker's answer lost).

        A publish may repeat an earlier one (after a crash or a recovery sweep); consumers claim
        conditionally.
        """
        ...


@runtime_checkable
class QueueInspector(Protocol):
    """A publisher that can tell which messages still wait on their queues (the recovery sweep asks it)."""

    def waiting(self, dispatches: Sequence[Dispatch]) -> set[int] | None:
        """The execution ids of ``dispatches`` with a message still on their queue, not yet delivered to any
        worker; None when the broker cannot tell (then the sweep republishes as if the messages were lost)."""
        ...


class NullPublisher:
    """Publishes nothing: executions stay ``pending`` for a planner's relay to send."""

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        return None
