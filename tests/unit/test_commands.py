"""The command registry (invariant 7 of docs/architecture.md): names, python and external commands, argv
templates, plugins."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scheduler.commands import builtins
from scheduler.commands import registry as commands
from scheduler.commands.builtins import DeferredRuntime
from scheduler.commands.loading import load_registry
from scheduler.commands.registry import (
    CommandContext,
    CommandRegistry,
    CommandSpec,
    command,
    placeholders,
    render_argv,
)
from scheduler.errors import CommandCollision, ConfigError, InvalidField, UnknownCommand
from scheduler.settings import Settings, load_settings
from workers.runtime_commands import deferred_worker_runtime

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def isolated_decorated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no @command-decorated functions."""
    monkeypatch.setattr(commands, "_DECORATED", {})


class Logs:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def __call__(self, level: str, message: str) -> None:
        assert level in ("DEBUG", "INFO", "WARNING", "ERROR")
        self.lines.append((level, message))


def context(data: dict[str, Any] | None = None, deadline: float | None = None) -> tuple[CommandContext, Logs]:
    logs = Logs()
    ctx = CommandContext(
        execution_id=7, task_id=3, task_name="t", attempt=1, data=data or {}, log=logs, deadline=deadline
    )
    return ctx, logs


def hello(ctx: CommandContext) -> str:
    """Say hello.

    More text that is not part of the description.
    """
    return "hello"


def other(ctx: CommandContext) -> str:
    return "other"


# ------------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize(
    "name", ["a", "backup:run", "system:health", "scheduler:cleanup", "a-b_c:d:e-f", "x1:2", "a" * 200]
)
def test_valid_names_register(name: str) -> None:
    registry = CommandRegistry()
    registry.register(name, hello)
    assert name in registry
    assert registry.get(name).func is hello


@pytest.mark.parametrize(
    "name",
    [
        "",
        "rm -rf /",
        "Backup:run",
        "1abc",
        "a:",
        ":a",
        "a::b",
        "a b",
        "a/b",
        "a;b",
        "$(reboot)",
        "a\nb",
        "backup:run\n",
        "a" * 201,
        "_a",
        "-a",
    ],
)
def test_bad_names_are_rejected_on_register_and_unknown_on_lookup(name: str) -> None:
    registry = CommandRegistry()
    with pytest.raises(InvalidField) as error:
        registry.register(name, hello)
    assert error.value.field == "command"
    with pytest.raises(InvalidField):
        registry.add_external(name, ["/bin/true"])
    with pytest.raises(InvalidField):
        command(name)
    with pytest.raises(UnknownCommand):
        registry.get(name)
    assert name not in registry


def test_unknown_command_names_the_command() -> None:
    registry = CommandRegistry()
    with pytest.raises(UnknownCommand, match="'rm -rf /'") as error:
        registry.get("rm -rf /")
    assert error.value.exit_code == 2
    assert "\n" not in str(error.value)
    assert error.value.suggestion is None and "did you mean" not in str(error.value)
    assert 42 not in registry


@pytest.mark.parametrize(
    ("typed", "suggested"),
    [("backup:databse", "backup:database"), ("system:healt", "system:health"), ("tset:echo", "test:echo")],
)
def test_unknown_command_suggests_the_closest_name_and_says_how_to_add_one(
    typed: str, suggested: str
) -> None:
    registry = CommandRegistry()
    for name in ("backup:database", "system:health", "test:echo", "test:sleep"):
        registry.register(name, hello)
    with pytest.raises(UnknownCommand) as error:
        registry.get(typed)
    assert error.value.suggestion == suggested
    assert str(error.value) == (
        f"unknown command {typed!r}; did you mean {suggested!r}? ('systemprompt scheduler:commands' lists "
        "the registered ones; docs/commands.md shows how to add one)"
    )


# --------------------------------------------------------------------------------------------- registry


