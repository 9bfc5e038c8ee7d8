"""The operator web console for real: ``systemprompt scheduler:web`` on a free port against PostgreSQL and
Redis, with a planner and a worker running, driven by headless Chromium (Selenium + Debian's chromedriver)
and by plain HTTP. One console, planner, worker and browser for the whole module."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
import urllib.error
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import workerproc
from shared_world import SharedWorld
from sqlalchemy import delete, update
from workerproc import EngineSetup, build_setup

from scheduler.records import Execution
from scheduler.storage.tables import tasks
from tests.support.processes import free_port, wait_for
from tests.support.web_console import ConsoleClient, chromium, screenshot, sign_in
from tests.support.web_run_pause_skip import check_run_data_skip_and_timed_pause
from web.auth import hash_password

READY_S = 30.0
USERS = {"viewer": "viewer", "oper": "operator", "boss": "admin"}


@dataclass
class Console:
    setup: EngineSetup
    base: str
    log_path: Path

    def client(self, user: str | None) -> ConsoleClient:
        return ConsoleClient(self.base, None if user is None else f"{user}:{password(user)}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def password(user: str) -> str:
    return f"pw-{user}-{len(user)}"


def spawn(argv: list[str], env: dict[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            argv, cwd=str(cwd), env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen[bytes]) -> int | None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        return process.wait(15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)
        return None


@pytest.fixture(scope="module")
def console(shared_world: SharedWorld, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    starter = ThreadPoolExecutor(1)
    worker = starter.submit(shared_world.running_worker)  # gets ready while the planner and console start
    starter.shutdown(wait=False)
    workdir = tmp_path_factory.mktemp("web-console")
    setup = build_setup(shared_world.database_url, shared_world.broker_url, shared_world.queue, workdir)
    users = ",".join(f"{name}:{role}:{hash_password(password(name))}" for name, role in USERS.items())
    port = free_port()
    planner = spawn(
        [str(workerproc.SYSTEMPROMPT), "scheduler:planner"], setup.env, workdir / "planner.log", workdir
    )
    web_argv = [str(workerproc.SYSTEMPROMPT), "scheduler:web", "--address=127.0.0.1", f"--port={port}"]
    log_path = workdir / "web.log"
    web = spawn(web_argv, {**setup.env, "SCHEDULER_WEB_USERS": users}, log_path, workdir)
    found = Console(setup, f"http://127.0.0.1:{port}", log_path)

    def ready() -> bool:
        if web.poll() is not None:
            raise AssertionError(f"scheduler:web exited with {web.returncode}:\n{found.log()[-3000:]}")
        with contextlib.suppress(OSError):
            return found.client(None).get("/healthz").status == 200
        return False

    try:
        wait_for(ready, READY_S, "the web console did not answer /healthz", interval_s=0.1)
        worker.result()
        yield found
    finally:
        code = stop(web)
        stop(planner)
        setup.close()
    assert code == 0, found.log()[-3000:]  # SIGTERM is a clean stop
    assert "events channel unavailable" not in found.log()  # it followed the deployment's Redis channel


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as driver:
        yield driver


def tag() -> str:
    return uuid.uuid4().hex[:6]


def finished(setup: EngineSetup, task: Any) -> Execution:
    execution = setup.service.run_task_now(task.id)
    return setup.wait_finished(execution.id, timeout_s=60)


def text_of(driver: Any, css: str) -> str:
    """The text of the element at ``css``; "" while the page is being replaced (after a click)."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(driver.find_element(By.CSS_SELECTOR, css).text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


def rows_shown(driver: Any) -> int:
    """How many log rows the execution page shows (0 while it is being replaced)."""
    from selenium.common.exceptions import WebDriverException

    try:
        return int(driver.execute_script("return document.querySelectorAll('#logs tbody tr').length"))
    except WebDriverException:
        return 0


# ------------------------------------------------------------------------------------------------ browser


