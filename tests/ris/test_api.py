import pytest
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from tests.factories import PatientFactory

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