def test_register_get_contains_and_sorted_specs() -> None:
    registry = CommandRegistry()
    registry.register("zeta:run", other, "last")
    registry.register("alpha:run", hello)
    registry.add_external("mid:run", ["/bin/echo", "{x}"], "echo x")
    assert [spec.name for spec in registry.specs()] == ["alpha:run", "mid:run", "zeta:run"]
    assert len(registry) == 3
    alpha = registry.get("alpha:run")
    assert alpha == CommandSpec(name="alpha:run", kind="python", description="Say hello.", func=hello)
    assert registry.get("zeta:run").description == "last"
    mid = registry.get("mid:run")
    assert (mid.kind, mid.func, mid.argv, mid.description) == (
        "external",
        None,
        ("/bin/echo", "{x}"),
        "echo x",
    )
    ctx, _ = context()
    assert alpha.func is not None and alpha.func(ctx) == "hello"


def test_re_registering_the_same_command_is_a_no_op_and_a_different_one_is_rejected() -> None:
    registry = CommandRegistry()
    registry.register("a:b", hello)
    registry.register("a:b", hello)
    with pytest.raises(CommandCollision) as error:
        registry.register("a:b", other)
    assert str(error.value) == (
        "command 'a:b' is defined twice: by test_commands.hello, and by test_commands.other; "
        "rename one of them"
    )
    with pytest.raises(CommandCollision, match="defined twice"):
        registry.register("a:b", lambda ctx: None, origin="by a lambda")
    with pytest.raises(
        CommandCollision, match=re.escape("by test_commands.hello, and as external /bin/true")
    ):
        registry.add_external("a:b", ["/bin/true"])
    registry.add_external("x:y", ["/bin/echo", "{a}"])
    registry.add_external("x:y", ["/bin/echo", "{a}"])
    with pytest.raises(CommandCollision, match="defined twice"):
        registry.add_external("x:y", ["/bin/echo", "{b}"])
    with pytest.raises(CommandCollision, match="defined twice"):
        registry.register("x:y", hello)
    assert registry.get("a:b").func is hello


def test_two_lambdas_are_different_commands() -> None:
    registry = CommandRegistry()
    registry.register("a:b", lambda ctx: 1)
    with pytest.raises(CommandCollision):
        registry.register("a:b", lambda ctx: 2)


def test_register_rejects_a_non_callable() -> None:
    with pytest.raises(InvalidField, match="callable"):
        CommandRegistry().register("a:b", "print('hi')")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- decorator


def test_decorator_registers_into_load_registry() -> None:
    @command("backup:run", "Back up everything.")
    def backup(ctx: CommandContext) -> dict[str, Any]:
        return {"execution": ctx.execution_id}

    @command("report:daily")
    def report(ctx: CommandContext) -> str:
        """Build the daily report."""
        return "ok"

    registry = load_registry(Settings())
    assert registry.get("backup:run").func is backup
    assert registry.get("backup:run").description == "Back up everything."
    assert registry.get("report:daily").description == "Build the daily report."
    ctx, _ = context()
    assert backup(ctx) == {"execution": 7}  # the decorator returns the function unchanged


def test_decorator_rejects_a_second_function_with_the_same_name() -> None:
    command("backup:run")(hello)
    command("backup:run")(hello)  # the same function again (a re-import) is fine
    with pytest.raises(
        CommandCollision, match=re.escape("by test_commands.hello, and by test_commands.other")
    ):
        command("backup:run")(other)


@pytest.mark.parametrize("builtin", ["test:echo", "system:health", "scheduler:cleanup"])
def test_decorated_command_clashing_with_a_builtin_is_an_error(builtin: str) -> None:
    command(builtin)(hello)
    with pytest.raises(CommandCollision) as error:
        load_registry(Settings())
    assert (error.value.first, error.value.second) == (builtins.BUILTIN_ORIGIN, "by test_commands.hello")


def test_a_settings_command_clashing_with_a_decorated_one_names_the_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "module.yaml"
    config.write_text("commands:\n  backup:run: [/bin/true]\n", encoding="utf-8")
    monkeypatch.setenv("SCHEDULER_CONFIG_FILE", str(config))
    command("backup:run")(hello)
    with pytest.raises(CommandCollision) as error:
        load_registry(load_settings().settings)
    assert error.value.second == f"by {config} (key commands.backup:run)"
    with pytest.raises(CommandCollision) as error:  # the same commands from the variable
        monkeypatch.setenv("SCHEDULER_COMMANDS", '{"backup:run": ["/bin/true"]}')
        load_registry(load_settings().settings)
    assert error.value.second == "by env SCHEDULER_COMMANDS (key commands.backup:run)"
    with pytest.raises(CommandCollision) as error:  # settings built by a program: no file to name
        load_registry(Settings(commands={"backup:run": ["/bin/false"]}))
    assert error.value.second == "by the settings (key commands.backup:run)"