def test_a_viewer_sees_a_failed_slot_with_its_error(console: Console, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    setup = console.setup
    name = f"nightly-{tag()} <script>window.owned=1</script>"
    task = setup.create(
        name, "test:fail", data={"message": "disk full", "api_token": "s3cret"}, retries=0,
        schedule="30 2 * * *", timezone="Europe/Berlin",
    )  # fmt: skip
    execution = finished(setup, task)
    assert execution.status == "failed"
    sign_in(browser, f"viewer:{password('viewer')}")

    browser.get(f"{console.base}/?q={task.name[:13]}")
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-task-id="{task.id}"]')
    assert name in row.text and "failed" in row.text and "every day at 02:30" in row.text

    browser.get(f"{console.base}/tasks/{task.id}")
    assert text_of(browser, "#task-name") == name  # shown as text: the markup in the name is escaped
    assert browser.execute_script("return window.owned") is None  # and never ran
    slot = browser.find_element(By.CSS_SELECTOR, "#timeline li.s-failed")
    assert "RuntimeError: disk full" in slot.get_attribute("title")
    history = text_of(browser, f'#history tr[data-execution-id="{execution.id}"]')
    assert "failed" in history and "RuntimeError: disk full" in history and "1 of 1" in history
    assert "CET" in text_of(browser, "#upcoming")  # next slots in the task's zone, as validate shows them
    page = browser.page_source
    assert "s3cret" not in page and "***" in page
    assert not browser.find_elements(By.ID, "pause")  # a viewer gets no action
    screenshot(browser, "task")

    slot.find_element(By.TAG_NAME, "a").click()
    wait_for(lambda: text_of(browser, "#execution-status") == "failed", 10, "execution page")
    assert text_of(browser, "#execution-error") == "RuntimeError: disk full"


def test_an_operator_pauses_from_the_page_and_the_audit_names_them(console: Console, browser: Any) -> None:
    from selenium.webdriver.common.by import By

    setup = console.setup
    task = setup.create(f"pausable-{tag()}", "test:echo", schedule="0 3 * * *")
    sign_in(browser, f"oper:{password('oper')}")
    browser.get(f"{console.base}/tasks/{task.id}")
    browser.find_element(By.ID, "pause-note").send_keys("maintenance window")
    browser.find_element(By.ID, "pause").click()
    wait_for(lambda: text_of(browser, "#task-status") == "paused", 10, "the page did not show the pause")
    assert "paused by web:oper" in text_of(browser, "#status-reason")
    stored = setup.service.get_task(task.id)
    assert (stored.status, stored.status_reason) == ("paused", "maintenance window")
    latest = setup.service.audit(task=task.id, limit=1)[0]
    assert (latest.action, latest.actor) == ("pause", "web:oper")
    browser.find_element(By.ID, "resume").click()
    wait_for(lambda: text_of(browser, "#task-status") == "active", 10, "the page did not show the resume")
    assert setup.service.audit(task=task.id, limit=1)[0].actor == "web:oper"


def test_the_live_tail_of_a_running_sleep_shows_each_new_line_within_2_s(
    console: Console, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    setup = console.setup
    task = setup.create(f"nap-{tag()}", "test:sleep", data={"seconds": 6}, timeout_ms=60_000)
    execution = setup.service.run_task_now(task.id)
    wait_for(lambda: setup.service.logs(execution.id), 30, "the sleep logged nothing")
    sign_in(browser, f"viewer:{password('viewer')}")
    browser.get(f"{console.base}/executions/{execution.id}")
    assert browser.find_element(By.ID, "logs").get_attribute("data-live") == "yes"
    shown_at_load = len(browser.find_elements(By.CSS_SELECTOR, "#logs tbody tr"))
    stored_since: dict[int, float] = {}
    latencies: list[float] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        stored = len(setup.service.logs(execution.id))
        now = time.monotonic()
        for n in range(shown_at_load + 1, stored + 1):
            stored_since.setdefault(n, now)
        shown = rows_shown(browser)
        for n in range(shown_at_load + 1, shown + 1):
            if n in stored_since:
                latencies.append(time.monotonic() - stored_since.pop(n))
        if text_of(browser, "#tail-state") == "finished":
            break
        time.sleep(0.05)
    wait_for(lambda: text_of(browser, "#execution-status") == "completed", 10, "the status did not follow")
    # Once finished, the page reloads to show the timings and result; every line is there once, in order.
    wait_for(lambda: "ms" in text_of(browser, "#duration"), 10, "the page did not show the duration")
    messages = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "#logs td.message")]
    assert text_of(browser, "#tail-state") == "finished", messages
    assert len(latencies) >= 3, (shown_at_load, messages)  # lines that arrived while the page was open
    assert max(latencies) < 2.0, latencies
    assert [line.message for line in setup.service.logs(execution.id)] == messages  # all, in order, once
    screenshot(browser, "execution")
    browser.get(f"{console.base}/")  # the module's tasks so far, for docs/web.md
    assert browser.find_elements(By.CSS_SELECTOR, f'tr[data-task-id="{task.id}"]')
    screenshot(browser, "tasks")


