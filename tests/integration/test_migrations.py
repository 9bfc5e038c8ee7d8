"""The migrated schema is exactly the declared one, on both databases."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

from scheduler.storage.db import make_engine
from scheduler.storage.schema import HEAD_REVISION, current_revision, head_revision
from scheduler.storage.tables import metadata


def test_a_database_migrated_from_empty_matches_the_declared_tables(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_a_migrated_database_is_at_the_head_revision(engine: Engine) -> None:
    assert current_revision(engine) == head_revision() == HEAD_REVISION


def test_the_head_revision_constant_is_the_migration_scripts_head() -> None:
    # ensure_schema compares with the constant so that checking a schema needs no alembic import: a new
    # migration must update scheduler.storage.schema.HEAD_REVISION.
    assert head_revision() == HEAD_REVISION


def test_an_empty_database_has_no_revision(tmp_path: Path) -> None:
    empty = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    try:
        assert current_revision(empty) is None
        with empty.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        assert current_revision(empty) is None
    finally:
        empty.dispose()
