"""docs/configuration.md and docs/cli-reference.md are generated (python -m cli.docgen): fail when either is
stale, i.e. a setting or a command changed without regenerating the docs."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli import docgen
from cli.main import cli, verb_name
from scheduler.settings import Settings, env_name


@pytest.mark.parametrize("path", list(docgen.rendered()), ids=lambda path: path.name)
def test_generated_doc_is_up_to_date(path: Path) -> None:
    expected = docgen.rendered()[path]
    assert path.exists(), f"{path.name} is missing: run python -m cli.docgen"
    assert path.read_text(encoding="utf-8") == expected, f"{path.name} is stale: run python -m cli.docgen"


def test_configuration_lists_every_setting_with_its_variable_and_key() -> None:
    text = docgen.render_configuration()
    for name, info in Settings.model_fields.items():
        row = next(line for line in text.splitlines() if line.startswith(f"| `{name}` |"))
        assert f"`{env_name(name)}`" in row
        assert (info.alias or name) in row


def test_cli_reference_has_every_verb_and_its_options() -> None:
    text = docgen.render_cli_reference()
    for command in cli.commands.values():
        if command.name == "scheduler":
            continue
        verb = verb_name(command)
        assert f"### scheduler:{verb}\n" in text
        for param in command.params:
            for option in getattr(param, "opts", []):
                if option.startswith("--"):
                    assert option in text, f"scheduler:{verb} {option} is not documented"


def test_check_mode_reports_stale_files_without_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text("old\n")
    monkeypatch.setattr(docgen, "rendered", lambda: {stale: "new\n"})
    monkeypatch.setattr(docgen, "DOCS", tmp_path / "docs")
    assert docgen.main(["--check"]) == 1
    assert stale.read_text() == "old\n"
    assert docgen.main([]) == 0
    assert stale.read_text() == "new\n"
    assert docgen.main(["--check"]) == 0