# --------------------------------------------------------------------------------------------------- HTTP


def test_the_planners_skipped_slots_show_in_the_timeline_with_their_reason(console: Console) -> None:
    """The planner (running for this module) skips the slots of an every-second task whose run is still
    going (overlap policy forbid); the task page's strip shows them with their reason and the error."""
    setup = console.setup
    task = setup.create(
        f"busy-{tag()}", "test:sleep", data={"seconds": 4}, schedule="1s", overlap_policy="forbid"
    )
    try:
        wait_for(
            lambda: [e for e in setup.service.history(task=task.id) if e.reason == "overlap"],
            30,
            "the planner skipped no slot",
            interval_s=0.2,
        )
    finally:
        setup.service.pause(task.id, reason="test over")
    page = console.client("viewer").get(f"/tasks/{task.id}").text
    assert "skipped · overlap" in page and "previous execution still active" in page
    shown = console.client("viewer").get(f"/api/tasks/{task.id}", accept="application/json").json()
    assert {"skipped"} <= {slot["status"] for slot in shown["timeline"]}
    assert shown["upcoming"] == []  # paused: no next slot
    assert "paused by test" in page  # who paused, from the audit trail


def test_a_viewers_pause_is_refused_with_403_and_changes_nothing(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"untouched-{tag()}", "test:echo", schedule="0 4 * * *")
    viewer = console.client("viewer")
    token = viewer.csrf()
    audit_before = setup.service.audit(task=task.id)
    page = viewer.get(f"/tasks/{task.id}")
    assert page.status == 200 and 'id="pause"' not in page.text
    refused = viewer.post_form(f"/tasks/{task.id}/pause", {"csrf_token": token, "note": "no"})
    assert refused.status == 403 and "may not pause" in refused.text
    assert viewer.post_json(f"/api/tasks/{task.id}/pause", {}, token=token).status == 403
    assert viewer.post_json(f"/api/tasks/{task.id}/run", {}, token=token).status == 403
    assert setup.service.get_task(task.id).status == "active"
    assert setup.service.audit(task=task.id) == audit_before
    assert setup.service.history(task=task.id) == []
    operator = console.client("oper")
    assert (
        operator.post_json(
            f"/api/tasks/{task.id}/delete", {"confirm": task.name}, token=operator.csrf()
        ).status
        == 403
    )
    assert setup.service.get_task(task.id).status == "active"


def test_posts_without_a_valid_csrf_token_are_refused(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"csrf-{tag()}", "test:echo", schedule="0 5 * * *")
    operator, viewer_token = console.client("oper"), console.client("viewer").csrf()
    path = f"/tasks/{task.id}/pause"
    assert operator.post_form(path, {"note": "x"}).status == 403
    assert operator.post_form(path, {"csrf_token": viewer_token}).status == 403  # another user's token
    assert operator.post_form(path, {"csrf_token": "0" * 64}).status == 403
    assert operator.post_json(f"/api{path}", {}, token=None).status == 403
    assert operator.post_json(f"/api{path}", {}, token="forged").status == 403
    assert setup.service.get_task(task.id).status == "active"
    assert [entry.action for entry in setup.service.audit(task=task.id)] == ["create"]
    done = operator.post_form(path, {"csrf_token": operator.csrf(), "note": "ok"})
    assert (done.status, done.headers.get("location")) == (303, f"/tasks/{task.id}")
    assert setup.service.get_task(task.id).status == "paused"


