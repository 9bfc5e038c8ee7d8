"""The migrated schema is exactly the declared one, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine

from scheduler.models import Base
from scheduler.schema import current_revision, head_revision


def test_a_database_migrated_from_empty_matches_the_models(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_a_migrated_database_is_at_the_head_revision(engine: Engine) -> None:
    assert current_revision(engine) == head_revision()
