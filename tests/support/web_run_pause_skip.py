"""The console's run-with-data, timed pause and skip checked over HTTP as an operator sees them: one
sequence, run against the real server on PostgreSQL (scheduler:web) and SQLite (serve --web)."""

from __future__ import annotations

import json
import time

from tests.support.web_console import ConsoleClient

UNTIL = "2031-01-02T03:04"  # a browser's datetime-local value: no offset, so UTC
UNTIL_SHOWN = "2031-01-02T03:04:00Z"


def api(client: ConsoleClient, path: str) -> object:
    answer = client.get(path, accept="application/json")
    assert answer.status == 200, (path, answer.text)
    return answer.json()


def check_run_data_skip_and_timed_pause(operator: ConsoleClient, task_id: int) -> None:
    """``task_id``: an active ``test:echo`` task with upcoming slots, data ``{"message": ...}``, no
    execution yet. Leaves it paused until :data:`UNTIL`."""
    token = operator.csrf()
    history = f"/api/tasks/{task_id}/history"
    for data, said in (
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"blob": "x" * 70_000}), "bytes serialised"),
    ):
        bad = operator.post_json(f"/api/tasks/{task_id}/run", {"data": data}, token=token)
        assert bad.status == 400 and said in bad.json()["error"], (data[:20], bad.text[:300])
    assert operator.post_form(f"/tasks/{task_id}/run", {"csrf_token": token, "data": "[]"}).status == 400
    assert api(operator, history) == []  # nothing stored

    run_data = {"message": "per-run", "api_token": "t0psecret"}
    run = operator.post_form(f"/tasks/{task_id}/run", {"csrf_token": token, "data": json.dumps(run_data)})
    assert run.status == 303, run.text
    execution_path = "/api" + run.headers["location"]
    deadline = time.monotonic() + 60
    while (shown := api(operator, execution_path))["execution"]["status"] != "completed":  # type: ignore[index]
        assert time.monotonic() < deadline, shown
        time.sleep(0.2)
    execution = shown["execution"]  # type: ignore[index]
    assert execution["data"] == {"message": "per-run", "api_token": "***"}
    assert execution["result"]["message"] == "per-run"  # the command saw the run's data over the task's
    page = operator.get(run.headers["location"]).text
    assert "per-run" in page and "***" in page and "t0psecret" not in page

    skipped = operator.post_json(f"/api/tasks/{task_id}/skip", {"count": 2, "note": "maint"}, token=token)
    assert skipped.status == 200, skipped.text
    slots = skipped.json()["skipped"]
    assert [(s["status"], s["reason"]) for s in slots] == [("skipped", "skipped_by_user")] * 2
    assert all(s["error"].startswith("skipped by ") and s["error"].endswith(": maint") for s in slots)
    assert operator.post_json(f"/api/tasks/{task_id}/skip", {"count": "0"}, token=token).status == 400
    page = operator.get(f"/tasks/{task_id}").text
    assert page.count("skipped · skipped_by_user") == 2 and ": maint" in page  # the strip, with the note

    past = operator.post_json(
        f"/api/tasks/{task_id}/pause", {"until": "2001-01-01T00:00:00Z", "note": "late"}, token=token
    )
    assert past.status == 400 and "not in the future" in past.json()["error"], past.text
    assert api(operator, f"/api/tasks/{task_id}")["task"]["status"] == "active"  # type: ignore[index]
    paused = operator.post_form(
        f"/tasks/{task_id}/pause", {"csrf_token": token, "until": UNTIL, "note": "deploy window"}
    )
    assert paused.status == 303, paused.text
    task = api(operator, f"/api/tasks/{task_id}")["task"]  # type: ignore[index]
    assert (task["status"], task["paused_until"], task["status_reason"]) == (
        "paused",
        UNTIL_SHOWN,
        "deploy window",
    )
    listed = api(operator, "/api/tasks?status=paused")["tasks"]  # type: ignore[index]
    row = next(t for t in listed if t["id"] == task_id)
    assert (row["paused_until"], row["status_reason"]) == (UNTIL_SHOWN, "deploy window") and row["paused_by"]
    page = operator.get(f"/tasks/{task_id}").text
    assert "paused until" in page and "(deploy window)" in page and "paused by" in page
    listing = operator.get("/?status=paused").text
    assert f'datetime="{UNTIL_SHOWN}"' in listing and "deploy window" in listing
