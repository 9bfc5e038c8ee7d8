"""Alerts evaluated by the leading planner on a real database (SQLite and PostgreSQL), sent to a local HTTP
receiver: one incident per task and condition, one signed message when it opens and one when it resolves,
retries until the channel takes it, silences, and a standby that takes over sends nothing twice.

Executions' outcomes are written the way a worker's are recorded (status, finished_at, the failure streak);
tests/e2e/test_alerts_processes.py runs the same stories with real planner and worker processes.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from planner_support import RecordingPublisher, add_execution, make_service, make_settings, now_of, set_task
from prometheus_client import REGISTRY
from sqlalchemy import Engine, select, update
from sqlalchemy.exc import OperationalError

from scheduler.alerting.no_leader import alert_no_leader
from scheduler.observability import metrics
from scheduler.observability.events import ALERT_OPENED, ALERT_RESOLVED, EventBus
from scheduler.planning.planner import Planner
from scheduler.records import AlertRules, Task
from scheduler.rules.alerts import effective_rules
from scheduler.settings import Settings
from scheduler.storage import alerts as alerts_sql
from scheduler.storage.tables import deliveries, executions, incidents, leases, silences, tasks
from scheduler.storage.transactions import write_transaction
from tests.support.alert_receivers import HttpReceiver, http_receiver
from tests.support.processes import wait_at_most, wait_for
from workers.alert_channels import alert_senders

SECRET = "s3cr3t-hmac-key-for-tests"
SECRET_ENV = "TEST_ALERTS_WEBHOOK_SECRET"


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[HttpReceiver]:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    with http_receiver() as receiver:
        yield receiver


def alert_settings(receiver: HttpReceiver, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "alert_check_interval": 100,
        "alert_retry_delay": 20,
        "lease_ttl": 3000,  # idle transactions end after half of it: a loaded machine needs the margin
        "alert_channels": {"hook": {"type": "webhook", "url": receiver.url, "secretEnv": SECRET_ENV}},
        **overrides,
    }
    return make_settings(**values)


def planner(
    engine: Engine, settings: Settings, holder: str = "p1", events: EventBus | None = None
) -> Planner:
    return Planner(
        engine, settings, RecordingPublisher(), holder=holder, events=events, senders=alert_senders(settings)
    )


def defaults(settings: Settings) -> AlertRules:
    """The rules of a task that sets none of its own."""
    return effective_rules({}, settings)


def fail_once(engine: Engine, task: Task, *, streak: int = 1) -> None:
    """What a worker records for a failed final attempt: the execution failed, the task's streak grows."""
    now = now_of(engine)
    add_execution(
        engine, task, now - timedelta(seconds=streak), status="failed", finished_at=now, error="boom"
    )
    set_task(engine, task.id, consecutive_failures=streak)


def succeed(engine: Engine, task: Task) -> None:
    now = now_of(engine)
    add_execution(engine, task, now, status="completed", finished_at=now)
    set_task(engine, task.id, consecutive_failures=0)


def tick_until(loop: Planner, predicate: Any, timeout_s: float = 10) -> Any:
    """Tick until ``predicate`` holds; a tick the database refused (a loaded machine) is retried, as the
    planner's loop retries it."""

    def ticked() -> Any:
        with contextlib.suppress(OperationalError):
            loop.tick()
        return predicate()

    return wait_for(ticked, timeout_s, "the planner's ticks did not get there", interval_s=0.05)


def settle(loop: Planner, seconds: float = 0.5) -> None:
    """Tick for a while (several alert checks), for asserting that nothing more happens."""
    wait_at_most(lambda: tick_until(loop, lambda: True) and False, seconds)


def incident_rows(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r._mapping) for r in connection.execute(select(incidents).order_by(incidents.c.id))]


