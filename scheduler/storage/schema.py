"""Schema versioning through Alembic: upgrade, and refuse to run against an outdated schema.

Checking the schema -- what every CLI verb, planner and worker does on start -- needs no Alembic: the
database's revision is one ``SELECT`` of ``alembic_version`` and the newest one is :data:`HEAD_REVISION`
(a test keeps it equal to the migration scripts' head). Alembic (with mako and its dialect modules, ~0.1 s
of imports) is imported only to upgrade or to read the scripts themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, exc, text

from scheduler.errors import SchemaOutdated
from scheduler.settings import Settings
from scheduler.storage.db import engine_from_settings
from scheduler.storage.errors import translate_db_errors

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).with_name("migrations")
# The newest revision in migrations/versions; a new migration updates it (a test compares it with alembic's).
HEAD_REVISION = "0006_alerts"
VERSION_TABLE = "alembic_version"  # alembic's default, which migrations/env.py keeps


def alembic_config() -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def head_revision() -> str:
    """The head of the migration scripts, as Alembic reads them (see :data:`HEAD_REVISION`)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "the migrations directory has no revision"
    return head


def current_revision(engine: Engine) -> str | None:
    """The database's revision; None when it was never migrated (no version table, or an empty one).

    One ``SELECT`` when the table is there (every start of every process); only when it fails is the catalog
    asked whether the table exists: missing means None, any other failure is raised as it was. Asking first
    cost a catalog query on every start (~3 ms of CPU and a round trip on PostgreSQL).
    """
    with engine.connect() as connection:
        try:
            rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
        except exc.DBAPIError as error:
            if error.connection_invalidated:
                raise
            connection.rollback()  # PostgreSQL: the failed statement aborted the transaction
            if connection.dialect.has_table(connection, VERSION_TABLE):
                raise
            return None
    # One row on a linear history; several (branches) can never be the head: report them all.
    return ",".join(sorted(rows)) if rows else None


def newer_than_this_version(current: str | None) -> bool:
    """``current`` (a database's revision) is none of the migration scripts' (named ``0001_....py``) and
    sorts after :data:`HEAD_REVISION` (revisions are zero-padded numbers): a later release wrote it."""
    if current is None:
        return False
    known = {path.name.partition("_")[0] for path in (MIGRATIONS / "versions").glob("[0-9]*_*.py")}
    return any(revision not in known and revision > HEAD_REVISION for revision in current.split(","))


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` in one transaction per run; :class:`SchemaOutdated`
    (``newer``) when the database is at a revision none of the scripts has."""
    from alembic import command

    current = current_revision(engine)
    if newer_than_this_version(current):
        raise SchemaOutdated(current, HEAD_REVISION, newer=True)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def ensure_schema(engine: Engine, *, auto_upgrade: bool) -> None:
    """Upgrade (embedded default) or raise :class:`SchemaOutdated` naming the command to run."""
    current = current_revision(engine)
    if current == HEAD_REVISION:
        return
    if not auto_upgrade:
        raise SchemaOutdated(current, HEAD_REVISION, newer=newer_than_this_version(current))
    upgrade(engine)


def open_database(settings: Settings) -> Engine:
    """The engine of ``settings`` on a usable schema: the embedded default's is created or upgraded, a server
    schema that is not this version's raises :class:`SchemaOutdated` (exit 69 naming the command to run).

    The one place every entry point (service, CLI verbs, planner, serve) gets its database from.
    """
    engine = engine_from_settings(settings)
    try:
        with translate_db_errors():
            ensure_schema(engine, auto_upgrade=settings.is_embedded)
    except BaseException:
        engine.dispose()
        raise
    return engine
