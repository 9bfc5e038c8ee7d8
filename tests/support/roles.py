"""The deployment's database roles (deploy/sql/roles.sql), applied to a test database."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine

ROLES_SQL = Path(__file__).resolve().parents[2] / "deploy" / "sql" / "roles.sql"


def apply_roles(url: str) -> None:
    """Run roles.sql on the database at ``url``.

    Through the driver, not psql: the file must be plain SQL (no psql meta-commands) to run anywhere.
    Without parameters the driver leaves the file's % signs (format('%I', ...)) alone.
    """
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(ROLES_SQL.read_text())
    finally:
        connection.close()
        engine.dispose()
