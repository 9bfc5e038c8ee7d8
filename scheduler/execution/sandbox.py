"""Run an external program: no shell, a scrubbed environment, resource limits, its own process group.

:func:`run_external` starts ``argv`` with ``shell=False`` and ``close_fds=True`` in a new session (so it leads
its own process group), with stdin from ``/dev/null``, a private temporary ``HOME`` (also ``TMPDIR`` and,
unless ``cwd`` is given, the working directory) that is removed afterwards, and an environment of only
``PATH``, ``LANG``, ``HOME``, ``TMPDIR`` plus the explicit ``env``: nothing of the worker's environment
(secrets, broker URLs) leaks into the child.

Limits are applied with :func:`resource.setrlimit` in the child between fork and exec (``preexec_fn``), soft
and hard, never above the worker's own hard limits. Notes:

- ``RLIMIT_AS`` bounds virtual memory, which is not resident memory: runtimes that reserve large address
  ranges (the JVM, Go) need a larger value or ``None``.
- ``RLIMIT_NPROC`` counts *every* process of the user, not just this command's, and the kernel does not
  enforce it for root (``CAP_SYS_RESOURCE``/``CAP_SYS_ADMIN``). Run workers as a dedicated user for it to mean
  anything.
- ``RLIMIT_CPU`` sends ``SIGXCPU`` at the limit and ``SIGKILL`` :data:`CPU_KILL_GRACE_S` seconds later.
- ``preexec_fn`` is run in the forked child; the callable only calls ``setrlimit`` with values computed before
  the fork, so it needs no locks another thread could hold.

Output: stdout and stderr are read concurrently with a selector on one thread (no pipe can fill up and
deadlock); the first ``max_output_bytes`` of each are kept and the rest is read and counted, so a command
writing gigabytes costs bounded memory.

Timeout and clean-up: at ``timeout_s`` the whole process group gets ``SIGTERM``, then ``SIGKILL`` after
``kill_grace_s``. When the command's first process exits (on time or not) the rest of its group is killed, so
no background child outlives it; the leader is not reaped until then, which keeps its process-group id from
being reused by an unrelated process. A process that leaves the group (``setsid``) escapes this; pipes it
holds are closed after :data:`DRAIN_S` seconds.

Fork bombs: one ``killpg(SIGKILL)`` is not enough, because a member may be inside ``fork()`` while the signal
is sent and its new child then joins the group unsignalled. :func:`_reap_group` therefore repeats the
``SIGKILL`` until a scan of ``/proc`` finds no live (non-zombie) member of the group left, for at most
:data:`GROUP_KILL_S` seconds. This is what contains a fork bomb when the worker runs as root and
``RLIMIT_NPROC`` is ignored. The alternative, dropping the child to an unprivileged uid so that
``RLIMIT_NPROC`` applies, is not done: commands legitimately read and write files the worker owns (their
``cwd``, paths in their data), and a per-uid limit would count every other command of that uid as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import resource
import selectors
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scheduler.commands.registry import CommandContext, CommandSpec, render_argv
from scheduler.errors import SchedulerError

__all__ = [
    "DEFAULT_PATH",
    "ExternalCommandFailed",
    "ExternalResult",
    "ResourceLimits",
    "run_external",
    "run_external_command",
]

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
DEFAULT_KILL_GRACE_S = 2.0
CPU_KILL_GRACE_S = 5
DRAIN_S = 1.0
POLL_S = 0.05  # exit polling interval where pidfd_open is unavailable
GROUP_KILL_S = 5.0  # how long _reap_group keeps killing a group that keeps forking
READ_CHUNK = 1 << 16
MiB = 1 << 20


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    """Limits of one external command; ``None`` leaves the worker's own limit in place."""

    cpu_seconds: int | None = 3600
    memory_bytes: int | None = 1024 * MiB  # RLIMIT_AS (address space)
    open_files: int | None = 256
    file_size_bytes: int | None = 100 * MiB
    processes: int | None = 256  # RLIMIT_NPROC: per user, not for root (_reap_group contains a fork bomb)
    core_file_bytes: int | None = 0

    def __post_init__(self) -> None:
        for name in (
            "cpu_seconds",
            "memory_bytes",
            "open_files",
            "file_size_bytes",
            "processes",
            "core_file_bytes",
        ):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"ResourceLimits.{name} must be a non-negative int or None, not {value!r}")

    def rlimits(self) -> list[tuple[int, int, int]]:
        """(resource, soft, hard) triples to apply, capped by the current process's hard limits."""
        wanted: list[tuple[int, int | None, int]] = [
            (resource.RLIMIT_CPU, self.cpu_seconds, CPU_KILL_GRACE_S),
            (resource.RLIMIT_AS, self.memory_bytes, 0),
            (resource.RLIMIT_NOFILE, self.open_files, 0),
            (resource.RLIMIT_FSIZE, self.file_size_bytes, 0),
            (resource.RLIMIT_NPROC, self.processes, 0),
            (resource.RLIMIT_CORE, self.core_file_bytes, 0),
        ]
        triples = []
        for which, value, hard_extra in wanted:
            if value is None:
                continue
            _, current_hard = resource.getrlimit(which)
            soft, hard = value, value + hard_extra
            if current_hard != resource.RLIM_INFINITY:
                hard = min(hard, current_hard)
                soft = min(soft, hard)
            triples.append((which, soft, hard))
        return triples


