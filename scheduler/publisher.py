"""What the planner and ``run_task_now`` need from a broker: publish execution ids.

The Celery-backed implementation lives in ``workers/``; ``scheduler/`` never imports Celery.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Dispatch:
    execution_id: int
    queue: str
    command: str
    task_name: str
    countdown_s: float = 0.0
    # The task's time limit: the soft limit is raised inside the command, the hard limit kills it.
    timeout_s: float | None = None


class Publisher(Protocol):
    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        """Put every dispatch on its queue, or raise :class:`scheduler.errors.BrokerUnavailable`.

        A publish may repeat an earlier one (after a crash or a recovery sweep); consumers claim
        conditionally.
        """
        ...


class NullPublisher:
    """Publishes nothing: executions stay ``pending`` for a planner's relay to send."""

    def publish(self, dispatches: Sequence[Dispatch]) -> None:
        return None
