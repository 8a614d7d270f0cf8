"""The new-order page of the front desk."""

import pytest

from accounts.models import AuditEvent
from accounts.roles import Role
from ris import services
from ris.models import Order
from tests.factories import PatientFactory, ProcedureFactory, client_for, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def patient(facility_a):
    return PatientFactory(facility=facility_a, family_name="Ortega")


def test_a_clerk_creates_an_order_and_goes_on_to_book_it(clerk, patient, facility_a):
    procedure = ProcedureFactory(facility=facility_a, name="CT head", code="70450")
    response = client_for(clerk).post(
        f"/ris/patients/{patient.pk}/orders/new/",
        {
            "procedure": procedure.pk,
            "priority": "urgent",
            "referring_physician_name": "House^Gregory",
            "reason": "Headache for 3 weeks",
            "diagnosis_codes": "r51.9",
        },
    )
    order = Order.objects.get(patient=patient)
    assert response.status_code == 302
    assert response["Location"] == f"/ris/orders/{order.pk}/book/"
    assert (order.priority, order.diagnosis_codes, order.status) == ("urgent", "R51.9", "requested")
    assert AuditEvent.objects.filter(action="create", object_type="order").exists()


def test_bad_order_input_is_shown_beside_the_field(clerk, patient, facility_a):
    procedure = ProcedureFactory(facility=facility_a)
    response = client_for(clerk).post(
        f"/ris/patients/{patient.pk}/orders/new/",
        {"procedure": procedure.pk, "priority": "routine", "diagnosis_codes": "headache"},
    )
    assert response.status_code == 400
    assert "Not an ICD-10 code: HEADACHE" in response.content.decode()
    assert not Order.objects.exists()


def test_only_this_facility_s_active_procedures_are_offered(clerk, patient, facility_a, facility_b):
    ProcedureFactory(facility=facility_a, name="Offered")
    ProcedureFactory(facility=facility_a, name="Retired", is_active=False)
    foreign = ProcedureFactory(facility=facility_b, name="Elsewhere")
    client = client_for(clerk)
    page = client.get(f"/ris/patients/{patient.pk}/orders/new/").content.decode()
    assert "Offered" in page and "Retired" not in page and "Elsewhere" not in page
    response = client.post(
        f"/ris/patients/{patient.pk}/orders/new/", {"procedure": foreign.pk, "priority": "routine"}
    )
    assert response.status_code == 400 and not Order.objects.exists()


def test_new_orders_need_the_order_capability_and_the_patient_s_facility(
    outsider, patient, facility_a
):
    assert client_for(outsider).get(f"/ris/patients/{patient.pk}/orders/new/").status_code == 404
    technologist = member(facility_a, Role.TECHNOLOGIST)
    page = client_for(technologist).get(f"/ris/patients/{patient.pk}/orders/new/")
    assert page.status_code == 403


def test_a_merged_record_takes_no_new_orders(clerk, patient, facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="KEEP")
    services.patient_merge(surviving=survivor, merged=patient, reason="duplicate")
    patient.refresh_from_db()
    with pytest.raises(services.RisError, match=r"was merged into MRN KEEP: order for that record"):
        services.order_create(patient=patient, procedure=ProcedureFactory(facility=facility_a))
    page = client_for(clerk).get(f"/ris/patients/{patient.pk}/orders/new/")
    assert page.status_code == 404
