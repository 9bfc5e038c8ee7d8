"""Which live worker runs a (queue, command): the rule behind the warnings of `health` and `run --wait`."""

from __future__ import annotations

from datetime import UTC, datetime

from cli.waiting import nobody_warning
from scheduler.records import Execution
from workers.health import LiveWorker, coverage_warning

A = LiveWorker("a@h1", frozenset({"default"}), frozenset({"test:echo"}))
B = LiveWorker("b@h2", frozenset({"default", "reports"}), frozenset({"test:echo", "report:disk"}))
OLD = LiveWorker("old@h3", frozenset(), None)  # answered the request with an error: knows nothing of it


def test_a_worker_on_the_queue_with_the_command_runs_it() -> None:
    assert coverage_warning([A, B], "default", "report:disk") is None
    assert coverage_warning([A], "default", "test:echo") is None


def test_no_worker_on_the_queue() -> None:
    assert coverage_warning([A, OLD], "reports", "test:echo") == (
        "no worker consumes queue 'reports': start one with 'systemprompt scheduler:worker -Q reports'"
    )
    assert coverage_warning([], "default", "test:echo") is not None


def test_workers_on_the_queue_without_the_command_are_named() -> None:
    assert coverage_warning([A, OLD], "default", "report:disk") == (
        "no live worker on queue 'default' has command 'report:disk' (a@h1): restart them so they load it"
    )


def _queued(command: str, queue: str = "default") -> Execution:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Execution(
        id=7, task_id=1, task_name="disk", command=command, scheduled_for=at, trigger="manual",
        status="queued", reason=None, attempt=1, max_attempts=1, queue=queue, worker=None, created_at=at,
        enqueued_at=at, started_at=None, heartbeat_at=None, finished_at=None, duration_ms=None,
        result=None, error=None,
    )  # fmt: skip


def test_run_wait_says_what_becomes_of_an_execution_nobody_can_run() -> None:
    # No worker on its queue: it waits there for one.
    assert nobody_warning([A], _queued("test:echo", "reports")) == (
        "no worker consumes queue 'reports': start one with 'systemprompt scheduler:worker -Q reports'; "
        "execution 7 stays queued until a worker that can run it does"
    )
    # Workers on its queue that lack the command: one of them takes it and fails it, it does not wait.
    assert nobody_warning([A, OLD], _queued("report:disk")) == (
        "no live worker on queue 'default' has command 'report:disk' (a@h1): restart them so they load it; "
        "execution 7 fails when one of them takes it"
    )
    assert nobody_warning([A, B], _queued("report:disk")) is None
    assert nobody_warning(None, _queued("report:disk")) is None  # the workers were not asked