@dataclass(frozen=True, slots=True)
class ExternalResult:
    """How an external command ended. ``exit_code`` is None when it was killed by ``signal`` or never started
    (then ``error`` says why). ``stdout``/``stderr`` hold at most ``max_output_bytes`` each (decoded as UTF-8
    with replacement), followed by a ``[... N bytes truncated]`` line when more was written."""

    argv: tuple[str, ...]
    exit_code: int | None
    signal: int | None
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    error: str | None = None
    stdout_truncated_bytes: int = 0
    stderr_truncated_bytes: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and self.error is None

    def summary(self) -> str:
        """One line: how it ended (and, on a non-zero exit, the last line of stderr)."""
        if self.error is not None:
            return f"could not start: {self.error}"
        ended = _signal_text(self.signal) if self.signal is not None else f"exit code {self.exit_code}"
        if self.timed_out:
            return f"timed out after {self.duration_s:.1f} s ({ended})"
        if self.signal is not None:
            return f"was killed by {ended}"
        if self.exit_code == 0:
            return "exited with code 0"
        last = _last_line(self.stderr) or _last_line(self.stdout)
        return f"exited with code {self.exit_code}" + (f": {last}" if last else "")


class ExternalCommandFailed(SchedulerError):
    """An external command exited non-zero, was killed, timed out or could not start."""

    def __init__(
        self, message: str, *, result: ExternalResult | None = None, timed_out: bool = False
    ) -> None:
        self.result = result
        self.timed_out = timed_out or (result is not None and result.timed_out)
        self.returncode = (
            result.exit_code if result is not None else None
        )  # not `exit_code`: that is the CLI's
        self.signal = result.signal if result is not None else None
        super().__init__(message)


def _signal_text(number: int) -> str:
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _last_line(text: str, limit: int = 200) -> str:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line and not (line.startswith("[... ") and line.endswith(" bytes truncated]")):
            return line if len(line) <= limit else line[:limit] + "..."
    return ""


@dataclass(slots=True)
class _Capture:
    limit: int
    data: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def add(self, chunk: bytes) -> None:
        room = self.limit - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        self.dropped += max(len(chunk) - max(room, 0), 0)

    def text(self) -> str:
        text = self.data.decode("utf-8", errors="replace")
        if self.dropped:
            text += (
                "" if not text or text.endswith("\n") else "\n"
            ) + f"[... {self.dropped} bytes truncated]"
        return text


