"""Celery settings of the environment, as a module: ``celery --config celeryconfig`` or
``app.config_from_object("celeryconfig")``.

Its attributes are the values :func:`workers.celery_config.build_config` gives for the environment's settings
(``scheduler.settings.load_settings``), computed on first access; that module says what they guarantee.
"""

from __future__ import annotations

from typing import Any

from scheduler.settings import load_settings
from workers.celery_config import build_config

_config: dict[str, Any] | None = None


def _module_config() -> dict[str, Any]:
    global _config
    if _config is None:
        _config = build_config(load_settings().settings)
    return _config


def __getattr__(name: str) -> Any:
    # Computed on first access, so importing this module never reads the environment by itself.
    config = _module_config() if not name.startswith("__") else {}
    if name in config:
        return config[name]
    raise AttributeError(name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_module_config()])
