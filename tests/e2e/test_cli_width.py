"""Tables on an 80-column terminal keep every time and word whole; single-record views are plain when piped.

The real executable runs on a pseudo-terminal of the given size (rich and the plain tables measure it like a
user's terminal); a pipe is the other case.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_cli_reports import record_execution, record_logs
from test_cli_runner import SYSTEMPROMPT, TIMEOUT_S, Cli

from cli.cells import Column
from cli.render import plain_table_lines

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
BOX = set("┏┓┗┛┃━│─┌┐└┘┡┩╇┳┻╋")
FULL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC")
COMPACT_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d(?!:)")


def on_terminal(cli: Cli, *args: str, columns: int = 80, **env: str) -> str:
    """What ``systemprompt args`` shows on a terminal ``columns`` wide (escape codes removed)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    process = subprocess.Popen(
        [str(SYSTEMPROMPT), *args],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
        cwd=cli.workdir,
        env={**cli.env, "COLUMNS": str(columns), **env},
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        process.wait(timeout=TIMEOUT_S)
    assert process.returncode == 0, b"".join(chunks).decode()
    return ANSI.sub("", b"".join(chunks).decode().replace("\r\n", "\n"))


@pytest.fixture
def cli(sqlite_url: str, tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(sqlite_url, workdir)


@pytest.fixture
def busy(cli: Cli, sqlite_url: str) -> Cli:
    """Executions of every shape: completed with a duration, failed with a long error, a deleted task's."""
    task = cli.create("nightly-db-backup", "--schedule", "0 2 * * *", "--timezone", "Europe/Berlin")
    gone = cli.create("gone", "--schedule", "5m")
    start = datetime(2026, 3, 28, 1, 0, 3, tzinfo=UTC)
    for n, status in enumerate(("completed", "failed", "timed_out")):
        record_execution(
            sqlite_url, task, status=status, scheduled_for=start + timedelta(days=n),
            started_at=start + timedelta(days=n), finished_at=start + timedelta(days=n, seconds=95),
            duration_ms=95_000, error=None if status == "completed" else "ConnectionError: " + "x" * 70,
        )  # fmt: skip
    record_execution(sqlite_url, gone, status="cancelled", reason="task deleted")
    cli.ok("scheduler:delete", "--id", "gone", "--confirm")
    return cli


def assert_fits(output: str, columns: int) -> None:
    too_wide = [line for line in output.splitlines() if len(line) > columns]
    assert not too_wide, output


@pytest.mark.parametrize("style", ["rich", "plain"])
def test_history_at_80_columns_keeps_statuses_and_times_on_one_line(busy: Cli, style: str) -> None:
    shown = on_terminal(busy, "scheduler:history", SCHEDULER_TABLES=style)
    assert_fits(shown, 80)
    for status in ("completed", "failed", "timed_out", "cancelled"):
        assert re.search(rf"(^|[ │]){status}([ │]|$)", shown, re.M), f"{status} broken:\n{shown}"
    times = FULL_TIME.findall(shown) or COMPACT_TIME.findall(shown)
    assert len(times) >= 4, f"a time is broken:\n{shown}"  # one scheduled-for time per execution at least
    assert "nightly-db-backup" in shown


def test_audit_and_validate_at_80_columns_keep_times_whole(busy: Cli) -> None:
    for args in (
        ("scheduler:audit",),
        ("scheduler:validate", "--schedule", "0 2 * * *", "--timezone", "America/Argentina/Buenos_Aires"),
    ):
        shown = on_terminal(busy, *args)
        assert_fits(shown, 80)
        assert FULL_TIME.search(shown) or COMPACT_TIME.search(shown), shown
        assert not re.search(r"\d{4}-\d?\s*[│┃]", shown), f"a time is broken:\n{shown}"


@pytest.mark.parametrize("style", ["rich", "plain"])
def test_the_other_table_verbs_fit_80_columns(busy: Cli, style: str, sqlite_url: str) -> None:
    (task,) = [t for t in busy.tasks() if t["name"] == "nightly-db-backup"]
    execution = record_execution(sqlite_url, task, status="completed")
    record_logs(sqlite_url, execution, ("INFO", "copied " + "the table rows of every schema, " * 6))
    (busy.workdir / "module.yaml").write_text(
        "commands:\n  report:disk-usage-of-every-mounted-volume: [df, --human-readable, --print-type]\n"
    )
    for args in (
        ("scheduler:next", "--count", "3"),
        ("scheduler:stats",),
        ("scheduler:logs", "--execution", str(execution)),
        ("scheduler:commands",),
    ):
        shown = on_terminal(busy, *args, SCHEDULER_TABLES=style)
        assert_fits(shown, 80)
        assert not re.search(r"\d{4}-\d?\s*[│┃]", shown), f"a time is broken:\n{shown}"


@pytest.mark.parametrize("style", ["rich", "plain"])
def test_config_at_80_columns_keeps_each_source_whole(tmp_path: Path, style: str) -> None:
    url = "postgresql://scheduler:secret@db.internal.example.com:5432/scheduler"
    cli = Cli(url, tmp_path)  # SCHEDULER_HOME: the long path of tmp_path
    shown = on_terminal(cli, "scheduler:config", SCHEDULER_TABLES=style)
    table = shown.split("broker:", 1)[1].split("\n", 1)[1]  # below the summary of URLs, shown whole
    assert_fits(table, 80)
    for source in ("env SCHEDULER_HOME", "env SCHEDULER_DATABASE_URL"):
        assert re.search(rf"(^|[ │]){source}([ │]|$)", table, re.M), f"{source} cut:\n{shown}"


@pytest.mark.parametrize("style", ["rich", "plain"])
def test_list_at_80_columns_keeps_statuses_outcomes_and_times_whole(busy: Cli, style: str) -> None:
    busy.create("weekly-report-for-the-finance-team", "--schedule", "0 6 * * 1")
    busy.ok("scheduler:pause", "--id", "weekly-report-for-the-finance-team", "--reason", "quarter end")
    shown = on_terminal(busy, "scheduler:list", SCHEDULER_TABLES=style)
    assert_fits(shown, 80)
    for word in ("active", "paused", "timed_out"):
        assert re.search(rf"(^|[ │]){word}([ │]|$)", shown, re.M), f"{word} broken:\n{shown}"
    assert FULL_TIME.search(shown) or COMPACT_TIME.search(shown), shown
    assert not re.search(r"\d{4}-\d?\s*[│┃]", shown), f"a time is broken:\n{shown}"


def test_a_wide_terminal_shows_every_history_column_in_full(busy: Cli) -> None:
    shown = on_terminal(busy, "scheduler:history", columns=200)
    assert all(header in shown for header in ("trigger", "attempt", "duration", "started", "1 min 35 s"))
    assert len(FULL_TIME.findall(shown)) >= 7


def test_single_record_views_are_plain_when_piped_or_asked(cli: Cli) -> None:
    # CliRunner's stdout is not a terminal, like a pipe; the real executable on a terminal is below.
    created = cli.invoke("scheduler:create", "--name", "piped", "--command", "test:echo", "--schedule", "5m")
    stats = cli.invoke("scheduler:stats")
    for result in (created, stats):
        assert result.code == 0, result.describe()
        assert not BOX & set(result.stdout), result.stdout
    assert re.search(r"^name +piped$", created.stdout, re.M), created.stdout
    assert re.search(r"^total +0$", stats.stdout, re.M), stats.stdout
    asked = on_terminal(cli, "scheduler:update", "--id", "piped", "--retries", "1", SCHEDULER_TABLES="plain")
    assert not BOX & set(asked) and re.search(r"^retries +1$", asked, re.M), asked
    boxed = on_terminal(cli, "scheduler:update", "--id", "piped", "--retries", "2")
    assert BOX & set(boxed), boxed  # a terminal still gets the bordered panel


def test_a_plain_table_written_to_a_pipe_is_never_cut_to_a_width() -> None:
    rows = [{"error": "e" * 150, "at": datetime(2026, 1, 1, tzinfo=UTC)}]
    columns = (Column("at"), Column("error", flow="text", drop_order=1))
    assert plain_table_lines(rows, columns)[2] == f"2026-01-01 00:00:00 UTC  {'e' * 150}"
    narrow = plain_table_lines(rows, columns, width=40)  # full time, 2 spaces, 15 characters of error
    assert narrow[2] == f"2026-01-01 00:00:00 UTC  {'e' * 14}…" and max(map(len, narrow)) == 40
    narrower = plain_table_lines(rows, columns, width=29)  # compact time + 12 would still be 30: no error
    assert narrower[2] == "2026-01-01 00:00:00 UTC"
