"""The verb table of the root group (cli.verbs): it names exactly the verbs the modules define, and a verb's
module is imported only when the verb is looked up."""

from __future__ import annotations

import gc
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from cli import docgen
from cli.main import LONG_RUNNING, PREFIX, READ_ONLY, cli, verb_name
from cli.verbs import VERBS, LazyCommands, import_verb

VERB_MODULES = (
    "cli.tasks", "cli.backfills", "cli.reports", "cli.calendars", "cli.admin", "cli.engine", "cli.operations",
    "cli.task_files", "cli.alerts",
)  # fmt: skip


def test_the_table_names_every_verb_of_the_modules_and_nothing_else() -> None:
    defined = {verb_name(command): command for _, commands in docgen.SECTIONS for command in commands}
    assert set(VERBS) == set(defined)
    for verb, command in defined.items():
        assert import_verb(verb) is command


def test_both_spellings_of_a_verb_are_one_command() -> None:
    sub = cli.commands["scheduler"]
    assert isinstance(sub, click.Group)
    assert sorted(sub.commands) == sorted(VERBS)
    assert sorted(cli.commands) == sorted([*(PREFIX + verb for verb in VERBS), "scheduler"])
    for verb in VERBS:
        assert cli.commands[PREFIX + verb] is sub.commands[verb]


def test_the_special_verb_sets_name_real_verbs() -> None:
    assert set(VERBS) >= LONG_RUNNING
    assert set(VERBS) >= READ_ONLY
    assert not LONG_RUNNING & READ_ONLY


def test_a_verb_imports_its_own_module_only() -> None:
    script = (
        "import sys; from cli.main import cli; "
        f"modules = {VERB_MODULES!r}; "
        "before = [m for m in modules if m in sys.modules]; "
        "cli.commands['scheduler:list']; "
        "print(before, [m for m in modules if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["[]", "['cli.tasks']"], done.stdout + done.stderr


def test_a_read_only_verb_runs_without_the_cyclic_gc_and_turns_it_back_on() -> None:
    seen: list[bool] = []
    original = gc.disable

    def disable() -> None:
        seen.append(gc.isenabled())
        original()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gc, "disable", disable)
        result = CliRunner().invoke(cli, ["scheduler:validate", "--schedule", "5m"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert seen == [True]  # it was on, the verb turned it off once
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0  # nothing stays frozen in the caller's process


def test_lazy_commands_load_once_and_keep_added_commands() -> None:
    loads: list[str] = []

    def load(verb: str) -> click.Command:
        loads.append(verb)
        return click.Command(verb)

    commands = LazyCommands({"a": "alpha", "b": "beta"}, load)
    assert sorted(commands) == ["a", "b"] and len(commands) == 2 and loads == []
    assert commands["a"].name == "alpha" and commands["a"] is commands["a"] and loads == ["alpha"]
    added = click.Command("c")
    commands["c"] = added
    assert commands["c"] is added and "c" in commands and len(commands) == 3
    del commands["b"]
    assert "b" not in commands and sorted(commands) == ["a", "c"] and loads == ["alpha"]
    with pytest.raises(KeyError):
        commands["missing"]
    assert commands.get("missing") is None