def test_a_failing_task_opens_one_incident_sends_one_signed_webhook_and_its_success_resolves_it(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver)
    task = make_service(engine, settings).create_task(name="backup", command="test:echo", schedule="manual")
    seen: list[tuple[str, dict[str, Any]]] = []
    bus = EventBus()
    bus.on(ALERT_OPENED, lambda payload: seen.append((ALERT_OPENED, payload)))
    bus.on(ALERT_RESOLVED, lambda payload: seen.append((ALERT_RESOLVED, payload)))
    loop = planner(engine, settings, events=bus)

    fail_once(engine, task)
    opened = tick_until(loop, lambda: receiver.events("alert-opened"))
    fail_once(engine, task, streak=2)  # still failing: the same incident, nothing more sent
    settle(loop)

    assert len(opened) == 1 and len(receiver.received) == 1
    message = opened[0]
    assert message.signed_by(SECRET) and not message.signed_by("another key")
    assert message.json["incident"]["task_name"] == "backup"
    assert message.json["incident"]["condition"] == "failure"
    assert "backup" in message.json["summary"] and "1 consecutive failed execution" in message.json["summary"]
    rows = incident_rows(engine)
    assert [(r["condition"], r["resolved_at"] is None) for r in rows] == [("failure", True)]

    succeed(engine, task)
    resolved = tick_until(loop, lambda: receiver.events("alert-resolved"))
    settle(loop)

    assert len(resolved) == 1 and resolved[0].signed_by(SECRET) and len(receiver.received) == 2
    assert resolved[0].json["incident"]["id"] == message.json["incident"]["id"]
    assert incident_rows(engine)[0]["resolved_at"] is not None
    assert [name for name, _ in seen] == [ALERT_OPENED, ALERT_RESOLVED]
    assert seen[0][1]["incident"]["task_name"] == "backup"
    assert SECRET not in json.dumps(seen)  # events carry the incident, never a channel's secret


def test_a_receiver_answering_500_three_times_then_200_gets_the_alert_exactly_once(
    engine: Engine, receiver: HttpReceiver
) -> None:
    receiver.statuses = [500, 500, 500]
    settings = alert_settings(receiver)
    task = make_service(engine, settings).create_task(name="report", command="test:echo", schedule="manual")
    loop = planner(engine, settings)

    fail_once(engine, task)
    tick_until(loop, lambda: receiver.answered(200))
    settle(loop)

    assert [r.status for r in receiver.received] == [500, 500, 500, 200]
    assert len({r.headers["X-Scheduler-Delivery"] for r in receiver.received}) == 1  # one message, retried
    assert len(receiver.answered(200)) == 1
    with engine.connect() as connection:
        row = connection.execute(select(deliveries)).one()._mapping
    assert (row["status"], row["attempts"]) == ("sent", 4)


def test_a_channel_that_keeps_failing_gives_up_visibly_and_the_message_is_kept(
    engine: Engine, receiver: HttpReceiver
) -> None:
    receiver.statuses = [503] * 10
    settings = alert_settings(receiver, alert_delivery_attempts=3)
    service = make_service(engine, settings)
    task = service.create_task(name="report", command="test:echo", schedule="manual")
    loop = planner(engine, settings)

    fail_once(engine, task)
    tick_until(loop, lambda: len(receiver.received) == 3)
    settle(loop)

    assert len(receiver.received) == 3
    unsent = service.unsent_alerts()
    assert [(d.status, d.attempts, d.channel) for d in unsent] == [("failed", 3, "hook")]
    assert unsent[0].last_error == "HTTP 503 Service Unavailable"


def test_a_silenced_task_records_its_incident_but_sends_nothing(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver)
    service = make_service(engine, settings)
    task = service.create_task(name="noisy", command="test:echo", schedule="manual")
    service.silence("noisy", duration=timedelta(hours=2), note="maintenance")
    loop = planner(engine, settings)

    fail_once(engine, task)
    tick_until(loop, lambda: incident_rows(engine))
    settle(loop)
    succeed(engine, task)
    tick_until(loop, lambda: incident_rows(engine)[0]["resolved_at"] is not None)
    settle(loop)

    assert receiver.received == []
    assert [(r["condition"], r["silenced"]) for r in incident_rows(engine)] == [("failure", True)]
    entries = service.audit(task="noisy")
    assert entries[0].action == "silence" and entries[0].after["note"] == "maintenance"
    assert [s.note for s in service.silences()] == ["maintenance"]


def test_a_standby_that_takes_over_an_open_incident_does_not_send_it_again(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, lease_ttl=1000)
    task = make_service(engine, settings).create_task(name="etl", command="test:echo", schedule="manual")
    leader, standby = planner(engine, settings, "leader"), planner(engine, settings, "standby")
    fail_once(engine, task)
    tick_until(leader, lambda: receiver.events("alert-opened"))
    assert not standby.tick().leader

    # The leader stops ticking (as if killed); the standby takes over once its lease expired.
    tick_until(standby, lambda: standby.lease.term is not None)
    settle(standby)

    assert len(receiver.received) == 1
    assert len(incident_rows(engine)) == 1
    succeed(engine, task)
    tick_until(standby, lambda: receiver.events("alert-resolved"))  # the new leader carries on