def test_an_admin_deletes_only_with_the_typed_name(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"doomed-{tag()}", "test:echo", schedule="0 6 * * *")
    admin = console.client("boss")
    token = admin.csrf()
    wrong = admin.post_json(f"/api/tasks/{task.id}/delete", {"confirm": "something else"}, token=token)
    assert wrong.status == 400 and "confirm" in wrong.json()["error"]
    assert setup.service.get_task(task.id).id == task.id
    done = admin.post_json(f"/api/tasks/{task.id}/delete", {"confirm": task.name}, token=token)
    assert done.status == 200 and done.json()["changed"] is True
    assert admin.get(f"/tasks/{task.id}").status == 404
    assert setup.service.audit(task=task.id, limit=1)[0].actor == "web:boss"


def test_an_admin_creates_and_edits_tasks_and_an_operator_may_not(console: Console) -> None:
    setup = console.setup
    admin, operator = console.client("boss"), console.client("oper")
    name = f"made-{tag()}"
    form = {"name": name, "command": "test:echo", "schedule": "*/10 * * * *", "queue": setup.queue,
            "data": '{"message": "hi", "token": "s3cret"}'}  # fmt: skip
    assert operator.post_form("/tasks", {**form, "csrf_token": operator.csrf()}).status == 403
    assert admin.post_form("/tasks", form).status == 403  # no CSRF token
    bad = admin.post_form("/tasks", {**form, "schedule": "every tuesday", "csrf_token": admin.csrf()})
    assert bad.status == 400 and "schedule" in bad.text
    assert setup.service.similar_task_names(name) == []  # nothing stored by the refused ones
    made = admin.post_form("/tasks", {**form, "csrf_token": admin.csrf()})
    assert made.status == 303, made.text
    task = setup.service.get_task(name)
    assert made.headers["location"] == f"/tasks/{task.id}"
    assert (task.schedule, task.data) == ("*/10 * * * *", {"message": "hi", "token": "s3cret"})
    assert setup.service.audit(task=task.id, limit=1)[0].actor == "web:boss"
    assert "s3cret" not in admin.get(f"/tasks/{task.id}").text

    edit = {"schedule": "0 4 * * *", "retries": "2", "timezone": "Europe/Berlin"}
    refused = operator.post_json(f"/api/tasks/{task.id}/update", edit, token=operator.csrf())
    assert refused.status == 403 and setup.service.get_task(task.id).schedule == "*/10 * * * *"
    invalid = admin.post_json(f"/api/tasks/{task.id}/update", {"retries": "many"}, token=admin.csrf())
    assert invalid.status == 400 and "retries" in invalid.json()["error"]
    done = admin.post_json(f"/api/tasks/{task.id}/update", edit, token=admin.csrf())
    assert done.status == 200 and done.json()["changed"] is True
    edited = setup.service.get_task(task.id)
    assert (edited.schedule, edited.retries, edited.timezone) == ("0 4 * * *", 2, "Europe/Berlin")
    latest = setup.service.audit(task=task.id, limit=1)[0]
    assert (latest.action, latest.actor) == ("update", "web:boss")
    assert edited.data == task.data  # the edit form never writes the (redacted) data back
    again = admin.post_json(f"/api/tasks/{task.id}/update", edit, token=admin.csrf())
    assert again.json()["changed"] is False and setup.service.audit(task=task.id, limit=1)[0].id == latest.id
    created = admin.post_json(
        "/api/tasks", {"name": f"api-{tag()}", "command": "test:echo"}, token=admin.csrf()
    )
    assert created.status == 201 and created.json()["task"]["schedule"] == "manual"


def test_run_now_through_the_api_runs_on_the_worker(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"echo-{tag()}", "test:echo", data={"message": "hi", "password": "hunter2"})
    operator = console.client("oper")
    answer = operator.post_json(f"/api/tasks/{task.id}/run", {}, token=operator.csrf())
    assert answer.status == 200, answer.text
    execution_id = answer.json()["execution"]["id"]
    assert setup.wait_finished(execution_id, timeout_s=60).status == "completed"
    shown = operator.get(f"/api/executions/{execution_id}", accept="application/json").json()
    assert shown["execution"]["result"] == {"message": "hi", "password": "***"}  # redacted as in the CLI
    assert "hunter2" not in operator.get(f"/executions/{execution_id}").text
    assert setup.service.audit(task=task.id, limit=1)[0].actor == "web:oper"


