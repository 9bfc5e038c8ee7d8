"""The runtime commands of a registry built outside a worker (the CLI's): ``system:health`` and
``scheduler:cleanup`` on a :class:`~workers.runtime.WorkerRuntime` of the settings, built when one of them
is first called (so loading the registry imports and connects nothing more)."""

from __future__ import annotations

from scheduler.commands.builtins import DeferredRuntime, RuntimeCommands
from scheduler.settings import Settings


def deferred_worker_runtime(settings: Settings) -> DeferredRuntime:
    """Runtime commands on a worker runtime of ``settings``, built on first call."""

    def build() -> RuntimeCommands:
        from workers.runtime import WorkerRuntime

        return WorkerRuntime(settings)

    return DeferredRuntime(build)
