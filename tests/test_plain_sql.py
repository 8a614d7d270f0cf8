"""config.plain_sql: the hot writes as statements built once, same result as the ORM's."""

import datetime as dt

import pytest
from django.db import DatabaseError, connection

from config import plain_sql
from ris.models import Patient
from tests.factories import PatientFactory

pytestmark = pytest.mark.django_db


def test_an_update_writes_the_fields_named_and_only_those(facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Smith", given_name="Anna")
    before = Patient.objects.get(pk=patient.pk).updated_at
    patient.family_name = "Jones"
    patient.birth_date = dt.date(1981, 2, 3)
    patient.given_name = "Not saved"

    plain_sql.update(patient, ["family_name", "birth_date", "updated_at"])

    stored = Patient.objects.get(pk=patient.pk)
    assert (stored.family_name, stored.birth_date, stored.given_name) == (
        "Jones",
        dt.date(1981, 2, 3),
        "Anna",
    )
    assert stored.updated_at > before  # auto_now, as save(update_fields=...) sets it


def test_an_update_of_a_row_gone_fails_as_save_does(facility_a):
    patient = PatientFactory(facility=facility_a)
    Patient.objects.filter(pk=patient.pk).delete()
    patient.family_name = "Jones"
    with pytest.raises(DatabaseError, match="did not affect any rows"):
        plain_sql.update(patient, ["family_name"])


def test_select_one_reads_a_row_as_the_orm_does(facility_a):
    """Dates, datetimes and booleans come back typed (SQLite returns text and ints)."""
    made = PatientFactory(facility=facility_a, birth_date=dt.date(1970, 1, 2))
    table = Patient._meta.db_table
    columns = ", ".join(f"p.{field.column}" for field in Patient._meta.concrete_fields)
    sql = f"SELECT {columns}, 1 AS extra FROM {table} p WHERE p.id = %s"
    found = plain_sql.select_one(Patient, sql, [made.pk])
    expected = Patient.objects.get(pk=made.pk)
    assert found is not None and found.pk == made.pk and not found._state.adding
    for field in Patient._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(expected, field.attname), field.name
    assert plain_sql.select_one(Patient, sql, [0]) is None


def test_insert_many_writes_every_row_as_the_orm_would(facility_a):
    from accounts.models import AuditEvent

    events = [
        AuditEvent(
            action=AuditEvent.Action.UPDATE,
            door=AuditEvent.Door.HL7,
            actor="hl7",
            facility=facility_a,
            object_type="patient",
            object_id=str(n),
            detail={"fields": ["family_name"], "n": n},
        )
        for n in range(3)
    ]
    plain_sql.insert_many(events)
    plain_sql.insert_many([])
    stored = AuditEvent.objects.order_by("object_id")
    assert [(e.object_id, e.detail["n"], e.facility_id) for e in stored] == [
        ("0", 0, facility_a.pk),
        ("1", 1, facility_a.pk),
        ("2", 2, facility_a.pk),
    ]
    assert all(e.at is not None for e in stored)


def test_update_many_writes_each_row_its_own_values_and_a_row_given_twice_once(facility_a):
    first = PatientFactory(facility=facility_a, family_name="Smith", birth_date=None)
    second = PatientFactory(facility=facility_a, family_name="Lee", birth_date=dt.date(1990, 1, 1))
    untouched = PatientFactory(facility=facility_a, family_name="Park")
    first.family_name, first.birth_date = "Jones", dt.date(1981, 2, 3)
    second.family_name, second.birth_date = 'O\'Brien, "Jr" {x}', None
    again = Patient.objects.get(pk=first.pk)
    again.family_name, again.birth_date = "Brown", dt.date(1982, 3, 4)

    plain_sql.update_many([first, second, again], ["family_name", "birth_date", "updated_at"])
    plain_sql.update_many([], ["family_name"])

    stored = {p.pk: (p.family_name, p.birth_date) for p in Patient.objects.all()}
    assert stored == {
        first.pk: ("Brown", dt.date(1982, 3, 4)),  # the last of the two given
        second.pk: ('O\'Brien, "Jr" {x}', None),
        untouched.pk: ("Park", untouched.birth_date),
    }


def test_a_statement_run_inside_another_cursor_leaves_its_rows_alone(facility_a):
    """The reused cursor is not handed to a nested use: each reads its own rows."""
    first = PatientFactory(facility=facility_a, family_name="Smith")
    second = PatientFactory(facility=facility_a, family_name="Jones")
    table = Patient._meta.db_table
    with plain_sql.cursor() as outer:
        outer.execute(f"SELECT family_name FROM {table} WHERE id = %s", [first.pk])
        with plain_sql.cursor() as inner:
            inner.execute(f"SELECT family_name FROM {table} WHERE id = %s", [second.pk])
            assert inner.fetchone()[0] == "Jones"
        assert outer.fetchone()[0] == "Smith"
    with plain_sql.cursor() as again:  # and the shared one is free again
        again.execute(f"SELECT family_name FROM {table} WHERE id = %s", [second.pk])
        assert again.fetchone()[0] == "Jones"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="terminates a PostgreSQL backend")
@pytest.mark.django_db(transaction=True)
def test_a_kept_connection_the_database_dropped_is_replaced_before_a_statement(facility_a):
    """A request's first statement may be a plain one (the token lookup): the health
    check runs before it too, or the first request after a database restart fails."""
    connection.ensure_connection()
    connection.health_check_enabled = True
    dropped = connection.connection.info.backend_pid
    other = connection.copy()
    try:
        with other.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(%s)", [dropped])
    finally:
        other.close()
    connection.close_if_unusable_or_obsolete()  # what Django does as a request starts

    with plain_sql.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()", [])
        assert cursor.fetchone()[0] != dropped
