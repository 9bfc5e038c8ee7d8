"""Every ```console example in docs/ that starts with `$ systemprompt` is re-run and must print what the page
shows, so the semantics documented with real output cannot drift from the code."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli

DOCS = Path(__file__).resolve().parents[2] / "docs"
BLOCK = re.compile(r"^( *)```console\n(.*?)^\1```$", re.M | re.S)


def examples() -> list[tuple[str, str, str]]:
    """(page, command line, expected output) of each console block."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for match in BLOCK.finditer(page.read_text(encoding="utf-8")):
            indent, body = match.group(1), match.group(2)
            lines = [line.removeprefix(indent) for line in body.splitlines()]
            assert lines and lines[0].startswith("$ systemprompt "), f"{page.name}: {lines[:1]}"
            found.append((page.name, lines[0].removeprefix("$ systemprompt "), "\n".join(lines[1:])))
    return found


EXAMPLES = examples()


def test_the_semantics_page_has_examples() -> None:
    assert sum(page == "semantics.md" for page, _, _ in EXAMPLES) >= 8


@pytest.mark.parametrize(("page", "command", "expected"), EXAMPLES, ids=[f"{p}:{c}" for p, c, _ in EXAMPLES])
def test_documented_output_is_what_the_cli_prints(page: str, command: str, expected: str) -> None:
    env = {"COLUMNS": "200", "SCHEDULER_TABLES": "rich"}  # the pages show what a terminal shows
    result = CliRunner().invoke(cli, shlex.split(command), prog_name="systemprompt", env=env)
    assert result.output.rstrip() == expected.rstrip(), f"{page}: {command}\n{result.output}"
