"""The settings' declarative base: values parsed and refused as pydantic's lax mode did (the expected values
and messages below are pydantic 2's, recorded before the settings left it), frozen instances, validators."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.settings import Settings
from scheduler.settings_model import Field, SettingsValidationError

ACCEPTED = [
    ("max_concurrent_tasks", "5", 5),
    ("max_concurrent_tasks", " 5 ", 5),
    ("max_concurrent_tasks", "+5", 5),
    ("max_concurrent_tasks", "1_000", 1000),
    ("max_concurrent_tasks", "5.0", 5),
    ("max_concurrent_tasks", 5.0, 5),
    ("max_concurrent_tasks", True, 1),
    ("default_retries", "100", 100),
    ("retry_backoff", "2", 2.0),
    ("retry_backoff", " 2.5 ", 2.5),
    ("retry_backoff", "1e0", 1.0),
    ("retry_backoff", "1_0", 10.0),
    ("retry_backoff", 2, 2.0),
    ("home", "/tmp/x", Path("/tmp/x")),
    ("home", "", Path(".")),
    ("database_url", None, None),
    ("database_url", "postgres://u@h/d", "postgresql://u@h/d"),
    ("events_prefix", "ab", "ab"),
    ("overlap_policy", "forbid", "forbid"),
    ("metrics_port", None, None),
    ("metrics_port", "80", 80),
    ("actor", "", ""),
    ("commands", {"a": ["x"]}, {"a": ["x"]}),
    ("commands", {"a": ("x", "y")}, {"a": ["x", "y"]}),
]

NOT_INT = "Input should be a valid integer, unable to parse string as an integer"
REFUSED = [
    ("max_concurrent_tasks", "5.5", "max_concurrent_tasks", NOT_INT),
    ("max_concurrent_tasks", "5.", "max_concurrent_tasks", NOT_INT),
    ("max_concurrent_tasks", "0x10", "max_concurrent_tasks", NOT_INT),
    ("max_concurrent_tasks", "", "max_concurrent_tasks", NOT_INT),
    ("max_concurrent_tasks", "true", "max_concurrent_tasks", NOT_INT),
    ("max_concurrent_tasks", "\u0661\u0662", "max_concurrent_tasks", NOT_INT),
    (
        "max_concurrent_tasks",
        5.5,
        "max_concurrent_tasks",
        "Input should be a valid integer, got a number with a fractional part",
    ),
    ("max_concurrent_tasks", None, "max_concurrent_tasks", "Input should be a valid integer"),
    ("max_concurrent_tasks", "0", "max_concurrent_tasks", "Input should be greater than or equal to 1"),
    ("default_retries", "101", "default_retries", "Input should be less than or equal to 100"),
    (
        "retry_backoff",
        "x",
        "retry_backoff",
        "Input should be a valid number, unable to parse string as a number",
    ),
    ("retry_backoff", "0.5", "retry_backoff", "Input should be greater than or equal to 1"),
    ("retry_backoff", "inf", "retry_backoff", "Input should be less than or equal to 10"),
    ("retry_backoff", "nan", "retry_backoff", "Input should be less than or equal to 10"),
    ("home", 5, "home", "Input is not a valid path for <class 'pathlib.Path'>"),
    ("database_url", 5, "database_url", "Input should be a valid string"),
    (
        "database_url",
        "",
        "database_url",
        "Value error, not a database URL: '' (expected postgresql://... or sqlite:///...)",
    ),
    ("events_prefix", "", "events_prefix", "String should have at least 1 character"),
    ("events_prefix", "a b", "events_prefix", r"String should match pattern '^\S+$'"),
    ("overlap_policy", "ALLOW", "overlap_policy", "Input should be 'allow', 'forbid' or 'replace'"),
    ("log_format", True, "log_format", "Input should be 'text' or 'json'"),
    ("log_level", None, "log_level", "Input should be a valid string"),
    ("metrics_port", 70000, "metrics_port", "Input should be less than or equal to 65535"),
    ("commands", [], "commands", "Input should be a valid dictionary"),
    ("commands", {"a": "x"}, "commands.a", "Input should be a valid list"),
    ("commands", {"a": [1]}, "commands.a.0", "Input should be a valid string"),
    ("commands", {1: ["x"]}, "commands.1.[key]", "Input should be a valid string"),
    ("commands", {"a": []}, "commands", "Value error, command 'a' has an empty argv list"),
]


@pytest.mark.parametrize(("name", "given", "expected"), ACCEPTED)
def test_values_are_parsed_as_pydantic_parsed_them(name: str, given: Any, expected: Any) -> None:
    value = getattr(Settings(**{name: given}), name)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("name", "given", "where", "message"), REFUSED)
def test_bad_values_are_refused_with_pydantics_wording(
    name: str, given: Any, where: str, message: str
) -> None:
    with pytest.raises(SettingsValidationError) as raised:
        Settings(**{name: given})
    assert ".".join(map(str, raised.value.loc)) == where
    assert raised.value.msg == message


def test_the_first_bad_field_in_declaration_order_is_reported_then_unknown_keys() -> None:
    with pytest.raises(SettingsValidationError) as raised:
        Settings(metrics_port=0, max_concurrent_tasks=0)  # type: ignore[arg-type]
    assert raised.value.loc == ("max_concurrent_tasks",)
    with pytest.raises(SettingsValidationError) as raised:
        Settings(bogus=1)  # type: ignore[call-arg]
    assert (raised.value.loc, raised.value.msg) == (("bogus",), "Extra inputs are not permitted")


def test_camel_case_aliases_are_accepted_and_listed() -> None:
    assert Settings(maxConcurrentTasks=3).max_concurrent_tasks == 3  # type: ignore[call-arg]
    assert Settings.model_fields["max_concurrent_tasks"].alias == "maxConcurrentTasks"
    assert Settings.model_fields["lease_ttl"].alias == "leaseTtl"
    assert Settings.model_fields["home"].alias == "home"


def test_defaults_are_checked_and_factories_give_each_instance_its_own_value() -> None:
    first, second = Settings(), Settings()
    assert first == second and first.commands == {} and first.commands is not second.commands
    assert Settings.model_fields["max_concurrent_tasks"].default == 100
    assert Settings.model_fields["max_concurrent_tasks"].ge == 1


def test_instances_are_frozen_compare_by_value_and_copy_with_validation() -> None:
    settings = Settings(log_level="DEBUG")
    with pytest.raises(AttributeError):
        settings.log_level = "INFO"  # type: ignore[misc]
    assert settings == Settings(log_level="DEBUG") and settings != Settings()
    copied = settings.model_copy(update={"log_level": "WARNING"})
    assert (copied.log_level, settings.log_level) == ("WARNING", "DEBUG")
    with pytest.raises(SettingsValidationError):
        settings.model_copy(update={"max_concurrent_tasks": 0})


def test_a_subclass_adds_fields_and_keeps_the_validators_it_inherits() -> None:
    class Extended(Settings):
        batch_pause: int = Field(3, ge=1, description="A field added by a subclass.")

    assert Extended(batch_pause="4").batch_pause == 4
    assert list(Extended.model_fields)[-1] == "batch_pause"
    with pytest.raises(SettingsValidationError, match="empty argv list"):
        Extended(commands={"a": []})
    with pytest.raises(SettingsValidationError, match="unsupported database"):
        Extended(database_url="mysql://x")
