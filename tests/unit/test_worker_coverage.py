"""Which live worker runs a (queue, command): the rule behind the warnings of `health` and `run --wait`."""

from __future__ import annotations

from scheduler.health import LiveWorker, coverage_warning

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
