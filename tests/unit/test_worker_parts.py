"""The worker's pure parts: log budget, retry delays, results, watchdog, message options, Celery config."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from scheduler.execution.capture import LogBuffer, LogWriter
from scheduler.execution.outcomes import json_result, retry_delay_s
from scheduler.execution.watchdog import ExecutionCancelled, ExecutionTimedOut, Watchdog
from scheduler.limits import RETRY_COUNTDOWN_CAP_S, hard_limit_grace_s
from scheduler.records import Dispatch
from scheduler.settings import Settings
from workers.celery_config import MIN_VISIBILITY_TIMEOUT_S, build_config
from workers.embedded import broker_folders, prune
from workers.publisher import message_options, shadow_name

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------- log budget


def test_a_log_buffer_keeps_lines_within_its_budget_and_ends_with_one_marker() -> None:
    buffer = LogBuffer(limit_bytes=1024)
    for index in range(100):
        buffer.log("INFO", f"line {index:03d} " + "x" * 50)
    lines = buffer.drain(final=True)
    assert sum(len(line.message.encode()) for line in lines[:-1]) <= 1024
    assert lines[-1].level == "WARNING" and lines[-1].message.startswith("[log truncated: ")
    assert "over the 1024-byte limit" in lines[-1].message
    assert buffer.drain(final=True) == []


def test_a_log_buffer_counts_what_earlier_attempts_used() -> None:
    buffer = LogBuffer(limit_bytes=1024, used_bytes=1000)
    buffer.log("INFO", "this no longer fits")
    assert [line.message for line in buffer.drain()] == []
    assert buffer.dropped_lines == 1


def test_unknown_levels_become_info_and_nul_characters_are_dropped() -> None:
    buffer = LogBuffer(limit_bytes=4096)
    buffer.log("shout", "a\x00b")
    (line,) = buffer.drain()
    assert (line.level, line.message) == ("INFO", "ab")


def test_a_log_writer_turns_printed_text_into_lines() -> None:
    buffer = LogBuffer(limit_bytes=4096)
    writer = LogWriter(buffer, "WARNING")
    writer.write("one\ntw")
    writer.write("o\n\nthree")
    writer.flush()
    assert [(line.level, line.message) for line in buffer.drain()] == [
        ("WARNING", "one"),
        ("WARNING", "two"),
        ("WARNING", "three"),
    ]


def test_restored_lines_come_back_first() -> None:
    buffer = LogBuffer(limit_bytes=4096)
    buffer.log("INFO", "first")
    drained = buffer.drain()
    buffer.log("INFO", "second")
    buffer.restore(drained)
    assert [line.message for line in buffer.drain()] == ["first", "second"]


# ------------------------------------------------------------------------------------ retries, results


@pytest.mark.parametrize(("attempt", "expected"), [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0)])
def test_the_retry_delay_grows_by_the_backoff_within_the_jitter(attempt: int, expected: float) -> None:
    rng = random.Random(7)
    for _ in range(50):
        delay = retry_delay_s(1000, 2.0, attempt, rng=rng)
        assert expected * 0.85 <= delay <= expected * 1.15


def test_the_retry_delay_is_capped_below_the_visibility_timeout() -> None:
    assert retry_delay_s(3_600_000, 10.0, 5) == RETRY_COUNTDOWN_CAP_S
    assert RETRY_COUNTDOWN_CAP_S < MIN_VISIBILITY_TIMEOUT_S / 4


def test_results_are_json_or_their_text() -> None:
    assert json_result({"a": [1, 2]}) == {"a": [1, 2]}
    assert json_result(None) is None
    assert json_result({1, 2}) in ("{1, 2}", "{2, 1}")
    assert json_result(float("nan")) == "nan"
    big = json_result("x" * (2 << 20))
    assert isinstance(big, str) and big.endswith("characters]") and len(big) < (1 << 20) + 100


# --------------------------------------------------------------------------------------------- watchdog


def _no_beat(_lines: object) -> bool:
    return True


def test_the_watchdog_interrupts_a_sleeping_main_thread_at_its_deadline() -> None:
    buffer = LogBuffer(limit_bytes=4096)
    started = time.monotonic()
    with pytest.raises(ExecutionTimedOut):  # noqa: SIM117 - the exception must leave the watchdog block
        with Watchdog(beat=_no_beat, buffer=buffer, interval_s=10, deadline=started + 0.3):
            time.sleep(30)
    assert 0.25 < time.monotonic() - started < 3


def test_the_watchdog_interrupts_a_command_in_another_thread() -> None:
    outcome: list[str] = []

    def command() -> None:
        buffer = LogBuffer(limit_bytes=4096)
        try:
            with Watchdog(beat=_no_beat, buffer=buffer, interval_s=10, deadline=time.monotonic() + 0.2):
                while True:
                    time.sleep(0.01)
        except ExecutionTimedOut:
            outcome.append("timed out")

    thread = threading.Thread(target=command)
    thread.start()
    thread.join(5)
    assert outcome == ["timed out"]


def test_the_watchdog_cancels_when_the_claim_is_gone_and_stores_lines_meanwhile() -> None:
    stored: list[str] = []
    beats = iter([True, False])

    def beat(lines: list) -> bool:  # type: ignore[type-arg]
        stored.extend(line.message for line in lines)
        return next(beats)

    buffer = LogBuffer(limit_bytes=4096)
    buffer.log("INFO", "working")
    with pytest.raises(ExecutionCancelled):  # noqa: SIM117
        with Watchdog(beat=beat, buffer=buffer, interval_s=0.1, deadline=None):
            time.sleep(30)
    assert stored == ["working"]


def test_a_command_that_finishes_in_time_is_not_interrupted_later() -> None:
    buffer = LogBuffer(limit_bytes=4096)
    with Watchdog(beat=_no_beat, buffer=buffer, interval_s=10, deadline=time.monotonic() + 0.2):
        pass
    time.sleep(0.4)  # a late signal would raise here


# -------------------------------------------------------------------------------- messages and config


def test_messages_carry_the_shadow_name_time_limits_and_countdown() -> None:
    dispatch = Dispatch(7, "reports", "backup:run", "nightly", countdown_s=2.5, timeout_s=60)
    assert shadow_name(dispatch) == "backup:run [nightly]"
    assert message_options(dispatch) == {
        "queue": "reports",
        "shadow": "backup:run [nightly]",
        "time_limit": 60 + hard_limit_grace_s(60),
        "countdown": 2.5,
    }
    assert "time_limit" not in message_options(Dispatch(7, "q", "c", "t"))


def test_the_celery_config_acks_late_prefetches_one_and_outlives_the_longest_task() -> None:
    config = build_config(Settings(broker_url="redis://127.0.0.1:6379/0", task_timeout=3 * 3600 * 1000))
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1 and config["task_ignore_result"]
    assert config["worker_send_task_events"] and not config["task_send_sent_event"]  # Flower: worker events
    visibility = config["broker_transport_options"]["visibility_timeout"]
    assert visibility >= 3 * 3600 + RETRY_COUNTDOWN_CAP_S
    assert build_config(Settings(broker_url="redis://x"))["broker_transport_options"][
        "visibility_timeout"
    ] == (MIN_VISIBILITY_TIMEOUT_S)


def test_the_celeryconfig_module_holds_the_config_of_the_environment(tmp_path: Path) -> None:
    code = (
        "import celeryconfig, json\n"
        "print(json.dumps({name: getattr(celeryconfig, name) for name in "
        "('broker_url', 'broker_transport_options', 'task_default_queue', 'task_acks_late')}))\n"
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    env.update(
        SCHEDULER_BROKER_URL="redis://127.0.0.1:6379/9",
        SCHEDULER_DEFAULT_QUEUE="nightly",
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    expected = build_config(Settings(broker_url="redis://127.0.0.1:6379/9", default_queue="nightly"))
    assert json.loads(result.stdout) == {
        name: expected[name]
        for name in ("broker_url", "broker_transport_options", "task_default_queue", "task_acks_late")
    }


def test_the_embedded_broker_lives_under_home_and_prunes_old_files(tmp_path: Path) -> None:
    config = build_config(Settings(home=tmp_path))
    options = config["broker_transport_options"]
    folders = broker_folders(tmp_path)
    assert config["broker_url"].startswith("filesystem://")
    assert options["data_folder_in"] == options["data_folder_out"] == str(folders.queue)
    assert config["broker_transport"] == "workers.filesystem_transport:Transport"
    assert options["processed_folder"] == str(folders.processed)
    assert (options["staging_folder"], options["bad_folder"]) == (str(folders.staging), str(folders.bad))
    old, fresh = folders.processed / "1_a.default.msg", folders.processed / "2_b.default.msg"
    task, orphan = folders.queue / "3_c.default.msg", folders.queue / "4_d.x.celery.pidbox.msg"
    for path in (old, fresh, task, orphan):
        path.write_text("{}")
    for path in (old, task, orphan):
        os.utime(path, (time.time() - 3600, time.time() - 3600))
    assert prune(tmp_path, older_than_s=600) == 2
    assert not old.exists() and not orphan.exists() and fresh.exists() and task.exists()
