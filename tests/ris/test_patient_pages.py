"""The registry's pages: register (with the duplicate warning), edit, merge, detail."""

import datetime as dt

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from ris import services
from ris.models import Patient
from tests.factories import (
    PatientContactFactory,
    PatientFactory,
    PatientIdentifierFactory,
    PatientInsuranceFactory,
    PayerFactory,
    client_for,
    order_for,
)

pytestmark = pytest.mark.django_db

BORN = dt.date(1968, 4, 12)


def formset(prefix: str, rows: list[dict], initial: int = 0) -> dict[str, str]:
    """POST data of one formset: its management form and its rows."""
    data = {
        f"{prefix}-TOTAL_FORMS": str(len(rows)),
        f"{prefix}-INITIAL_FORMS": str(initial),
        f"{prefix}-MIN_NUM_FORMS": "0",
        f"{prefix}-MAX_NUM_FORMS": "1000",
    }
    for number, row in enumerate(rows):
        data.update({f"{prefix}-{number}-{name}": value for name, value in row.items()})
    return data


def registration(facility, *, identifiers=(), contacts=(), insurance=(), **fields) -> dict:
    return {
        "facility": str(facility.pk),
        "mrn": "880001",
        "family_name": "Garcia",
        "given_name": "Maria",
        "birth_date": BORN.isoformat(),
        "sex": "F",
        **fields,
        **formset("identifiers", list(identifiers)),
        **formset("contacts", list(contacts)),
        **formset("insurance", list(insurance)),
    }


def test_the_front_desk_registers_a_patient_with_an_identifier_and_insurance(clerk, facility_a):
    payer = PayerFactory(facility=facility_a, name="Acme Health")
    client = client_for(clerk)
    assert client.get(reverse("ris:patient_create")).status_code == 200
    response = client.post(
        reverse("ris:patient_create"),
        registration(
            facility_a,
            address_street="1 Main St",
            mobile_phone="+1 555 0101",
            identifiers=[{"type_code": "PPN", "value": "X123", "issuer": "ES"}],
            contacts=[{"role": "C", "relationship": "SPO", "family_name": "Garcia"}],
            insurance=[
                {
                    "rank": "1",
                    "payer": str(payer.pk),
                    "member_id": "A-1",
                    "relationship_to_subscriber": "SEL",
                }
            ],
        ),
    )
    patient = Patient.objects.get(mrn="880001")
    assert response.status_code == 302
    assert response.url == reverse("ris:patient_detail", args=[patient.pk])
    assert patient.mrn_issuer == facility_a.mrn_issuer
    assert patient.identifiers.get().value == "X123"
    assert patient.insurance.get().member_id == "A-1"
    assert patient.contacts.get().relationship == "SPO"
    page = client.get(response.url).content.decode()
    for shown in ("X123", "Passport number", "Acme Health", "A-1", "1 Main St", "+1 555 0101"):
        assert shown in page


def test_a_possible_duplicate_must_be_confirmed_as_a_different_person(clerk, facility_a):
    twin = PatientFactory(
        facility=facility_a, family_name="García", given_name="María", birth_date=BORN, mrn="77"
    )
    client = client_for(clerk)
    warned = client.post(reverse("ris:patient_create"), registration(facility_a))
    assert warned.status_code == 200
    page = warned.content.decode()
    assert "Possible duplicates" in page
    assert reverse("ris:patient_detail", args=[twin.pk]) in page
    assert "This is a different person" in page
    assert not Patient.objects.filter(mrn="880001").exists()
    shown = AuditEvent.objects.get(action="list", object_type="patient")
    assert shown.detail["ids"] == [twin.pk]

    confirmed = client.post(
        reverse("ris:patient_create"), registration(facility_a, not_duplicate="on")
    )
    assert confirmed.status_code == 302
    assert Patient.objects.filter(mrn="880001").exists()


