"""The audit trail: who read or changed which patient data, when, from where, by which door."""

import pytest
from django.db import DatabaseError, connection, transaction
from django.urls import reverse

from accounts import audit
from accounts.models import AuditEvent, AuditEventPatient
from accounts.roles import Role
from tests.factories import (
    PASSWORD,
    PatientFactory,
    api_token,
    client_for,
    member,
    order_for,
)

pytestmark = pytest.mark.django_db


def test_opening_a_patient_page_records_who_what_when_and_from_where(clerk, facility_a):
    patient = PatientFactory(facility=facility_a)
    client_for(clerk).get(reverse("ris:patient_detail", args=[patient.pk]), REMOTE_ADDR="10.1.2.3")
    event = AuditEvent.objects.get(action="view")
    assert (event.user, event.actor, event.door) == (clerk, "clerk", "page")
    assert (event.object_type, event.object_id, event.patient_id) == (
        "patient",
        str(patient.pk),
        patient.pk,
    )
    assert event.facility == facility_a
    assert event.remote_addr == "10.1.2.3"
    assert event.at is not None


def test_reading_an_order_through_the_api_records_the_api_door_and_the_patient(clerk, facility_a):
    order = order_for(PatientFactory(facility=facility_a))
    token = api_token(clerk)
    response = client_for(clerk).get(
        f"/api/v1/orders/{order.pk}/", headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200
    event = AuditEvent.objects.get(action="view")
    assert (event.door, event.object_type, event.patient_id) == ("api", "order", order.patient_id)


def test_a_search_records_every_patient_it_showed(clerk, facility_a):
    shown = [PatientFactory(facility=facility_a, family_name=f"Lee{i}") for i in range(3)]
    PatientFactory(facility=facility_a, family_name="Other")
    client_for(clerk).get(reverse("ris:patient_list"), {"q": "Lee"})
    event = AuditEvent.objects.get(action="list")
    assert event.detail["query"] == {"q": "Lee"}
    assert sorted(
        AuditEventPatient.objects.filter(event=event).values_list("patient_id", flat=True)
    ) == sorted(p.pk for p in shown)


def test_a_change_is_audited_in_its_own_transaction(clerk, facility_a):
    patient = PatientFactory(facility=facility_a)
    with pytest.raises(RuntimeError), transaction.atomic():
        order_for(patient, actor=clerk)
        raise RuntimeError("the business transaction fails")
    assert not AuditEvent.objects.filter(action="create").exists()
    order = order_for(patient, actor=clerk)
    event = AuditEvent.objects.get(action="create", object_type="order")
    assert (event.user, event.object_id) == (clerk, str(order.pk))


def test_a_recorded_event_reads_back_as_written(clerk, facility_a):
    patient = PatientFactory(facility=facility_a)
    event = audit.record(
        action=audit.Action.UPDATE,
        door=audit.Door.HL7,
        user=clerk,
        obj=patient,
        remote_addr="2001:db8::1",
        path="/x" * 300,
        detail={"changed": {"family_name": ["Müller", "Muller"]}, "n": [1, None]},
        patient_ids=[patient.pk],
    )
    stored = AuditEvent.objects.get(pk=event.pk)
    assert (stored.user, stored.actor, stored.facility) == (clerk, "clerk", facility_a)
    assert (stored.object_type, stored.patient_id) == ("patient", patient.pk)
    assert stored.detail == {"changed": {"family_name": ["Müller", "Muller"]}, "n": [1, None]}
    assert (stored.remote_addr, len(stored.path)) == ("2001:db8::1", 500)
    assert stored.at == event.at is not None
    assert list(stored.patients.values_list("patient_id", flat=True)) == [patient.pk]


def test_audit_rows_cannot_be_changed_or_deleted_through_the_app(clerk):
    event = audit.record(action="view", door="page", user=clerk, object_type="patient")
    event.action = "delete"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).update(action="delete")
    with pytest.raises(PermissionError):
        AuditEvent.objects.filter(pk=event.pk).delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "view"