# ------------------------------------------------------------------------------------- argv templates


def external(argv: list[str], name: str = "ext:run") -> CommandSpec:
    registry = CommandRegistry()
    registry.add_external(name, argv)
    return registry.get(name)


def test_placeholders_and_rendering() -> None:
    spec = external(
        ["/usr/bin/backup", "--target={target}", "{src}", "{src}:{dst}", "--literal={{x}}", "plain"]
    )
    assert placeholders(spec) == {"target", "src", "dst"}
    argv = render_argv(spec, {"target": "s3://bucket", "src": "/data", "dst": "/backup", "unused": 1})
    assert argv == [
        "/usr/bin/backup",
        "--target=s3://bucket",
        "/data",
        "/data:/backup",
        "--literal={x}",
        "plain",
    ]
    assert placeholders(CommandSpec(name="p", kind="python", description="", func=hello)) == set()


@pytest.mark.parametrize(
    ("value", "rendered"),
    [("text", "text"), (3, "3"), (2.5, "2.5"), (True, "true"), (False, "false"), ("", ""), ("a b", "a b")],
)
def test_render_values(value: object, rendered: str) -> None:
    assert render_argv(external(["/bin/echo", "{v}"]), {"v": value}) == ["/bin/echo", rendered]


@pytest.mark.parametrize("value", [None, [1, 2], {"a": 1}, "a\x00b"])
def test_render_rejects_values_that_are_not_one_plain_argument(value: object) -> None:
    with pytest.raises(InvalidField) as error:
        render_argv(external(["/bin/echo", "{v}"]), {"v": value})
    assert error.value.field == "data"


def test_missing_key_names_key_and_command() -> None:
    spec = external(["/bin/echo", "{present}", "--x={absent}"], name="backup:run")
    with pytest.raises(InvalidField) as error:
        render_argv(spec, {"present": "yes"})
    assert error.value.field == "data"
    assert str(error.value) == "invalid data: missing key 'absent' for command 'backup:run'"


def test_render_argv_of_a_python_command_is_an_error() -> None:
    with pytest.raises(InvalidField):
        render_argv(CommandSpec(name="p", kind="python", description="", func=hello), {})


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        ([], "empty"),
        ("/bin/echo hi", "list of strings"),
        (["/bin/echo", 3], "must be a string"),
        (["/bin/echo", "{unclosed"], "stray"),
        (["/bin/echo", "closed}"], "stray"),
        (["/bin/echo", "{not a key}"], "stray"),
        (["/bin/echo", "{a.b}"], "stray"),
        (["/bin/echo", "{0}"], "stray"),
        (["/bin/echo", "{}"], "stray"),
        (["{program}", "x"], "executable"),
        (["/opt/{tool}/bin/run"], "executable"),
        (["", "x"], "executable"),
        (["/bin/echo", "a\x00b"], "NUL"),
    ],
)
def test_bad_argv_templates_are_rejected(argv: Any, match: str) -> None:
    with pytest.raises(InvalidField, match=match) as error:
        CommandRegistry().add_external("ext:run", argv)
    assert error.value.field == "command"


INJECTIONS = [
    "$(reboot)",
    "; rm -rf /",
    "`id`",
    "a && b || c",
    "x | tee /tmp/pwned",
    "> /etc/passwd",
    "'quoted' \"double\"",
    "two words\nand a newline",
    "*",
    "~root",
    "${HOME}",
    "-rf",
]


def test_hostile_values_stay_single_literal_arguments_in_a_real_process(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    spec = external(
        [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))", "{a}", "--opt={b}", "{c}"]
    )
    payload = f"$(touch {marker}); touch {marker} `touch {marker}`"
    for value in [*INJECTIONS, payload]:
        argv = render_argv(spec, {"a": value, "b": value, "c": value})
        assert len(argv) == 6
        output = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout
        assert json.loads(output) == [value, f"--opt={value}", value]
    assert not marker.exists()


