"""`systemprompt scheduler:flower` for real: Redis, a real worker sending events (-E), Flower as a subprocess
on a free port. An execution run through SchedulerService.run_task_now + CeleryPublisher must show in Flower's
API and on its tasks page (headless Chromium) under its readable name '<command> [<task name>]'."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import workerproc
from workerproc import EngineSetup

from scheduler.records import Execution
from tests.support.processes import free_port, wait_for
from tests.support.services import IN_CI

CHROMIUM = Path("/usr/bin/chromium")
FLOWER_READY_S = 30.0
FLOWER_SEES_TASK_S = 30.0


def require_chromium() -> None:
    """Skip without Debian's chromium package, unless CI=true: there it is a failure (.ci/run installs it)."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    if IN_CI:
        pytest.fail(f"{message}; CI=true: a missing browser is a failure")
    pytest.skip(message)


@dataclass
class Flower:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path
    auth: str | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, *, auth: str | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(self.base + path)
        credentials = auth if auth is not None else self.auth
        if credentials:
            token = base64.b64encode(credentials.encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status), bytes(response.read())
        except urllib.error.HTTPError as error:
            return int(error.code), bytes(error.read())

    def wait_ready(self) -> None:
        def ready() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"flower exited with {self.process.returncode}:\n{self.log()[-4000:]}")
            with contextlib.suppress(OSError):
                return self.get("/healthcheck") == (200, b"OK")
            return False

        wait_for(ready, FLOWER_READY_S, interval_s=0.2, message=f"flower not ready:\n{self.log()}")

    def tasks(self) -> dict[str, Any]:
        status, body = self.get("/api/tasks")
        assert status == 200, (status, body[:500])
        tasks: dict[str, Any] = json.loads(body)
        return tasks

    def stop(self) -> int | None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
            return None


def flower_database() -> int:
    """The Redis database number of this pytest-xdist process's Flower tests (13, 14, 15): Flower lists every
    task whose events reach its database, and on the shared one (0) the tasks that other processes' tests run
    meanwhile crowd ours off its pages. No other test uses these numbers."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    return 13 + int(worker.removeprefix("gw") or 0) % 3


@pytest.fixture
def flower_setup(pg_url: str, redis_url: str, tmp_path: Path) -> Iterator[EngineSetup]:
    """``engine_setup`` on a Redis database of its own (:func:`flower_database`)."""
    broker = redis_url.rsplit("/", 1)[0] + f"/{flower_database()}"
    setup = workerproc.build_setup(pg_url, broker, workerproc.unique_queue(), tmp_path)
    try:
        yield setup
    finally:
        setup.close()


@contextlib.contextmanager
def running_flower(setup: EngineSetup, env: Mapping[str, str], auth: str | None = None) -> Iterator[Flower]:
    """``systemprompt scheduler:flower`` on a free loopback port, in its own process group."""
    port = free_port()
    log_path = setup.workdir / f"flower-{port}.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(workerproc.SYSTEMPROMPT), "scheduler:flower", "--address=127.0.0.1", f"--port={port}"],
            cwd=str(setup.workdir),
            env={**setup.env, **env},
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    flower = Flower(process, port, log_path, auth)
    try:
        flower.wait_ready()
        yield flower
    finally:
        flower.stop()


def run_echo(setup: EngineSetup) -> tuple[str, Execution]:
    """Run a new task now through the service's CeleryPublisher; return its readable name and execution."""
    name = f"flower-{uuid.uuid4().hex[:8]}"
    task = setup.create(name, "test:echo", data={"message": "seen in flower", "api_token": "s3cret"})
    execution = setup.service.run_task_now(task.id)
    finished = setup.wait_finished(execution.id, timeout_s=60)
    assert finished.status == "completed", finished
    return f"test:echo [{name}]", finished


def wait_listed(
    flower: Flower, readable: str, execution_id: int, state: str = "SUCCESS", *, retried: bool = False
) -> dict[str, Any]:
    """Poll /api/tasks until it lists our execution under ``readable`` in ``state`` (and, with ``retried``,
    once it has seen a ``task-retried`` event of it)."""

    def listed() -> dict[str, Any] | None:
        for uuid_, task in flower.tasks().items():
            seen = not retried or task.get("retried")
            if task.get("name") == readable and task.get("state") == state and seen:
                return {"uuid": uuid_, **task}
        return None

    found: dict[str, Any] = wait_for(
        listed,
        FLOWER_SEES_TASK_S,
        interval_s=0.25,
        message=f"{readable!r} (execution {execution_id}) not {state} in /api/tasks:\n{flower.log()[-3000:]}",
    )
    return found


