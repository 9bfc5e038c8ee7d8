"""Settings: spec defaults, module.yaml, SCHEDULER_* variables, and where each value came from."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.errors import ConfigError
from scheduler.settings import load_settings, unknown_variables

SPEC_DEFAULTS = {
    "max_concurrent_tasks": 100,
    "default_retries": 3,
    "retry_delay": 5000,
    "tick_interval": 1000,
    "task_timeout": 3_600_000,
    "cleanup_interval": 3_600_000,
    "history_retention_days": 30,
}


def write_yaml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "module.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_without_configuration_it_uses_the_spec_defaults_and_the_embedded_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(env={}, config_file=None)
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(loaded.settings, name) == value
        assert loaded.sources[name] == "default"
    assert loaded.settings.effective_database_url == "sqlite:///.scheduler/scheduler.db"
    assert loaded.settings.is_embedded


def test_the_repository_module_yaml_holds_the_same_defaults_as_the_code() -> None:
    repo_yaml = Path(__file__).resolve().parents[2] / "module.yaml"
    loaded = load_settings(env={}, config_file=repo_yaml)
    for name, value in SPEC_DEFAULTS.items():
        assert getattr(loaded.settings, name) == value


def test_module_yaml_overrides_defaults_with_the_specs_camel_case_keys(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "config:\n  maxConcurrentTasks: 7\n  historyRetentionDays: 2\n")
    loaded = load_settings(env={}, config_file=path)
    assert loaded.settings.max_concurrent_tasks == 7
    assert loaded.settings.history_retention_days == 2
    assert loaded.sources["max_concurrent_tasks"] == str(path)
    assert loaded.sources["default_retries"] == "default"


def test_an_environment_variable_beats_module_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "config:\n  maxConcurrentTasks: 7\n")
    loaded = load_settings(env={"SCHEDULER_MAX_CONCURRENT_TASKS": "9"}, config_file=path)
    assert loaded.settings.max_concurrent_tasks == 9
    assert loaded.sources["max_concurrent_tasks"] == "env SCHEDULER_MAX_CONCURRENT_TASKS"


def test_the_config_file_can_be_named_by_environment_variable(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "config:\n  defaultRetries: 0\n")
    loaded = load_settings(env={"SCHEDULER_CONFIG_FILE": str(path)})
    assert loaded.settings.default_retries == 0
    assert loaded.config_file == path


def test_external_commands_come_from_module_yaml(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "commands:\n  report:disk: [df, -h, '{path}']\n")
    loaded = load_settings(env={}, config_file=path)
    assert loaded.settings.commands == {"report:disk": ["df", "-h", "{path}"]}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SCHEDULER_RETRY_DELAY": "soon"}, "retry_delay"),
        ({"SCHEDULER_MAX_CONCURRENT_TASKS": "0"}, "max_concurrent_tasks"),
        ({"SCHEDULER_MISFIRE_POLICY": "sometimes"}, "misfire_policy"),
        ({"SCHEDULER_COMMANDS": "{not json"}, "SCHEDULER_COMMANDS"),
    ],
)
def test_a_bad_environment_value_is_a_config_error_naming_the_key(
    env: dict[str, str], message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message):
        load_settings(env=env, config_file=None)


def test_an_unknown_yaml_key_is_a_config_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "config:\n  maxConcurentTasks: 7\n")
    with pytest.raises(ConfigError, match="maxConcurentTasks"):
        load_settings(env={}, config_file=path)


def test_a_yaml_file_that_is_not_a_mapping_is_a_config_error(tmp_path: Path) -> None:
    path = write_yaml(tmp_path, "- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(env={}, config_file=path)


@pytest.mark.parametrize(
    ("url", "stored"),
    [
        ("postgres://u@h/db", "postgresql://u@h/db"),
        ("postgres+psycopg2://u:p@h:5/db", "postgresql+psycopg2://u:p@h:5/db"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        (
            "postgres+psycopg://u@h/db?prepare_threshold=none",
            "postgresql+psycopg://u@h/db?prepare_threshold=none",
        ),
        (
            "postgresql+psycopg://u@h/db?prepare_threshold=0",
            "postgresql+psycopg://u@h/db?prepare_threshold=0",
        ),
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite+pysqlite:////abs/x.db", "sqlite+pysqlite:////abs/x.db"),
    ],
)
def test_database_urls_of_postgresql_and_sqlite_are_accepted_postgres_spelt_out(
    url: str, stored: str
) -> None:
    assert (
        load_settings(env={"SCHEDULER_DATABASE_URL": url}, config_file=None).settings.database_url == stored
    )


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@db/s",
        "postgresql+asyncpg://u@h/d",
        "redis://h/0",
        "just-a-path.db",
        "postgresql+psycopg://u@h/d?prepare_threshold=soon",
        "postgresql+psycopg://u@h/d?prepare_threshold=-1",
    ],
)
def test_other_database_urls_are_a_config_error_naming_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^invalid setting database_url \(SCHEDULER_DATABASE_URL\): "):
        load_settings(env={"SCHEDULER_DATABASE_URL": url}, config_file=None)


def test_unknown_variables_are_named_with_the_closest_setting_and_known_ones_are_not() -> None:
    env = {
        "SCHEDULER_DATABSE_URL": "x",
        "SCHEDULER_NOTHING_LIKE_IT": "x",
        "SCHEDULER_DEBUG": "1",
        "SCHEDULER_TABLES": "plain",
        "SCHEDULER_CONFIG_FILE": "m.yaml",
        "SCHEDULER_TEST_FAULT": "x",
        "SCHEDULER_TICK_INTERVAL": "5",
        "HOME": "/root",
    }
    assert unknown_variables(env) == [
        "SCHEDULER_DATABSE_URL is not a setting and is ignored (did you mean SCHEDULER_DATABASE_URL?)",
        "SCHEDULER_NOTHING_LIKE_IT is not a setting and is ignored "
        "(see 'systemprompt scheduler:config' for the settings)",
    ]
