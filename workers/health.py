"""Health of the fleet, for ``systemprompt scheduler:health`` and container probes.

Four checks, each a :class:`CheckResult` ``(name, ok, detail)``:

- ``database``: the database answers ``SELECT 1`` and its schema is this version's (else: run
  ``scheduler:migrate``);
- ``broker``: a kombu connection to the broker opens within :data:`BROKER_TIMEOUT_S`;
- ``planner``: some planner holds an unexpired lease (a ``scheduler_leases`` row with ``expires_at`` after the
  database's ``now()``), whoever it is: a standby is healthy when *a* leader exists;
- ``workers``: at least one Celery worker answers a remote-control request within :data:`PING_TIMEOUT_S`.
  Each answer names the worker's queues and commands (:func:`discover_workers`); an active task whose queue no
  live worker consumes, or whose command no worker on its queue has (it was started before the command was
  installed), is a *warning* of the check (:func:`coverage_warning`), not a failure.

Every check is bounded in time (connect timeouts, a 1 s ping), so a probe with a 10 s timeout gets an answer.
A check never raises: what went wrong is its ``detail``. Nothing here writes anything. Celery and kombu are
imported inside the checks that need them, so importing this module stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url

from scheduler.settings import Settings
from scheduler.storage.db import make_engine
from scheduler.storage.leases import all_leases
from scheduler.storage.probes import ping

CHECKS = ("database", "broker", "planner", "workers")
DATABASE_TIMEOUT_S = 3
BROKER_TIMEOUT_S = 2.0
PING_TIMEOUT_S = 1.0


class CheckResult(NamedTuple):
    """One check's answer: ``name`` (one of :data:`CHECKS`), ``ok``, a one-line ``detail``, and one-line
    ``warnings`` about what works but will not do what a user expects."""

    name: str
    ok: bool
    detail: str
    warnings: tuple[str, ...] = ()


class LiveWorker(NamedTuple):
    """A worker that answered: its node name, the queues it consumes, and the commands it has (None, and no
    queues: a worker that does not know the request, of an older version or another app on the same broker;
    it counts as alive but as consuming nothing)."""

    name: str
    queues: frozenset[str]
    commands: frozenset[str] | None


def _one_line(error: BaseException) -> str:
    # A SQLAlchemy error's driver error says it without the class prefix and the link to the docs.
    error = getattr(error, "orig", None) or error
    text_ = " ".join(part.strip() for part in str(error).splitlines() if part.strip())
    return text_ or type(error).__name__


# --------------------------------------------------------------------------------------------- database


def probe_engine(settings: Settings) -> Engine:
    """An engine on the configured database whose connection attempts give up after a few seconds.

    (libpq waits forever for an unanswering host by default; a probe must answer before its own timeout.)
    """
    url = make_url(settings.effective_database_url)
    if url.get_backend_name() == "sqlite":
        return create_engine(url)  # not make_engine: a probe must not create folders or switch journal modes
    if "connect_timeout" not in url.query:
        url = url.update_query_dict({"connect_timeout": str(DATABASE_TIMEOUT_S)})
    return make_engine(url.render_as_string(hide_password=False))


def check_database(engine: Engine) -> CheckResult:
    """The database answers and its schema revision is the code's head revision."""
    from scheduler.storage.schema import HEAD_REVISION, current_revision, newer_than_this_version

    database = engine.url.database
    is_file = engine.url.get_backend_name() == "sqlite" and database not in (None, "", ":memory:")
    if is_file and not Path(str(database)).is_file():
        return CheckResult("database", False, f"no database file at {database} (nothing ran here yet)")
    try:
        with engine.connect() as connection:
            ping(connection)
        current, head = current_revision(engine), HEAD_REVISION
    except Exception as error:
        return CheckResult("database", False, f"unreachable: {_one_line(error)}")
    if newer_than_this_version(current):
        return CheckResult(
            "database",
            False,
            f"schema {current} is newer than this version (it needs {head}): run the newer release",
        )
    if current != head:
        found = "no schema" if current is None else f"schema {current}"
        return CheckResult(
            "database", False, f"{found}, this version needs {head}: run 'systemprompt scheduler:migrate'"
        )
    return CheckResult("database", True, f"reachable, schema {head}")