def test_a_taken_mrn_is_shown_as_an_error_on_the_form(clerk, facility_a):
    PatientFactory(facility=facility_a, mrn="880001", family_name="Other")
    response = client_for(clerk).post(reverse("ris:patient_create"), registration(facility_a))
    assert response.status_code == 200
    assert "already registered here" in response.content.decode()


def test_registration_offers_only_the_users_facilities(outsider, facility_a):
    response = client_for(outsider).post(reverse("ris:patient_create"), registration(facility_a))
    assert response.status_code == 200
    assert "Select a valid choice" in response.content.decode()
    assert not facility_a.patients.exists()


def test_a_radiologist_may_look_but_not_register_or_edit(radiologist, facility_a):
    patient = PatientFactory(facility=facility_a)
    client = client_for(radiologist)
    detail = client.get(reverse("ris:patient_detail", args=[patient.pk])).content.decode()
    assert reverse("ris:patient_edit", args=[patient.pk]) not in detail
    assert (
        reverse("ris:patient_create")
        not in client.get(reverse("ris:patient_list")).content.decode()
    )
    for url in (
        reverse("ris:patient_create"),
        reverse("ris:patient_edit", args=[patient.pk]),
        reverse("ris:patient_merge", args=[patient.pk]),
    ):
        assert client.get(url).status_code == 403, url


def test_another_facilitys_patient_cannot_be_edited_or_merged(outsider, facility_a):
    patient = PatientFactory(facility=facility_a)
    client = client_for(outsider)
    for url in (
        reverse("ris:patient_edit", args=[patient.pk]),
        reverse("ris:patient_merge", args=[patient.pk]),
    ):
        assert client.get(url).status_code == 404, url
        assert client.post(url, {}).status_code == 404, url


def test_the_list_links_to_registration_for_the_front_desk(clerk):
    page = client_for(clerk).get(reverse("ris:patient_list")).content.decode()
    assert reverse("ris:patient_create") in page


