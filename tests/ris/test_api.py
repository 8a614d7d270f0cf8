import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from accounts.roles import Role
from tests.factories import PatientFactory, member, order_for

pytestmark = pytest.mark.django_db


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def test_a_clerk_registers_a_patient_through_the_api(clerk, facility_a):
    response = api_for(clerk).post(
        "/api/v1/patients/",
        {
            "facility": "NORTH",
            "mrn": "778899",
            "family_name": "Nguyen",
            "given_name": "Thi Lan",
            "birth_date": "1982-01-05",
            "sex": "F",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["mrn_issuer"] == facility_a.mrn_issuer
    assert body["dicom_name"] == "Nguyen^Thi Lan"
    event = AuditEvent.objects.get(action="create")
    assert (event.door, event.user, event.patient_id) == ("api", clerk, body["id"])


def test_registering_an_mrn_twice_is_a_400_with_the_reason(clerk, facility_a):
    PatientFactory(facility=facility_a, mrn="1")
    response = api_for(clerk).post(
        "/api/v1/patients/", {"facility": "NORTH", "mrn": "1", "family_name": "X"}, format="json"
    )
    assert response.status_code == 400
    assert "already registered" in response.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        {},
        {"facility": "NORTH", "mrn": "2"},
        {"facility": "NORTH", "mrn": "2", "family_name": "X", "birth_date": "1999-13-45"},
        {"facility": "NORTH", "mrn": "2", "family_name": "X", "sex": "Q"},
        {"facility": "NORTH", "mrn": "x" * 65, "family_name": "X"},
    ],
)
def test_bad_patient_input_is_a_400_naming_the_field(clerk, payload):
    response = api_for(clerk).post("/api/v1/patients/", payload, format="json")
    assert response.status_code == 400
    assert response.json()


def test_a_radiologist_may_read_but_not_register_patients(radiologist, facility_a):
    PatientFactory(facility=facility_a)
    client = api_for(radiologist)
    assert client.get("/api/v1/patients/").status_code == 200
    response = client.post(
        "/api/v1/patients/", {"facility": "NORTH", "mrn": "3", "family_name": "X"}, format="json"
    )
    assert response.status_code == 403


def test_malformed_json_is_a_400(clerk):
    response = api_for(clerk).post(
        "/api/v1/patients/", "{not json", content_type="application/json"
    )
    assert response.status_code == 400


def test_the_front_desk_checks_in_and_the_technologist_completes_through_the_api(clerk, facility_a):

    order = order_for(PatientFactory(facility=facility_a))
    tech = member(facility_a, Role.TECHNOLOGIST)
    url = f"/api/v1/orders/{order.pk}/status/"
    response = api_for(clerk).post(url, {"status": "arrived"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "arrived"
    refused = api_for(clerk).post(url, {"status": "in_progress"}, format="json")
    assert refused.status_code == 403
    assert "in_progress" in refused.json()["detail"]
    for status in ("in_progress", "completed"):
        assert api_for(tech).post(url, {"status": status}, format="json").status_code == 200
    history = api_for(clerk).get(f"/api/v1/orders/{order.pk}/history/").json()
    assert [(step["to_status"], step["user"], step["door"]) for step in history] == [
        ("arrived", clerk.username, "api"),
        ("in_progress", tech.username, "api"),
        ("completed", tech.username, "api"),
    ]


def test_an_illegal_step_through_the_api_is_a_400_naming_the_allowed_ones(clerk, facility_a):

    order = order_for(PatientFactory(facility=facility_a))
    response = api_for(clerk).post(
        f"/api/v1/orders/{order.pk}/status/", {"status": "no_show"}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["status"] == (
        "An exam that is requested cannot become no-show "
        "(it can become: arrived, cancelled, scheduled)."
    )
    final = api_for(clerk).post(
        f"/api/v1/orders/{order.pk}/status/", {"status": "final"}, format="json"
    )
    assert final.status_code == 400 and "signing the report" in final.json()["status"]


def test_orders_are_found_by_placer_number_and_study_uid(clerk, facility_a):

    order = order_for(PatientFactory(facility=facility_a), placer_order_number="HIS-77")
    order_for(PatientFactory(facility=facility_a))
    for query in (
        {"placer_order_number": "HIS-77"},
        {"study_instance_uid": order.study_instance_uid},
        {"accession_number": order.accession_number},
    ):
        body = api_for(clerk).get("/api/v1/orders/", query).json()
        rows = body["results"] if isinstance(body, dict) else body
        assert [row["id"] for row in rows] == [order.pk], query


def test_the_openapi_schema_validates_without_warnings(tmp_path):
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml")
    )
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/v1/orders/{id}/status/" in schema
    assert "/api/v1/orders/{id}/history/" in schema
