"""Events stay inside their deployment: two schedulers on one Redis server, told apart by the database number
of their broker URL or by ``eventsPrefix``, never see each other's events in ``scheduler:events``.

Each deployment is a real CLI environment (embedded SQLite under its own home, the shared Redis server);
the events are the ``task-created`` events of ``scheduler:create``, printed by a real
``scheduler:events --follow`` subprocess. Task names are unique per test, so events of other tests on the
same server do not matter.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
from workerproc import SYSTEMPROMPT, clean_env, run_cli

from tests.support.processes import stop_process_group, wait_for
from workers.remote_events import RECENT_SUFFIX

pytestmark = [pytest.mark.redis, pytest.mark.timeout(90)]

# High database numbers that nothing else on the shared server uses (never flushed: names are unique).
DATABASE_A, DATABASE_B = 11, 12


def _on_database(url: str, number: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{number}"))


@dataclass
class Deployment:
    """One scheduler installation: its own home (embedded database) and environment."""

    workdir: Path
    env: dict[str, str]

    def create(self, name: str) -> None:
        result = run_cli(
            self.env, "scheduler:create", "--name", name, "--command", "test:echo", cwd=self.workdir
        )
        assert result.code == 0, result.stderr

    def recent_names(self) -> list[str]:
        result = run_cli(self.env, "scheduler:events", "--recent", "1000", cwd=self.workdir)
        assert result.code == 0, result.stderr
        return [_task_name(json.loads(line)) for line in result.stdout.splitlines()]


def _deployment(tmp_path: Path, label: str, broker_url: str, **settings: str) -> Deployment:
    workdir = tmp_path / label
    workdir.mkdir()
    (workdir / "module.yaml").write_text("config: {}\n")
    env = clean_env(
        SCHEDULER_BROKER_URL=broker_url,
        SCHEDULER_CONFIG_FILE=str(workdir / "module.yaml"),
        SCHEDULER_HOME=str(workdir / ".scheduler"),
        **settings,
    )
    return Deployment(workdir, env)


def _task_name(event: dict[str, Any]) -> str:
    return str((event.get("task") or {}).get("name", ""))


class Follower:
    """``systemprompt scheduler:events --follow`` of one deployment; its lines are read by a thread."""

    def __init__(self, deployment: Deployment) -> None:
        self.process = subprocess.Popen(
            [str(SYSTEMPROMPT), "scheduler:events", "--follow", "--recent", "0"],
            cwd=str(deployment.workdir),
            env=deployment.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def names(self) -> list[str]:
        return [_task_name(event) for event in list(self.events)]

    def stop(self) -> tuple[int | None, str]:
        code = stop_process_group(self.process, 10)
        self._reader.join(5)
        assert self.process.stderr is not None
        return code, self.process.stderr.read().decode()


@contextmanager
def following(deployment: Deployment, tag: str) -> Iterator[Follower]:
    """A subscribed follower: it has printed an event of its own deployment (probes are made until then)."""
    follower = Follower(deployment)
    try:
        probes = itertools.count()

        def subscribed() -> bool:
            if any(name.startswith(f"{tag}-probe") for name in follower.names()):
                return True
            deployment.create(f"{tag}-probe-{next(probes)}")
            time.sleep(0.2)
            return False

        wait_for(subscribed, 30, "the follower never printed an event of its own deployment", interval_s=0)
        yield follower
    finally:
        if follower.process.poll() is None:
            follower.stop()


def _sees_only_its_own(mine: Deployment, other: Deployment, tag: str) -> Follower:
    """Follow ``mine``; create a task in ``other``, then one in ``mine``; wait for the latter's event.

    The other deployment's CLI has sent its event when it exits (the publisher is flushed at exit), before
    ours is created: were both on one channel, the follower would print it before ours.
    """
    with following(mine, tag) as follower:
        other.create(f"{tag}-other")
        mine.create(f"{tag}-mine")
        wait_for(lambda: f"{tag}-mine" in follower.names(), 15, "the follower missed its own event")
        time.sleep(0.3)  # anything still in flight
        code, stderr = follower.stop()
    assert code == 0, stderr
    assert f"{tag}-other" not in follower.names(), "printed an event of the other deployment"
    return follower


def test_events_of_a_deployment_on_another_database_number_are_not_printed(
    redis_url: str, tmp_path: Path
) -> None:
    tag = f"db-{uuid.uuid4().hex[:10]}"
    mine = _deployment(tmp_path, "a", _on_database(redis_url, DATABASE_A))
    other = _deployment(tmp_path, "b", _on_database(redis_url, DATABASE_B))

    follower = _sees_only_its_own(mine, other, tag)

    events = [e for e in follower.events if _task_name(e) == f"{tag}-mine"]
    assert [e["event"] for e in events] == ["task-created"]


def test_events_of_a_deployment_with_another_prefix_on_the_same_database_are_not_printed(
    redis_url: str, tmp_path: Path
) -> None:
    tag = f"prefix-{uuid.uuid4().hex[:10]}"
    broker = _on_database(redis_url, DATABASE_A)
    mine = _deployment(tmp_path, "a", broker, SCHEDULER_EVENTS_PREFIX=f"{tag}-a")
    other = _deployment(tmp_path, "b", broker, SCHEDULER_EVENTS_PREFIX=f"{tag}-b")
    try:
        _sees_only_its_own(mine, other, tag)

        # The backlog of recent events is the deployment's own too.
        recent = mine.recent_names()
        assert f"{tag}-mine" in recent and f"{tag}-other" not in recent
        assert f"{tag}-other" in other.recent_names()
    finally:  # this test's own lists (their prefixes are unique), not the database
        client = redis.Redis.from_url(broker)
        client.delete(*(f"{tag}-{label}:events:{DATABASE_A}{RECENT_SUFFIX}" for label in "ab"))
        client.close()
