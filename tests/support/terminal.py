"""A command under a pseudo-terminal, as a person at a terminal runs it: its stderr (and stdin) is a tty,
its stdout stays a pipe, so what it prints for people and what it prints for scripts can be told apart."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.support.processes import kill_process_group


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class TerminalRun:
    """A started command whose stderr is a pseudo-terminal; read what it shows with :meth:`wait_for`."""

    def __init__(self, argv: Sequence[str], *, env: Mapping[str, str], cwd: Path) -> None:
        master, slave = pty.openpty()
        self._master = master
        self.screen = ""
        self.process = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=slave,
            env=dict(env),
            cwd=str(cwd),
            start_new_session=True,
            # As a shell starts a foreground job: Ctrl-C's default action, even when this run inherited
            # SIGINT ignored (a test run started in the background of a non-interactive shell).
            preexec_fn=_default_sigint,
        )
        os.close(slave)

    def _read(self, timeout_s: float) -> bool:
        ready, _, _ = select.select([self._master], [], [], timeout_s)
        if not ready:
            return False
        try:
            chunk = os.read(self._master, 65536)
        except OSError:  # the other side closed: the process exited
            return False
        self.screen += chunk.decode(errors="replace").replace("\r\n", "\n")
        return bool(chunk)

    def wait_for(self, text: str, timeout_s: float) -> str:
        """Read until ``text`` is on the terminal; fail with what it showed after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while text not in self.screen:
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"{text!r} not shown within {timeout_s} s; the terminal shows:\n{self.screen}"
                )
            if not self._read(0.1) and self.process.poll() is not None:
                raise AssertionError(
                    f"exited {self.process.returncode} before showing {text!r}:\n{self.screen}"
                )
        return self.screen

    def interrupt(self) -> None:
        """What Ctrl-C does: SIGINT to the foreground process."""
        self.process.send_signal(signal.SIGINT)

    def finish(self, timeout_s: float) -> tuple[int, str]:
        """Wait for the exit; (exit code, stdout). The terminal's text is in :attr:`screen`."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0):
            pass
        if self.process.poll() is None:
            kill_process_group(self.process)
            raise AssertionError(f"still running after {timeout_s} s:\n{self.screen}")
        stdout = self.process.stdout.read().decode()
        self.close()
        return self.process.returncode, stdout

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self._master)
        if self.process.poll() is None:
            kill_process_group(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
