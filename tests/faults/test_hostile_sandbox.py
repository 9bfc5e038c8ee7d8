"""Hostile external commands through the real path (service with a Celery publisher, a real prefork worker
subprocess, PostgreSQL and Redis): a command that reads a secret from the environment, allocates 10 GB,
writes a huge file, receives ``$(...)`` / ``;`` in its data, or fork-bombs. Each is contained by the
scrubbed environment, the rlimits and argv-only execution, and recorded with a clear error.

The commands are declared in a ``module.yaml`` (``SCHEDULER_CONFIG_FILE``) as argv lists running
``sys.executable -c <script>``. The resource limits are not settings: the worker's defaults apply
(1 GiB address space, 100 MiB file size).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from worker_support import WorkerWorld, world

from scheduler.commands.loading import load_registry
from scheduler.records import Execution
from scheduler.service import SchedulerService
from tests.support.fork_bomb import fork_bomb_script, live_with_marker
from workers.publisher import CeleryPublisher

__all__ = ["world"]

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(90)]

PY = sys.executable
MARK = uuid.uuid4().hex[:10]
SECRET = f"hunter2-{MARK}"

READ_SECRET = "import os; print('SECRET_TOKEN=%s' % os.environ.get('SECRET_TOKEN'))"
ALLOCATE = "print('allocating', flush=True); big = bytearray(10 * 1024 ** 3); print('allocated')"
WRITE_HUGE = (
    "import os\n"
    "chunk = b'x' * (1 << 20)\n"
    "with open(os.path.join(os.environ['TMPDIR'], 'huge'), 'wb') as f:\n"
    "    for _ in range(200):\n"  # 200 MiB against the 100 MiB limit
    "        f.write(chunk)\n"
    "print('written')\n"
)
ECHO_ARGV = "import json, sys; print(json.dumps(sys.argv[1:]))"
# Bounded by itself (at most 60 + 60 * 3 + 60 * 9 = 780 processes, each gone after 10 s) so that a broken
# containment cannot harm the machine; every process carries the marker in its command line.
FORK_BOMB = fork_bomb_script(60, fork_pause_s=0.005)
BOMB_MARKER = f"forkbomb-{MARK}"

COMMANDS = {
    "hostile:secret": [PY, "-c", READ_SECRET],
    "hostile:allocate": [PY, "-c", ALLOCATE],
    "hostile:write": [PY, "-c", WRITE_HUGE],
    "hostile:echo": [PY, "-c", ECHO_ARGV, "{arg}"],
    "hostile:forkbomb": [PY, "-c", FORK_BOMB, "{marker}"],
}


def service_for(world: WorkerWorld) -> SchedulerService:
    """Declare COMMANDS in the workers' module.yaml and return a service that knows them and publishes
    through Celery (the worker started afterwards reads the file)."""
    (world.workdir / "module.yaml").write_text(yaml.safe_dump({"config": {}, "commands": COMMANDS}))
    registry = load_registry(world.settings)
    for name, argv in COMMANDS.items():
        registry.add_external(name, argv)
    return SchedulerService(
        world.engine, world.settings, commands=registry, publisher=CeleryPublisher(world.app), actor="hostile"
    )


def run(
    world: WorkerWorld, service: SchedulerService, command: str, data: dict[str, Any], timeout_ms: int
) -> Execution:
    task = service.create_task(
        name=f"{command.replace(':', '-')}-{MARK}",
        command=command,
        queue=world.queue,
        schedule="manual",
        data=data,
        retries=0,
        timeout_ms=timeout_ms,
    )
    return service.run_task_now(task.id)


def stored_text(service: SchedulerService, execution: Execution) -> str:
    lines = "\n".join(line.message for line in service.logs(execution.id))
    return f"{json.dumps(execution.result)}\n{execution.error}\n{lines}"


def printed(service: SchedulerService, execution: Execution) -> list[str]:
    """What the command printed on stdout (its INFO log lines)."""
    return [line.message for line in service.logs(execution.id) if line.level == "INFO"]


def test_hostile_external_commands_are_contained_and_recorded(
    world: WorkerWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_TOKEN", SECRET)  # in the worker's environment (it inherits the test's)
    service = service_for(world)
    world.start_worker(concurrency=4)
    pwned = [Path(f"/tmp/pwned_{MARK}"), Path(f"/tmp/pwned2_{MARK}")]
    payload = f"$(touch {pwned[0]}) ; touch {pwned[1]}"
    started = {
        "secret": run(world, service, "hostile:secret", {}, 20_000),
        "allocate": run(world, service, "hostile:allocate", {}, 20_000),
        "write": run(world, service, "hostile:write", {}, 20_000),
        "echo": run(world, service, "hostile:echo", {"arg": payload}, 20_000),
    }
    done = {key: world.wait_finished(execution.id, 30) for key, execution in started.items()}

    # (a) the worker's secret is not in the command's environment, nor anywhere stored
    secret = done["secret"]
    assert secret.status == "completed", secret.error
    assert secret.result["stdout"] == "SECRET_TOKEN=None\n"
    assert SECRET not in stored_text(service, secret)

    # (b) 10 GB under the 1 GiB address-space limit: MemoryError, failed
    allocate = done["allocate"]
    assert allocate.status == "failed"
    assert allocate.error is not None and "exited with code 1" in allocate.error
    assert "MemoryError" in allocate.error
    assert printed(service, allocate) == ["allocating"]

    # (c) 200 MiB against the 100 MiB file-size limit: File too large, failed; the private tmp dir is gone
    write = done["write"]
    assert write.status == "failed"
    assert write.error is not None and "File too large" in write.error
    assert "written" not in printed(service, write)

    # (d) shell syntax in data is one inert argument: nothing runs it
    echo = done["echo"]
    assert echo.status == "completed", echo.error
    assert json.loads(echo.result["stdout"]) == [payload]
    assert not any(path.exists() for path in pwned)

    # (e) a fork bomb: timed out (or failed), and nothing of it survives
    try:
        begun = time.monotonic()
        bomb = world.wait_finished(
            run(world, service, "hostile:forkbomb", {"marker": BOMB_MARKER}, 2000).id, 30
        )
        assert bomb.status in ("timed_out", "failed"), bomb.error
        assert bomb.error and ("timed out" in bomb.error or "exited" in bomb.error or "killed" in bomb.error)
        assert "forking" in printed(service, bomb)
        assert time.monotonic() - begun < 9  # before the bomb's own 10 s bound
        assert live_with_marker(BOMB_MARKER) == [], "processes of the fork bomb survived"
    finally:
        for pid in live_with_marker(BOMB_MARKER):  # only if containment failed
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