def test_hostile_value_through_bin_echo(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    value = f"$(reboot); rm -rf / ; touch {marker}"
    argv = render_argv(external(["/bin/echo", "{msg}"]), {"msg": value})
    assert argv == ["/bin/echo", value]
    assert subprocess.run(argv, capture_output=True, text=True, check=True).stdout == value + "\n"
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- load_registry


def test_load_registry_has_test_helpers_and_settings_commands() -> None:
    settings = Settings(
        commands={"backup:db": ["/usr/bin/pg_dump", "--dbname={db}"], "ops:true": ["/bin/true"]}
    )
    registry = load_registry(settings)
    assert {"test:echo", "test:sleep", "test:fail", "backup:db", "ops:true"} <= {
        s.name for s in registry.specs()
    }
    spec = registry.get("backup:db")
    assert spec.kind == "external" and spec.argv == ("/usr/bin/pg_dump", "--dbname={db}")
    assert placeholders(spec) == {"db"}
    for name in ("system:health", "scheduler:cleanup"):  # every registry knows them, not only a worker's
        assert registry.get(name).kind == "python" and registry.get(name).description


class FakeRuntime:
    def check_health(self, ctx: CommandContext) -> dict[str, Any]:
        return {"healthy": ctx.execution_id}

    def run_cleanup(self, ctx: CommandContext) -> dict[str, Any]:
        return {"deleted": ctx.execution_id}


def test_runtime_commands_run_on_the_given_runtime() -> None:
    registry = load_registry(Settings(), runtime=FakeRuntime())
    ctx, _ = context()
    assert registry.get("system:health").func(ctx) == {"healthy": 7}  # type: ignore[misc]
    assert registry.get("scheduler:cleanup").func(ctx) == {"deleted": 7}  # type: ignore[misc]


def test_runtime_commands_outside_a_worker_build_a_runtime_of_the_settings(sqlite_url: str) -> None:
    settings = Settings(database_url=sqlite_url)
    registry = load_registry(settings, runtime=deferred_worker_runtime(settings))  # as the CLI builds it
    ctx, logs = context()
    assert registry.get("scheduler:cleanup").func(ctx) == {"deleted": 0}  # type: ignore[misc]
    assert logs.lines == [("INFO", "deleted 0 finished executions and their logs")]


def test_a_deferred_runtime_is_built_once_on_first_call() -> None:
    built: list[FakeRuntime] = []

    def factory() -> FakeRuntime:
        built.append(FakeRuntime())
        return built[-1]

    registry = load_registry(Settings(), runtime=DeferredRuntime(factory))
    assert built == []  # loading the registry builds nothing
    ctx, _ = context()
    assert registry.get("system:health").func(ctx) == {"healthy": 7}  # type: ignore[misc]
    assert registry.get("scheduler:cleanup").func(ctx) == {"deleted": 7}  # type: ignore[misc]
    assert len(built) == 1


def test_without_a_runtime_the_runtime_commands_are_known_and_fail_when_called() -> None:
    registry = load_registry(Settings())  # the service's: it validates tasks, it runs no command
    ctx, _ = context()
    for name in ("system:health", "scheduler:cleanup"):
        with pytest.raises(RuntimeError, match=f"^{name} runs in a worker; this command registry has no"):
            registry.get(name).func(ctx)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("commands_setting", "match"),
    [
        ({"rm -rf /": ["/bin/rm", "-rf", "/"]}, "commands.rm -rf /"),
        ({"test:echo": ["/bin/echo"]}, "defined twice"),
        ({"ops:x": ["{prog}"]}, "executable"),
        ({"ops:x": ["/bin/echo", "{bad"]}, "stray"),
    ],
)
def test_bad_settings_commands_are_config_errors(commands_setting: dict[str, list[str]], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_registry(Settings(commands=commands_setting))


def test_importing_the_registry_does_not_import_celery_or_sqlalchemy() -> None:
    code = (
        "import sys, scheduler.commands, scheduler.commands.loading, scheduler.execution.sandbox\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('celery', 'kombu', 'sqlalchemy'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ------------------------------------------------------------------------------------ entry-point plugins

PLUGIN_MODULES = ("sp_test_plugin_good", "sp_test_plugin_broken", "sp_test_plugin_clash")


@pytest.fixture
def plugin_dist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A real installed distribution (a .dist-info directory on sys.path) with command entry points."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sp_test_plugin_good.py").write_text(
        textwrap.dedent(
            '''
            from scheduler.commands.registry import command

            @command("plugin:hello")
            def hello(ctx):
                """Say hello from a plugin."""
                return {"hello": ctx.data.get("name", "world")}

            def standalone(ctx):
                """A callable entry point."""
                return "standalone"

            def badly_named(ctx):
                return "never"
            '''
        )
    )
    (site / "sp_test_plugin_broken.py").write_text(
        textwrap.dedent(
            """
            from scheduler.commands.registry import command

            @command("plugin:partial")
            def partial(ctx):
                return "half-imported"

            raise ImportError("this plugin is broken")
            """
        )
    )
    (site / "sp_test_plugin_clash.py").write_text(
        textwrap.dedent(
            """
            from scheduler.commands.registry import command

            @command("test:echo")
            def echo(ctx):
                return "hijacked"

            @command("plugin:fine")
            def fine(ctx):
                return "fine"
            """
        )
    )
    dist_info = site / "sp_test_plugins-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sp-test-plugins\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [systemprompt.commands]
            good = sp_test_plugin_good
            plugin:standalone = sp_test_plugin_good:standalone
            plugin:hello-again = sp_test_plugin_good:hello
            Bad Name = sp_test_plugin_good:badly_named
            broken = sp_test_plugin_broken
            missing = sp_test_plugin_does_not_exist
            notcallable = sp_test_plugin_good:__name__

            [some.other.group]
            ignored = sp_test_plugin_does_not_exist
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    yield site
    for name in PLUGIN_MODULES:
        sys.modules.pop(name, None)


def test_entry_point_plugins_load_and_broken_ones_are_skipped(
    plugin_dist: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="scheduler.commands.registry"):
        registry = load_registry(Settings())
    names = {spec.name for spec in registry.specs()}

    hello = registry.get("plugin:hello")
    assert hello.description == "Say hello from a plugin."
    ctx, _ = context({"name": "plugins"})
    assert hello.func is not None and hello.func(ctx) == {"hello": "plugins"}
    standalone = registry.get("plugin:standalone")
    assert standalone.func is not None and standalone.func(ctx) == "standalone"
    assert standalone.description == "A callable entry point."
    assert "plugin:hello-again" not in names  # a decorated function keeps its decorated name
    assert "plugin:partial" not in names  # dropped with its broken module
    assert "plugin:partial" not in commands._DECORATED

    warnings = "\n".join(record.getMessage() for record in caplog.records)
    assert "entry point 'broken = sp_test_plugin_broken'" in warnings and "this plugin is broken" in warnings
    assert "entry point 'missing = " in warnings and "sp_test_plugin_does_not_exist" in warnings
    assert "Bad Name" in warnings
    assert "entry point 'notcallable = " in warnings
    assert all(record.levelno == logging.WARNING for record in caplog.records)


def test_loading_twice_gives_the_same_commands(plugin_dist: Path) -> None:
    first = {spec.name for spec in load_registry(Settings()).specs()}
    second = {spec.name for spec in load_registry(Settings()).specs()}
    assert first == second
    assert {"plugin:hello", "plugin:standalone"} <= first


def add_entry_point(site: Path, line: str) -> None:
    dist_info = site / "sp_test_clash-1.0.dist-info"
    dist_info.mkdir(exist_ok=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: sp-test-clash\nVersion: 1.0\n")
    with (dist_info / "entry_points.txt").open("a") as entry_points:
        entry_points.write(f"[systemprompt.commands]\n{line}\n")


def test_a_plugin_taking_a_builtin_name_is_a_collision_naming_its_entry_point(plugin_dist: Path) -> None:
    add_entry_point(plugin_dist, "clash = sp_test_plugin_clash")
    with pytest.raises(CommandCollision) as error:
        load_registry(Settings())
    assert (error.value.name, error.value.first) == ("test:echo", builtins.BUILTIN_ORIGIN)
    assert error.value.second == (
        "by sp_test_plugin_clash.echo (entry point 'clash = sp_test_plugin_clash' of sp-test-clash 1.0)"
    )


def test_a_callable_entry_point_clashing_with_a_settings_command_is_a_collision(plugin_dist: Path) -> None:
    add_entry_point(plugin_dist, "ops:run = sp_test_plugin_good:standalone")
    with pytest.raises(CommandCollision) as error:
        load_registry(Settings(commands={"ops:run": ["/bin/true"]}))
    assert (
        error.value.first == "by entry point 'ops:run = sp_test_plugin_good:standalone' of sp-test-clash 1.0"
    )
    assert error.value.second == "by the settings (key commands.ops:run)"


# -------------------------------------------------------------------------------------------- built-ins


def test_echo_returns_data_and_logs_one_info_line() -> None:
    data = {"a": 1, "b": [1, 2], "c": {"d": "e"}}
    ctx, logs = context(data)
    result = load_registry(Settings()).get("test:echo").func(ctx)  # type: ignore[misc]
    assert result == data
    assert json.loads(json.dumps(result)) == data
    assert len(logs.lines) == 1 and logs.lines[0][0] == "INFO" and '"a": 1' in logs.lines[0][1]


def test_echo_returns_secrets_intact_but_logs_them_redacted() -> None:
    data = {"password": "hunter2", "api_token": "t0k", "plain": "visible"}
    ctx, logs = context(data)
    assert builtins.echo(ctx) == data
    logged = logs.lines[0][1]
    assert "hunter2" not in logged and "t0k" not in logged
    assert '"password": "***"' in logged and '"plain": "visible"' in logged


def test_sleep_sleeps_in_steps_and_logs() -> None:
    ctx, logs = context({"seconds": 0.3})
    start = time.monotonic()
    assert builtins.sleep(ctx) == {"slept": 0.3}
    assert 0.3 <= time.monotonic() - start < 2
    assert logs.lines[0] == ("INFO", "sleeping 0.3 s")
    assert logs.lines[-1] == ("INFO", "slept 0.3 s")


def test_sleep_defaults_to_one_second() -> None:
    ctx, _ = context({})
    start = time.monotonic()
    assert builtins.sleep(ctx) == {"slept": 1.0}
    assert 1.0 <= time.monotonic() - start < 3


def test_sleep_stops_at_the_soft_deadline() -> None:
    ctx, logs = context({"seconds": 30}, deadline=time.monotonic() + 0.2)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="soft time limit"):
        builtins.sleep(ctx)
    assert time.monotonic() - start < 1.5
    assert any(level == "WARNING" for level, _ in logs.lines)


@pytest.mark.parametrize("seconds", ["1", -1, True, None, float("nan"), float("inf"), 10**9])
def test_sleep_rejects_bad_seconds(seconds: object) -> None:
    ctx, _ = context({"seconds": seconds})
    with pytest.raises(InvalidField) as error:
        builtins.sleep(ctx)
    assert error.value.field == "data"


def test_fail_raises_with_the_message() -> None:
    ctx, _ = context({"message": "disk on fire"})
    with pytest.raises(RuntimeError, match=r"^disk on fire$"):
        builtins.fail(ctx)
    ctx, _ = context({})
    with pytest.raises(RuntimeError, match=r"^test failure$"):
        builtins.fail(ctx)


def test_the_plugin_scan_reads_entry_points_only_when_a_distribution_declares_the_group(
    plugin_dist: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = commands
    assert registry._declares_group(registry.ENTRY_POINT_GROUP)  # the fixture's distribution
    assert not registry._declares_group("some.group.nobody.declares")
    assert registry._declares_group("some.other.group")

    listed: list[str] = []
    original = importlib.metadata.entry_points

    def spy(**params: Any) -> Any:
        listed.append(params["group"])
        return original(**params)

    monkeypatch.setattr(importlib.metadata, "entry_points", spy)
    monkeypatch.setattr(registry, "ENTRY_POINT_GROUP", "some.group.nobody.declares")
    assert registry._load_plugins() == []
    assert listed == []  # no distribution declares it: entry_points() is not called
    monkeypatch.setattr(registry, "ENTRY_POINT_GROUP", "some.other.group")
    assert registry._load_plugins() == []  # its one entry point's module is missing: logged, skipped
    assert listed == ["some.other.group"]
