"""Plain statements for the hottest reads and writes, built once per model.

Django's building of an INSERT costs more than the database's running it. Rows written
once per HL7 message or per audited request are inserted (and a patient an HL7 message
changes is updated) with a statement made once, the values still prepared by the fields
themselves (defaults, `auto_now`, JSON). `select_one` turns a hand-written statement's
row into a model instance the way the ORM does, without RawQuerySet's work per call.

On PostgreSQL they run as server-side prepared statements (`cursor`): parsed and planned
once per connection, their values sent as parameters rather than quoted into the text.
For these short statements the parsing and planning cost more than the execution.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import psycopg
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Field, Model

M = TypeVar("M", bound=Model)


@contextlib.contextmanager
def cursor(using: str = DEFAULT_DB_ALIAS) -> Iterator[Any]:
    """A cursor for statements run again and again: on PostgreSQL each is prepared on the
    server the first time a connection runs it; elsewhere Django's cursor. Errors are
    Django's, and the statements are logged where Django logs queries (tests count
    them)."""
    connection = connections[using]
    if connection.vendor != "postgresql":
        with connection.cursor() as django_cursor:
            yield django_cursor
        return
    connection.validate_no_broken_transaction()
    # As Django's own cursors: a kept connection is checked before its first use in a
    # request (CONN_HEALTH_CHECKS), so one the database dropped is replaced, not a 500.
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    # One psycopg cursor per connection, reused: making one copies the connection's
    # adapters, which cost more than the statements these run.
    raw = getattr(connection, "_plain_sql_cursor", None)
    if raw is None or raw.connection is not connection.connection or raw.closed:
        raw = connection._plain_sql_cursor = psycopg.Cursor(connection.connection)
    if getattr(connection, "_plain_sql_cursor_busy", False):  # nested: one of its own
        with connection.wrap_database_errors, psycopg.Cursor(connection.connection) as own:
            yield _PreparedCursor(own, connection)
        return
    connection._plain_sql_cursor_busy = True
    try:
        with connection.wrap_database_errors:
            yield _PreparedCursor(raw, connection)
    finally:
        connection._plain_sql_cursor_busy = False


class _PreparedCursor:
    def __init__(self, raw: psycopg.Cursor, connection: Any) -> None:
        self._raw = raw
        self._connection = connection

    def execute(self, sql: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        started = time.monotonic()
        try:
            self._raw.execute(sql, params, prepare=True)
        finally:
            if self._connection.queries_logged:
                took = f"{time.monotonic() - started:.3f}"
                self._connection.queries_log.append({"sql": sql, "time": took})

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """In one round trip (psycopg pipelines them), each row's statement prepared."""
        started = time.monotonic()
        try:
            self._raw.executemany(sql, rows)
        finally:
            if self._connection.queries_logged:
                took = f"{time.monotonic() - started:.3f}"
                self._connection.queries_log.append({"sql": sql, "time": took})

    def fetchone(self) -> Any:
        return self._raw.fetchone()

    def fetchall(self) -> list[Any]:
        return self._raw.fetchall()

    @property
    def rowcount(self) -> int:
        return self._raw.rowcount


def insert(obj: Model, using: str = DEFAULT_DB_ALIAS) -> None:
    """`obj.save(force_insert=True)` as one statement, setting its primary key. No
    model signals are sent: keep it to models without receivers."""
    connection = connections[using]
    fields, sql = _insert_statement(type(obj), using)
    values = _values(obj, fields, connection, add=True)
    with cursor(using) as statement:
        statement.execute(sql, values)
        obj.pk = statement.fetchone()[0]
    obj._state.adding = False
    obj._state.db = using


def insert_many(objs: Sequence[Model], using: str = DEFAULT_DB_ALIAS) -> None:
    """`insert` for several rows of one model, in one round trip; their primary keys are
    not read back. No model signals are sent. (As one statement from arrays, like
    `update_many`, the server's time fell less than the dumping of the arrays rose.)"""
    if not objs:
        return
    connection = connections[using]
    fields, sql = _insert_statement(type(objs[0]), using)
    sql = sql[: sql.rindex(" RETURNING ")]
    rows = [_values(obj, fields, connection, add=True) for obj in objs]
    with cursor(using) as statement:
        statement.executemany(sql, rows)


def insert_new(obj: Model, unique_field: str, using: str = DEFAULT_DB_ALIAS) -> bool:
    """`insert`, unless a row holds the same value of `unique_field` (a column with a
    unique constraint of its own): then nothing is written and False returned. A row
    being inserted by another transaction is waited for, as the constraint makes the
    database do (ON CONFLICT DO NOTHING)."""
    connection = connections[using]
    fields, sql = _insert_statement(type(obj), using, unique_field)
    values = _values(obj, fields, connection, add=True)
    with cursor(using) as statement:
        statement.execute(sql, values)
        row = statement.fetchone()
    if row is None:
        return False
    obj.pk = row[0]
    obj._state.adding = False
    obj._state.db = using
    return True


def _values(obj: Model, fields: Sequence[Field], connection: Any, *, add: bool) -> list[Any]:
    """The fields' values as `save()` would write them (defaults, `auto_now`, JSON)."""
    return [field.get_db_prep_save(field.pre_save(obj, add), connection) for field in fields]


