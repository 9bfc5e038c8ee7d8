"""The sandboxed runner of external commands: environment, output, timeouts, process groups, rlimits."""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.commands.registry import CommandContext, CommandRegistry, CommandSpec
from scheduler.errors import InvalidField, SchedulerError
from scheduler.execution.sandbox import (
    ExternalCommandFailed,
    ExternalResult,
    ResourceLimits,
    run_external,
    run_external_command,
)
from tests.support.fork_bomb import fork_bomb_script, live_with_marker
from tests.support.processes import process_alive

PY = sys.executable
MiB = 1 << 20
LIMITS = ResourceLimits()


def run_py(code: str, *args: str, **kwargs: Any) -> ExternalResult:
    kwargs.setdefault("timeout_s", 20)
    kwargs.setdefault("limits", LIMITS)
    kwargs.setdefault("max_output_bytes", 65536)
    return run_external([PY, "-c", code, *args], **kwargs)


def wait_gone(pid: int, within_s: float = 3.0) -> bool:
    end = time.monotonic() + within_s
    while time.monotonic() < end:
        if not process_alive(pid):
            return True
        time.sleep(0.02)
    return not process_alive(pid)


@pytest.fixture
def spawned() -> Iterator[list[int]]:
    """Pids of grandchildren a test learned about; anything still alive afterwards is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if process_alive(pid):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------------------------- environment


def test_child_sees_a_scrubbed_environment_not_the_workers_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_TOKEN", "hunter2-do-not-leak")
    monkeypatch.setenv("SCHEDULER_DATABASE_URL", "postgresql://user:pw@db/prod")
    code = "import json, os; print(json.dumps({'env': dict(os.environ), 'cwd': os.getcwd()}))"
    result = run_py(code, env={"EXTRA": "given"})
    assert result.ok, result
    seen = json.loads(result.stdout)
    env = seen["env"]
    assert "SECRET_TOKEN" not in env and "hunter2" not in result.stdout
    assert "SCHEDULER_DATABASE_URL" not in env
    assert set(env) == {"PATH", "LANG", "HOME", "TMPDIR", "EXTRA"}
    assert env["PATH"] == "/usr/local/bin:/usr/bin:/bin"
    assert env["LANG"] == "C.UTF-8"
    assert env["EXTRA"] == "given"
    assert env["HOME"] == env["TMPDIR"] == seen["cwd"]
    assert Path(env["HOME"]).name.startswith("systemprompt-cmd-")
    assert not Path(env["HOME"]).exists()  # the private home is removed afterwards


def test_explicit_cwd_stdin_is_empty_and_own_session(tmp_path: Path) -> None:
    code = (
        "import json, os, sys\n"
        "print(json.dumps({'cwd': os.getcwd(), 'stdin': sys.stdin.read(),\n"
        "  'leader': os.getpgid(0) == os.getpid() == os.getsid(0)}))\n"
    )
    result = run_py(code, cwd=str(tmp_path))
    assert json.loads(result.stdout) == {"cwd": str(tmp_path), "stdin": "", "leader": True}


def test_parent_file_descriptors_are_not_inherited() -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)
    try:
        code = (
            "import os, sys\n"
            "try:\n"
            "    os.fstat(int(sys.argv[1]))\n"
            "    print('open')\n"
            "except OSError:\n"
            "    print('closed')\n"
        )
        assert run_py(code, str(write_end)).stdout == "closed\n"
    finally:
        os.close(read_end)
        os.close(write_end)


# -------------------------------------------------------------------------------------------------- output


def test_megabytes_of_output_are_capped_without_deadlock_or_unbounded_memory() -> None:
    # 16 MiB on each stream, interleaved: a reader that drained one pipe at a time would deadlock.
    code = (
        "import sys\n"
        "chunk = b'o' * 65536\n"
        "err = b'e' * 65536\n"
        "for _ in range(256):\n"
        "    sys.stdout.buffer.write(chunk); sys.stdout.flush()\n"
        "    sys.stderr.buffer.write(err); sys.stderr.flush()\n"
    )
    tracemalloc.start()
    try:
        start = time.monotonic()
        result = run_py(code, max_output_bytes=1000)
        elapsed = time.monotonic() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    total = 256 * 65536
    assert result.exit_code == 0 and not result.timed_out
    assert result.stdout == "o" * 1000 + f"\n[... {total - 1000} bytes truncated]"
    assert result.stderr == "e" * 1000 + f"\n[... {total - 1000} bytes truncated]"
    assert result.stdout_truncated_bytes == result.stderr_truncated_bytes == total - 1000
    assert peak < 4 * MiB, f"peak {peak} bytes while reading {2 * total} bytes"
    assert elapsed < 15


def test_output_under_the_cap_is_kept_whole_and_invalid_utf8_is_replaced() -> None:
    code = (
        "import sys\n"
        "sys.stdout.buffer.write('héllo\\n'.encode() + b'\\xff\\n')\n"
        "print('warn', file=sys.stderr)\n"
    )
    result = run_py(code, max_output_bytes=100)
    assert result.stdout == "héllo\n\ufffd\n"
    assert result.stderr == "warn\n"
    assert result.stdout_truncated_bytes == 0


# ----------------------------------------------------------------------------------- timeouts and groups


def test_hanging_command_is_killed_at_the_timeout_with_its_children(spawned: list[int]) -> None:
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    result = run_py(code, timeout_s=1.0)
    elapsed = time.monotonic() - start
    grandchild = int(result.stdout.split()[0])
    spawned.append(grandchild)
    assert result.timed_out
    assert result.exit_code is None and result.signal == signal.SIGTERM
    assert 1.0 <= elapsed < 4
    assert wait_gone(grandchild), "the grandchild sleep outlived the timeout"
    assert "timed out after" in result.summary()


def test_command_ignoring_sigterm_gets_sigkill_after_the_grace(spawned: list[int]) -> None:
    code = (
        "import os, signal, subprocess, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    start = time.monotonic()
    result = run_py(code, timeout_s=0.5, kill_grace_s=0.5)
    elapsed = time.monotonic() - start
    spawned.append(int(result.stdout.split()[0]))
    assert result.timed_out and result.signal == signal.SIGKILL
    assert elapsed < 4
    assert wait_gone(spawned[0])


def test_background_children_do_not_outlive_a_command_that_exits(spawned: list[int]) -> None:
    # The grandchild keeps stdout open; the run must neither wait for it nor leave it running.
    code = "import subprocess\nchild = subprocess.Popen(['sleep', '60'])\nprint(child.pid, flush=True)\n"
    start = time.monotonic()
    result = run_py(code, timeout_s=30)
    spawned.append(int(result.stdout.split()[0]))
    assert result.exit_code == 0 and not result.timed_out
    assert time.monotonic() - start < 3
    assert wait_gone(spawned[0])


def test_a_child_escaping_the_group_does_not_hang_the_run(spawned: list[int]) -> None:
    code = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '30'], start_new_session=True)\n"
        "print(child.pid, flush=True)\n"
    )
    start = time.monotonic()
    result = run_py(code, timeout_s=30)
    spawned.append(int(result.stdout.split()[0]))  # killed by the fixture
    assert result.exit_code == 0
    assert time.monotonic() - start < 4


def test_killed_by_a_signal() -> None:
    result = run_py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.exit_code is None and result.signal == signal.SIGKILL and not result.timed_out
    assert result.summary() == "was killed by signal 9 (SIGKILL)"
    assert not result.ok


# ------------------------------------------------------------------------------------ exits and errors


def test_non_zero_exit() -> None:
    code = "import sys; print('partial'); print('first'); print('disk full', file=sys.stderr); sys.exit(3)"
    result = run_py(code)
    assert result.exit_code == 3 and result.signal is None and not result.ok
    assert result.stdout == "partial\nfirst\n" and result.stderr == "disk full\n"
    assert result.summary() == "exited with code 3: disk full"


@pytest.mark.parametrize("program", ["definitely-not-a-program-xyz", "/nonexistent/bin/prog"])
def test_missing_executable_is_a_result_not_an_exception(program: str) -> None:
    result = run_external([program, "arg"], timeout_s=5, limits=LIMITS, max_output_bytes=100)
    assert result.exit_code is None and result.signal is None and not result.timed_out
    assert result.error is not None and "executable not found" in result.error and program in result.error
    assert result.summary().startswith("could not start: executable not found")


def test_non_executable_file_and_missing_cwd(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o644)
    result = run_external([str(script)], timeout_s=5, limits=LIMITS, max_output_bytes=100)
    assert result.exit_code is None and result.error is not None and "permission denied" in result.error
    missing = str(tmp_path / "nowhere")
    result = run_external([PY, "-c", "pass"], timeout_s=5, limits=LIMITS, max_output_bytes=100, cwd=missing)
    assert result.error == f"working directory not found: {missing}"


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        run_external([], timeout_s=1, limits=LIMITS, max_output_bytes=10)
    with pytest.raises(ValueError):
        run_external([PY], timeout_s=0, limits=LIMITS, max_output_bytes=10)
    with pytest.raises(ValueError):
        ResourceLimits(memory_bytes=-1)


# ----------------------------------------------------------------------------------------- resource limits


def test_limits_are_applied_to_the_child() -> None:
    limits = ResourceLimits(
        cpu_seconds=100, memory_bytes=512 * MiB, open_files=64, file_size_bytes=8 * MiB, processes=50
    )
    code = (
        "import json, resource as r\n"
        "names = ['RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_NOFILE', 'RLIMIT_FSIZE', 'RLIMIT_NPROC',\n"
        "         'RLIMIT_CORE']\n"
        "print(json.dumps({n: r.getrlimit(getattr(r, n)) for n in names}))\n"
    )
    seen = json.loads(run_py(code, limits=limits).stdout)

    def expected(which: int, soft: int, hard: int) -> list[int]:
        current_hard = resource.getrlimit(which)[1]
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        return [soft, hard]

    assert seen == {
        "RLIMIT_CPU": expected(resource.RLIMIT_CPU, 100, 105),
        "RLIMIT_AS": expected(resource.RLIMIT_AS, 512 * MiB, 512 * MiB),
        "RLIMIT_NOFILE": expected(resource.RLIMIT_NOFILE, 64, 64),
        "RLIMIT_FSIZE": expected(resource.RLIMIT_FSIZE, 8 * MiB, 8 * MiB),
        "RLIMIT_NPROC": expected(resource.RLIMIT_NPROC, 50, 50),  # set, though root is exempt from it
        "RLIMIT_CORE": [0, 0],
    }


def test_none_leaves_a_limit_alone() -> None:
    code = "import resource as r; print(r.getrlimit(r.RLIMIT_AS) == (r.RLIM_INFINITY, r.RLIM_INFINITY))"
    limits = ResourceLimits(memory_bytes=None)
    parent_unlimited = resource.getrlimit(resource.RLIMIT_AS) == (resource.RLIM_INFINITY,) * 2
    assert run_py(code, limits=limits).stdout.strip() == str(parent_unlimited)


def test_memory_limit_stops_a_2gb_allocation() -> None:
    code = (
        "import sys\n"
        "small = bytearray(64 * 1024 * 1024)\n"  # well under the limit: fine
        "print('64 MiB ok', flush=True)\n"
        "big = bytearray(2 * 1024 ** 3)\n"
        "print('2 GiB allocated')\n"
    )
    result = run_py(code, limits=ResourceLimits(memory_bytes=256 * MiB))
    assert result.exit_code not in (0, None) or result.signal is not None
    assert result.stdout == "64 MiB ok\n"
    assert "MemoryError" in result.stderr


def test_file_size_limit_stops_a_python_writer() -> None:
    code = (
        "with open('small', 'wb') as f:\n"
        "    f.write(b'x' * 512 * 1024)\n"
        "print('512 KiB ok', flush=True)\n"
        "with open('big', 'wb') as f:\n"
        "    f.write(b'x' * 2 * 1024 * 1024)\n"
        "print('2 MiB written')\n"
    )
    result = run_py(code, limits=ResourceLimits(file_size_bytes=1 * MiB))
    assert result.exit_code == 1
    assert result.stdout == "512 KiB ok\n"
    assert "File too large" in result.stderr


@pytest.mark.skipif(shutil.which("dd") is None, reason="needs dd")
def test_file_size_limit_kills_a_native_writer_with_sigxfsz() -> None:
    result = run_external(
        ["dd", "if=/dev/zero", "of=big", "bs=1M", "count=4"],
        timeout_s=10,
        limits=ResourceLimits(file_size_bytes=1 * MiB),
        max_output_bytes=4096,
    )
    assert result.exit_code is None and result.signal == signal.SIGXFSZ


def test_open_files_limit() -> None:
    code = "handles = [open('/dev/null') for _ in range(200)]"
    result = run_py(code, limits=ResourceLimits(open_files=32))
    assert result.exit_code == 1 and "Too many open files" in result.stderr


def test_cpu_limit_stops_a_busy_loop() -> None:
    result = run_py("while True: pass", limits=ResourceLimits(cpu_seconds=1), timeout_s=15)
    assert not result.timed_out
    assert result.signal in (signal.SIGXCPU, signal.SIGKILL)
    assert result.duration_s < 10


# ------------------------------------------------------------------------------------ run_external_command


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        assert level in ("DEBUG", "INFO", "WARNING", "ERROR")
        self.lines.append((level, message))

    def at(self, level: str) -> list[str]:
        return [message for lvl, message in self.lines if lvl == level]


def make(argv: list[str], name: str = "ext:run") -> CommandSpec:
    registry = CommandRegistry()
    registry.add_external(name, argv)
    return registry.get(name)


def ctx(data: dict[str, Any], logs: Logs) -> CommandContext:
    return CommandContext(
        execution_id=42, task_id=5, task_name="nightly", attempt=2, data=data, log=logs, deadline=None
    )


def test_run_external_command_keeps_hostile_data_as_single_arguments(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = make(
        [PY, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", "{payload}", "--label={label}"]
    )
    payload = f"$(reboot); rm -rf / ; touch {marker} `touch {marker}` && echo pwned"
    logs = Logs()
    result = run_external_command(spec, ctx({"payload": payload, "label": "a b"}, logs), 20, LIMITS, 65536)
    assert result["exit_code"] == 0
    assert json.loads(result["stdout"]) == [payload, "--label=a b"]
    assert not marker.exists()
    assert logs.at("INFO") == [result["stdout"].strip()]


def test_run_external_command_through_bin_echo(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = f"$(touch {marker}); touch {marker}"
    logs = Logs()
    result = run_external_command(make(["/bin/echo", "{msg}"]), ctx({"msg": value}, logs), 10, LIMITS, 4096)
    assert result == {"exit_code": 0, "stdout": value + "\n"}
    assert not marker.exists()


def test_run_external_command_passes_the_idempotency_key() -> None:
    code = (
        "import os\n"
        "keys = ('EXECUTION_ID', 'TASK_ID', 'TASK_NAME', 'ATTEMPT')\n"
        "print(*(os.environ.get('SYSTEMPROMPT_' + k) for k in keys))\n"
    )
    result = run_external_command(make([PY, "-c", code]), ctx({}, Logs()), 20, LIMITS, 4096)
    assert result["stdout"] == "42 5 nightly 2\n"


def test_run_external_command_failure_is_one_line_and_logged() -> None:
    code = "import sys; print('step 1'); print('boom: disk full', file=sys.stderr); sys.exit(3)"
    logs = Logs()
    with pytest.raises(ExternalCommandFailed) as error:
        run_external_command(make([PY, "-c", code], name="backup:run"), ctx({}, logs), 20, LIMITS, 4096)
    failure = error.value
    assert isinstance(failure, SchedulerError)
    assert str(failure) == "command 'backup:run' exited with code 3: boom: disk full"
    assert "\n" not in str(failure)
    assert failure.returncode == 3 and failure.signal is None and not failure.timed_out
    assert failure.exit_code == 1  # the CLI's exit code is untouched
    assert failure.result is not None and failure.result.stdout == "step 1\n"
    assert logs.at("INFO") == ["step 1"]
    assert logs.at("WARNING") == ["boom: disk full"]
    assert logs.at("ERROR") == [str(failure)]


def test_run_external_command_timeout_sets_timed_out() -> None:
    spec = make([PY, "-c", "import time; print('started', flush=True); time.sleep(30)"])
    start = time.monotonic()
    with pytest.raises(ExternalCommandFailed, match="timed out after") as error:
        run_external_command(spec, ctx({}, Logs()), 0.5, LIMITS, 4096)
    assert error.value.timed_out
    assert time.monotonic() - start < 4


def test_run_external_command_missing_executable_and_missing_key() -> None:
    with pytest.raises(ExternalCommandFailed, match="could not start: executable not found"):
        run_external_command(make(["no-such-program-xyz"]), ctx({}, Logs()), 5, LIMITS, 4096)
    with pytest.raises(InvalidField, match="missing key 'target'"):
        run_external_command(make(["/bin/echo", "{target}"]), ctx({}, Logs()), 5, LIMITS, 4096)


# -------------------------------------------------------------------------------------------- fork bomb

# A fork bomb that bounds itself (at most 150 + 150 * 3 + 150 * 9 = 1950 processes, each gone after 10 s) so
# a broken containment cannot take the machine down. Every process carries the marker in its command line.
# "exit": the first process exits (code 7) once it has forked, leaving the rest of the bomb running.
FORK_BOMBS = {"hang": fork_bomb_script(150), "exit": fork_bomb_script(40, exit_code=7)}


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize("mode", ["hang", "exit"])
def test_a_fork_bomb_is_contained_and_nothing_of_it_survives(mode: str) -> None:
    marker = f"forkbomb-{os.getpid()}-{time.monotonic_ns()}"
    try:
        start = time.monotonic()
        result = run_py(
            FORK_BOMBS[mode], marker, limits=ResourceLimits(processes=20), timeout_s=1.5, kill_grace_s=0.3
        )
        assert not result.ok
        if mode == "hang":
            assert result.timed_out and result.signal in (signal.SIGTERM, signal.SIGKILL)
        else:
            assert result.exit_code == 7 and not result.timed_out
        assert time.monotonic() - start < 8  # well before the bomb's own 10 s bound
        assert live_with_marker(marker) == [], "processes of the fork bomb survived the run"
    finally:
        for pid in live_with_marker(marker):  # only if containment failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
