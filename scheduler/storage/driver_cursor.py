"""The worker's two hot statements (the claim and the completion) run on the driver's cursor, PostgreSQL only.

Why: a no-op execution is these two statements plus Celery's own work, and on this path SQLAlchemy's
``Connection.execute`` (its execution context, its result set-up) and psycopg 3's ``cursor.description``
(a ``Column`` object per result column, on every run) cost about twice the client CPU of the statements
themselves (measured in bench/RESULTS.md, 2026-12-07 "the worker's hot path on the driver's cursor"). Here a
statement is compiled once per dialect with SQLAlchemy's public API (``statement.compile(dialect=...)``, the
compiled ``binds`` and ``params``, each type's ``bind_processor`` and ``result_processor``), and each run is
``cursor.execute(text, params)`` on the DBAPI connection SQLAlchemy hands out (``Connection.connection``,
"Working with Driver SQL and Raw DBAPI Connections" in its documentation). Both drivers take the same
``%(name)s`` text; psycopg 3 prepares it on the server after ``prepare_threshold`` runs, as it would any
statement (:func:`scheduler.storage.db.make_engine`).

What SQLAlchemy would do and this module keeps:

- the values: the compiled statement's own literal values are bound with the caller's, each through its
  type's bind processor (JSON is serialized as SQLAlchemy serializes it); returned values go through each
  column's result processor, with the type code the driver reports;
- the transaction: the connection begins SQLAlchemy's transaction first when it has none, as ``execute``
  would (autobegin), so ``commit()`` and ``rollback()`` on it still mean what they say;
- errors: a driver error is raised as SQLAlchemy's exception (``DBAPIError.instance``: ``OperationalError``,
  ``IntegrityError``, ...), and one the dialect calls a disconnect (``Dialect.is_disconnect``) invalidates the
  connection first (``Connection.invalidate``), so the pool replaces it;
- no statement whose text depends on its values: an expanding (``IN``) or literal-execute parameter is
  refused.

What it does not do: SQLAlchemy's ``before_cursor_execute`` and ``after_cursor_execute`` events do not
see these statements; the driver's cursor does (the tests count statements there:
``tests/support/statements.py``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ClauseElement

Processor = Callable[[Any], Any]


class DriverStatement:
    """One statement compiled for one dialect, ready for a DBAPI cursor."""

    __slots__ = ("_binds", "_columns", "_defaults", "_required", "_result", "returns_rows", "text")

    def __init__(self, statement: ClauseElement, dialect: Dialect) -> None:
        if dialect.paramstyle != "pyformat":
            raise ValueError(f"{dialect.name}+{dialect.driver} does not take %(name)s parameters")
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # a statement's compiled form (binds, bind_names)
        binds = compiled.binds.values()
        if any(bind.expanding or bind.literal_execute for bind in binds):
            raise ValueError("a statement whose text depends on its values cannot run on the driver's cursor")
        self.text: str = compiled.string
        self._defaults: dict[str, Any] = dict(compiled.params)
        names = compiled.bind_names
        self._required = tuple(names[bind] for bind in binds if bind.required)
        self._binds: tuple[tuple[str, Processor], ...] = tuple(
            (names[bind], processor)
            for bind in binds
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        )
        self._columns = tuple(statement.exported_columns)  # type: ignore[attr-defined]
        self.returns_rows = bool(self._columns)
        # Keys and result processors, from the driver's description of the first run (its type codes).
        self._result: tuple[tuple[str, ...], tuple[tuple[int, Processor], ...]] | None = None

    def values(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The statement's parameters: its compiled values and the required ones from ``params`` (others there
        are ignored), each through its type's processor."""
        values = dict(self._defaults)
        try:
            for name in self._required:
                values[name] = params[name]
        except KeyError as missing:
            raise sa_exc.InvalidRequestError(f"A value is required for bind parameter {missing}") from None
        for name, processor in self._binds:
            values[name] = processor(values[name])
        return values

    def row(self, dialect: Dialect, cursor: Any, raw: tuple[Any, ...] | None) -> dict[str, Any] | None:
        """A fetched row as a dict by column name, through the columns' result processors."""
        if raw is None:
            return None
        if self._result is None:
            self._result = self._describe(dialect, cursor.description)
        keys, processors = self._result
        if not processors:
            return dict(zip(keys, raw, strict=True))
        values = list(raw)
        for index, processor in processors:
            values[index] = processor(values[index])
        return dict(zip(keys, values, strict=True))

    def _describe(
        self, dialect: Dialect, description: Any
    ) -> tuple[tuple[str, ...], tuple[tuple[int, Processor], ...]]:
        if len(description) != len(self._columns):
            raise ValueError(f"{len(description)} columns returned, {len(self._columns)} expected")
        processors = []
        for index, (column, described) in enumerate(zip(self._columns, description, strict=True)):
            processor = column.type.dialect_impl(dialect).result_processor(dialect, described[1])
            if processor is not None:
                processors.append((index, processor))
        return tuple(described[0] for described in description), tuple(processors)


@functools.lru_cache(maxsize=64)
def driver_statement(statement: ClauseElement, dialect: Dialect) -> DriverStatement:
    """:class:`DriverStatement` of a statement built once (``functools.cache``-d builders) for ``dialect``."""
    return DriverStatement(statement, dialect)


def run_on_driver(
    connection: Connection, statement: ClauseElement, params: Mapping[str, Any]
) -> tuple[int, dict[str, Any] | None]:
    """Run ``statement`` with ``params`` on ``connection``'s DBAPI cursor: (rowcount, first row or None).

    ``statement`` must be built once and kept (compiled once per dialect and cached by identity); see the
    module docstring for what SQLAlchemy would have done and this does too.
    """
    dialect = connection.dialect
    compiled = driver_statement(statement, dialect)
    values = compiled.values(params)
    if not connection.in_transaction():
        connection.begin()  # Connection.execute's autobegin
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(compiled.text, values)
        row = compiled.row(dialect, cursor, cursor.fetchone()) if compiled.returns_rows else None
        return cursor.rowcount, row
    except dialect.loaded_dbapi.Error as error:
        disconnected = dialect.is_disconnect(error, dbapi_connection, cursor)
        if disconnected and not connection.invalidated:
            connection.invalidate(error)
        raise sa_exc.DBAPIError.instance(
            compiled.text,
            values,
            error,
            dialect.loaded_dbapi.Error,
            connection_invalidated=disconnected,
            dialect=dialect,
        ) from error
    finally:
        cursor.close()
