"""The registry over the REST API: filters, nested lists, the duplicate 409, merges."""

import datetime as dt

import pytest
from django.core.management import call_command
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from ris.models import Patient
from tests.factories import (
    PatientFactory,
    PatientIdentifierFactory,
    PatientInsuranceFactory,
    PayerFactory,
    order_for,
)

pytestmark = pytest.mark.django_db

BORN = dt.date(1968, 4, 12)
URL = "/api/v1/patients/"


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def ids(response) -> list[int]:
    assert response.status_code == 200, response.json()
    return [row["id"] for row in response.json()["results"]]


def test_patients_are_found_by_mrn_issuer_birth_date_and_identifier(clerk, facility_a):
    wanted = PatientFactory(facility=facility_a, mrn="4711", birth_date=BORN)
    PatientIdentifierFactory(patient=wanted, value="SSN-1", issuer="US", type_code="SS")
    PatientFactory(facility=facility_a, mrn="4712", mrn_issuer="OTHER")
    client = api_for(clerk)
    assert ids(client.get(URL, {"mrn": "4711"})) == [wanted.pk]
    assert ids(client.get(URL, {"mrn": "4711", "mrn_issuer": "OTHER"})) == []
    assert ids(client.get(URL, {"birth_date": BORN.isoformat()})) == [wanted.pk]
    assert ids(client.get(URL, {"identifier": "SSN-1"})) == [wanted.pk]
    assert ids(client.get(URL, {"q": "SSN-1"})) == [wanted.pk]
    bad = client.get(URL, {"birth_date": "1968-13-45"})
    assert bad.status_code == 400 and "birth_date" in bad.json()


