"""A user of facility B cannot read, list or guess anything of facility A."""

import pytest
from django.urls import reverse

from accounts.models import Membership
from accounts.roles import Role
from tests.factories import (
    DicomNodeFactory,
    FeeFactory,
    PatientFactory,
    ProcedureFactory,
    RoomFactory,
    api_token,
    appointment_for,
    client_for,
    member,
    order_for,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def a_records(facility_a, clerk):
    """Facility A's patient with an order that is booked and done, and its configuration."""
    patient = PatientFactory(facility=facility_a, family_name="Secretname", mrn="A-1001")
    order = order_for(patient, actor=clerk)
    appointment_for(order)
    order.status = "completed"
    order.save()
    return {
        "patient": patient,
        "order": order,
        "procedure": ProcedureFactory(facility=facility_a, code="99999", name="Hidden scan"),
        "room": RoomFactory(facility=facility_a, name="Hidden room", ae_title="HIDDEN_CT"),
        "node": DicomNodeFactory(facility=facility_a, ae_title="HIDDEN_WS"),
        "fee": FeeFactory(facility=facility_a, procedure_code="99999"),
    }


@pytest.fixture
def b_staff(facility_b):
    """Every role at facility B, so every page and API of B's users is exercised."""
    return {role: member(facility_b, role) for role in Role.values}


SECRETS = ["Secretname", "A-1001", "Hidden scan", "Hidden room", "HIDDEN_CT", "HIDDEN_WS", "99999"]


def assert_no_secret(body: str, url: str = "") -> None:
    # A search form echoes its own query back; that is not a leak.
    for _, _, value in (pair.partition("=") for pair in url.partition("?")[2].split("&")):
        if value:
            body = body.replace(value, "")
    for secret in SECRETS:
        assert secret not in body, f"{secret!r} of facility A leaked"


def test_lists_and_searches_of_b_users_show_nothing_of_a(a_records, b_staff):
    accession = a_records["order"].accession_number
    pages = [
        reverse("home"),
        reverse("ris:patient_list"),
        reverse("ris:patient_list") + "?q=Secretname",
        reverse("ris:patient_list") + "?q=A-1001",
        reverse("ris:order_list"),
        reverse("ris:order_list") + "?status=completed",
        reverse("ris:schedule"),
        reverse("reporting:worklist"),
        reverse("reporting:critical_list"),
        reverse("reporting:template_list"),
        reverse("billing:fee_list") + "?code=9",
        reverse("accounts:audit_log"),
        "/api/v1/patients/",
        "/api/v1/patients/?q=Secretname",
        "/api/v1/orders/",
        f"/api/v1/orders/?accession_number={accession}",
        "/api/v1/procedures/",
        "/api/v1/rooms/",
        "/api/v1/dicom-nodes/",
    ]
    for user in b_staff.values():
        client = client_for(user)
        for url in pages:
            response = client.get(url)
            assert response.status_code in (200, 403), (user, url, response.status_code)
            body = response.content.decode()
            assert_no_secret(body, url)
            assert accession not in body, (user, url)


def test_b_users_cannot_open_a_records_by_guessing_ids(a_records, b_staff):
    patient, order = a_records["patient"], a_records["order"]
    urls = [
        reverse("ris:patient_detail", args=[patient.pk]),
        reverse("ris:order_detail", args=[order.pk]),
        f"/api/v1/patients/{patient.pk}/",
        f"/api/v1/orders/{order.pk}/",
        f"/api/v1/procedures/{a_records['procedure'].pk}/",
        f"/api/v1/rooms/{a_records['room'].pk}/",
        f"/api/v1/dicom-nodes/{a_records['node'].pk}/",
    ]
    for user in b_staff.values():
        client = client_for(user)
        for url in urls:
            response = client.get(url)
            # 404 for a role that may read such records (indistinguishable from a missing
            # id), 403 for a role that may not read them anywhere.
            assert response.status_code in (403, 404), (user, url, response.status_code)
            assert_no_secret(response.content.decode())


def test_an_existing_and_a_missing_id_answer_alike(a_records, outsider):
    client = client_for(outsider)
    existing = client.get(f"/api/v1/patients/{a_records['patient'].pk}/")
    missing = client.get("/api/v1/patients/987654321/")
    assert existing.status_code == missing.status_code == 404
    assert existing.json() == missing.json()


def test_b_clerk_cannot_register_a_patient_at_a(facility_a, outsider):
    token = api_token(outsider)
    client = client_for(outsider)
    client.logout()
    payload = {"facility": facility_a.code, "mrn": "X1", "family_name": "Intruder"}
    headers = {"Authorization": f"Token {token}"}
    response = client.post(
        "/api/v1/patients/", payload, content_type="application/json", headers=headers
    )
    unknown = client.post(
        "/api/v1/patients/",
        {**payload, "facility": "NOSUCH"},
        content_type="application/json",
        headers=headers,
    )
    assert response.status_code == unknown.status_code == 400
    assert response.json()["facility"][0].replace(facility_a.code, "X") == unknown.json()[
        "facility"
    ][0].replace("NOSUCH", "X")
    assert not facility_a.patients.exists()


def test_a_user_with_no_role_sees_no_patient_data(a_records, django_user_model):
    nobody = django_user_model.objects.create_user("nobody", password="irrelevant-pass-1")
    client = client_for(nobody)
    assert client.get(reverse("ris:patient_list")).status_code == 403
    assert client.get("/api/v1/patients/").status_code == 403
    assert client.get(reverse("home")).status_code == 200
    assert_no_secret(client.get(reverse("home")).content.decode())


def test_a_user_of_both_facilities_sees_both(a_records, facility_a, facility_b):
    PatientFactory(facility=facility_b, family_name="Southpatient")
    both = member(facility_a, Role.FRONT_DESK)
    Membership.objects.create(user=both, facility=facility_b, role=Role.FRONT_DESK)
    body = client_for(both).get(reverse("ris:patient_list")).content.decode()
    assert "Secretname" in body and "Southpatient" in body


def test_an_inactive_facility_hides_its_data_from_its_own_staff(a_records, facility_a, clerk):
    facility_a.is_active = False
    facility_a.save()
    response = client_for(clerk).get(reverse("ris:patient_detail", args=[a_records["patient"].pk]))
    assert response.status_code == 403
