"""A worker's batch of patient events: patients read together, written together, and
every message applied as it would have been alone."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditEvent
from ris.hl7 import services
from ris.hl7.inbound import HANDLERS, Handler
from ris.hl7.models import InboundMessage
from ris.models import Patient, PatientIdentifier
from tests.hl7.test_receive import _stored, hl7, msh

pytestmark = pytest.mark.django_db

Status = InboundMessage.Status


@pytest.fixture
def default_facility(settings, facility_a):
    settings.HL7_DEFAULT_FACILITY = facility_a.code
    return facility_a


def a08(control_id: str, pid3: str, family: str, *, given: str = "Anna") -> bytes:
    return hl7(
        msh(control_id, "ADT^A08^ADT_A01"),
        "EVN|A08|20261201083000",
        f"PID|1||{pid3}||{family}^{given}||19800101|F",
        "PV1|1|O",
    )


def apply(capture, *messages: bytes) -> services.BatchOutcome:
    return services.messages_process(_stored(capture, *messages))


def _renames(patient: Patient) -> list[list[str]]:
    """The family name changes the audit trail records for `patient`, oldest first."""
    return [
        event.detail["changed"]["family_name"]
        for event in AuditEvent.objects.filter(
            patient_id=patient.pk, action=AuditEvent.Action.UPDATE
        ).order_by("id")
    ]


def _patient_statements(queries: CaptureQueriesContext, verb: str) -> list[str]:
    """Reads (FROM the patient table) or writes (UPDATE of it) of patients."""
    table = connection.ops.quote_name(Patient._meta.db_table)
    sign = f"UPDATE {table}" if verb == "UPDATE" else f"FROM {table}"
    return [q["sql"] for q in queries.captured_queries if sign in q["sql"]]


def test_two_updates_of_one_patient_in_a_batch_apply_in_order_each_audited(
    default_facility, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    apply(capture, a08("R1", "123^^^NORTH_MRN^MR", "Smith"), a08("R2", "456^^^NORTH_MRN^MR", "Lee"))

    with CaptureQueriesContext(connection) as queries:
        outcome = apply(
            capture,
            a08("U1", "123^^^NORTH_MRN^MR", "Jones"),
            a08("U2", "456^^^NORTH_MRN^MR", "Park"),
            a08("U3", "123^^^NORTH_MRN^MR", "Brown"),
        )

    assert outcome.applied == 3
    assert dict(Patient.objects.values_list("mrn", "family_name")) == {
        "123": "Brown",
        "456": "Park",
    }
    smith = Patient.objects.get(mrn="123")
    assert _renames(smith) == [["Smith", "Jones"], ["Jones", "Brown"]]
    # Both patients (three messages) read with one statement and written with one.
    if connection.vendor == "postgresql":
        assert len(_patient_statements(queries, "SELECT")) == 1
    assert len(_patient_statements(queries, "UPDATE")) == 1


def test_an_identifier_given_in_a_batch_names_its_patient_for_the_messages_after_it(
    default_facility, django_capture_on_commit_callbacks
):
    capture = django_capture_on_commit_callbacks
    apply(capture, a08("R1", "123^^^NORTH_MRN^MR", "Smith"))

    outcome = apply(
        capture,
        # 555 (issuer OTHER) becomes another identifier of MRN 123 ...
        a08("I1", "123^^^NORTH_MRN^MR~555^^^OTHER^PI", "Jones"),
        # ... so a message naming only 555 is about that patient: no new registration.
        a08("I2", "555^^^OTHER^PI", "Brown"),
        # A registration giving 777 (OTHER), then a message naming 777.
        a08("I3", "900^^^NORTH_MRN^MR~777^^^OTHER^PI", "White"),
        a08("I4", "777^^^OTHER^PI", "Black"),
    )

    assert outcome.applied == 4
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {Status.PROCESSED}
    assert dict(Patient.objects.values_list("mrn", "family_name")) == {
        "123": "Brown",
        "900": "Black",
    }
    assert set(PatientIdentifier.objects.values_list("value", "patient__mrn")) == {
        ("555", "123"),
        ("777", "900"),
    }


def test_a_message_of_another_kind_in_a_batch_reads_the_patient_events_before_it(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    apply(capture, a08("R1", "123^^^NORTH_MRN^MR", "Smith"))
    seen: list[str] = []

    def look(message, context):
        seen.append(Patient.objects.get(mrn="123").family_name)
        return "looked"

    monkeypatch.setitem(HANDLERS, "ACK^A01", Handler(apply=look, required_segments=()))
    outcome = apply(
        capture,
        a08("U1", "123^^^NORTH_MRN^MR", "Jones"),
        hl7(msh("LOOK", "ACK^A01"), "MSA|AA|OUT-1"),
        a08("U2", "123^^^NORTH_MRN^MR", "Brown"),
    )

    assert outcome.applied == 3
    assert seen == ["Jones"]
    assert Patient.objects.get(mrn="123").family_name == "Brown"


def test_a_merged_record_named_in_a_batch_loses_no_change_made_before_it(
    default_facility, django_capture_on_commit_callbacks
):
    """The merged record's path reads its survivor the usual way: the batch's changes
    to the survivor are written first, or the later change would be overwritten."""
    capture = django_capture_on_commit_callbacks
    apply(
        capture,
        a08("R1", "123^^^NORTH_MRN^MR", "Smith"),
        a08("R2", "456^^^NORTH_MRN^MR~999^^^OTHER^PI", "Lee"),
    )
    survivor = Patient.objects.get(mrn="123")
    Patient.objects.filter(mrn="456").update(merged_into=survivor)

    outcome = apply(
        capture,
        a08("M1", "123^^^NORTH_MRN^MR", "Jones"),
        # 999 is an identifier of the merged record: the survivor is updated.
        a08("M2", "999^^^OTHER^PI", "Brown", given="Beth"),
        a08("M3", "456^^^NORTH_MRN^MR", "Closed"),  # the closed record's MRN: ignored
    )

    assert outcome.applied == 3
    statuses = list(InboundMessage.objects.order_by("id").values_list("status", flat=True))
    assert statuses[-3:] == [Status.PROCESSED, Status.PROCESSED, Status.IGNORED]
    survivor.refresh_from_db()
    assert (survivor.family_name, survivor.given_name) == ("Brown", "Beth")
    assert _renames(survivor) == [["Smith", "Jones"], ["Jones", "Brown"]]


def test_an_update_that_changes_nothing_keeps_the_batch_without_savepoints(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    capture = django_capture_on_commit_callbacks
    apply(capture, a08("R1", "123^^^NORTH_MRN^MR", "Smith"), a08("R2", "456^^^NORTH_MRN^MR", "Lee"))
    runs: list[bool] = []
    batch_process = services._batch_process

    def counted(message_ids, drain, *, isolated):
        runs.append(isolated)
        return batch_process(message_ids, drain, isolated=isolated)

    monkeypatch.setattr(services, "_batch_process", counted)
    outcome = apply(
        capture,
        a08("N1", "123^^^NORTH_MRN^MR", "Smith"),  # as registered: nothing to do
        a08("N2", "456^^^NORTH_MRN^MR", "Park"),
    )

    assert outcome.applied == 2
    assert runs == [False]  # not rolled back and run again with a savepoint each
    statuses = list(InboundMessage.objects.order_by("-id").values_list("status", flat=True)[:2])
    assert statuses == [Status.PROCESSED, Status.IGNORED]
    assert Patient.objects.get(mrn="456").family_name == "Park"
