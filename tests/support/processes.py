"""Waiting and processes: poll until a condition holds (or for at most a while), a free TCP port, whether a
pid still runs, stop a process group (SIGTERM, then SIGKILL if it lingers)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def wait_for(
    predicate: Callable[[], Any], timeout_s: float, message: str = "", interval_s: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something truthy and return that; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message or 'condition not met'} (waited {timeout_s} s)")
        time.sleep(interval_s)


def wait_at_most(predicate: Callable[[], Any], at_most_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``predicate`` until it holds, for at most ``at_most_s``; whether it held. For a wait that used to
    be a fixed sleep of ``at_most_s``: what the test asserts afterwards decides, not this."""
    deadline = time.monotonic() + at_most_s
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval_s)
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent to reap it counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def stop_process_group(
    process: subprocess.Popen[bytes], timeout_s: float, signals: Iterable[int] = (signal.SIGTERM,)
) -> int | None:
    """Send ``signals`` to the process group led by ``process``, wait up to ``timeout_s`` for it to exit,
    then SIGKILL the group (whatever of it lingers) and reap it; its exit code (None if it never ended)."""
    for signum in signals:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_s)
    kill_process_group(process)
    return process.returncode


def kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group led by ``process`` at once and reap the leader."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
