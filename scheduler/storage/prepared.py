"""Server-side prepared statements for the worker's hot path (PostgreSQL, autocommit connections).

Planning the claim and completion statements costs PostgreSQL more CPU than running them (measured on the
benchmark machine: 1.39 ms of backend CPU per claim + completion planned each time, 0.43 ms prepared; the
client spends less too, as the statements are no longer compiled and bound by SQLAlchemy). So each
connection ``PREPARE``s a statement the first time it runs it, then sends ``EXECUTE name(...)``.

The prepared text is made from the SQLAlchemy statement itself (:func:`prepared`): its named bind
parameters (``bindparam("p_...")``) become ``$1..$n`` and every other value is rendered inline, so there
is one definition of each statement. The name carries a hash of the text, so two versions of the worker
never mistake each other's statements.

Used only where each statement commits by itself (an autocommit connection outside an explicit transaction,
see :func:`scheduler.storage.db.autocommits`): a connection that lost its prepared statements (``DISCARD
ALL`` by a
pooler, or PgBouncer in transaction mode handing ``EXECUTE`` to another server connection) prepares them
again once, and if ``EXECUTE`` still finds nothing, that connection runs the plain statements from then on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, exc

from scheduler.storage.db import autocommits

# PostgreSQL error codes: no prepared statement of that name; one of that name exists already.
UNDEFINED_STATEMENT = "26000"
DUPLICATE_STATEMENT = "42P05"
_PREPARED = "prepared_statements"  # connection.info: the names prepared on this connection
_UNPREPARED = "unprepared"  # connection.info: this connection runs plain statements (prepared ones vanish)
_IN_TRANSACTION = "explicit_transaction"  # connection.info: inside scheduler.storage.runs.transaction


@dataclass(frozen=True, slots=True)
class PreparedStatement:
    name: str
    prepare_sql: str  # PREPARE name AS ...
    execute_sql: str  # EXECUTE name(%s, ...): psycopg2 binds the values
    params: tuple[str, ...]  # the bind parameter of $1, $2, ...
    processors: tuple[Callable[[Any], Any] | None, ...]  # each parameter's SQL type conversion
    statement: Any  # the SQLAlchemy statement: the plain fallback

    def values(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(
            params[name] if process is None else process(params[name])
            for name, process in zip(self.params, self.processors, strict=True)
        )


def prepared(label: str, statement: Any, connection: Connection) -> PreparedStatement:
    """``statement`` as a prepared statement named after ``label`` and a hash of its text.

    The statement is compiled as SQLAlchemy would run it; the driver then renders every anonymous value as
    a literal (``mogrify``) and every named parameter as its ``$n``.
    """
    from psycopg2.extensions import AsIs

    compiled = statement.compile(dialect=connection.dialect)
    sql = compiled.string
    values: dict[str, Any] = {}
    params: list[str] = []
    for key, bind in compiled.binds.items():
        process = bind.type.dialect_impl(connection.dialect).bind_processor(connection.dialect)
        if bind.unique:  # one of the statement's own values
            items = list(bind.effective_value) if bind.expanding else [bind.effective_value]
            items = [item if process is None else process(item) for item in items]
            if bind.expanding:
                keys = [f"{key}__{index}" for index in range(len(items))]
                sql = sql.replace(f"__[POSTCOMPILE_{key}]", ", ".join(f"%({k})s" for k in keys))
                values.update(zip(keys, items, strict=True))
            else:
                values[key] = items[0]
        else:
            params.append(key)
            values[key] = AsIs(f"${len(params)}")
    cursor = connection.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        text = cursor.mogrify(sql, values).decode()
    finally:
        cursor.close()
    name = f"scheduler_{label}_{hashlib.sha1(text.encode()).hexdigest()[:12]}"
    arguments = ", ".join(["%s"] * len(params))
    dialect = connection.dialect
    return PreparedStatement(
        name=name,
        prepare_sql=f"PREPARE {name} AS {text}",
        execute_sql=f"EXECUTE {name}({arguments})" if params else f"EXECUTE {name}",
        params=tuple(params),
        processors=tuple(
            compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect) for key in params
        ),
        statement=statement,
    )


def mark_transaction(connection: Connection, inside: bool) -> None:
    """Note that ``connection`` is (or is no longer) inside an explicit ``BEGIN`` ... ``COMMIT``."""
    connection.info[_IN_TRANSACTION] = inside


@dataclass(frozen=True, slots=True)
class Rows:
    """What a statement returned: its row count and first row (by column name), if any."""

    rowcount: int
    first: Mapping[str, Any] | None


def _sqlstate(error: BaseException) -> str | None:
    return getattr(getattr(error, "orig", error), "pgcode", None)


def _run(connection: Connection, sql: str, values: tuple[Any, ...] | None) -> Rows:
    """``sql`` on the connection's driver cursor; driver errors raised as SQLAlchemy's (a lost connection
    invalidated), as if SQLAlchemy had run it. Bypassing SQLAlchemy's execution and result machinery is
    what makes a prepared statement cheap on the client too."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    cursor = raw.cursor()
    try:
        cursor.execute(sql, values)  # no values: the text is sent as it is (a literal "%" stays one)
        columns = cursor.description  # built anew on each access: read once
        first = cursor.fetchone() if columns else None
        if first is None or columns is None:
            return Rows(cursor.rowcount, None)
        return Rows(cursor.rowcount, {column[0]: value for column, value in zip(columns, first, strict=True)})
    except connection.dialect.loaded_dbapi.Error as error:
        disconnected = connection.dialect.is_disconnect(error, raw, cursor)
        if disconnected:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            sql,
            values,
            error,
            connection.dialect.loaded_dbapi.Error,
            connection_invalidated=disconnected,
            dialect=connection.dialect,
        ) from error
    finally:
        cursor.close()


