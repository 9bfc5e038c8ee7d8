"""Each prefork pool process leads its own process group, so the hard time limit ends a command's tree.

Billiard kills a timed-out pool process with SIGTERM, then SIGKILL 0.1 s later if it still lives; when the
pool process leads a process group it signals the whole group instead. Without a group of its own,
children that a Python command started (``subprocess.Popen``) outlive the limit as orphans. Leading a group
is not enough either: the pool process dies of the SIGTERM at once, so billiard never sends the SIGKILL, and
a child that ignores SIGTERM survives. So the pool process answers SIGTERM by SIGKILLing its group, itself
included.

External commands are not concerned: the sandbox starts them in a session of their own and ends that itself.
The pool processes still die with the worker (Celery sets their parent-death signal).
"""

from __future__ import annotations

import os
import signal
from types import FrameType
from typing import Any


def _kill_own_group(_signum: int, _frame: FrameType | None) -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def lead_own_process_group(**_: Any) -> None:
    """``worker_process_init`` receiver (in the new pool process): lead a process group; SIGTERM kills it."""
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, _kill_own_group)
