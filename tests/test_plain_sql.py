"""config.plain_sql: the hot writes as statements built once, same result as the ORM's."""

import datetime as dt

import pytest
from django.db import DatabaseError

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