def dump_dom(url: str, *, budget_ms: int = 5000) -> str:
    """The DOM of ``url`` after headless Chromium ran its scripts for ``budget_ms`` of virtual time."""
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        completed = subprocess.run(
            [
                str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--disable-dev-shm-usage", f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}", "--dump-dom", url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def table_row(page: str, task_uuid: str) -> str:
    """The ``<tr>`` of the tasks table that holds ``task_uuid`` (empty if none)."""
    match = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*{re.escape(task_uuid)}(?:(?!</tr>).)*</tr>", page, re.S)
    return match.group(0) if match else ""


# ------------------------------------------------------------------------------------------------- tests


def test_flower_lists_an_execution_by_readable_name_with_its_id_behind_basic_auth(
    flower_setup: EngineSetup,
) -> None:
    worker = flower_setup.start_worker(extra=["-E"], wait=False)  # gets ready while Flower starts
    auth = "ops:" + uuid.uuid4().hex
    with running_flower(flower_setup, {"SCHEDULER_FLOWER_BASIC_AUTH": auth}, auth=auth) as flower:
        worker.wait_ready()
        assert flower.get("/api/tasks", auth="")[0] == 401  # no credentials, no API
        assert flower.get("/api/tasks", auth="ops:wrong")[0] == 401
        readable, execution = run_echo(flower_setup)
        task = wait_listed(flower, readable, execution.id)
        assert json.loads(task["args"].replace("(", "[").replace(",)", "]")) == [execution.id]
        assert task["worker"].startswith(flower_setup.queue + "@")
        status, page = flower.get(f"/task/{task['uuid']}")
        assert status == 200
        assert readable.encode() in page  # the server-rendered task page names it too
    assert flower.process.returncode == 0, flower.log()[-2000:]  # SIGTERM is a clean stop


def test_flower_shows_each_outcome_with_our_error_in_its_api_and_in_a_real_browser(
    flower_setup: EngineSetup,
) -> None:
    """A completed execution is SUCCESS; one that failed every attempt, or timed out, is FAILURE with our
    error (its attempts before the last were retries); a failed attempt with attempts left is a retry.

    Flower shows RETRY only until the worker takes the retry's message: the worker's ``task-received`` of it
    (with its ETA) sets the task back to RECEIVED, keeping the retry's time (``retried``) and our error."""
    require_chromium()
    worker = flower_setup.start_worker(extra=["-E"], wait=False)  # gets ready while Flower starts
    tag = uuid.uuid4().hex[:6]
    # Loopback without auth (Chromium will not send user:pass@ credentials to the page's XHRs); the API
    # needs this variable to answer without auth.
    with running_flower(flower_setup, {"FLOWER_UNAUTHENTICATED_API": "true"}) as flower:
        worker.wait_ready()
        readable, execution = run_echo(flower_setup)
        task = wait_listed(flower, readable, execution.id)
        fail = flower_setup.create(
            f"fail-{tag}", "test:fail", data={"message": "disk full"}, retries=2, retry_delay_ms=100
        )
        nap = flower_setup.create(f"nap-{tag}", "test:sleep", data={"seconds": 30}, timeout_ms=500, retries=0)
        waits = flower_setup.create(
            f"waits-{tag}", "test:fail", data={"message": "try later"}, retries=1, retry_delay_ms=120_000
        )
        runs = {name: flower_setup.service.run_task_now(t.id) for name, t in [("fail", fail), ("nap", nap)]}
        runs["waits"] = flower_setup.service.run_task_now(waits.id)
        failed = wait_listed(flower, f"test:fail [fail-{tag}]", runs["fail"].id, "FAILURE")
        timed_out = wait_listed(flower, f"test:sleep [nap-{tag}]", runs["nap"].id, "FAILURE")
        retrying = wait_listed(flower, f"test:fail [waits-{tag}]", runs["waits"].id, "RECEIVED", retried=True)
        failed_filter = json.loads(flower.get("/api/tasks?state=FAILURE")[1])
        with ThreadPoolExecutor(3) as pool:  # the pages are independent: a few browsers at once
            tasks_dump = pool.submit(dump_dom, flower.base + "/tasks")
            failed_page, task_page, timed_out_page, retrying_page = pool.map(
                lambda listed: dump_dom(f"{flower.base}/task/{listed['uuid']}", budget_ms=1000),
                (failed, task, timed_out, retrying),
            )
            tasks_page = tasks_dump.result()
    execution_error = flower_setup.service.get_execution(runs["fail"].id).error
    assert execution_error == "RuntimeError: disk full"
    assert "attempt 3 of 3 failed: RuntimeError: disk full" in failed["exception"], failed
    assert failed["retries"] == 2  # attempts 1 and 2 were Celery retries of the same task
    assert "attempt 1 of 1 timed_out: timed out: the time limit of 0.5 s passed" in timed_out["exception"]
    assert "attempt 1 of 2 failed: RuntimeError: try later" in retrying["exception"], retrying
    assert retrying["retries"] == 1 and retrying["eta"]  # the retry's message, waiting for its countdown
    ours = {uuid_ for uuid_, listed in failed_filter.items() if tag in listed["name"]}  # Redis is shared
    assert ours == {failed["uuid"], timed_out["uuid"]}  # Flower's Failed filter
    # The tasks page fills its table by XHR (datatables): the name is there only if the scripts ran.
    assert readable in tasks_page, tasks_page[-3000:]
    assert 'text-bg-success">SUCCESS<' in table_row(tasks_page, task["uuid"])
    assert 'text-bg-danger">FAILURE<' in table_row(tasks_page, failed["uuid"])
    assert 'text-bg-danger">FAILURE<' in table_row(tasks_page, timed_out["uuid"])
    assert readable in task_page and "SUCCESS" in task_page
    assert "FAILURE" in failed_page and "attempt 3 of 3 failed: RuntimeError: disk full" in failed_page
    assert "FAILURE" in timed_out_page and "the time limit of 0.5 s passed" in timed_out_page
    assert "attempt 1 of 2 failed: RuntimeError: try later" in retrying_page
    assert "s3cret" not in tasks_page + task_page  # the data never travels through the broker
