"""A real Celery worker (prefork, 2 processes) on PostgreSQL and Redis runs executions and records them.

The tests that take ``worker_setup`` share the module's worker subprocess and database in turn (emptied
before each, see ``shared_world``); those that need a worker of their own (other settings, or started at a
given moment) take ``engine_setup``: their own database, queue and worker. Nothing is mocked and nothing runs
eagerly.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import workerproc
from sqlalchemy import delete, func, select
from workerproc import EngineSetup

from scheduler.storage.tables import logs, tasks
from tests.support.celery_worker import WorkerProcess
from tests.support.processes import free_port, process_alive, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]

# An external command that hangs (sleeps 300 s past any timeout); the module's worker knows it.
EXT_HANG = ["/bin/sh", "-c", "echo started; echo $$ > {pidfile}; exec sleep 300"]
SHARED_WORKER_ENV = {"SCHEDULER_COMMANDS": json.dumps({"ext:hang": EXT_HANG})}


def test_run_wait_of_test_echo_prints_its_result_and_exits_0(worker_setup: EngineSetup) -> None:
    worker_setup.create("echo", "test:echo", data={"greeting": "hello", "n": 3})
    result = worker_setup.cli("scheduler:run", "--id", "echo", "--wait", "--format", "json")
    assert result.code == 0, result.stderr
    execution = result.json()
    assert execution["status"] == "completed"
    assert execution["result"] == {"greeting": "hello", "n": 3}
    assert execution["attempt"] == 1 and execution["worker"].startswith(worker_setup.queue + "@")


def test_a_failing_task_with_two_retries_shows_three_attempts_and_exits_1(worker_setup: EngineSetup) -> None:
    worker_setup.create("flaky", "test:fail", data={"message": "disk full"}, retries=2, retry_delay_ms=100)
    result = worker_setup.cli("scheduler:run", "--id", "flaky", "--wait", "--format", "json")
    assert result.code == 1
    assert "disk full" in result.stderr
    execution = json.loads(result.stdout)
    assert (execution["status"], execution["attempt"], execution["max_attempts"]) == ("failed", 3, 3)
    assert execution["error"].startswith("RuntimeError: disk full")
    lines = worker_setup.service.logs(execution["id"])
    failures = [line for line in lines if line.level == "ERROR" and "failed: RuntimeError" in line.message]
    assert [line.attempt for line in failures] == [1, 2, 3]
    assert "retrying in" in failures[0].message and "retrying" not in failures[2].message


def test_worker_json_log_lines_carry_the_execution_task_attempt_and_command(
    engine_setup: EngineSetup,
) -> None:
    engine_setup.env["SCHEDULER_LOG_FORMAT"] = "json"
    worker = engine_setup.start_worker()
    task = engine_setup.create("logged", "test:echo", data={"password": "hunter2"})
    execution = engine_setup.service.run_task_now(task.id, wait=True, timeout_s=30)
    assert execution.status == "completed"
    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    ours = [record for record in records if record.get("execution_id") == execution.id]
    assert ours, worker.log()[-2000:]
    assert {(r["task_id"], r["attempt"], r["command"]) for r in ours} == {(task.id, 1, "test:echo")}
    assert "hunter2" not in worker.log()


def test_follow_prints_log_lines_while_waiting(worker_setup: EngineSetup) -> None:
    worker_setup.create("nap", "test:sleep", data={"seconds": 1.5})
    result = worker_setup.cli("scheduler:run", "--id", "nap", "--follow")
    assert result.code == 0, result.stderr
    assert "sleeping 1.5 s" in result.stdout and "slept 1.5 s" in result.stdout
    assert "completed" in result.stdout


def test_a_sleep_past_its_timeout_ends_timed_out_and_the_worker_goes_on(worker_setup: EngineSetup) -> None:
    worker = worker_setup.worker
    task = worker_setup.create("sleepy", "test:sleep", data={"seconds": 60}, timeout_ms=1500, retries=0)
    started = time.monotonic()
    execution = worker_setup.service.run_task_now(task.id, wait=True, timeout_s=30)
    assert execution.status == "timed_out"
    assert time.monotonic() - started < 15
    assert "time limit" in (execution.error or "")
    echo = worker_setup.create("after", "test:echo", data={"ok": True})
    assert worker_setup.service.run_task_now(echo.id, wait=True, timeout_s=30).status == "completed"
    assert worker.process.poll() is None


def test_the_hard_limit_kills_a_command_that_ignores_its_timeout(
    worker_setup: EngineSetup, tmp_path: Path
) -> None:
    pidfile = tmp_path / "hang.pid"
    task = worker_setup.create(
        "hang", "test:hang", data={"pidfile": str(pidfile)}, timeout_ms=1000, retries=0
    )
    execution = worker_setup.pending_run(task)
    worker_setup.publish(execution, timeout_s=1.0)  # timeout 1 s (the watchdog), hard limit 1 s + 2 s grace
    done = worker_setup.wait_finished(execution.id, timeout_s=30)
    assert done.status == "timed_out"
    assert "hard time limit" in (done.error or "")
    pid = int(pidfile.read_text())
    wait_for(lambda: not process_alive(pid), 10, message=f"pool process {pid} survived")


def test_an_external_command_that_hangs_is_killed_at_its_timeout(
    worker_setup: EngineSetup, tmp_path: Path
) -> None:
    worker_setup.service.commands.add_external("ext:hang", EXT_HANG)  # the module's worker knows it too
    pidfile = tmp_path / "ext.pid"
    task = worker_setup.create("ext", "ext:hang", data={"pidfile": str(pidfile)}, timeout_ms=2000, retries=0)
    execution = worker_setup.service.run_task_now(task.id, wait=True, timeout_s=30)
    assert execution.status == "timed_out"
    pid = int(pidfile.read_text())
    wait_for(lambda: not process_alive(pid), 10, message=f"sleep {pid} survived")
    messages = [line.message for line in worker_setup.service.logs(execution.id)]
    assert "started" in messages


def test_the_same_execution_published_twice_runs_once(worker_setup: EngineSetup) -> None:
    worker = worker_setup.worker
    task = worker_setup.create("once-only", "test:sleep", data={"seconds": 1})
    execution = worker_setup.pending_run(task)
    worker_setup.publish(execution)
    worker_setup.publish(execution)
    done = worker_setup.wait_finished(execution.id)
    assert done.status == "completed" and done.attempt == 1
    # The duplicate rechecks once the first run's heartbeat could be stale, and then does nothing.
    wait_for(
        lambda: f"nothing to do: execution {execution.id} is completed" in worker.log(), 15, worker.log()
    )
    messages = [line.message for line in worker_setup.service.logs(execution.id)]
    assert messages.count("sleeping 1 s") == 1
    assert worker.log().count("received") >= 2
    assert worker_setup.service.get_execution(execution.id).status == "completed"


def test_an_execution_whose_task_was_deleted_meanwhile_ends_cancelled(worker_setup: EngineSetup) -> None:
    task = worker_setup.create("doomed", "test:echo")
    execution = worker_setup.pending_run(task)
    with worker_setup.service.engine.begin() as connection:  # a delete racing the dispatch (no service)
        connection.execute(delete(tasks).where(tasks.c.id == task.id))
    worker_setup.publish(execution)
    done = worker_setup.wait_finished(execution.id)
    assert (done.status, done.reason, done.task_id) == ("cancelled", "task_deleted", None)


def test_deleting_a_task_cancels_its_queued_execution_before_a_worker_takes_it(
    engine_setup: EngineSetup,
) -> None:
    task = engine_setup.create("doomed2", "test:echo")
    execution = engine_setup.service.run_task_now(task.id)  # queued; no worker yet
    engine_setup.service.delete_task(task.id)
    worker = engine_setup.start_worker()
    noop = f"nothing to do: execution {execution.id} is cancelled"
    wait_for(lambda: noop in worker.log(), 15, f"no {noop!r} in the worker's log")  # it took the message
    after = engine_setup.service.get_execution(execution.id)
    assert after.status == "cancelled" and after.started_at is None


def test_an_error_is_one_line_and_its_traceback_is_in_the_logs(worker_setup: EngineSetup) -> None:
    worker_setup.create("raiser", "test:raise", retries=0)
    result = worker_setup.cli("scheduler:run", "--id", "raiser", "--wait", "--format", "json")
    assert result.code == 1
    execution = json.loads(result.stdout)
    assert execution["error"] == f"ValueError: bad value in execution {execution['id']}"
    # The reads in-process (the same click application); the runs, whose stderr is the point, as processes.
    logged = worker_setup.invoke(
        "scheduler:logs", "--execution", str(execution["id"]), "--format", "json"
    ).json()
    messages = "\n".join(line["message"] for line in logged)
    assert "Traceback (most recent call last)" in messages and "in nested" in messages
    history = worker_setup.invoke("scheduler:history", "--task", "raiser")
    assert history.code == 0, history.stderr
    assert f"ValueError: bad value in execution {execution['id']}" in history.stdout
    assert "Traceback" not in history.stdout
    shown = worker_setup.cli("scheduler:run", "--id", "raiser", "--wait")
    assert shown.code == 1
    second = worker_setup.service.history(task="raiser")[0].id
    assert shown.stderr == f"error: execution {second} failed: ValueError: bad value in execution {second}\n"
    assert "Traceback" not in shown.stdout
    assert shown.stdout.count(f"ValueError: bad value in execution {second}") == 1, shown.stdout


def test_a_command_printing_megabytes_keeps_a_bounded_log(worker_setup: EngineSetup) -> None:
    worker = worker_setup.worker
    task = worker_setup.create("spew", "test:spew", data={"megabytes": 5})
    execution = worker_setup.service.run_task_now(task.id, wait=True, timeout_s=60)
    assert execution.status == "completed" and execution.result == "spewed"
    with worker_setup.service.engine.connect() as connection:
        stored = connection.execute(
            select(func.sum(func.octet_length(logs.c.message))).where(logs.c.execution_id == execution.id)
        ).scalar_one()
    assert stored <= worker_setup.settings.max_log_bytes + 300
    last = worker_setup.service.logs(execution.id)[-1]
    assert last.level == "WARNING" and last.message.startswith("[log truncated:")
    assert worker.process.poll() is None


def test_consecutive_failures_auto_pause_the_task(worker_setup: EngineSetup) -> None:
    task = worker_setup.create("fragile", "test:fail", retries=0, auto_pause_after=2)
    for _ in range(2):
        assert worker_setup.service.run_task_now(task.id, wait=True, timeout_s=30).status == "failed"
    paused = worker_setup.service.get_task(task.id)
    assert (paused.status, paused.consecutive_failures) == ("paused", 2)
    assert paused.status_reason == "auto-paused after 2 consecutive failures"
    actions = [(entry.action, entry.actor) for entry in worker_setup.service.audit(task=task.id)]
    assert actions[0][0] == "pause" and actions[0][1].startswith("worker:")


def test_the_cli_reports_an_unreachable_broker_with_exit_69(engine_setup: EngineSetup) -> None:
    engine_setup.create("nobroker", "test:echo")
    engine_setup.env["SCHEDULER_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    result = engine_setup.cli("scheduler:run", "--id", "nobroker", "--wait")
    assert result.code == 69
    assert result.stderr.startswith("error: broker unreachable")
    assert time.monotonic() - started < 20


def test_the_cli_reports_an_unreachable_database_with_exit_69(engine_setup: EngineSetup) -> None:
    engine_setup.env["SCHEDULER_DATABASE_URL"] = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/x"
    result = engine_setup.cli("scheduler:run", "--id", "whatever", "--wait")
    assert result.code == 69
    assert result.stderr.startswith("error: database unreachable")


def test_the_worker_verb_passes_its_arguments_to_celery(engine_setup: EngineSetup) -> None:
    log_path = engine_setup.workdir / "verb-worker.log"
    argv = [str(workerproc.SYSTEMPROMPT), "scheduler:worker", "-P", "prefork", "-c", "1", "--without-gossip"]
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [*argv, "--without-mingle", "-n", f"verb-{engine_setup.queue}@%h"],
            cwd=engine_setup.workdir,
            env=engine_setup.env,  # SCHEDULER_DEFAULT_QUEUE is the test's queue: consumed without -Q
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    worker = WorkerProcess(process, log_path, engine_setup.queue, "verb")
    try:
        worker.wait_ready()
        assert "concurrency: 1 (prefork)" in worker.log()
        task = engine_setup.create("via-verb", "test:echo", data={"v": 1})
        assert engine_setup.service.run_task_now(task.id, wait=True, timeout_s=30).result == {"v": 1}
    finally:
        assert worker.stop() == 0


def test_run_without_wait_prints_the_queued_execution(engine_setup: EngineSetup) -> None:
    engine_setup.create("fire-and-forget", "test:echo")
    result = engine_setup.cli("scheduler:run", "--id", "fire-and-forget", "--format", "json")
    assert result.code == 0, result.stderr
    assert result.json()["status"] == "queued" and result.json()["trigger"] == "manual"


def test_planner_once_and_cleanup_print_json(engine_setup: EngineSetup) -> None:
    report = engine_setup.cli("scheduler:planner", "--once", "--format", "json").json()
    assert report["leader"] is True and report["dispatched"] == 0
    cleaned = engine_setup.cli("scheduler:cleanup", "--format", "json").json()
    assert cleaned == {
        "deleted": 0,
        "retention_days": engine_setup.settings.history_retention_days,
        "audit_pruned": 0,
        "audit_retention_days": engine_setup.settings.audit_retention_days,
    }