def _preexec(triples: list[tuple[int, int, int]]) -> Callable[[], None]:
    def apply_limits() -> None:  # runs in the child between fork and exec: setrlimit only
        for which, soft, hard in triples:
            resource.setrlimit(which, (soft, hard))

    return apply_limits


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _live_members(pgid: int) -> list[int]:
    """Pids of the live (not zombie) processes of group ``pgid``, from ``/proc`` (empty without it)."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            members.append(int(entry))
    return members


def _reap_group(pgid: int, within_s: float = GROUP_KILL_S) -> None:
    """SIGKILL group ``pgid`` until none of its members is alive (a fork bomb forks while being killed)."""
    deadline = time.monotonic() + within_s
    while True:
        _signal_group(pgid, signal.SIGKILL)
        if not os.path.isdir("/proc") or not _live_members(pgid) or time.monotonic() >= deadline:
            return
        time.sleep(0.005)


def _has_exited(pid: int) -> bool:
    """True once ``pid`` has exited, without reaping it (the zombie keeps its process-group id reserved)."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped by someone else
        return True


def _pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _start_error(argv: Sequence[str], error: BaseException, cwd: str, path: str) -> str:
    program = argv[0]
    if isinstance(error, FileNotFoundError):
        if error.filename == cwd:
            return f"working directory not found: {cwd}"
        where = "" if "/" in program else f" (searched PATH={path})"
        return f"executable not found: {program!r}{where}"
    if isinstance(error, PermissionError):
        return f"cannot execute {program!r}: permission denied"
    if isinstance(error, OSError):
        return f"cannot execute {program!r}: {error.strerror or error}"
    return f"cannot start {program!r}: {error}"


def _pump(
    proc: subprocess.Popen[bytes],
    out: _Capture,
    err: _Capture,
    started: float,
    timeout_s: float,
    kill_grace_s: float,
) -> bool:
    """Read both pipes until the leader exits, enforcing the timeout; kill its group; drain. -> timed_out"""
    assert proc.stdout is not None and proc.stderr is not None
    pgid = proc.pid  # start_new_session: the child leads its own group
    selector = selectors.DefaultSelector()
    pidfd = _pidfd(proc.pid)
    timed_out = False
    term_at: float | None = None
    killed = False
    try:
        for stream, capture in ((proc.stdout, out), (proc.stderr, err)):
            os.set_blocking(stream.fileno(), False)
            selector.register(stream.fileno(), selectors.EVENT_READ, capture)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ, None)

        def read_ready(wait: float) -> None:
            for key, _ in selector.select(max(wait, 0.0)):
                if key.data is None:
                    continue
                try:
                    chunk = os.read(key.fd, READ_CHUNK)
                except BlockingIOError:
                    continue
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)

        deadline = started + timeout_s
        while not _has_exited(proc.pid):
            now = time.monotonic()
            if term_at is None and now >= deadline:
                timed_out = True
                term_at = now
                _signal_group(pgid, signal.SIGTERM)
            elif term_at is not None and not killed and now >= term_at + kill_grace_s:
                killed = True
                _signal_group(pgid, signal.SIGKILL)
            if term_at is None:
                wait = deadline - now
            elif not killed:
                wait = term_at + kill_grace_s - now
            else:
                wait = POLL_S
            read_ready(wait if pidfd is not None else min(wait, POLL_S))

        _reap_group(pgid)  # whatever the leader left behind in its group, even if it keeps forking
        if pidfd is not None:
            selector.unregister(pidfd)  # stays readable from now on
        drain_until = time.monotonic() + DRAIN_S
        while any(key.data is not None for key in selector.get_map().values()):
            remaining = drain_until - time.monotonic()
            if remaining <= 0:
                break
            read_ready(remaining)
    finally:
        selector.close()
        if pidfd is not None:
            os.close(pidfd)
    return timed_out


