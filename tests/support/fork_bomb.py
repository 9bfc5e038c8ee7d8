"""A fork bomb for the sandbox tests that bounds itself, so that a broken containment cannot take the machine
down, and a way to find what survives of it.

Run the script as ``python -c <script> <marker>``: every process of the bomb is a fork of that one, so each
carries the marker in its command line and :func:`live_with_marker` finds the ones still alive.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import process_alive

LIFETIME_S = 10  # every process of the bomb exits this long after the script started, contained or not

_SCRIPT = """
import os, sys, time
end = time.monotonic() + {lifetime_s}
def bomb(depth, budget):
    for _ in range(budget):
        if time.monotonic() >= end:
            break
        try:
            pid = os.fork()
        except OSError:
            time.sleep(0.05)
            continue
        if pid == 0:
            if depth < 2:
                bomb(depth + 1, 3)
            while time.monotonic() < end:
                time.sleep(0.05)
            os._exit(0)
        time.sleep({fork_pause_s})
print('forking', flush=True)
bomb(0, {first_wave})
{ending}
"""

_WAIT_UNTIL_THE_END = "while time.monotonic() < end:\n    time.sleep(0.05)"


def fork_bomb_script(first_wave: int, *, fork_pause_s: float = 0.002, exit_code: int | None = None) -> str:
    """Python source of the bomb: prints ``forking``, forks ``first_wave`` children (``fork_pause_s`` apart),
    each of which forks 3 that fork 3 again (at most ``first_wave * 13`` processes, a failed fork waits and
    goes on); every process lives until :data:`LIFETIME_S`. The first process then waits for that too, or
    with ``exit_code`` exits with it at once (leaving the rest of the bomb behind)."""
    ending = _WAIT_UNTIL_THE_END if exit_code is None else f"sys.exit({exit_code})"
    return _SCRIPT.format(
        lifetime_s=LIFETIME_S, fork_pause_s=fork_pause_s, first_wave=first_wave, ending=ending
    )


def live_with_marker(marker: str) -> list[int]:
    """The pids of live processes (zombies excluded) whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmdline and process_alive(int(entry.name)):
            found.append(int(entry.name))
    return found