def _prepare(connection: Connection, statement: PreparedStatement) -> None:
    try:
        _run(connection, statement.prepare_sql, None)
    except exc.DBAPIError as error:
        if _sqlstate(error) != DUPLICATE_STATEMENT:  # the same name is the same text: already there
            raise


_cache: dict[int, PreparedStatement] = {}  # by id() of the statement, which each entry keeps alive


def execute(connection: Connection, label: str, statement: Any, params: Mapping[str, Any]) -> Rows:
    """Run ``statement`` with ``params`` (by bind name), prepared where it can be (see the module docstring).

    ``statement`` should be built once per process (its prepared form is cached by identity). Elsewhere
    (SQLite, a connection that is not autocommit or is inside an explicit transaction, one whose prepared
    statements keep vanishing) it runs as a plain SQLAlchemy statement.
    """
    info = connection.info
    if (
        connection.dialect.name != "postgresql"
        or not autocommits(connection)
        or info.get(_IN_TRANSACTION)
        or info.get(_UNPREPARED)
    ):
        return _plain(connection, statement, params)
    entry = _cache.get(id(statement))
    if entry is None or entry.statement is not statement:
        entry = _cache[id(statement)] = prepared(label, statement, connection)
    names: set[str] = info.setdefault(_PREPARED, set())
    values = entry.values(params)
    for attempt in (1, 2):
        if entry.name not in names:
            _prepare(connection, entry)
            names.add(entry.name)
        try:
            return _run(connection, entry.execute_sql, values)
        except exc.DBAPIError as error:
            if _sqlstate(error) != UNDEFINED_STATEMENT:
                raise
            names.clear()  # whatever was prepared on this connection is gone
            if attempt == 2:
                info[_UNPREPARED] = True
    return _plain(connection, statement, params)


def _plain(connection: Connection, statement: Any, params: Mapping[str, Any]) -> Rows:
    result = connection.execute(statement, dict(params))
    first = result.first() if result.returns_rows else None
    return Rows(result.rowcount, None if first is None else dict(first._mapping))
