"""A real user's burst (issue "first hour", item 4): 1,000 tasks due at one instant, PostgreSQL and Redis, one
planner, no worker. Every execution must be ``queued`` on time, keep its ``enqueued_at``, and be on Redis
exactly once -- also after the recovery sweep has looked at the unclaimed rows.

The user's run: cron ``* * * * *``, planner started 0.5 s (or 25 s) before the minute, ``recovery_after``
60 s; after a minute every id was on Redis twice and ``enqueued_at`` a minute late. Here the slot is one
instant a little ahead of the database clock (interval tasks anchored there: the same due query, batch and
relay as a cron minute), and ``recovery_after`` is 1 s, so the sweep's verdict on the unclaimed rows comes
within the test. The planner runs ``run_forever`` in a thread, as ``scheduler:planner`` does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
import redis
from planner_support import make_service, now_of
from sqlalchemy import Engine, delete, select, text, update

from scheduler.planning.planner import Planner
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from scheduler.storage.tables import executions, tasks
from tests.support.redis_queue import ids_on_queue, message_execution_id
from workers.app import create_app
from workers.publisher import CeleryPublisher

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

TASKS = 1000
RECOVERY_AFTER_MS = 1000  # the sweep's threshold (60 s by default): scaled down, the mechanism is the same
ON_TIME_S = 3.0  # the planner ticks every second: a slot is queued within one tick plus the planning


@dataclass
class Burst:
    engine: Engine
    settings: Settings
    client: redis.Redis
    queue: str

    def arm(self, lead_s: float) -> None:
        """Forget the previous round; every task falls due at one instant ``lead_s`` from now."""
        self.client.delete(self.queue)
        slot = now_of(self.engine) + timedelta(seconds=lead_s)
        with self.engine.begin() as connection:
            connection.execute(delete(executions))
            connection.execute(text("DELETE FROM scheduler_leases"))
            connection.execute(update(tasks).values(anchor_at=slot, next_run_at=slot))

    def run(
        self, lead_s: float, observe_s: float, meanwhile: Callable[[], None] | None = None
    ) -> dict[str, object]:
        """Start a planner ``lead_s`` before the slot, let it run ``observe_s`` past it (calling ``meanwhile``
        halfway), and read the result: statuses, the lateness of ``enqueued_at``, and how often each id is on
        the queue."""
        self.arm(lead_s)
        planner = Planner(self.engine, self.settings, CeleryPublisher(create_app(self.settings)))
        stop = threading.Event()
        thread = threading.Thread(target=planner.run_forever, args=(stop,), daemon=True)
        thread.start()
        if meanwhile is not None:
            time.sleep(lead_s + observe_s / 2)
            meanwhile()
            time.sleep(observe_s / 2)
        else:
            time.sleep(lead_s + observe_s)
        stop.set()
        thread.join(30)
        assert not thread.is_alive()
        with self.engine.connect() as connection:
            rows = connection.execute(
                text(
                    "SELECT id, status, EXTRACT(EPOCH FROM enqueued_at - scheduled_for) AS lag "
                    "FROM task_executions"
                )
            ).all()
        on_queue = ids_on_queue(self.client, self.queue)
        return {
            "executions": len(rows),
            "statuses": dict(Counter(row.status for row in rows)),
            "late": sum(1 for row in rows if row.lag is None or row.lag > ON_TIME_S),
            "messages": sum(on_queue.values()),
            "twice": sum(1 for count in on_queue.values() if count > 1),
            "missing": len({row.id for row in rows} - set(on_queue)),
        }


@pytest.fixture
def burst(pg_url: str, redis_url: str) -> Iterator[Burst]:
    queue = f"burst-{uuid.uuid4().hex[:10]}"
    settings = Settings(
        database_url=pg_url,
        broker_url=redis_url,
        default_queue=queue,
        max_concurrent_tasks=10 * TASKS,  # the default cap (100) would hold the rest pending by design
        recovery_after=RECOVERY_AFTER_MS,
        history_retention_days=30,
    )
    engine = make_engine(pg_url)
    make_service(engine, settings).create_task(name="burst-0", command="test:echo", schedule="1m")
    with engine.begin() as connection:  # the other tasks as copies of the first (a thousand creates: 3 s)
        columns = [c.name for c in tasks.columns if c.name not in ("id", "name")]
        names = ", ".join(columns)
        connection.execute(
            text(
                f"INSERT INTO scheduled_tasks (name, {names}) SELECT 'burst-' || i, {names} "
                "FROM scheduled_tasks, generate_series(1, :more) AS i"
            ),
            {"more": TASKS - 1},
        )
    client = redis.Redis.from_url(redis_url)
    try:
        yield Burst(engine, settings, client, queue)
    finally:
        client.delete(queue)
        client.close()
        engine.dispose()


# Past the slot: the burst tick (within a second), then the sweep's threshold and two of its rounds.
OBSERVE_S = 1.5 + RECOVERY_AFTER_MS / 1000 + 1.0
CLEAN = {"executions": TASKS, "statuses": {"queued": TASKS}, "late": 0, "messages": TASKS, "twice": 0}


def _expected() -> dict[str, object]:
    return {**CLEAN, "missing": 0}


@pytest.mark.timeout(120)
def test_a_burst_is_queued_on_time_and_on_redis_once(burst: Burst) -> None:
    assert burst.run(lead_s=0.5, observe_s=OBSERVE_S) == _expected()


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("lead_s", [0.5, 0.4, 3.5, 6.5])
def test_repeated_bursts_are_queued_on_time_and_on_redis_once(burst: Burst, lead_s: float) -> None:
    """Five rounds per planner lead (the user saw 2 of 5 runs go wrong). The lease is renewed every third of
    its TTL (3.3 s): leads of 3.5 s and 6.5 s put a renewal right next to the burst tick, as the user's 25 s
    lead did."""
    results = [burst.run(lead_s=lead_s, observe_s=OBSERVE_S) for _ in range(5)]
    wrong = [result for result in results if result != _expected()]
    assert not wrong, f"{len(wrong)} of 5 rounds went wrong: {wrong}"


@pytest.mark.slow  # make test: the Redis-restart fault scenario covers the republishing of lost messages
@pytest.mark.timeout(120)
def test_messages_lost_from_redis_are_republished_once_and_the_rest_left_alone(burst: Burst) -> None:
    """The sweep still does its job: ids whose message vanished from the queue (a Redis restart, a flush)
    are published again, once; the others, still waiting, are not."""
    lost: list[int] = []

    def lose_some() -> None:
        lost.extend(message_execution_id(raw) for raw in burst.client.rpop(burst.queue, 10) or [])

    # Lost once the burst is out; then the sweep's threshold and two of its rounds.
    result = burst.run(lead_s=0.5, observe_s=2 * (1.5 + RECOVERY_AFTER_MS / 1000), meanwhile=lose_some)

    assert len(lost) == 10
    assert result == _expected()  # the lost ten are back, once; enqueued_at kept the first publish
    with burst.engine.connect() as connection:
        seen = connection.execute(
            select(executions.c.heartbeat_at).where(executions.c.id.in_(lost))
        ).scalars()
        assert all(stamp is not None for stamp in seen)
