"""Prometheus metrics: scraped over HTTP from a real planner loop, a real prefork worker and ``serve``.

Nothing is mocked: the planner runs its loop in a thread against a fresh PostgreSQL database and Redis (a
queue of its own that no worker consumes), the worker is a ``celery worker`` subprocess, ``serve`` is the
CLI on the embedded default. Values are compared before and after, since the planner's metrics live as long
as the test process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict, mmap_key
from prometheus_client.parser import text_string_to_metric_families
from workerproc import SYSTEMPROMPT, EngineSetup, clean_env, unique_queue

from scheduler.commands.loading import load_registry
from scheduler.observability import metrics
from scheduler.planning.planner import Planner
from scheduler.planning.publisher import NullPublisher
from scheduler.records import TickReport
from scheduler.service import SchedulerService
from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from tests.support.processes import free_port, wait_for
from workers.app import create_app
from workers.publisher import CeleryPublisher

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def observe(planner: Planner, report: TickReport) -> None:
    """Record ``report`` as ``planner``'s loop does after a tick."""
    metrics.observe_tick(
        report, engine=planner.engine, holder=planner.holder, lease_grants=planner.lease.grants
    )


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape_until(port: int, predicate: Callable[[Samples], bool], timeout_s: float, message: str) -> Samples:
    def ready() -> Samples | None:
        samples = scrape(port)
        return samples if predicate(samples) else None

    found: Samples = wait_for(ready, timeout_s, interval_s=0.2, message=message)
    return found


# -------------------------------------------------------------------------------------------- planner


@pytest.fixture
def planner_loop(
    pg_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Settings, Planner]]:
    """A planner loop in a thread with metrics on a free port; its queue is deleted from Redis after. The
    leader's status counts are refreshed every second (5 s in production): the test waits for a refresh."""
    monkeypatch.setattr(metrics, "STATUS_REFRESH_S", 1.0)
    queue = unique_queue("metrics")
    settings = Settings(
        database_url=pg_url,
        broker_url=redis_url,
        home=tmp_path / ".scheduler",
        default_queue=queue,
        metrics_port=free_port(),
        tick_interval=100,
        lease_ttl=1500,  # renewed every 0.5 s, so the renewals counter moves within the test
        max_concurrent_tasks=1000,
    )
    engine = make_engine(pg_url)
    planner = Planner(engine, settings, CeleryPublisher(create_app(settings)))
    server = metrics.start_metrics_server(settings, addr="127.0.0.1")
    assert server is not None
    stop = threading.Event()
    thread = threading.Thread(target=planner.run_forever, args=(stop,), name="metrics-planner", daemon=True)
    thread.start()
    try:
        yield settings, planner
    finally:
        stop.set()
        thread.join(15)
        server.close()
        metrics.disable()  # later tests in this process run their planners without metrics
        engine.dispose()
        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(match=f"{queue}*"):
            client.delete(key)
        client.close()


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(90)
def test_planner_metrics_move_when_due_tasks_are_dispatched(planner_loop: tuple[Settings, Planner]) -> None:
    settings, planner = planner_loop
    port = settings.metrics_port
    assert port is not None
    before = scrape_until(
        port, lambda s: value(s, "scheduler_planner_leader") == 1, 20, "the planner did not become leader"
    )
    service = SchedulerService(planner.engine, settings, commands=load_registry(settings), actor="test")
    for index in range(3):
        service.create_task(name=f"due-{index}", command="test:echo", schedule="now")
    manual = service.create_task(name="by-hand", command="test:echo")
    service.run_task_now(manual.id)  # no publisher: pending, for the planner's relay (trigger manual)

    def moved(s: Samples) -> bool:
        def delta(name: str, **labels: str) -> float:
            return value(s, name, **labels) - value(before, name, **labels)

        return (
            delta("scheduler_planner_due_total") >= 3
            and delta("scheduler_planner_created_total") >= 3
            and delta("scheduler_planner_dispatched_total") >= 4
            and delta("scheduler_planner_dispatch_lag_seconds_count", trigger="schedule") >= 3
            and delta("scheduler_planner_dispatch_lag_seconds_count", trigger="manual") >= 1
            and delta("scheduler_planner_lease_renewals_total") >= 1
        )

    after = scrape_until(port, moved, 20, "the dispatch counters did not move")
    assert value(after, "scheduler_planner_leader") == 1
    assert value(after, "scheduler_planner_lease_renewals_total") > value(
        before, "scheduler_planner_lease_renewals_total"
    )
    assert value(after, "scheduler_planner_tick_duration_seconds_count", role="leader") > value(
        before, "scheduler_planner_tick_duration_seconds_count", role="leader"
    )
    # Each slot is due at creation and dispatched within a few ticks: well under a minute of lag.
    lag_sum = value(after, "scheduler_planner_dispatch_lag_seconds_sum", trigger="schedule") - value(
        before, "scheduler_planner_dispatch_lag_seconds_sum", trigger="schedule"
    )
    assert 0 <= lag_sum < 3 * 60
    # Nobody consumes the queue: the leader's status counts (refreshed every few seconds) show 4 queued.
    counts = scrape_until(
        port,
        lambda s: value(s, "scheduler_executions", status="queued") == 4,
        metrics.STATUS_REFRESH_S * 3,
        "the status gauges did not show the queued executions",
    )
    assert value(counts, "scheduler_executions", status="pending") == 0
    assert value(counts, "scheduler_executions", status="running") == 0