def check_planner(engine: Engine) -> CheckResult:
    """Some planner holds an unexpired lease by the database clock (a standby is not required)."""
    from scheduler.storage.clock import db_now

    try:
        with engine.connect() as connection:
            now = db_now(connection)
            rows = all_leases(connection)
    except Exception as error:
        return CheckResult("planner", False, f"cannot read the lease: {_one_line(error)}")
    live = [row for row in rows if row.expires_at > now]
    if live:
        shown = ", ".join(
            f"{row.name}: {row.holder} (term {row.term}, {(row.expires_at - now).total_seconds():.1f} s left)"
            for row in live
        )
        return CheckResult("planner", True, f"leading: {shown}")
    if not rows:
        return CheckResult("planner", False, "no planner has ever held the lease: start 'scheduler:planner'")
    latest = rows[0]
    ago = (now - latest.expires_at).total_seconds()
    return CheckResult(
        "planner", False, f"no planner holds the lease (last: {latest.holder}, expired {ago:.0f} s ago)"
    )


# ----------------------------------------------------------------------------------------------- broker


def check_broker(settings: Settings, *, timeout_s: float = BROKER_TIMEOUT_S) -> CheckResult:
    """A kombu connection to the configured broker opens (one attempt, ``timeout_s`` to connect)."""
    from kombu.connection import Connection

    from workers.celery_config import build_config

    config = build_config(settings)
    options = dict(config["broker_transport_options"])
    if "socket_connect_timeout" in options:
        options["socket_connect_timeout"] = timeout_s
        options["socket_timeout"] = timeout_s
    try:
        with Connection(  # type: ignore[no-untyped-call]
            config["broker_url"], transport_options=options, connect_timeout=timeout_s
        ) as conn:
            conn.ensure_connection(max_retries=0, timeout=timeout_s)
            transport = conn.transport_cls
    except Exception as error:
        return CheckResult("broker", False, f"unreachable: {_one_line(error)}")
    return CheckResult("broker", True, f"reachable ({transport})")


# ---------------------------------------------------------------------------------------------- workers


def discover_workers(app: Any, *, timeout_s: float = PING_TIMEOUT_S) -> list[LiveWorker]:
    """The workers of ``app``'s broker that answer the capabilities request within ``timeout_s``, by name.

    The request is :data:`workers.app.CAPABILITIES_COMMAND`, broadcast through Celery's remote control (the
    mailbox ``celery inspect`` uses; it works on Redis and on the embedded broker). It waits ``timeout_s``.
    """
    from workers.app import CAPABILITIES_COMMAND

    replies = app.control.broadcast(CAPABILITIES_COMMAND, reply=True, timeout=timeout_s) or []
    found = []
    for reply in replies:
        for name, answer in reply.items():
            said = isinstance(answer, dict) and "queues" in answer
            found.append(
                LiveWorker(
                    name=name,
                    queues=frozenset(answer["queues"]) if said else frozenset(),
                    commands=frozenset(answer["commands"]) if said else None,
                )
            )
    return sorted(found)


def coverage_warning(workers: Sequence[LiveWorker], queue: str, command: str) -> str | None:
    """Why no live worker in ``workers`` will run ``command`` from ``queue``, or None when one will."""
    on_queue = [worker for worker in workers if queue in worker.queues]
    if not on_queue:
        return (
            f"no worker consumes queue {queue!r}: start one with 'systemprompt scheduler:worker -Q {queue}'"
        )
    if all(worker.commands is not None and command not in worker.commands for worker in on_queue):
        names = _first_names([worker.name for worker in on_queue])
        return (
            f"no live worker on queue {queue!r} has command {command!r} ({names}): "
            "restart them so they load it"
        )
    return None