def test_missing_runs_of_a_one_second_task_open_one_incident_and_a_success_resolves_it(
    engine: Engine, receiver: HttpReceiver
) -> None:
    """No worker takes the executions the planner creates: after W the dead-man's switch fires, once."""
    settings = alert_settings(receiver, alert_missing=1000, tick_interval=100)
    task = make_service(engine, settings).create_task(name="heartbeat", command="test:echo", schedule="1s")
    loop = planner(engine, settings)

    opened = tick_until(loop, lambda: receiver.events("alert-opened"), timeout_s=5)
    settle(loop)

    assert len(opened) == 1 and opened[0].json["incident"]["condition"] == "missing"
    assert [r["condition"] for r in incident_rows(engine)] == ["missing"]
    with engine.begin() as connection:  # a worker is back and runs the newest slot
        newest = connection.execute(
            select(executions.c.id).where(executions.c.task_id == task.id).order_by(executions.c.id.desc())
        ).first()
        assert newest is not None
        connection.execute(
            update(executions)
            .where(executions.c.id == newest.id)
            .values(status="completed", finished_at=now_of(engine))
        )
    tick_until(loop, lambda: receiver.events("alert-resolved"), timeout_s=5)


def test_rules_are_per_task_with_settings_defaults_and_zero_turns_one_off(engine: Engine) -> None:
    settings = make_settings(alert_on_failure=3, alert_missing=60_000)
    service = make_service(engine, settings)
    service.create_task(name="a", command="test:echo", schedule="manual")
    service.create_task(
        name="b", command="test:echo", schedule="manual", alerts={"on_failure": 1, "missing_ms": 0}
    )

    assert service.alert_rules("a").to_json() == {
        "on_failure": 3,
        "late_ms": None,
        "missing_ms": 60_000,
        "long_ms": None,
        "recovered": True,
    }
    assert (service.alert_rules("b").on_failure, service.alert_rules("b").missing_ms) == (1, None)
    service.update_task("b", alerts={"on_failure": None, "long_ms": 5000})
    assert (service.alert_rules("b").on_failure, service.alert_rules("b").long_ms) == (3, 5000)
    assert service.audit(task="b")[0].after["alerts"] == {"missing_ms": 0, "long_ms": 5000}


