"""scheduler.observability.log_setup: JSON lines that parse, bound context fields on every record, secrets
redacted, text by default, and one handler however often it is configured."""

from __future__ import annotations

import io
import json
import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from scheduler.errors import ConfigError
from scheduler.observability.log_setup import bound_log_context, configure_logging, current_log_context
from scheduler.settings import Settings


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    alembic_level = logging.getLogger("alembic").level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("alembic").setLevel(alembic_level)
    logging.captureWarnings(False)


@pytest.fixture
def json_log(restore_root_logger: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(Settings(log_format="json", log_level="DEBUG"), stream=stream)
    return stream


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_format_writes_one_object_per_line_with_time_level_logger_message(json_log: io.StringIO) -> None:
    before = datetime.now(UTC)
    logging.getLogger("scheduler.planning.planner").info("tick %d done", 7)
    logging.getLogger("workers.runner").warning("multi\nline message")
    first, second = lines(json_log)
    assert list(first)[:4] == ["time", "level", "logger", "message"]
    assert (first["level"], first["logger"], first["message"]) == (
        "INFO",
        "scheduler.planning.planner",
        "tick 7 done",
    )
    assert second["message"] == "multi\nline message"  # still one line of output: the newline is escaped
    assert first["time"].endswith("Z")
    at = datetime.fromisoformat(first["time"].replace("Z", "+00:00"))
    assert at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= at <= datetime.now(UTC) + timedelta(seconds=1)


def test_bound_fields_appear_on_every_record_inside_the_block_only(json_log: io.StringIO) -> None:
    log = logging.getLogger("workers.runner")
    with bound_log_context(task_id=3, execution_id=41):
        log.info("claimed")
        with bound_log_context(attempt=2, command="backup:run"):
            log.info("running")
        log.info("recorded")
    log.info("idle")
    claimed, running, recorded, idle = lines(json_log)
    assert (claimed["task_id"], claimed["execution_id"]) == (3, 41) and "attempt" not in claimed
    assert {key: running[key] for key in ("task_id", "execution_id", "attempt", "command")} == {
        "task_id": 3,
        "execution_id": 41,
        "attempt": 2,
        "command": "backup:run",
    }
    assert "attempt" not in recorded and recorded["execution_id"] == 41
    assert not {"task_id", "execution_id", "attempt", "command"} & set(idle)


def test_the_context_is_restored_after_an_exception_and_none_fields_are_left_out() -> None:
    with pytest.raises(RuntimeError), bound_log_context(execution_id=1, task_id=None):
        assert current_log_context() == {"execution_id": 1}
        raise RuntimeError("boom")
    assert current_log_context() == {}


def test_extra_fields_win_over_bound_ones_and_unknown_values_are_stringified(json_log: io.StringIO) -> None:
    with bound_log_context(execution_id=41):
        logging.getLogger("x").info(
            "retry", extra={"execution_id": 42, "when": datetime(2026, 3, 29, tzinfo=UTC)}
        )
    (line,) = lines(json_log)
    assert line["execution_id"] == 42
    assert line["when"] == "2026-03-29 00:00:00+00:00"


def test_context_does_not_leak_into_other_threads(json_log: io.StringIO) -> None:
    def other() -> None:
        logging.getLogger("other").info("elsewhere")

    with bound_log_context(execution_id=9):
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    (line,) = lines(json_log)
    assert "execution_id" not in line


def test_secrets_are_redacted_in_data_in_dict_extras_and_in_secret_named_fields(
    json_log: io.StringIO,
) -> None:
    logging.getLogger("x").info(
        "with secrets",
        extra={
            "data": {"user": "ana", "password": "hunter2", "nested": [{"api_key": "k-123"}]},
            "headers": {"Authorization": "Bearer abc", "Accept": "json"},
            "api_token": "t-456",
        },
    )
    (line,) = lines(json_log)
    assert line["data"] == {"user": "ana", "password": "***", "nested": [{"api_key": "***"}]}
    assert line["headers"] == {"Authorization": "***", "Accept": "json"}
    assert line["api_token"] == "***"
    for secret in ("hunter2", "k-123", "Bearer abc", "t-456"):
        assert secret not in json_log.getvalue()


def test_an_exception_travels_in_the_same_json_line(json_log: io.StringIO) -> None:
    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("x").exception("it failed")
    (line,) = lines(json_log)
    assert line["level"] == "ERROR"
    assert "Traceback" in line["exc_info"] and "ValueError: bad value" in line["exc_info"]


def test_text_is_the_default_format_with_the_context_at_the_end(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    with bound_log_context(task_id=3, execution_id=41, data={"token": "x"}):
        logging.getLogger("workers.runner").info("attempt %s failed", 2)
    text = stream.getvalue()
    assert not text.startswith("{")
    (line,) = text.splitlines()
    stamp, level, rest = line.split(" ", 2)
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    assert level == "INFO"
    assert (
        rest.strip() == 'workers.runner: attempt 2 failed [task_id=3 execution_id=41 data={"token": "***"}]'
    )


def test_configuring_again_replaces_our_handler_and_keeps_others(restore_root_logger: None) -> None:
    root = logging.getLogger()
    theirs = logging.NullHandler()
    root.addHandler(theirs)
    first, second = io.StringIO(), io.StringIO()
    configure_logging(Settings(log_format="json"), stream=first)
    configure_logging(Settings(log_format="text", log_level="warning"), stream=second)
    logging.getLogger("x").info("dropped: below WARNING")
    logging.getLogger("x").warning("kept")
    assert first.getvalue() == ""
    assert second.getvalue().count("kept") == 1 and "dropped" not in second.getvalue()
    assert theirs in root.handlers
    assert root.level == logging.WARNING


def test_alembic_info_is_quiet_unless_debugging(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    assert stream.getvalue() == ""
    configure_logging(Settings(log_level="DEBUG"), stream=stream)
    logging.getLogger("alembic.runtime.migration").info("Context impl PostgresqlImpl.")
    assert "Context impl" in stream.getvalue()


def test_an_unknown_level_is_a_config_error(restore_root_logger: None) -> None:
    with pytest.raises(ConfigError, match="log_level: 'LOUD'"):
        configure_logging(Settings(log_level="LOUD"), stream=io.StringIO())


def test_text_lines_leave_out_celerys_data_which_its_message_already_shows(restore_root_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(Settings(), stream=stream)
    data = {"id": "u-1", "name": "test:echo [hello]", "args": "[2]"}
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", data, extra={"data": data}
    )
    assert stream.getvalue().rstrip().endswith("celery.worker.strategy: Task test:echo [hello][u-1] received")


@pytest.mark.parametrize(("given", "expected"), [("ERROR", logging.ERROR), (logging.DEBUG, logging.DEBUG)])
def test_a_bare_celery_workers_log_level_option_wins_over_the_settings(
    restore_root_logger: None, given: Any, expected: int
) -> None:
    """`celery -A workers.app worker -l LEVEL` reaches the app as Celery's setup_logging signal."""
    from celery import signals

    from workers.app import create_app

    create_app(Settings(log_level="WARNING"))
    signals.setup_logging.send(sender=None, loglevel=given, logfile=None, format="", colorize=False)
    assert logging.getLogger().level == expected
