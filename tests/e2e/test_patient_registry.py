"""Registering a patient on a tablet, through the duplicate warning, in a real browser."""

import datetime as dt

import pytest

from accounts.roles import Role
from ris.models import Patient
from tests.e2e.conftest import screenshot
from tests.e2e.test_layout import has_horizontal_overflow, log_in
from tests.factories import PatientFactory, PayerFactory, member

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_a_clerk_registers_a_patient_on_a_tablet_past_the_duplicate_warning(
    page_factory, live_server, facility_a
):
    member(facility_a, Role.FRONT_DESK, username="tabletclerk")
    PatientFactory(
        facility=facility_a,
        family_name="Garcia",
        given_name="Maria",
        birth_date=dt.date(1968, 4, 12),
    )
    PayerFactory(facility=facility_a, name="Acme Health")
    page = page_factory(820, 1180, touch=True)
    log_in(page, live_server.url, "tabletclerk")
    page.goto(f"{live_server.url}/ris/patients/")
    page.get_by_role("link", name="Register patient").click()
    page.fill("#id_mrn", "880001")
    page.fill("#id_family_name", "García")
    page.fill("#id_given_name", "María")
    page.fill("#id_birth_date", "1968-04-12")
    page.fill("#id_mobile_phone", "+1 555 0101")
    page.fill("#id_identifiers-0-value", "X123")
    page.select_option("#id_insurance-0-payer", label="Acme Health")
    page.fill("#id_insurance-0-member_id", "A-1")
    assert not has_horizontal_overflow(page)
    screenshot(page, "tablet-patient-register")
    page.get_by_role("button", name="Register").click()
    page.get_by_text("Possible duplicates").wait_for()
    assert not Patient.objects.filter(mrn="880001").exists()
    screenshot(page, "tablet-patient-duplicates")
    page.get_by_label("This is a different person").check()
    page.get_by_role("button", name="Register").click()
    page.get_by_text("registered, MRN 880001").wait_for()
    patient = Patient.objects.get(mrn="880001")
    assert patient.insurance.get().member_id == "A-1"
    assert not has_horizontal_overflow(page)
    screenshot(page, "tablet-patient-detail")
    assert page.console_errors == []  # type: ignore[attr-defined]
