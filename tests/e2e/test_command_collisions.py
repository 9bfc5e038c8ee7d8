"""A command name defined twice (a ``module.yaml`` key or an entry point against a built-in or another entry
point) is an error when the registry loads, in every process that loads it: the CLI exits 2 with one line
naming the file or entry point and the key, and a worker refuses to start with one line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_cli_runner import SYSTEMPROMPT, Cli, assert_one_line_error

CELERY = Path(sys.executable).with_name("celery")
WORKER_EXIT_TIMEOUT_S = 60


@pytest.fixture
def colliding_config(tmp_path: Path) -> Path:
    """A working directory whose module.yaml defines the built-in ``system:health`` as an external program."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "module.yaml").write_text(
        textwrap.dedent(
            """
            config: {}
            commands:
              system:health: ["/bin/true"]
            """
        ),
        encoding="utf-8",
    )
    return workdir


def test_a_module_yaml_key_naming_a_builtin_is_refused_by_the_cli(colliding_config: Path) -> None:
    cli = Cli(None, colliding_config)
    created = cli.run("scheduler:create", "--name", "health-check", "--command", "system:health")
    assert_one_line_error(created, 2)
    message = created.stderr_lines[0]
    assert str(colliding_config / "module.yaml") in message, message
    assert "commands.system:health" in message and "built-in" in message, message
    assert not (colliding_config / ".scheduler").exists()  # nothing stored, not even an empty database

    # Every verb that loads the service refuses alike, and so does the planner (its workers would refuse).
    for verb in (("scheduler:commands",), ("scheduler:list",), ("scheduler:planner", "--once")):
        refused = cli.run(*verb)
        assert_one_line_error(refused, 2)
        assert refused.stderr_lines == created.stderr_lines


def run_to_exit(argv: list[str], cli: Cli) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` where ``cli`` runs (its directory and environment) until it exits by itself."""
    return subprocess.run(
        argv,
        cwd=cli.workdir,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=WORKER_EXIT_TIMEOUT_S,
        check=False,
    )


def test_the_worker_refuses_to_start_with_a_colliding_command(colliding_config: Path) -> None:
    cli = Cli(None, colliding_config)
    expected = cli.run("scheduler:commands").stderr_lines
    worker = run_to_exit([str(SYSTEMPROMPT), "scheduler:worker", "-P", "solo"], cli)
    assert (worker.returncode, worker.stdout, worker.stderr.splitlines()) == (2, "", expected)

    bare = run_to_exit(  # a bare celery worker checks the registry when it starts, too
        [str(CELERY), "-A", "workers.app", "worker", "-P", "solo", "--without-mingle", "--without-gossip"],
        cli,
    )
    assert bare.returncode == 2, bare.stderr[-3000:]
    assert expected[0] in bare.stderr.splitlines(), bare.stderr[-3000:]
    assert "Traceback" not in bare.stderr, bare.stderr[-3000:]


def write_plugin(site: Path, dist: str, module: str, source: str) -> None:
    """An installed distribution (a .dist-info directory in ``site``) whose entry point loads ``module``."""
    (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    dist_info = site / f"{dist}-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(f"[systemprompt.commands]\n{module} = {module}\n")


def plugin_cli(tmp_path: Path, *dists: str, name: str) -> Cli:
    """A CLI whose PYTHONPATH holds one distribution per entry of ``dists``, each defining ``name``."""
    site = tmp_path / "site"
    site.mkdir()
    workdir = tmp_path / "work"
    workdir.mkdir()
    for dist in dists:
        source = f"""
            from scheduler.commands.registry import command

            @command({name!r})
            def mine(ctx):
                return "mine"
            """
        write_plugin(site, dist, dist.replace("-", "_"), source)
    return Cli(None, workdir, PYTHONPATH=str(site))


def test_an_entry_point_defining_a_builtin_is_refused(tmp_path: Path) -> None:
    listed = plugin_cli(tmp_path, "hijack", name="test:echo").run("scheduler:commands")
    assert_one_line_error(listed, 2)
    message = listed.stderr_lines[0]
    assert "'test:echo'" in message and "built-in" in message, message
    assert "entry point 'hijack = hijack' of hijack 1.0" in message, message


def test_two_entry_points_defining_one_name_are_refused(tmp_path: Path) -> None:
    listed = plugin_cli(tmp_path, "first-reports", "second-reports", name="reports:daily").run(
        "scheduler:commands"
    )
    assert_one_line_error(listed, 2)
    message = listed.stderr_lines[0]
    assert "'reports:daily'" in message, message
    assert "first-reports 1.0" in message and "second-reports 1.0" in message, message