@pytest.mark.postgres
@pytest.mark.timeout(60)
def test_a_standby_reports_leader_zero_and_no_status_counts(pg_url: str) -> None:
    settings = Settings(database_url=pg_url, metrics_port=free_port(), lease_ttl=60_000)
    engine = make_engine(pg_url)
    leader, standby = (Planner(engine, settings, NullPublisher(), holder=name) for name in ("a", "b"))
    server = metrics.start_metrics_server(settings, addr="127.0.0.1")
    assert server is not None and settings.metrics_port is not None
    try:
        observe(leader, leader.tick())
        samples = scrape(settings.metrics_port)
        assert value(samples, "scheduler_planner_leader") == 1
        assert ("scheduler_executions", frozenset({("status", "pending")})) in samples

        report = standby.tick()
        assert not report.leader
        observe(standby, report)
        samples = scrape(settings.metrics_port)
        assert value(samples, "scheduler_planner_leader") == 0
        assert not [name for name, _ in samples if name == "scheduler_executions"]
        assert value(samples, "scheduler_planner_tick_duration_seconds_count", role="standby") >= 1
    finally:
        server.close()
        metrics.disable()
        leader.lease.release()
        engine.dispose()


def test_hooks_do_nothing_while_metrics_are_off(sqlite_url: str) -> None:
    assert not metrics.enabled()
    engine = make_engine(sqlite_url)
    planner = Planner(engine, Settings(database_url=sqlite_url), NullPublisher())
    engine.dispose()  # a query would now reopen it; nothing must be asked at all
    observe(planner, TickReport(leader=True, due=5))
    metrics.observe_failed_tick(leader=True)
    metrics.observe_queued(engine, [])
    metrics.enable(Settings(database_url=sqlite_url))  # no port: stays off
    assert not metrics.enabled()


def test_the_planner_verb_refuses_a_metrics_port_in_use(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = clean_env(SCHEDULER_HOME=str(tmp_path / ".scheduler"), SCHEDULER_METRICS_PORT=str(port))
        result = subprocess.run(
            [str(SYSTEMPROMPT), "scheduler:planner"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr
    assert f"error: cannot serve metrics on port {port}" in result.stderr


# --------------------------------------------------------------------------------------------- worker


def _stale_counter(directory: Path) -> None:
    """A counter file left by an earlier run of the same worker node: must not be counted again."""
    directory.mkdir(parents=True, exist_ok=True)
    name = "scheduler_worker_executions_total"
    key = mmap_key(name, name, ["command", "outcome"], ["test:echo", "completed"], "stale")
    stale = MmapedDict(str(directory / "counter_999999.db"))  # type: ignore[no-untyped-call]
    stale.write_value(key, 1000.0, 0.0)  # type: ignore[no-untyped-call]
    stale.close()  # type: ignore[no-untyped-call]


@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_worker_metrics_count_executions_by_command_and_outcome(engine_setup: EngineSetup) -> None:
    port = free_port()
    engine_setup.env["SCHEDULER_METRICS_PORT"] = str(port)
    node = f"{engine_setup.queue}@{socket.gethostname()}"
    directory = engine_setup.workdir / ".scheduler" / "metrics" / node
    _stale_counter(directory)
    engine_setup.start_worker(concurrency=2)
    assert not (directory / "counter_999999.db").exists()  # emptied at start

    echo = engine_setup.create("m-echo", "test:echo", data={"n": 1})
    fail = engine_setup.create("m-fail", "test:fail", data={"message": "boom"}, retries=1, retry_delay_ms=100)
    runs = [engine_setup.service.run_task_now(task.id) for task in (echo, echo, fail)]
    finished = [engine_setup.wait_finished(run.id) for run in runs]
    assert [e.status for e in finished] == ["completed", "completed", "failed"]

    samples = scrape_until(
        port,
        lambda s: value(s, "scheduler_worker_executions_total", command="test:fail", outcome="failed") == 2,
        10,
        "the failed attempts were not counted",
    )
    executions = "scheduler_worker_executions_total"
    assert value(samples, executions, command="test:echo", outcome="completed") == 2
    assert value(samples, executions, command="test:fail", outcome="completed") == 0
    durations = "scheduler_worker_execution_duration_seconds_count"
    assert value(samples, durations, command="test:echo") == 2
    assert value(samples, durations, command="test:fail") == 2  # one per attempt
    assert list(directory.glob("counter_*.db"))  # the pool processes write their own files


# ---------------------------------------------------------------------------------------------- serve


@pytest.mark.timeout(120)
def test_serve_exposes_planner_and_worker_metrics_on_one_port(tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(SCHEDULER_METRICS_PORT=str(port), SCHEDULER_TICK_INTERVAL="200")
    env.pop("PYTHONPATH", None)
    log_path = tmp_path / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(SYSTEMPROMPT), "scheduler:serve", "--demo"],
            cwd=tmp_path,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def served() -> Samples | None:
            if process.poll() is not None:
                raise AssertionError(log_path.read_text())
            try:
                samples = scrape(port)
            except OSError:
                return None
            completed = value(
                samples, "scheduler_worker_executions_total", command="test:echo", outcome="completed"
            )
            leader = value(samples, "scheduler_planner_leader")
            return samples if completed >= 1 and leader == 1 else None

        samples = wait_for(served, 60, interval_s=0.2, message="serve did not expose both kinds of metrics")
        assert value(samples, "scheduler_planner_dispatched_total") >= 1
        assert value(samples, "scheduler_planner_dispatch_lag_seconds_count", trigger="schedule") >= 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
