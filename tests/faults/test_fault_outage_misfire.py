"""Scenario 5: every planner was down. The outage is simulated on the database clock (``next_run_at`` moved
back), then ONE tick of a real planner process (``systemprompt scheduler:planner --once``) must apply the
misfire policies of docs/semantics.md and :mod:`scheduler.rules.policies`:

- hourly, 1 h grace, down 6 h, ``run_once``: five slots recorded missed, one catch-up, and the current slot;
- the same with ``skip``: six recorded missed, only the current slot runs;
- the same task paused for those 6 h, then resumed: no catch-up, no miss (resuming never replays);
- every minute, last run 98 days ago: ``skip`` runs the current slot only, ``run_once`` one catch-up too;
  either way ten individual missed rows plus one summary row, and the tick takes bounded time.

The in-process variants (every policy, caps, summaries) are in tests/integration/test_planner_misfire.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest
from faultkit import SYSTEMPROMPT, FaultSetup, figures

from scheduler.records import Execution

HOUR = timedelta(hours=1)
MINUTE = timedelta(minutes=1)
DOWN = timedelta(hours=6)
LONG_DOWN = timedelta(days=98)


def _floor(moment: datetime, unit: timedelta) -> datetime:
    if unit == HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(second=0, microsecond=0)


def _away_from_the_top_of_the_hour(setup: FaultSetup) -> None:
    """Expectations count hours from the top of this hour: do not straddle one."""
    now = setup.now()
    to_next_hour = (_floor(now, HOUR) + HOUR - now).total_seconds()
    if to_next_hour < 15:
        time.sleep(to_next_hour + 1)


def _outcome(rows: list[Execution]) -> Counter[str]:
    """``missed`` / ``catchup`` / ``on_time`` counts of one task's rows."""
    counted: Counter[str] = Counter()
    for row in rows:
        if row.status == "skipped":
            assert row.reason == "misfired"
            counted["missed"] += int((row.result or {}).get("misfired", 1))
        else:
            counted["catchup" if row.trigger == "catchup" else "on_time"] += 1
    return counted


@pytest.mark.postgres
@pytest.mark.redis
def test_one_tick_of_a_planner_process_after_an_outage_applies_the_misfire_policies(
    fault_setup: FaultSetup,
) -> None:
    setup = fault_setup
    service = setup.service
    _away_from_the_top_of_the_hour(setup)
    now = setup.now()
    top, minute = _floor(now, HOUR), _floor(now, MINUTE)
    ids: dict[str, int] = {}
    for name, schedule, policy in (
        ("hourly-run-once", "@hourly", "run_once"),
        ("hourly-skip", "@hourly", "skip"),
        ("hourly-paused", "@hourly", "run_once"),
        ("minutely-skip", "* * * * *", "skip"),
        ("minutely-run-once", "* * * * *", "run_once"),
    ):
        task = service.create_task(
            name=name, command="test:echo", schedule=schedule, misfire_policy=policy, misfire_grace_ms=None
        )
        ids[name] = task.id
    service.pause(ids["hourly-paused"])
    for name in ("hourly-run-once", "hourly-skip", "hourly-paused"):
        setup.due_from([ids[name]], top - DOWN)
    for name in ("minutely-skip", "minutely-run-once"):
        setup.due_from([ids[name]], minute - LONG_DOWN)
    service.resume(ids["hourly-paused"])

    completed = subprocess.run(
        [str(SYSTEMPROMPT), "scheduler:planner", "--once", "--format", "json"],
        cwd=str(setup.workdir),
        env=setup.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    rows = {name: setup.executions([task_id]) for name, task_id in ids.items()}
    outcome = {name: _outcome(found) for name, found in rows.items()}

    for name, found in outcome.items():
        figures(
            f"outage-{name}",
            down="98d" if name.startswith("minutely") else "6h",
            catchup=found["catchup"],
            on_time=found["on_time"],
            missed_recorded=found["missed"],
            rows=len(rows[name]),
            tick_s=report["duration_s"],
        )
    assert report["leader"] and report["duration_s"] < 5.0
    assert outcome["hourly-run-once"] == Counter(missed=5, catchup=1, on_time=1)
    assert [r.scheduled_for for r in rows["hourly-run-once"] if r.trigger == "catchup"] == [top - HOUR]
    assert outcome["hourly-skip"] == Counter(missed=6, on_time=1)
    assert rows["hourly-paused"] == []
    assert setup.next_runs([ids["hourly-paused"]])[ids["hourly-paused"]] == top + HOUR
    slots = int(LONG_DOWN / MINUTE)  # every minute from 98 days ago up to the one before the current minute
    assert outcome["minutely-skip"] == Counter(missed=slots, on_time=1)
    assert outcome["minutely-run-once"] == Counter(missed=slots - 1, catchup=1, on_time=1)
    for name in ("minutely-skip", "minutely-run-once"):
        assert len([r for r in rows[name] if r.status == "skipped"]) == 11  # ten rows and one summary
    assert {r.status for found in rows.values() for r in found if r.status != "skipped"} == {"queued"}
    queued = [r.id for found in rows.values() for r in found if r.status == "queued"]
    assert (
        len(queued) == 6 and report["dispatched"] == 6 and setup.published_ids() == dict.fromkeys(queued, 1)
    )