def test_a_secret_never_reaches_the_logs_or_the_stored_messages(
    engine: Engine, receiver: HttpReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    receiver.statuses = [500]
    settings = alert_settings(receiver)
    task = make_service(engine, settings).create_task(name="x", command="test:echo", schedule="manual")
    loop = planner(engine, settings)
    with caplog.at_level(logging.DEBUG):
        fail_once(engine, task)
        tick_until(loop, lambda: receiver.answered(200))

    assert "failed (attempt 1 of 10)" in caplog.text  # the failure was logged ...
    assert SECRET not in caplog.text  # ... without the key
    with engine.connect() as connection:
        stored = [str(dict(r._mapping)) for r in connection.execute(select(deliveries))]
    assert stored and not any(SECRET in row for row in stored)


def test_no_leader_for_longer_than_l_alerts_once_from_a_health_check_and_the_next_leader_resolves_it(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_no_leader_after=1000)
    old = planner(engine, settings, "gone")
    old.tick()  # it leads, then dies: its lease expires
    with engine.begin() as connection:
        connection.execute(update(leases).values(expires_at=now_of(engine) - timedelta(seconds=5)))
    senders = alert_senders(settings)

    first = alert_no_leader(engine, settings, senders)
    again = alert_no_leader(engine, settings, senders)

    assert first is not None and again is not None and again.id == first.id
    [message] = receiver.received
    assert message.signed_by(SECRET) and message.json["incident"]["condition"] == "no_leader"
    assert "gone" in message.json["summary"]
    successor = planner(engine, settings, "successor")
    tick_until(successor, lambda: receiver.events("alert-resolved"))
    assert [r["resolved_at"] is not None for r in incident_rows(engine)] == [True]


def test_no_alert_while_a_planner_leads_or_the_lease_expired_only_recently(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_no_leader_after=60_000)
    assert alert_no_leader(engine, settings, alert_senders(settings)) is None  # never led: nothing to say
    planner(engine, settings).tick()
    assert alert_no_leader(engine, settings, alert_senders(settings)) is None  # leading
    with engine.begin() as connection:
        connection.execute(update(leases).values(expires_at=now_of(engine) - timedelta(seconds=5)))
    assert alert_no_leader(engine, settings, alert_senders(settings)) is None  # 5 s < L
    assert receiver.received == [] and incident_rows(engine) == []


def test_late_and_long_executions_open_their_incidents_from_the_stored_rows(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_late=30_000, alert_long=60_000)
    task = make_service(engine, settings).create_task(name="slow", command="test:echo", schedule="manual")
    now = now_of(engine)
    add_execution(engine, task, now - timedelta(minutes=1), status="queued", trigger="schedule")
    running = {"started_at": now - timedelta(minutes=10), "heartbeat_at": now + timedelta(minutes=1)}
    add_execution(engine, task, now - timedelta(minutes=20), status="running", trigger="schedule", **running)
    loop = planner(engine, settings)

    tick_until(loop, lambda: len(receiver.events("alert-opened")) == 2)

    assert sorted(r.json["incident"]["condition"] for r in receiver.events("alert-opened")) == [
        "late",
        "long",
    ]


def test_an_open_incident_is_told_again_after_the_repeat_interval(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_repeat_interval=300)
    task = make_service(engine, settings).create_task(name="flaky", command="test:echo", schedule="manual")
    loop = planner(engine, settings)
    fail_once(engine, task)

    tick_until(loop, lambda: len(receiver.events("alert-repeat")) >= 2)

    assert len(receiver.events("alert-opened")) == 1 and len(incident_rows(engine)) == 1
    repeats = receiver.events("alert-repeat")
    assert repeats[0].json["summary"].startswith("[STILL FAILING] task flaky: failure")


def test_delivery_attempts_and_open_incidents_are_in_the_planner_metrics(
    engine: Engine, receiver: HttpReceiver
) -> None:
    receiver.statuses = [500]
    settings = alert_settings(receiver)
    task = make_service(engine, settings).create_task(name="measured", command="test:echo", schedule="manual")
    loop = planner(engine, settings)

    def count(outcome: str) -> float:
        labels = {"channel": "hook", "outcome": outcome}
        return REGISTRY.get_sample_value("scheduler_alert_deliveries_total", labels) or 0.0

    before = {outcome: count(outcome) for outcome in ("retry", "sent")}
    metrics.enable()
    try:
        fail_once(engine, task)
        tick_until(loop, lambda: receiver.answered(200))
        assert REGISTRY.get_sample_value("scheduler_alert_incidents_open") == 1
    finally:
        metrics.disable()
    assert {outcome: count(outcome) - before[outcome] for outcome in before} == {"retry": 1, "sent": 1}


def test_a_task_the_planner_parked_for_a_schedule_that_no_longer_parses_is_missing_after_w(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_missing=500)
    task = make_service(engine, settings).create_task(name="parked", command="test:echo", schedule="1h")
    set_task(engine, task.id, schedule="every so often", next_run_at=now_of(engine))  # stored text gone bad
    loop = planner(engine, settings)

    opened = tick_until(loop, lambda: receiver.events("alert-opened"))

    assert opened[0].json["incident"]["condition"] == "missing"
    with engine.connect() as connection:
        reason = connection.execute(select(tasks.c.status_reason).where(tasks.c.id == task.id)).scalar_one()
    assert reason.startswith("schedule does not parse: ")


def test_a_silence_expires_by_itself_and_an_incident_still_open_then_is_told(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver)
    service = make_service(engine, settings)
    task = service.create_task(name="drill", command="test:echo", schedule="manual")
    service.silence("drill", duration=timedelta(hours=1), note="short")
    loop = planner(engine, settings)
    fail_once(engine, task)
    tick_until(loop, lambda: incident_rows(engine))
    settle(loop)
    assert receiver.received == [] and incident_rows(engine)[0]["silenced"]
    with engine.begin() as connection:  # the hour is over (times come from the database)
        connection.execute(update(silences).values(ends_at=now_of(engine) - timedelta(seconds=1)))

    opened = tick_until(loop, lambda: receiver.events("alert-opened"))

    assert len(opened) == 1 and opened[0].json["incident"]["task_name"] == "drill"
    assert service.silences() == [] and [s.note for s in service.silences(include_expired=True)] == ["short"]


def test_the_evaluation_reads_only_tasks_that_can_alert_or_have_an_open_incident(
    engine: Engine, receiver: HttpReceiver
) -> None:
    settings = alert_settings(receiver, alert_missing=60_000)
    service = make_service(engine, settings)
    service.create_task(name="healthy", command="test:echo", schedule="1h")
    failing = service.create_task(name="failing", command="test:echo", schedule="manual")
    overdue = service.create_task(name="overdue", command="test:echo", schedule="1h")
    told = service.create_task(name="told", command="test:echo", schedule="1h")
    now = now_of(engine)
    set_task(engine, overdue.id, next_run_at=now - timedelta(minutes=5))  # no planner ran its slot
    fail_once(engine, failing)

    def read() -> list[str]:
        with engine.connect() as connection:
            facts = alerts_sql.task_facts(connection, defaults=defaults(settings), now=now_of(engine))
        return sorted(item.task_name for item in facts)

    before = read()
    with engine.begin() as connection:  # an incident still open: its task's rules decide how it resolves
        alerts_sql.insert_incident(
            connection,
            task_id=told.id,
            task_name="told",
            condition="failure",
            detail="-",
            silenced=False,
            now=now,
        )
    after = read()

    assert before == ["failing", "overdue"], before  # healthy and told: nothing can hold, nothing is read
    assert after == ["failing", "overdue", "told"], after


def test_the_evaluation_reads_a_task_only_for_a_rule_of_its_that_is_on(
    engine: Engine, receiver: HttpReceiver
) -> None:
    """The defaults: on_failure 1, late, missing and long off. A task's unstarted execution is read only when
    its ``late`` rule is on, a running one only when ``long`` is, a failure streak only when ``on_failure`` is
    on and the streak reaches it (a burst of unstarted executions costs the evaluation nothing)."""
    settings = alert_settings(receiver)
    service = make_service(engine, settings)
    now = now_of(engine)

    def task(name: str, **alerts: int) -> Task:
        return service.create_task(name=name, command="test:echo", schedule="manual", alerts=alerts)

    for name, rules in (("unstarted", {}), ("unstarted-late-on", {"late_ms": 60_000})):
        add_execution(engine, task(name, **rules), now - timedelta(hours=1), status="queued")
    for name, rules in (("running", {}), ("running-long-on", {"long_ms": 60_000})):
        started = now - timedelta(hours=1)
        add_execution(engine, task(name, **rules), started, status="running", started_at=started)
    fail_once(engine, task("streak-rule-off", on_failure=0))
    fail_once(engine, task("streak-below-its-rule", on_failure=3), streak=2)
    fail_once(engine, task("streak-default-rule"))
    fail_once(engine, task("streak-reaches-its-rule", on_failure=2), streak=2)

    with engine.connect() as connection:
        facts = alerts_sql.task_facts(connection, defaults=defaults(settings), now=now_of(engine))

    assert sorted(item.task_name for item in facts) == [
        "running-long-on",
        "streak-default-rule",
        "streak-reaches-its-rule",
        "unstarted-late-on",
    ]
    assert {item.task_name: item.oldest_unstarted is not None for item in facts}["unstarted-late-on"]


def test_the_facts_are_read_without_jit_compilation_on_postgresql(pg_url: str) -> None:
    """The statement's correlated subqueries make its estimated cost huge, so PostgreSQL JIT-compiled it on
    every evaluation (0.6-1.1 s at 10k tasks, for a statement that runs in ~15 ms): JIT is off for the rest
    of the evaluation's transaction."""
    from scheduler.storage.db import make_engine

    engine = make_engine(pg_url)
    try:
        with engine.connect() as connection:
            server_default = connection.exec_driver_sql("SHOW jit").scalar_one()
            with write_transaction(connection):
                alerts_sql.task_facts(connection, defaults=defaults(Settings()), now=now_of(engine))
                assert connection.exec_driver_sql("SHOW jit").scalar_one() == "off"
            # SET LOCAL: nothing outlives the transaction
            assert connection.exec_driver_sql("SHOW jit").scalar_one() == server_default
    finally:
        engine.dispose()
