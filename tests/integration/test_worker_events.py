"""Task events cross processes on Redis pub/sub, with secrets redacted, and the CLI prints them."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from workerproc import EngineSetup

from tests.support.processes import wait_for
from workers.remote_events import events_channel, listen

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]


def _of(event: dict[str, Any], execution_id: int, queue: str) -> bool:
    execution = event.get("execution") or {}
    return bool(execution.get("id") == execution_id and execution.get("queue") == queue)


def test_a_worker_publishes_executed_and_completed_events_with_secrets_redacted(
    worker_setup: EngineSetup,
) -> None:
    task = worker_setup.create("evented", "test:echo", data={"password": "hunter2", "region": "eu"})
    seen: list[dict[str, Any]] = []
    stop = threading.Event()
    subscribed = threading.Event()

    def collect() -> None:
        channel = events_channel(worker_setup.settings)
        for event in listen(worker_setup.broker_url, channel, stop=stop, poll_s=0.1):
            seen.append(event)
        subscribed.set()

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    try:
        execution = worker_setup.service.run_task_now(task.id, wait=True, timeout_s=30)

        def mine() -> list[dict[str, Any]]:
            # Pub/sub is server-wide and every test database numbers executions from 1: match the queue too.
            return [e for e in list(seen) if _of(e, execution.id, worker_setup.queue)]

        events = wait_for(lambda: len(mine()) >= 2 and mine(), 10)
    finally:
        stop.set()
        thread.join(5)
    assert [(e["event"], e["type"]) for e in events] == [
        ("task-event", "executed"),
        ("task-event", "completed"),
    ]
    completed = events[1]["execution"]
    assert completed["result"] == {"password": "***", "region": "eu"}
    assert completed["task_name"] == "evented" and completed["status"] == "completed"
    assert "hunter2" not in json.dumps(events)


def test_the_events_verb_prints_recent_events_one_json_object_per_line(worker_setup: EngineSetup) -> None:
    task = worker_setup.create("printed", "test:fail", retries=0)
    execution = worker_setup.service.run_task_now(task.id, wait=True, timeout_s=30)

    def printed() -> list[dict[str, Any]]:  # events are sent right after the outcome is committed
        result = worker_setup.cli("scheduler:events", "--recent", "200")
        assert result.code == 0, result.stderr
        events = [json.loads(line) for line in result.stdout.splitlines()]
        mine = [e for e in events if _of(e, execution.id, worker_setup.queue) and "at" in e]
        return mine if len(mine) >= 2 else []

    mine = wait_for(printed, 20, interval_s=0.5)
    assert [e["type"] for e in mine] == ["executed", "failed"]
    assert mine[1]["final"] is True and mine[1]["execution"]["error"].startswith("RuntimeError")


def test_the_events_verb_needs_a_redis_broker(engine_setup: EngineSetup) -> None:
    engine_setup.env["SCHEDULER_BROKER_URL"] = "filesystem://"
    result = engine_setup.cli("scheduler:events")
    assert result.code == 2 and "redis://" in result.stderr
