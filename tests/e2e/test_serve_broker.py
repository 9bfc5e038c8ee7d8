"""The embedded broker under ``scheduler:serve``: a message file nobody can decode is moved aside and never
stops the worker."""

from __future__ import annotations

import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.support.processes import wait_for
from tests.support.serving import cli, fatal_lines, serving, stop

UNDECODABLE = {"empty": b"", "garbage": b"\x00\xff{not json"}


@pytest.mark.timeout(120)
def test_an_undecodable_message_file_is_moved_aside_and_serve_keeps_running(tmp_path: Path) -> None:
    broker = tmp_path / ".scheduler" / "broker"
    log = tmp_path / "serve.log"
    with serving(tmp_path, wait_ready=True) as process, ThreadPoolExecutor(1) as pool:
        # Named like kombu's own files, sorted before any real message: the next one the worker takes.
        names = {kind: f"0_{uuid.uuid4()}.default.msg" for kind in UNDECODABLE}
        for kind, content in UNDECODABLE.items():
            (broker / "queue" / names[kind]).write_bytes(content)
        # The task to run afterwards is created (serve made the database) while the files are dealt with.
        creating = pool.submit(
            cli,
            tmp_path,
            "scheduler:create",
            "--name",
            "echo",
            "--command",
            "test:echo",
            "--data",
            '{"a": 1}',
        )

        def moved_aside() -> bool:
            assert process.poll() is None, f"serve died:\n{log.read_text()}"
            return all((broker / "bad" / name).exists() for name in names.values())

        wait_for(moved_aside, 15, "the undecodable files were not moved to broker/bad/", interval_s=0.2)
        for kind, name in names.items():
            assert (broker / "bad" / name).read_bytes() == UNDECODABLE[kind]
            assert not (broker / "queue" / name).exists()
            assert len([line for line in log.read_text().splitlines() if name in line]) == 1, log.read_text()

        created = creating.result()
        assert created.returncode == 0, created.stderr
        run = cli(tmp_path, "scheduler:run", "--id", "echo", "--wait", "--timeout", "30", "--format", "json")
        assert run.returncode == 0, run.stderr + log.read_text()
        assert json.loads(run.stdout)["result"] == {"a": 1}
        assert stop(process) == 0
    assert fatal_lines(log.read_text()) == []