def test_the_front_desk_edits_details_and_removes_an_identifier(clerk, facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Smith", given_name="John")
    PatientIdentifierFactory(patient=patient, value="OLD-1", issuer="X", type_code="PI")
    contact = PatientContactFactory(patient=patient)
    client = client_for(clerk)
    url = reverse("ris:patient_edit", args=[patient.pk])
    form = client.get(url)
    assert "OLD-1" in form.content.decode()
    assert AuditEvent.objects.filter(action="view", patient_id=patient.pk).exists()
    response = client.post(
        url,
        {
            "family_name": "Smith",
            "given_name": "John",
            "birth_date": "1970-01-01",
            "sex": "M",
            "home_phone": "+1 555 0199",
            **formset(
                "identifiers",
                [{"type_code": "PI", "value": "OLD-1", "issuer": "X", "DELETE": "on"}],
                initial=1,
            ),
            **formset(
                "contacts",
                [
                    {
                        "id": str(contact.pk),
                        "role": "C",
                        "relationship": "SPO",
                        "family_name": "Kin",
                        "given_name": "Next",
                        "phone": "+1 555 0100",
                    }
                ],
                initial=1,
            ),
            **formset("insurance", []),
        },
    )
    assert response.status_code == 302, response.content.decode()
    patient.refresh_from_db()
    assert (patient.home_phone, patient.sex) == ("+1 555 0199", "M")
    assert not patient.identifiers.exists()
    assert patient.contacts.get() == contact
    event = AuditEvent.objects.get(action="update")
    assert event.detail["changed"]["home_phone"] == ["", "+1 555 0199"]
    assert event.detail["identifiers"] == {"removed": ["PI OLD-1 (X)"]}


def test_the_front_desk_merges_a_duplicate_after_comparing_the_two(clerk, facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="100", family_name="Garcia")
    duplicate = PatientFactory(facility=facility_a, mrn="200", family_name="Garsia")
    order = order_for(duplicate)
    client = client_for(clerk)
    url = reverse("ris:patient_merge", args=[survivor.pk])
    compared = client.get(url, {"mrn": "200"})
    page = compared.content.decode()
    assert "Garsia" in page and "Garcia" in page
    assert "Merge MRN 200 into MRN 100" in page
    viewed = AuditEvent.objects.filter(action="view").latest("id")
    assert list(viewed.patients.values_list("patient_id", flat=True)) == sorted(
        [survivor.pk, duplicate.pk]
    )

    response = client.post(url, {"merged": duplicate.pk, "reason": "Registered twice"})
    assert response.status_code == 302
    order.refresh_from_db()
    assert order.patient == survivor
    survivor_page = client.get(reverse("ris:patient_detail", args=[survivor.pk])).content.decode()
    assert "absorbed" in survivor_page and "Registered twice" in survivor_page
    assert order.accession_number in survivor_page
    merged_page = client.get(reverse("ris:patient_detail", args=[duplicate.pk])).content.decode()
    assert "This record was merged into" in merged_page
    assert reverse("ris:patient_detail", args=[survivor.pk]) in merged_page
    assert reverse("ris:patient_edit", args=[duplicate.pk]) not in merged_page


def test_a_merge_the_service_refuses_is_shown_with_the_reason(clerk, facility_a):
    first, second, third = PatientFactory.create_batch(3, facility=facility_a)
    client = client_for(clerk)
    client.post(reverse("ris:patient_merge", args=[first.pk]), {"merged": second.pk})
    response = client.post(reverse("ris:patient_merge", args=[third.pk]), {"merged": second.pk})
    assert response.status_code == 200
    assert "was already merged into" in response.content.decode()
    second.refresh_from_db()
    assert second.merged_into == first


def test_the_merge_page_says_when_no_record_has_the_mrn(clerk, facility_a, facility_b):
    survivor = PatientFactory(facility=facility_a)
    PatientFactory(facility=facility_b, mrn="999")
    page = client_for(clerk).get(reverse("ris:patient_merge", args=[survivor.pk]), {"mrn": "999"})
    assert "No other record of this facility has that MRN" in page.content.decode()


def test_the_detail_page_shows_contacts_and_insurance(radiologist, facility_a):
    patient = PatientFactory(facility=facility_a)
    PatientContactFactory(patient=patient, family_name="Kinsman", phone="+1 555 0142")
    PatientInsuranceFactory(
        patient=patient,
        member_id="MEM-77",
        payer=PayerFactory(facility=facility_a, name="Medicare"),
    )
    page = client_for(radiologist).get(reverse("ris:patient_detail", args=[patient.pk]))
    body = page.content.decode()
    for shown in ("Kinsman", "+1 555 0142", "MEM-77", "Medicare"):
        assert shown in body


def test_the_detail_page_query_count_does_not_grow_with_the_lists(
    clerk, facility_a, django_assert_max_num_queries
):
    survivor = PatientFactory(facility=facility_a)
    for _ in range(5):
        duplicate = PatientFactory(facility=facility_a)
        PatientIdentifierFactory(patient=duplicate)
        PatientContactFactory(patient=duplicate)
        PatientInsuranceFactory(patient=duplicate)
        order_for(duplicate)
        services.patient_merge(surviving=survivor, merged=duplicate)
    client = client_for(clerk)
    with django_assert_max_num_queries(16):  # 1 of them: the unread notifications count
        assert client.get(reverse("ris:patient_detail", args=[survivor.pk])).status_code == 200


def test_the_detail_page_links_to_a_new_order_except_on_a_merged_record(clerk, facility_a):
    survivor, duplicate = PatientFactory.create_batch(2, facility=facility_a)
    services.patient_merge(surviving=survivor, merged=duplicate)
    client = client_for(clerk)
    live = client.get(reverse("ris:patient_detail", args=[survivor.pk])).content.decode()
    assert reverse("ris:order_create", args=[survivor.pk]) in live
    closed = client.get(reverse("ris:patient_detail", args=[duplicate.pk])).content.decode()
    assert reverse("ris:order_create", args=[duplicate.pk]) not in closed