def _first_names(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def check_workers(
    settings: Settings,
    *,
    timeout_s: float = PING_TIMEOUT_S,
    app: Any = None,
    broker_checked: bool = False,
    engine: Engine | None = None,
) -> CheckResult:
    """At least one Celery worker of this app answers :func:`discover_workers` within ``timeout_s``.

    Checks the broker first (a request through a dead broker would retry instead of answering), unless
    ``broker_checked`` says the caller just did. ``app``: a Celery app (default
    ``workers.app.create_app(settings)``). With ``engine``, each (queue, command) of the active tasks that
    no live worker serves is a warning (:func:`coverage_warning`).
    """
    if not broker_checked:
        broker = check_broker(settings)
        if not broker.ok:
            return CheckResult("workers", False, f"cannot ping: broker {broker.detail}")
    if app is None:
        from workers.app import create_app

        app = create_app(settings)
    try:
        live = discover_workers(app, timeout_s=timeout_s)
    except Exception as error:
        return CheckResult("workers", False, f"ping failed: {_one_line(error)}")
    if not live:
        return CheckResult("workers", False, f"no worker answered a ping within {timeout_s:g} s")
    detail = f"{len(live)} answered: {_first_names([worker.name for worker in live])}"
    return CheckResult("workers", True, detail, () if engine is None else _coverage_warnings(engine, live))


def _coverage_warnings(engine: Engine, live: Sequence[LiveWorker]) -> tuple[str, ...]:
    from scheduler.storage.tasks import commands_by_queue

    try:
        with engine.connect() as connection:
            needs = commands_by_queue(connection)
    except Exception:  # the database check reports the database
        return ()
    warnings = []
    for (queue, command), (name, count) in needs.items():
        warning = coverage_warning(live, queue, command)
        if warning is not None:
            others = f" and {count - 1} more" if count > 1 else ""
            warnings.append(f"task {name!r}{others}: {warning}")
    return tuple(warnings)


# ------------------------------------------------------------------------------------------------ all


def parse_checks(text_: str | Iterable[str]) -> tuple[str, ...]:
    """``"database,broker"`` (or names) as check names in :data:`CHECKS` order; ValueError for an unknown."""
    parts = text_.split(",") if isinstance(text_, str) else list(text_)
    names = {part.strip().lower() for part in parts if part.strip()}
    unknown = sorted(names - set(CHECKS))
    if unknown:
        raise ValueError(f"unknown check(s): {', '.join(unknown)} (choose from {', '.join(CHECKS)})")
    if not names:
        raise ValueError(f"no check named (choose from {', '.join(CHECKS)})")
    return tuple(name for name in CHECKS if name in names)


def _usable(results: dict[str, CheckResult], engine: Callable[[], Engine]) -> Engine | None:
    """The probe engine when the database check passed (or was not asked for), else None."""
    database = results.get("database")
    return engine() if database is None or database.ok else None


def run_checks(settings: Settings, names: Sequence[str] = CHECKS) -> list[CheckResult]:
    """Run the checks ``names`` (in :data:`CHECKS` order) against ``settings``' database and broker.

    A check that depends on another which just failed is reported failed without trying (``planner`` after
    ``database``, ``workers`` after ``broker``), so a probe names every failure yet stays fast.
    """
    wanted = [name for name in CHECKS if name in names]
    results: dict[str, CheckResult] = {}
    engine: Engine | None = None

    def database_engine() -> Engine:
        nonlocal engine
        if engine is None:
            engine = probe_engine(settings)
        return engine

    runners: dict[str, Callable[[], CheckResult]] = {
        "database": lambda: check_database(database_engine()),
        "broker": lambda: check_broker(settings),
        "planner": lambda: check_planner(database_engine()),
        "workers": lambda: check_workers(
            settings, broker_checked="broker" in results, engine=_usable(results, database_engine)
        ),
    }
    depends_on = {"planner": "database", "workers": "broker"}
    try:
        for name in wanted:
            before = results.get(depends_on.get(name, ""))
            if before is not None and not before.ok:
                results[name] = CheckResult(name, False, f"not checked: the {before.name} check failed")
                continue
            results[name] = runners[name]()
    finally:
        if engine is not None:
            engine.dispose()
    return [results[name] for name in wanted]