@pytest.mark.skipif(connection.vendor != "postgresql", reason="trigger is PostgreSQL's")
def test_the_database_refuses_to_rewrite_audit_rows(clerk):
    event = audit.record(action="view", door="page", user=clerk, object_type="patient")
    for sql in (
        "UPDATE accounts_auditevent SET action = 'x' WHERE id = %s",
        "DELETE FROM accounts_auditevent WHERE id = %s",
    ):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
            connection.cursor().execute(sql, [event.pk])
    assert AuditEvent.objects.filter(pk=event.pk, action="view").exists()


def test_logins_and_failed_logins_are_audited(clerk):
    client = client_for(clerk)
    client.logout()
    client.post(reverse("accounts:login"), {"username": "clerk", "password": "wrong"})
    client.post(reverse("accounts:login"), {"username": "clerk", "password": PASSWORD})
    assert list(AuditEvent.objects.order_by("id").values_list("action", "actor")) == [
        ("login_failed", "clerk"),
        ("login", "clerk"),
    ]


def test_forwarded_for_is_ignored_unless_behind_a_trusted_proxy(clerk, facility_a, settings):
    patient = PatientFactory(facility=facility_a)
    url = reverse("ris:patient_detail", args=[patient.pk])
    client = client_for(clerk)
    client.get(url, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="6.6.6.6")
    settings.USE_X_FORWARDED_FOR = True
    client.get(url, REMOTE_ADDR="10.0.0.1", HTTP_X_FORWARDED_FOR="1.2.3.4, 192.168.1.9")
    assert list(AuditEvent.objects.order_by("id").values_list("remote_addr", flat=True)) == [
        "10.0.0.1",
        "192.168.1.9",
    ]


def test_facility_admin_searches_the_trail_by_patient(facility_admin, clerk, facility_a):
    patient, other = PatientFactory(facility=facility_a), PatientFactory(facility=facility_a)
    client_for(clerk).get(reverse("ris:patient_detail", args=[patient.pk]))
    client_for(clerk).get(reverse("ris:patient_detail", args=[other.pk]))
    client_for(clerk).get(reverse("ris:patient_list"), {"q": patient.family_name})
    response = client_for(facility_admin).get(
        reverse("accounts:audit_log"), {"patient_id": patient.pk}
    )
    assert response.status_code == 200
    events = list(response.context["page"])
    assert {(e.action, e.actor) for e in events} == {("view", "clerk"), ("list", "clerk")}


def test_the_audit_page_is_for_admins_of_the_facility_only(
    facility_admin, clerk, facility_a, facility_b
):
    patient = PatientFactory(facility=facility_a)
    client_for(clerk).get(reverse("ris:patient_detail", args=[patient.pk]))
    assert client_for(clerk).get(reverse("accounts:audit_log")).status_code == 403
    other_admin = member(facility_b, Role.ADMIN)
    response = client_for(other_admin).get(reverse("accounts:audit_log"))
    assert response.status_code == 200
    assert list(response.context["page"]) == []


def test_the_admin_site_shows_audit_rows_read_only(admin_client, clerk):
    event = audit.record(action="view", door="page", user=clerk, object_type="patient")
    change_url = reverse("admin:accounts_auditevent_change", args=[event.pk])
    assert admin_client.get(reverse("admin:accounts_auditevent_changelist")).status_code == 200
    assert admin_client.post(change_url, {"action": "delete"}).status_code == 403
    delete_url = reverse("admin:accounts_auditevent_delete", args=[event.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk, action="view").exists()


def test_opening_a_patient_in_the_admin_site_is_audited(admin_client, facility_a):
    patient = PatientFactory(facility=facility_a)
    admin_client.get(reverse("admin:ris_patient_change", args=[patient.pk]))
    event = AuditEvent.objects.get(action="view")
    assert (event.door, event.patient_id) == ("admin", patient.pk)