@functools.cache
def _insert_statement(
    model: type[Model], using: str, unique_field: str = ""
) -> tuple[tuple[Field, ...], str]:
    meta = model._meta
    fields = tuple(field for field in meta.concrete_fields if not field.primary_key)
    quote = connections[using].ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    conflict = (
        f"ON CONFLICT ({quote(meta.get_field(unique_field).column)}) DO NOTHING "
        if unique_field
        else ""
    )
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"{conflict}RETURNING {quote(meta.pk.column)}"
    )
    return fields, sql


def update(obj: Model, field_names: Iterable[str], using: str = DEFAULT_DB_ALIAS) -> None:
    """`obj.save(update_fields=field_names)` as one statement (an `auto_now` field named
    is set to now, as save does). No model signals are sent: keep it to models without
    receivers."""
    connection = connections[using]
    fields, sql = _update_statement(type(obj), tuple(field_names), using)
    values = _values(obj, fields, connection, add=False)
    with cursor(using) as statement:
        statement.execute(sql, [*values, obj.pk])
        if statement.rowcount != 1:  # what save() says when the row is gone
            raise DatabaseError("Save with update_fields did not affect any rows.")


def update_many(
    objs: Sequence[Model], field_names: Iterable[str], using: str = DEFAULT_DB_ALIAS
) -> None:
    """`update` of the same fields of several rows of one model, in one statement (on
    PostgreSQL from one array per column, `unnest`: prepared once whatever the number of
    rows, and cheaper for the server than a statement per row). The rows must exist (no
    check per row, unlike `update`); an object given twice is written as it is now,
    once."""
    if not objs:
        return
    connection = connections[using]
    field_names = tuple(field_names)
    fields, sql = _update_statement(type(objs[0]), field_names, using)
    latest = {obj.pk: obj for obj in objs}  # the same row twice: one write, its values now
    rows = [[*_values(obj, fields, connection, add=False), pk] for pk, obj in latest.items()]
    with cursor(using) as statement:
        if connection.vendor == "postgresql":
            sql = _update_arrays_statement(type(objs[0]), field_names, using)
            statement.execute(sql, _columns(rows))
        else:
            statement.executemany(sql, rows)


def _columns(rows: list[list[Any]]) -> list[list[Any]]:
    """Rows of values as one list per column (what `unnest` takes)."""
    return [list(column) for column in zip(*rows, strict=True)]


@functools.lru_cache(maxsize=256)
def _update_arrays_statement(model: type[Model], field_names: tuple[str, ...], using: str) -> str:
    meta = model._meta
    fields = [meta.get_field(name) for name in field_names] + [meta.pk]
    connection = connections[using]
    quote = connection.ops.quote_name
    names = [f"c{index}" for index in range(len(fields))]
    assignments = ", ".join(
        f"{quote(field.column)} = v.{name}" for field, name in zip(fields[:-1], names, strict=False)
    )
    arrays = ", ".join(f"%s::{field.db_type(connection)}[]" for field in fields)
    return (
        f"UPDATE {quote(meta.db_table)} t SET {assignments} "  # noqa: S608
        f"FROM unnest({arrays}) AS v({', '.join(names)}) "
        f"WHERE t.{quote(meta.pk.column)} = v.{names[-1]}"
    )


@functools.lru_cache(maxsize=256)  # one per set of fields changed together
def _update_statement(
    model: type[Model], field_names: tuple[str, ...], using: str
) -> tuple[tuple[Field, ...], str]:
    meta = model._meta
    fields = tuple(meta.get_field(name) for name in field_names)
    quote = connections[using].ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in fields)
    sql = f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"  # noqa: S608
    return fields, sql


def select_one(
    model: type[M],
    sql: str,
    params: Sequence[Any],
    *,
    deferred: tuple[str, ...] = (),
    using: str = DEFAULT_DB_ALIAS,
) -> M | None:
    """The first row of `sql` as a `model` instance, or None (see `instance_of`)."""
    with cursor(using) as statement:
        statement.execute(sql, params)
        row = statement.fetchone()
    return None if row is None else instance_of(model, row, deferred=deferred, using=using)


def instance_of(
    model: type[M],
    row: Sequence[Any],
    *,
    deferred: tuple[str, ...] = (),
    using: str = DEFAULT_DB_ALIAS,
) -> M:
    """A row as a `model` instance, as the ORM makes one. The row holds the model's
    concrete fields first, in their order, but those named in `deferred` (then loaded
    when read); columns after them are the caller's."""
    names, converters = _row_reader(model, deferred, using)
    values = list(row[: len(names)])
    for index, convert in converters:
        values[index] = convert(values[index])
    return model.from_db(using, names, values)


@functools.cache
def _row_reader(
    model: type[Model], deferred: tuple[str, ...], using: str
) -> tuple[list[str], list[tuple[int, Callable[[Any], Any]]]]:
    """The field names of a row, and what the ORM would convert (e.g. SQLite's dates)."""
    connection = connections[using]
    fields = [field for field in model._meta.concrete_fields if field.name not in deferred]
    converters = []
    for index, field in enumerate(fields):
        column = field.get_col(model._meta.db_table)
        steps = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
        if steps:
            converters.append((index, _chain(steps, column, connection)))
    return [field.attname for field in fields], converters


def _chain(steps: list, column: Any, connection: Any) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        for step in steps:
            value = step(value, column, connection)
        return value

    return convert