def test_a_patient_is_registered_with_nested_identifiers_contacts_and_insurance(clerk, facility_a):
    payer = PayerFactory(facility=facility_a)
    response = api_for(clerk).post(
        URL,
        {
            "facility": "NORTH",
            "mrn": "5001",
            "family_name": "Nguyen",
            "given_name": "Thi Lan",
            "home_phone": "+1 555 0100",
            "address_country": "US",
            "identifiers": [{"value": "P-1", "issuer": "VN", "type_code": "PPN"}],
            "contacts": [{"family_name": "Nguyen", "relationship": "CHD", "role": "N"}],
            "insurance": [{"payer": payer.pk, "member_id": "M-1", "rank": 1}],
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["identifiers"] == [{"type_code": "PPN", "value": "P-1", "issuer": "VN"}]
    assert body["contacts"][0]["relationship"] == "CHD"
    assert body["insurance"][0]["payer_name"] == payer.name
    assert body["insurance"][0]["relationship_to_subscriber"] == "SEL"
    assert (body["home_phone"], body["merged_into"]) == ("+1 555 0100", None)
    assert "not_duplicate" not in body


def test_a_payer_of_another_facility_is_a_400(clerk, facility_a, facility_b):
    response = api_for(clerk).post(
        URL,
        {
            "facility": "NORTH",
            "mrn": "5002",
            "family_name": "X",
            "insurance": [{"payer": PayerFactory(facility=facility_b).pk, "member_id": "1"}],
        },
        format="json",
    )
    assert response.status_code == 400
    assert "insurance" in response.json()
    assert not Patient.objects.filter(mrn="5002").exists()


def test_registering_a_possible_duplicate_is_a_409_until_confirmed(clerk, facility_a):
    twin = PatientFactory(
        facility=facility_a, family_name="Garcia", given_name="Maria", birth_date=BORN
    )
    payload = {
        "facility": "NORTH",
        "mrn": "5003",
        "family_name": "GARCIA",
        "given_name": "María",
        "birth_date": BORN.isoformat(),
    }
    client = api_for(clerk)
    conflict = client.post(URL, payload, format="json")
    assert conflict.status_code == 409
    assert conflict.json()["possible_duplicates"] == [
        {"id": twin.pk, "mrn": twin.mrn, "name": "Garcia, Maria", "birth_date": "1968-04-12"}
    ]
    assert not Patient.objects.filter(mrn="5003").exists()
    confirmed = client.post(URL, {**payload, "not_duplicate": True}, format="json")
    assert confirmed.status_code == 201, confirmed.json()


def test_a_patch_updates_through_the_service_and_replaces_a_sent_list(clerk, facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Smith")
    PatientIdentifierFactory(patient=patient, value="OLD")
    coverage = PatientInsuranceFactory(patient=patient)
    response = api_for(clerk).patch(
        f"{URL}{patient.pk}/",
        {"mobile_phone": "+1 555 0111", "mrn": "ignored", "identifiers": [{"value": "NEW"}]},
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["mobile_phone"] == "+1 555 0111"
    assert body["mrn"] == patient.mrn, "the MRN changes only by a merge"
    assert [i["value"] for i in body["identifiers"]] == ["NEW"]
    assert [i["id"] for i in body["insurance"]] == [coverage.pk], "a list not sent stays"
    event = AuditEvent.objects.get(action="update", door="api")
    assert event.detail["changed"] == {"mobile_phone": ["", "+1 555 0111"]}


def test_a_put_with_an_unknown_contact_id_is_a_400(clerk, facility_a):
    patient = PatientFactory(facility=facility_a)
    response = api_for(clerk).put(
        f"{URL}{patient.pk}/",
        {"family_name": "Smith", "contacts": [{"id": 999999, "family_name": "Ghost"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "No such" in response.json()["detail"]


def test_a_radiologist_cannot_change_a_patient_and_an_outsider_cannot_find_one(
    radiologist, outsider, facility_a
):
    patient = PatientFactory(facility=facility_a)
    other = PatientFactory(facility=facility_a)
    url = f"{URL}{patient.pk}/"
    assert api_for(radiologist).patch(url, {"email": "a@b.c"}, format="json").status_code == 403
    merge = {"merged": other.pk}
    assert api_for(radiologist).post(f"{url}merge/", merge, format="json").status_code == 403
    assert api_for(outsider).get(url).status_code == 404
    assert api_for(outsider).patch(url, {"email": "a@b.c"}, format="json").status_code == 404
    assert api_for(outsider).post(f"{url}merge/", merge, format="json").status_code == 404
    patient.refresh_from_db()
    assert patient.email == "" and patient.merged_into is None


def test_the_merge_endpoint_moves_the_duplicate_into_the_patient(clerk, facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="100")
    duplicate = PatientFactory(facility=facility_a, mrn="200")
    order = order_for(duplicate)
    client = api_for(clerk)
    response = client.post(
        f"{URL}{survivor.pk}/merge/",
        {"merged": duplicate.pk, "reason": "same person"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert [i["value"] for i in response.json()["identifiers"]] == ["200"]
    order.refresh_from_db()
    assert order.patient == survivor
    closed = client.get(f"{URL}{duplicate.pk}/").json()
    assert closed["merged_into"] == survivor.pk
    assert ids(client.get(URL, {"mrn": "200"})) == []
    assert ids(client.get(URL, {"mrn": "200", "include_merged": "true"})) == [duplicate.pk]
    assert ids(client.get(URL, {"identifier": "200"})) == [survivor.pk]


def test_a_refused_merge_is_a_400_with_the_reason(clerk, facility_a, facility_b):
    patient = PatientFactory(facility=facility_a)
    client = api_for(clerk)
    itself = client.post(f"{URL}{patient.pk}/merge/", {"merged": patient.pk}, format="json")
    assert itself.status_code == 400
    assert "itself" in itself.json()["merged"]
    elsewhere = PatientFactory(facility=facility_b)
    unknown = client.post(f"{URL}{patient.pk}/merge/", {"merged": elsewhere.pk}, format="json")
    assert unknown.status_code == 400, "another facility's patient reads as unknown"


def test_the_schema_documents_the_merge_and_the_filters(tmp_path):
    call_command("spectacular", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/v1/patients/{id}/merge/" in schema
    for parameter in ("name: mrn", "name: identifier", "name: birth_date"):
        assert parameter in schema
    assert "'409':" in schema
