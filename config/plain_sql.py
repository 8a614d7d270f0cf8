"""Plain statements for the hottest writes, built once per model from its fields.

Django's building of an INSERT costs more than the database's running it. Rows written
once per HL7 message or per audited request are inserted (and a patient an HL7 message
changes is updated) with a statement made once, the values still prepared by the fields
themselves (defaults, `auto_now`, JSON).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections
from django.db.models import Field, Model


def insert(obj: Model, using: str = DEFAULT_DB_ALIAS) -> None:
    """`obj.save(force_insert=True)` as one statement, setting its primary key. No
    model signals are sent: keep it to models without receivers."""
    connection = connections[using]
    fields, sql = _insert_statement(type(obj), using)
    values = [field.get_db_prep_save(field.pre_save(obj, add=True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        obj.pk = cursor.fetchone()[0]
    obj._state.adding = False
    obj._state.db = using


@functools.cache
def _insert_statement(model: type[Model], using: str) -> tuple[tuple[Field, ...], str]:
    meta = model._meta
    fields = tuple(field for field in meta.concrete_fields if not field.primary_key)
    quote = connections[using].ops.quote_name
    columns = ", ".join(quote(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = (
        f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES ({placeholders}) "  # noqa: S608
        f"RETURNING {quote(meta.pk.column)}"
    )
    return fields, sql


def update(obj: Model, field_names: Iterable[str], using: str = DEFAULT_DB_ALIAS) -> None:
    """`obj.save(update_fields=field_names)` as one statement (an `auto_now` field named
    is set to now, as save does). No model signals are sent: keep it to models without
    receivers."""
    connection = connections[using]
    fields, sql = _update_statement(type(obj), tuple(field_names), using)
    values = [field.get_db_prep_save(field.pre_save(obj, False), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*values, obj.pk])
        if cursor.rowcount != 1:  # what save() says when the row is gone
            raise DatabaseError("Save with update_fields did not affect any rows.")


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
