"""docs/commands.md followed step by step, as a user would, on the embedded default: install the example
package of ``examples/backup_commands``, run the spec's three ``scheduler:create`` examples verbatim through
the ``systemprompt`` executable, start ``scheduler:serve``, and see each execution complete with the example
command's result. The README's Python API block runs verbatim against the same scheduler.

The package is installed with ``pip install --target`` into a directory on ``PYTHONPATH`` (the guide's
alternative to installing it into the scheduler's environment), so the test leaves the project's virtual
environment as it was: other tests' registries do not grow the example's commands.

The guide's steps run as the real executable; the test's own look-ups besides them (the tasks created, the
polling until ``migrate-data`` ran) run the CLI in-process (``Cli.invoke``) on the same embedded database.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from test_cli_runner import Cli

from scheduler.records import FINISHED_STATUSES
from tests.support.processes import kill_process_group, wait_for

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GUIDE = REPO / "docs" / "commands.md"
EXAMPLE = REPO / "examples" / "backup_commands"
TIMEOUT_S = 90

# The spec's examples (shared/spec/scheduler-module.md), character for character.
SPEC_EXAMPLES = """\
systemprompt scheduler:create \\
  --name "daily-backup" \\
  --command "backup:database" \\
  --schedule "0 2 * * *" \\
  --data '{"type": "incremental"}'
systemprompt scheduler:create \\
  --name "health-check" \\
  --command "system:health" \\
  --schedule "5m"
systemprompt scheduler:create \\
  --name "migrate-data" \\
  --command "migrate:run" \\
  --schedule "now" \\
  --once
"""


@dataclass(frozen=True)
class Scheduler:
    """A working directory with the example package on ``PYTHONPATH``, ``scheduler:serve`` running in it."""

    workdir: Path
    env: dict[str, str]
    serve: subprocess.Popen[bytes]

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        if self.serve.poll() is not None:
            raise AssertionError((self.workdir / "serve.log").read_text())
        return subprocess.run(
            argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S
        )

    def json(self, *args: str) -> Any:
        result = self.run("systemprompt", *args, "--format", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def in_process(self) -> Cli:
        """The CLI in this process, on the same embedded database (without the example package: to read)."""
        return Cli(None, self.workdir)


def install_example(target: Path, scratch: Path) -> None:
    """``pip install`` the example package into ``target`` (built from a copy: the checkout stays clean)."""
    source = scratch / "backup_commands"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    subprocess.run(
        [
            str(BIN / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(source),
        ],
        check=True,
        capture_output=True,
        timeout=TIMEOUT_S,
    )


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scheduler]:
    root = tmp_path_factory.mktemp("guide")
    workdir = root / "work"
    workdir.mkdir()
    install_example(root / "site", root)
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHEDULER_")}
    env |= {"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "PYTHONPATH": str(root / "site")}
    env |= {"NO_COLOR": "1", "COLUMNS": "200"}
    created = subprocess.run(
        ["bash", "-e", "-c", SPEC_EXAMPLES],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    with (workdir / "serve.log").open("wb") as log:
        serve = subprocess.Popen(
            ["systemprompt", "scheduler:serve", "--concurrency", "1"],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Scheduler(workdir, env, serve)
    finally:
        kill_process_group(serve)  # its state is in the database; a graceful stop is test_serve's subject


def test_the_guide_gives_the_spec_examples_verbatim() -> None:
    blocks = re.findall(r"^```bash\n(.*?)^```$", GUIDE.read_text(encoding="utf-8"), re.M | re.S)
    assert SPEC_EXAMPLES in blocks


def finished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for row in rows if row["status"] in FINISHED_STATUSES]


@pytest.mark.timeout(180)
def test_the_spec_examples_run_end_to_end_after_the_guide(scheduler: Scheduler) -> None:
    reader = scheduler.in_process()
    tasks = {task["name"]: task for task in reader.tasks()}
    assert {name: tasks[name]["command"] for name in ("daily-backup", "health-check", "migrate-data")} == {
        "daily-backup": "backup:database",
        "health-check": "system:health",
        "migrate-data": "migrate:run",
    }

    wait_for(
        lambda: finished(reader.json("scheduler:history", "--task", "migrate-data")),
        60,
        "migrate-data did not run",
        interval_s=0.2,
    )
    migrated = finished(scheduler.json("scheduler:history", "--task", "migrate-data"))  # the guide's step
    assert [(row["status"], row["trigger"]) for row in migrated] == [("completed", "schedule")]
    assert migrated[0]["result"] == {"steps": 3, "dry_run": False}
    logs = scheduler.json("scheduler:logs", "--execution", str(migrated[0]["id"]))
    assert [line["message"] for line in logs][:1] == ["step 1/3: create table archive"]
    assert reader.json("scheduler:list", "--status", "completed")[0]["name"] == "migrate-data"  # --once

    # The guide's two runs, from two terminals at once (serve runs them one after the other: concurrency 1).
    with ThreadPoolExecutor(max_workers=2) as pool:
        backup, health = pool.map(
            lambda task: scheduler.json("scheduler:run", "--id", task, "--wait", "--timeout", "60"),
            ("daily-backup", "health-check"),
        )
    assert backup["status"] == "completed", backup
    written = Path(backup["result"]["file"])
    assert written.parent == scheduler.workdir / "backups"
    manifest = json.loads(written.read_text())
    assert (manifest["type"], manifest["execution_id"]) == ("incremental", backup["id"])
    assert backup["result"]["type"] == "incremental"
    assert health["status"] == "completed", health
    assert (health["result"]["database"], health["result"]["broker"]) == ("ok", "ok")
    assert health["result"]["planner"]["lease"]


def test_an_unknown_command_suggests_the_closest_name_and_how_to_add_one(scheduler: Scheduler) -> None:
    result = scheduler.run("systemprompt", "scheduler:create", "--name", "x", "--command", "backup:databse")
    assert (result.returncode, result.stdout) == (2, "")
    [line] = result.stderr.splitlines()
    assert "unknown command 'backup:databse'" in line and "did you mean 'backup:database'?" in line, line
    assert "docs/commands.md" in line, line


def readme_python_block() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Python API", 1)[1]
    match = re.search(r"^```python\n(.*?)^```$", section, re.M | re.S)
    assert match, "README.md has no python block under '## Python API'"
    return match.group(1)


@pytest.mark.timeout(180)
def test_the_readme_python_example_runs_verbatim(scheduler: Scheduler) -> None:
    result = scheduler.run(str(BIN / "python"), "-c", readme_python_block())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "created backup-database", result.stdout  # the listener saw the creation
    status, outcome = lines[1].split(" ", 1)
    assert status == "completed", result.stdout
    assert ast.literal_eval(outcome)["type"] == "full"