def test_run_with_data_skip_and_timed_pause_over_http_and_a_viewer_may_do_none(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"per-run-{tag()}", "test:echo", schedule="0 3 * * *", data={"message": "task's"})
    viewer = console.client("viewer")
    token = viewer.csrf()
    refused = [
        viewer.post_json(f"/api/tasks/{task.id}/run", {"data": '{"message": "x"}'}, token=token),
        viewer.post_json(f"/api/tasks/{task.id}/skip", {"count": 1, "note": "no"}, token=token),
        viewer.post_json(f"/api/tasks/{task.id}/pause", {"until": "2031-01-01T00:00:00Z"}, token=token),
        viewer.post_form(f"/tasks/{task.id}/skip", {"csrf_token": token, "count": "1"}),
    ]
    assert [answer.status for answer in refused] == [403] * 4
    assert "may not skip" in refused[1].json()["error"]
    assert 'id="skip"' not in viewer.get(f"/tasks/{task.id}").text
    assert setup.service.history(task=task.id) == []
    assert setup.service.get_task(task.id).status == "active"
    assert [entry.action for entry in setup.service.audit(task=task.id)] == ["create"]
    check_run_data_skip_and_timed_pause(console.client("oper"), task.id)
    paused = setup.service.get_task(task.id)
    assert paused.paused_until is not None and paused.status_reason == "deploy window"
    assert [entry.actor for entry in setup.service.audit(task=task.id, limit=3)] == ["web:oper"] * 3
    skipped = [e for e in setup.service.history(task=task.id) if e.reason == "skipped_by_user"]
    assert [e.error for e in skipped] == ["skipped by web:oper: maint"] * 2


def test_bad_input_is_a_clear_4xx_and_markup_in_log_lines_is_escaped(console: Console) -> None:
    setup = console.setup
    viewer = console.client("viewer")
    anonymous = console.client(None)
    assert anonymous.get("/").status == 401
    assert "Basic" in anonymous.get("/").headers.get("www-authenticate", "")
    assert console.client(None).as_user("viewer:wrong").get("/api/tasks").status == 401
    for path in ("/tasks/987654321", "/executions/987654321", "/tasks/99999999999999999999999999"):
        page = viewer.get(path)
        assert page.status == 404 and "Not found" in page.text, (path, page.text[:300])
        assert viewer.get("/api" + path, accept="application/json").json()["status"] == 404
    assert viewer.get("/tasks/abc").status == 404
    for query in (
        "limit=0", "limit=abc", "limit=99999999999", "status=bogus", "sort=name;drop", "order=sideways",
        "after=!!!", "after=WyJpZCIsMSwxXQ&sort=name", "q=" + "x" * 5000, "q=%00",
    ):  # fmt: skip
        assert viewer.get(f"/?{query}").status == 400, query
        answer = viewer.get(f"/api/tasks?{query}", accept="application/json")
        assert answer.status == 400 and answer.json()["error"], query
    assert viewer.get("/?q=%25_%5C").status == 200  # LIKE's wildcards are matched as text
    for path in (
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/static/..%2fauth.py",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/static//etc/passwd",
    ):
        answer = viewer.request("GET", path)
        assert answer.status == 404 and b"import" not in answer.body, path
    assert viewer.get("/static/console.css").status == 200
    operator = console.client("oper")
    assert operator.post_json("/api/tasks/987654321/pause", {}, token=operator.csrf()).status == 404
    json_headers = {"Content-Type": "application/json", "X-CSRF-Token": operator.csrf()}
    huge = operator.request("POST", "/api/tasks/1/pause", data=b"x" * 100_000, headers=json_headers)
    assert huge.status == 413
    chunked = _chunked_post(operator, "/api/tasks/1/pause", json_headers)
    assert chunked.status == 413
    multipart = {"Content-Type": "multipart/form-data; boundary=x", "X-CSRF-Token": operator.csrf()}
    assert operator.request("POST", "/api/tasks/1/pause", data=b"--x--", headers=multipart).status == 415

    marked = setup.create(f"marked-{tag()}", "test:echo", data={"message": "<img src=x onerror=alert(1)>"})
    execution = finished(setup, marked)
    page = viewer.get(f"/executions/{execution.id}").text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page and "<img src=x" not in page
    lines = viewer.get(f"/api/executions/{execution.id}/logs", accept="application/json").json()["lines"]
    assert any("<img src=x onerror=alert(1)>" in line["message"] for line in lines)  # the API keeps the text


