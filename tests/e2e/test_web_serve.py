"""The web console on the embedded default: ``systemprompt scheduler:serve --web`` (SQLite and the local
broker, no servers, no users: loopback only, everyone a local admin) serves the same pages and the live
tail; and ``scheduler:web`` refuses what it must before it starts."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support.processes import free_port, wait_for
from tests.support.serving import SYSTEMPROMPT, clean_env, cli, serving, stop
from tests.support.web_console import ConsoleClient, chromium
from tests.support.web_run_pause_skip import check_run_data_skip_and_timed_pause


def created(workdir: Path, *args: str) -> int:
    result = cli(workdir, "scheduler:create", *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    task_id: int = json.loads(result.stdout)["id"]
    return task_id


def sse_lines(url: str, until_s: float) -> list[dict[str, object]]:
    """The ``line`` events of the event stream at ``url``, read until its ``end`` event (or ``until_s``)."""
    lines: list[dict[str, object]] = []
    deadline = time.monotonic() + until_s
    with urllib.request.urlopen(url, timeout=until_s) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event = None
        for raw in stream:
            text = raw.decode().rstrip("\n")
            if text.startswith("event: "):
                event = text.removeprefix("event: ")
            elif text.startswith("data: ") and event == "line":
                lines.append(json.loads(text.removeprefix("data: ")))
            elif text.startswith("data: ") and event == "end":
                return lines
            if time.monotonic() > deadline:
                break
    raise AssertionError(f"the stream did not end: {lines}")


@pytest.mark.timeout(150)
def test_serve_web_shows_the_same_pages_and_live_tail_on_sqlite(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack, ThreadPoolExecutor(4) as pool:
        # Chromium starts while the tasks are created and serve gets ready (quit when the test ends).
        browser = pool.submit(stack.enter_context, chromium())
        serve_web(tmp_path, pool, browser)


def serve_web(tmp_path: Path, pool: ThreadPoolExecutor, browser: Future[Any]) -> None:
    port = free_port()
    # A short retry delay: the manual run below fails after its three attempts in well under a second.
    failing = created(tmp_path, "--name", "nightly-<b>x</b>", "--command", "test:fail", "--retries", "0",
                      "--retry-delay", "100",
                      "--data", '{"message": "disk full", "token": "s3cret"}')  # fmt: skip
    # The embedded database exists now: the other tasks are created, and the first one updated, at once.
    nap_task = pool.submit(created, tmp_path, "--name", "nap", "--command", "test:sleep", "--data",
                           '{"seconds": 5}')  # fmt: skip
    per_run_task = pool.submit(created, tmp_path, "--name", "per-run", "--command", "test:echo", "--schedule",
                               "0 3 * * *", "--data", '{"message": "task\'s"}')  # fmt: skip
    update = pool.submit(cli, tmp_path, "scheduler:update", "--id", str(failing), "--retries", "2")  # v2
    napping, per_run, updated = nap_task.result(), per_run_task.result(), update.result()
    assert updated.returncode == 0, updated.stderr
    with serving(tmp_path, "--web", f"--web-port={port}", wait_ready=True) as process:
        console = ConsoleClient(f"http://127.0.0.1:{port}")
        wait_for(lambda: _answers(console), 30, "serve --web: the console did not answer", interval_s=0.2)
        token = console.csrf()
        run = console.post_form(f"/tasks/{failing}/run", {"csrf_token": token})
        assert run.status == 303, run.text
        failed_id = int(run.headers["location"].rsplit("/", 1)[1])

        def failed() -> bool:
            shown = console.get(f"/api/executions/{failed_id}", accept="application/json").json()
            return bool(shown["execution"]["status"] == "failed")

        wait_for(failed, 60, "the manual run did not fail", interval_s=0.2)
        listing = console.get("/").text
        assert "nightly-&lt;b&gt;x&lt;/b&gt;" in listing and "<b>x</b>" not in listing
        page = console.get(f"/tasks/{failing}").text
        assert "RuntimeError: disk full" in page and 'class="slot s-failed"' in page
        assert "s3cret" not in page
        assert console.get(f"/executions/{failed_id}").status == 200
        assert console.post_form(f"/tasks/{napping}/run", {}).status == 403  # CSRF on SQLite too
        nap = console.post_json(f"/api/tasks/{napping}/run", {}, token=token).json()["execution"]["id"]
        versions = console.get(f"/api/tasks/{failing}/versions", accept="application/json").json()
        assert [v["version"] for v in versions] == [2, 1] and "s3cret" not in json.dumps(versions)
        assert versions[0]["changes"] == [{"field": "retries", "before": 0, "after": 2}]
        made = console.post_json("/api/tasks", {"name": "from-web", "command": "test:echo"}, token=token)
        assert made.status == 201 and made.json()["task"]["source"] == "web"
        by_source = console.get("/api/tasks?source=cli", accept="application/json").json()["tasks"]
        assert {t["id"] for t in by_source} == {failing, napping, per_run}
        in_browser(browser.result(), console.base, failing, nap)
        assert console.get(f"/api/tasks/{failing}", accept="application/json").json()["task"]["retries"] == 0
        lines = sse_lines(f"{console.base}/api/executions/{nap}/logs/stream", 60)
        assert [line["message"] for line in lines][:2] == ["sleeping 5 s", "slept 1 s of 5 s"]
        assert console.post_form(f"/tasks/{napping}/pause", {"csrf_token": token, "note": "n"}).status == 303
        assert (
            console.get(f"/api/tasks/{napping}", accept="application/json").json()["task"]["status"]
            == "paused"
        )
        check_run_data_skip_and_timed_pause(console, per_run)
        assert console.get("/tasks/4242").status == 404
        assert stop(process) == 0
    audit = cli(tmp_path, "scheduler:audit", "--task", "nap", "--format", "json")
    assert [row["action"] for row in json.loads(audit.stdout)][:2] == ["pause", "run"]


def in_browser(browser: Any, base: str, failing: int, nap: int) -> None:
    """Headless Chromium on the embedded default: the failed slot with its error on the task page, and the
    live tail of the running sleep (polling the database behind the event stream: no Redis here)."""
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/executions/{nap}")
    assert browser.find_element(By.ID, "logs").get_attribute("data-live") == "yes"  # still running
    wait_for(
        lambda: "slept 4 s of 5 s" in browser.find_element(By.ID, "logs").text,
        30,
        "the live tail showed no new line",
        interval_s=0.1,
    )
    browser.get(f"{base}/tasks/{failing}")
    slot = browser.find_element(By.CSS_SELECTOR, "#timeline li.s-failed")
    assert "RuntimeError: disk full" in slot.get_attribute("title")
    assert browser.find_element(By.ID, "task-name").text == "nightly-<b>x</b>"
    changes = browser.find_element(By.CSS_SELECTOR, '#versions tr[data-version="2"] td.changes').text
    assert changes == "retries: 0 → 2"
    browser.find_element(By.ID, "rollback-1").click()  # the local admin rolls back (CSRF from the page)
    wait_for(
        lambda: _cell(browser, '#versions tr[data-version="3"] td.changes') == "retries: 2 → 0",
        10,
        "the rollback did not show as version 3",
        interval_s=0.1,
    )


def _cell(browser: Any, css: str) -> str:
    """The text at ``css``; "" while the page is being replaced."""
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.CSS_SELECTOR, css).text)
    except WebDriverException:
        return ""


def _answers(console: ConsoleClient) -> bool:
    try:
        return console.get("/healthz").status == 200
    except OSError:
        return False


def test_web_refuses_a_public_address_without_users_and_a_malformed_users_setting(tmp_path: Path) -> None:
    public = cli(tmp_path, "scheduler:web", "--address=0.0.0.0", f"--port={free_port()}")
    assert public.returncode == 2
    assert (
        public.stderr.strip().count("\n") == 0
        and "refusing to serve the web console on 0.0.0.0" in public.stderr
    )
    bad = cli(tmp_path, "scheduler:web", env=clean_env(SCHEDULER_WEB_USERS="alice:root:x"))
    assert bad.returncode == 2 and "invalid setting web_users" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / ".scheduler").exists()  # refused before any database was created


def test_hash_password_prints_a_hash_the_console_accepts(tmp_path: Path) -> None:
    hashed = subprocess.run(
        [str(SYSTEMPROMPT), "scheduler:web", "--hash-password"], input="correct horse\n", capture_output=True,
        text=True, env=clean_env(), cwd=tmp_path, timeout=30, check=False,
    )  # fmt: skip
    assert hashed.returncode == 0, hashed.stderr
    digest = hashed.stdout.strip()
    assert digest.startswith("scrypt$") and "correct horse" not in digest
    port = free_port()
    env = clean_env(SCHEDULER_WEB_USERS=f"ana:viewer:{digest}")
    with subprocess.Popen(
        [str(SYSTEMPROMPT), "scheduler:web", "--address=0.0.0.0", f"--port={port}"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    ) as process:  # fmt: skip
        try:
            console = ConsoleClient(f"http://127.0.0.1:{port}", "ana:correct horse")
            wait_for(lambda: _listening(port), 30, "scheduler:web did not listen", interval_s=0.1)
            assert console.get("/api/session", accept="application/json").json()["role"] == "viewer"
            assert console.as_user("ana:wrong horse").get("/").status == 401
        finally:
            process.terminate()
            assert process.wait(15) == 0


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_the_trusted_header_mode_must_be_switched_on_and_names_a_listed_user(tmp_path: Path) -> None:
    port = free_port()
    hashed = "scrypt$16384$8$1$00$00"  # never matches: basic auth must not be what lets anyone in here
    users = f"ana:operator:{hashed},bo:viewer:"
    for trusted in (None, "X-Remote-User"):
        env = clean_env(SCHEDULER_WEB_USERS=users) | (
            {"SCHEDULER_WEB_TRUSTED_HEADER": trusted} if trusted else {}
        )
        with subprocess.Popen(
            [str(SYSTEMPROMPT), "scheduler:web", f"--port={port}"], cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ) as process:  # fmt: skip
            try:
                wait_for(lambda: _listening(port), 30, "scheduler:web did not listen", interval_s=0.1)
                console = ConsoleClient(f"http://127.0.0.1:{port}")
                as_ana = console.request("GET", "/api/session", headers={"X-Remote-User": "ana"})
                as_stranger = console.request("GET", "/api/session", headers={"X-Remote-User": "mallory"})
                if trusted is None:  # off by default: the header means nothing
                    assert as_ana.status == 401
                else:
                    assert (as_ana.status, as_ana.json()["role"]) == (200, "operator")
                    assert as_stranger.status == 401
                    assert console.request("GET", "/api/session").status == 401
            finally:
                process.terminate()
                assert process.wait(15) == 0
