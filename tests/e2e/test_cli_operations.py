"""Operator verbs as the real executable: flower's refusal to listen publicly without auth, health on the
embedded default, JSON logs of a long-running verb, and shell completion through click's env protocol.

Each of these verbs, and the completion protocol, runs as the real executable at least once; the other calls
run the same click application in-process (same error policy and exit codes, no process start each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from test_cli_runner import SYSTEMPROMPT, Cli

from cli.operations import flower_argv, is_loopback
from scheduler.errors import ConfigError
from scheduler.planning.lease import Lease
from scheduler.settings import Settings
from scheduler.storage.db import make_engine


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    workdir = tmp_path / "work"
    workdir.mkdir()
    return Cli(None, workdir)  # the embedded default under workdir/.scheduler


# ------------------------------------------------------------------------------------------------ flower


@pytest.mark.parametrize("address", ["0.0.0.0", "::", "10.1.2.3", "flower.internal", ""])
def test_flower_refuses_a_public_address_without_basic_auth(cli: Cli, address: str) -> None:
    args = ("scheduler:flower", f"--address={address}", "--port=5599")
    result = cli.run(*args) if address == "0.0.0.0" else cli.invoke(*args)  # one real, the rest in-process
    assert result.code == 2, result.describe()
    (line,) = result.stderr_lines
    assert line.startswith("error: refusing to serve Flower on ")
    assert "SCHEDULER_FLOWER_BASIC_AUTH" in line
    assert result.stdout == ""


def test_flower_rejects_unknown_flower_options_and_bad_auth_values(cli: Cli) -> None:
    unknown = cli.invoke("scheduler:flower", "--max-taks=10")
    assert unknown.code == 2 and unknown.stderr_lines[0].startswith("error: unknown Flower option --max-taks")
    spaced = cli.invoke("scheduler:flower", "--max-tasks", "10")
    assert spaced.code == 2 and "--name=value" in spaced.stderr
    bad_auth = cli.run("scheduler:flower", env={"SCHEDULER_FLOWER_BASIC_AUTH": "admin"})
    assert bad_auth.code == 2 and "SCHEDULER_FLOWER_BASIC_AUTH" in bad_auth.stderr


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        *[("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True)],
        *[("0.0.0.0", False), ("", False), ("192.168.1.5", False), ("example.org", False)],
    ],
)
def test_loopback_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_flower_argv_passes_auth_log_level_and_the_extra_options() -> None:
    settings = Settings(flower_basic_auth="ops:pw,viewer:pw2", log_level="WARNING")
    argv = flower_argv(settings, "0.0.0.0", 5555, ["--max-tasks=50000"])
    assert argv == [
        "flower",
        "--address=0.0.0.0",
        "--port=5555",
        "--basic-auth=ops:pw,viewer:pw2",
        "--logging=warning",
        "--max-tasks=50000",
    ]
    # Authentication given to Flower directly counts too; loopback needs none.
    assert "--auth=.*@example.org" in flower_argv(Settings(), "0.0.0.0", 5555, ["--auth=.*@example.org"])
    assert flower_argv(Settings(), "127.0.0.1", 5555, [])[:3] == [
        "flower",
        "--address=127.0.0.1",
        "--port=5555",
    ]
    with pytest.raises(ConfigError, match="without authentication"):
        flower_argv(Settings(), "0.0.0.0", 5555, [])


# ------------------------------------------------------------------------------------------------ health


def test_health_on_the_embedded_default_reports_without_creating_a_database(cli: Cli) -> None:
    result = cli.run("scheduler:health", "--check", "database,broker", "--format", "json")
    assert result.code == 1, result.describe()
    checks = {check["name"]: check for check in json.loads(result.stdout)["checks"]}
    assert checks["database"]["ok"] is False and "no database file" in checks["database"]["detail"]
    assert checks["broker"]["ok"] is True  # the embedded broker is a folder
    assert not (cli.workdir / ".scheduler" / "scheduler.db").exists()
    (line,) = result.stderr_lines
    assert line.startswith("error: unhealthy: database (")


def test_health_on_the_embedded_default_is_green_for_database_and_broker_once_used(cli: Cli) -> None:
    cli.invoke("scheduler:list")  # first use creates and migrates the embedded database
    result = cli.run("scheduler:health", "--check", "database,broker")
    assert result.code == 0, result.describe()
    assert result.stderr == ""


# -------------------------------------------------------------------------------------------------- logs


def _planner(cli: Cli, log_format: str) -> list[str]:
    """Run ``scheduler:planner`` on the embedded default until it has said whether it leads, stop it with
    SIGTERM; its stderr lines."""
    cli.invoke("scheduler:list")  # creates the embedded database
    env = {**cli.env, "SCHEDULER_LOG_FORMAT": log_format, "SCHEDULER_TICK_INTERVAL": "100"}
    process = subprocess.Popen(
        [str(SYSTEMPROMPT), "scheduler:planner"],
        cwd=cli.workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    role_known = threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line.rstrip("\n"))
            if ": leader (term" in line or ": standby" in line:
                role_known.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert role_known.wait(timeout=60), f"the planner never said whether it leads: {lines}"
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        stdout = process.stdout.read() if process.stdout is not None else ""
        process.wait(timeout=30)
        reader.join(timeout=30)
    assert process.returncode == 0, lines
    assert stdout == ""  # logs never go to stdout: it is for --format json output
    assert lines, "the planner logged nothing"
    return lines


def test_a_long_running_verb_logs_json_lines_when_asked(cli: Cli) -> None:
    records = [json.loads(line) for line in _planner(cli, "json")]
    assert all({"time", "level", "logger", "message"} <= set(record) for record in records)
    assert any(record["logger"].startswith("scheduler.") for record in records)
    assert not any("Context impl" in record["message"] for record in records)  # Alembic stays quiet


def test_a_long_running_verb_logs_text_by_default(cli: Cli) -> None:
    lines = _planner(cli, "text")
    assert not any(line.startswith("{") for line in lines)
    assert any(" INFO    scheduler." in line for line in lines)
    # Stopped by SIGTERM, it says so last, and what that means for a standby.
    assert lines[-1].endswith("stopped: its lease is released, so a standby planner takes over"), lines[-1]


def test_a_standby_planner_stopped_says_it_held_no_lease(cli: Cli) -> None:
    cli.invoke("scheduler:list")  # creates the embedded database
    engine = make_engine(f"sqlite:///{cli.workdir / '.scheduler' / 'scheduler.db'}")
    try:
        other = Lease(engine, ttl=timedelta(minutes=5), holder="the-leader")
        assert other.acquire_or_renew()
        lines = _planner(cli, "text")
    finally:
        engine.dispose()
    assert any(line.endswith(": standby") for line in lines), lines
    assert lines[-1].endswith("stopped: it held no lease (a standby): nothing to hand over"), lines[-1]


# ------------------------------------------------------------------------------------------- completion


def complete(words: str, cword: int, shell: str = "bash") -> list[str]:
    """What ``systemprompt`` offers for ``words`` (the word at ``cword`` being completed): click's env
    protocol, in-process on the same application (the real executable answers it in
    ``test_cli_runner.test_shell_completion_offers_the_subgroup_verbs_and_options`` and below)."""
    from click.testing import CliRunner

    from cli.main import cli

    env: dict[str, str | None] = {key: None for key in os.environ if key.startswith("SCHEDULER_")}
    env |= {"_SYSTEMPROMPT_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    completed = CliRunner(env=env).invoke(cli, [], prog_name="systemprompt", catch_exceptions=False)
    assert completed.exit_code == 0, completed.stderr
    # bash_complete prints "type,value" lines.
    return [line.split(",", 1)[1] for line in completed.stdout.splitlines()]


def test_completion_of_the_colon_prefix_offers_every_verb() -> None:
    offered = complete("systemprompt scheduler:", 1)
    for verb in ("list", "create", "history", "health", "flower", "migrate", "planner", "worker", "serve"):
        assert f"scheduler:{verb}" in offered
    assert all(item.startswith("scheduler:") for item in offered)


def test_completion_in_the_subgroup_offers_matching_verbs() -> None:
    assert complete("systemprompt scheduler l", 2) == ["list", "logs"]
    assert "health" in complete("systemprompt scheduler ", 2)


def test_completion_of_options_and_check_names() -> None:
    assert "--check" in complete("systemprompt scheduler health --", 3)
    assert complete("systemprompt scheduler:health --check database,b", 3) == ["database,broker"]
    assert complete("systemprompt scheduler:list --format ", 3) == ["table", "json"]


def test_completion_scripts_exist_for_bash_zsh_and_fish() -> None:
    from click.testing import CliRunner

    from cli.main import cli

    for shell in ("bash", "zsh", "fish"):
        env = {"_SYSTEMPROMPT_COMPLETE": f"{shell}_source", "PATH": os.environ.get("PATH", "")}
        if shell == "bash":  # the real executable: eval "$(_SYSTEMPROMPT_COMPLETE=bash_source systemprompt)"
            completed = subprocess.run(
                [str(SYSTEMPROMPT)], env=env, capture_output=True, text=True, timeout=30, check=False
            )
            code, stdout, stderr = completed.returncode, completed.stdout, completed.stderr
        else:  # the same protocol in-process
            result = CliRunner(env=env).invoke(cli, [], prog_name="systemprompt", catch_exceptions=False)
            code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        assert code == 0, stderr
        assert "_SYSTEMPROMPT_COMPLETE" in stdout and "systemprompt" in stdout