def _chunked_post(client: ConsoleClient, path: str, headers: dict[str, str]) -> Any:
    """POST a 17 KB body in two chunks (no Content-Length: the 16 KiB limit must hold as the body arrives).
    The server answers 413 as soon as the limit is passed and closes. The last chunk is the one that passes
    it, so the client has sent everything by then: with a third chunk still to send, a loaded machine cut
    the pipe before the answer was read, three tries in a row. A cut connection is still tried again (at
    most three times)."""
    for _ in range(3):
        try:
            return client.request("POST", path, data=iter([b"x" * 10_000, b"x" * 7_000]), headers=headers)
        except (urllib.error.URLError, ConnectionError) as error:
            reason = getattr(error, "reason", error)
            if not isinstance(reason, ConnectionError):
                raise
    raise AssertionError("the server cut the chunked upload three times without answering")


def test_health_metrics_and_secure_headers(console: Console) -> None:
    health = console.client(None).get("/healthz", accept="application/json")
    assert health.status == 200 and health.json()["status"] == "ok"
    viewer = console.client("viewer")
    page = viewer.get("/")
    assert page.status == 200
    headers = {key.lower(): value for key, value in page.headers.items()}
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["x-content-type-options"] == "nosniff"
    assert headers["server-timing"].startswith("app;dur=")
    assert "//" not in page.text.replace("http://www.w3.org", "")  # nothing loaded from another origin
    metrics = console.client(None).get("/metrics").text
    assert 'scheduler_web_requests_total{endpoint="tasks_page",status="200"}' in metrics
    execution = finished(console.setup, console.setup.create(f"evented-{tag()}", "test:echo"))
    assert execution.status == "completed"

    def events_received() -> float:
        text = console.client(None).get("/metrics").text
        found = re.search(r"^scheduler_web_execution_events_total (\S+)$", text, re.M)
        return float(found.group(1)) if found else 0.0

    # The worker's task-events of that run reached the console through Redis (they wake live tails).
    wait_for(events_received, 10, "no execution event reached the console", interval_s=0.2)