def run_external(
    argv: Sequence[str],
    *,
    timeout_s: float,
    limits: ResourceLimits,
    max_output_bytes: int,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    kill_grace_s: float = DEFAULT_KILL_GRACE_S,
) -> ExternalResult:
    """Run ``argv`` as described in the module docstring. Never raises for a command that fails or cannot
    start (see :attr:`ExternalResult.error`); raises ValueError for an empty argv or bad arguments."""
    argv = tuple(argv)
    if not argv:
        raise ValueError("argv is empty")
    if not (math.isfinite(timeout_s) and timeout_s > 0):
        raise ValueError(f"timeout_s must be a positive number, not {timeout_s!r}")
    if max_output_bytes < 0:
        raise ValueError(f"max_output_bytes must not be negative, not {max_output_bytes!r}")
    home = tempfile.mkdtemp(prefix="systemprompt-cmd-")
    child_env = {"PATH": DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": home, "TMPDIR": home, **(env or {})}
    workdir = cwd if cwd is not None else home
    out, err = _Capture(max_output_bytes), _Capture(max_output_bytes)
    started = time.monotonic()
    try:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=workdir,
                env=child_env,
                shell=False,
                close_fds=True,
                start_new_session=True,
                restore_signals=True,
                preexec_fn=_preexec(limits.rlimits()),
            )
        except (OSError, subprocess.SubprocessError) as error:
            return ExternalResult(
                argv=argv,
                exit_code=None,
                signal=None,
                stdout="",
                stderr="",
                duration_s=time.monotonic() - started,
                timed_out=False,
                error=_start_error(argv, error, workdir, child_env["PATH"]),
            )
        try:
            timed_out = _pump(proc, out, err, started, timeout_s, kill_grace_s)
        except BaseException:  # e.g. a soft time limit raised in this thread: leave nothing running
            _reap_group(proc.pid)
            proc.wait()
            raise
        finally:
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        returncode = proc.wait()
        duration = time.monotonic() - started
    finally:
        shutil.rmtree(home, ignore_errors=True)
    return ExternalResult(
        argv=argv,
        exit_code=returncode if returncode >= 0 else None,
        signal=-returncode if returncode < 0 else None,
        stdout=out.text(),
        stderr=err.text(),
        duration_s=duration,
        timed_out=timed_out,
        stdout_truncated_bytes=out.dropped,
        stderr_truncated_bytes=err.dropped,
    )


def run_external_command(
    spec: CommandSpec,
    context: CommandContext,
    timeout_s: float,
    limits: ResourceLimits,
    max_output_bytes: int,
) -> Any:
    """Run an external command for one execution.

    Renders the argv from ``context.data`` (:class:`~scheduler.errors.InvalidField` if a key is missing),
    runs it with ``SYSTEMPROMPT_EXECUTION_ID`` (the idempotency key), ``SYSTEMPROMPT_TASK_ID``,
    ``SYSTEMPROMPT_TASK_NAME`` and ``SYSTEMPROMPT_ATTEMPT`` in its environment, logs its stdout lines at INFO
    and stderr lines at WARNING, and returns ``{"exit_code": 0, "stdout": ...}``. Raises
    :class:`ExternalCommandFailed` (one-line message, ``timed_out`` set on a timeout) when it exits non-zero,
    is killed, times out or cannot start.
    """
    argv = render_argv(spec, context.data)
    env = {
        "SYSTEMPROMPT_EXECUTION_ID": str(context.execution_id),
        "SYSTEMPROMPT_TASK_NAME": context.task_name.replace("\x00", ""),
        "SYSTEMPROMPT_ATTEMPT": str(context.attempt),
    }
    if context.task_id is not None:
        env["SYSTEMPROMPT_TASK_ID"] = str(context.task_id)
    context.log("DEBUG", f"running {shlex.join(argv)}")  # quoted for display only; nothing parses it
    result = run_external(
        argv, timeout_s=timeout_s, limits=limits, max_output_bytes=max_output_bytes, env=env
    )
    for level, text in (("INFO", result.stdout), ("WARNING", result.stderr)):
        for line in text.splitlines():
            if line.strip():
                context.log(level, line)
    if result.ok:
        context.log("DEBUG", f"{spec.name} exited with code 0 in {result.duration_s:.2f} s")
        return {"exit_code": result.exit_code, "stdout": result.stdout}
    message = f"command {spec.name!r} {result.summary()}"
    context.log("ERROR", message)
    raise ExternalCommandFailed(message, result=result)
