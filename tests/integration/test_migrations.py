"""The migrated schema is exactly the declared one, on both databases."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, exc, text
from sqlalchemy.engine import make_url

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


def test_a_postgresql_database_without_the_version_table_has_no_revision(pg_driver_url: str) -> None:
    engine = make_engine(pg_driver_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        assert current_revision(engine) is None
        assert current_revision(engine) is None  # the failed SELECT left the pooled connection usable
        with engine.begin() as connection:
            connection.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)"))
        assert current_revision(engine) is None
    finally:
        engine.dispose()


def test_a_version_table_that_cannot_be_read_is_an_error_not_a_database_never_migrated(pg_url: str) -> None:
    role = f"stranger_{uuid.uuid4().hex[:8]}"
    admin = make_engine(pg_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE ROLE "{role}" LOGIN'))
    engine = make_engine(make_url(pg_url).set(username=role).render_as_string(hide_password=False))
    try:
        with pytest.raises(exc.ProgrammingError, match="permission denied"):
            current_revision(engine)
    finally:
        engine.dispose()
        with admin.begin() as connection:
            connection.execute(text(f'DROP ROLE "{role}"'))
        admin.dispose()