def test_versions_show_redacted_diffs_and_only_an_admin_rolls_back(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"versioned-{tag()}", "test:echo", schedule="0 3 * * *", data={"token": "s3cret"})
    setup.service.update_task(task.id, schedule="0 9 * * *", data={"token": "n3wer", "message": "hi"})
    viewer, operator, admin = console.client("viewer"), console.client("oper"), console.client("boss")
    listed = viewer.get(f"/api/tasks/{task.id}/versions", accept="application/json")
    assert listed.status == 200 and "s3cret" not in listed.text and "n3wer" not in listed.text
    newest, first = listed.json()
    assert (newest["version"], newest["action"], newest["latest"], first["version"]) == (2, "update", True, 1)
    changed = {c["field"]: (c["before"], c["after"]) for c in newest["changes"]}
    assert changed["schedule"] == ("0 3 * * *", "0 9 * * *")
    assert changed["data"] == ({"token": "***"}, {"token": "***", "message": "hi"})
    assert first["changes"] == [] and first["task"]["data"] == {"token": "***"}
    page = viewer.get(f"/tasks/{task.id}")
    assert page.status == 200 and 'id="versions"' in page.text and "s3cret" not in page.text
    assert "0 3 * * *" in page.text and 'id="rollback-1"' not in page.text  # a viewer has no button
    shown = admin.get(f"/tasks/{task.id}").text
    assert 'id="rollback-1"' in shown and 'id="rollback-2"' not in shown  # not to the current version

    audit_before = setup.service.audit(task=task.id)
    for client in (viewer, operator):
        refused = client.post_form(f"/tasks/{task.id}/rollback", {"csrf_token": client.csrf(), "to": "1"})
        assert refused.status == 403 and "may not rollback" in refused.text
    assert admin.post_form(f"/tasks/{task.id}/rollback", {"to": "1"}).status == 403  # no CSRF token
    bad = admin.post_json(f"/api/tasks/{task.id}/rollback", {"to": 9}, token=admin.csrf())
    assert bad.status == 400 and "to" in bad.json()["error"]
    assert setup.service.audit(task=task.id) == audit_before
    assert setup.service.get_task(task.id).schedule == "0 9 * * *"

    done = admin.post_form(f"/tasks/{task.id}/rollback", {"csrf_token": admin.csrf(), "to": "1"})
    assert (done.status, done.headers.get("location")) == (303, f"/tasks/{task.id}")
    rolled = setup.service.get_task(task.id)
    assert (rolled.schedule, rolled.data) == ("0 3 * * *", {"token": "n3wer"})  # the secret kept, not "***"
    latest = setup.service.audit(task=task.id, limit=1)[0]
    assert (latest.action, latest.actor) == ("rollback", "web:boss")
    again = admin.post_json(f"/api/tasks/{task.id}/rollback", {"to": 1}, token=admin.csrf())
    assert again.status == 200 and again.json()["changed"] is False
    assert [v["action"] for v in viewer.get(f"/api/tasks/{task.id}/versions").json()] == [
        "rollback", "update", "create"
    ]  # fmt: skip


def test_console_tasks_are_owned_by_web_and_the_list_filters_by_source(console: Console) -> None:
    setup = console.setup
    admin = console.client("boss")
    made = admin.post_json(
        "/api/tasks", {"name": f"webmade-{tag()}", "command": "test:echo"}, token=admin.csrf()
    )
    assert made.status == 201 and made.json()["task"]["source"] == "web"
    assert setup.service.get_task(made.json()["task"]["id"]).source == "web"
    by_hand = setup.create(f"byapi-{tag()}", "test:echo")  # the Python API's source
    listed = admin.get("/api/tasks?source=web&limit=200", accept="application/json").json()["tasks"]
    assert made.json()["task"]["id"] in {t["id"] for t in listed} and {t["source"] for t in listed} == {"web"}
    page = admin.get("/?source=api&limit=200")
    assert page.status == 200 and by_hand.name in page.text and made.json()["task"]["name"] not in page.text
    assert '<option value="web" selected>' in admin.get("/?source=web").text
    assert admin.get("/api/tasks?source=" + "x" * 201, accept="application/json").status == 400


def test_an_unexpected_error_is_a_500_with_the_secure_headers(console: Console) -> None:
    setup = console.setup
    task = setup.create(f"broken-{tag()}", "test:echo", schedule="0 3 1 1 *")
    # A zone this machine does not know (a row written by a newer tzdata): the page cannot compute next runs.
    # (The planner parks such a task only once it is due; not before 1 January.)
    with setup.service.engine.begin() as connection:
        connection.execute(update(tasks).where(tasks.c.id == task.id).values(timezone="Nowhere/Atlantis"))
    try:
        for accept in ("text/html", "application/json"):
            answer = console.client("viewer").get(f"/tasks/{task.id}", accept=accept)
            headers = {key.lower(): value for key, value in answer.headers.items()}
            assert answer.status == 500
            assert "default-src 'self'" in headers.get("content-security-policy", "")
            assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
            if accept == "application/json":
                assert answer.json() == {"error": "an unexpected error; the console logged it", "status": 500}
            else:
                assert "Server error" in answer.text and "the console logged it" in answer.text
            assert "Atlantis" not in answer.text and "Traceback" not in answer.text
    finally:
        with setup.service.engine.begin() as connection:
            connection.execute(delete(tasks).where(tasks.c.id == task.id))
    assert "Nowhere/Atlantis" in console.log()  # the server logged the error
