"""`python -m cli.demo` (what `make run` starts) works on the embedded default, and twice in a row."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_demo(workdir: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    return subprocess.run(
        [sys.executable, "-m", "cli.demo"],
        cwd=workdir,
        env=env | {"NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_demo_creates_its_task_once_on_the_embedded_default(tmp_path: Path) -> None:
    first = run_demo(tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created the demo task: demo-echo" in first.stdout
    assert "*/5 * * * *" in first.stdout and " UTC" in first.stdout
    assert (tmp_path / ".scheduler" / "scheduler.db").is_file()  # no configuration: SQLite under ./.scheduler

    second = run_demo(tmp_path)
    assert second.returncode == 0, second.stderr
    assert "the demo task exists already: demo-echo (id 1)" in second.stdout
