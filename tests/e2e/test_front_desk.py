"""The front desk's day in a real browser, and the modality's view of it over DICOM:
register a patient, order and book an exam into a suggested slot, find it on the day
view, check the patient in, and see the exam in the room's worklist (dcmtk findscu -W)."""

import datetime as dt
import re
from pathlib import Path

import pytest
from django.utils import timezone
from pydicom import dcmread

from accounts.models import Membership
from accounts.roles import Role
from ris.models import Order, Patient, RoomHours
from tests.e2e.conftest import NEEDS_POSTGRESQL, screenshot
from tests.e2e.test_layout import has_horizontal_overflow, log_in
from tests.factories import ProcedureFactory, RoomFactory, UserFactory
from tests.interop.conftest import listener, scu  # noqa: F401 (the listener fixture)

pytestmark = [
    pytest.mark.e2e,
    NEEDS_POSTGRESQL,
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]

STEP = "ScheduledProcedureStepSequence[0]"


@pytest.fixture
def ct_room(listener):  # noqa: F811
    """A CT room open all of today with a 10-minute CT head on it; a clerk at the desk."""
    facility = listener.facility
    procedure = ProcedureFactory(
        facility=facility, code="70450", name="CT head", modality="CT", duration_minutes=10
    )
    room = RoomFactory(facility=facility, name="CT 1", modality="CT", ae_title="CT_ROOM1")
    room.procedures.add(procedure)
    RoomHours.objects.create(
        room=room,
        weekday=timezone.localdate().weekday(),
        opens=dt.time(0, 0),
        closes=dt.time(23, 59),
    )
    clerk = UserFactory(username="deskclerk")
    Membership.objects.create(user=clerk, facility=facility, role=Role.FRONT_DESK)
    return room


def test_register_book_a_suggested_slot_check_in_and_the_modality_sees_it(
    page_factory,
    live_server,
    listener,  # noqa: F811 (the fixture imported above)
    ct_room,
    tmp_path: Path,
):
    if timezone.localtime().time() > dt.time(23, 40):
        pytest.skip("no 10-minute slot left today")
    page = page_factory(1024, 768, touch=True)  # a tablet in landscape
    log_in(page, live_server.url, "deskclerk")

    # Register.
    page.get_by_role("link", name="Patients").first.click()
    page.get_by_role("link", name="Register patient").click()
    page.fill("#id_mrn", "DESK001")
    page.fill("#id_family_name", "Ōtake")
    page.fill("#id_given_name", "Hana")
    page.fill("#id_birth_date", "1985-07-19")
    page.select_option("#id_sex", "F")
    page.get_by_role("button", name="Register").click()
    page.get_by_text("registered, MRN DESK001").wait_for()
    patient = Patient.objects.get(mrn="DESK001")

    # Order, then book the first suggested slot.
    page.get_by_role("link", name="New order").click()
    page.select_option("#id_procedure", label="CT · CT head (70450, 10 min)")
    page.fill("#id_reason", "Headache after a fall")
    page.fill("#id_diagnosis_codes", "R51.9")
    page.get_by_role("button", name=re.compile("Create order")).click()
    page.wait_for_url(re.compile(r"/ris/orders/\d+/book/"))
    order = Order.objects.get(patient=patient)
    first_slot = page.locator("button.slot").first
    first_slot.wait_for()
    slot_time = first_slot.inner_text().split()[0]
    screenshot(page, "front-desk-book")
    first_slot.click()

    # The day view shows it.
    page.wait_for_url(re.compile(r"/ris/schedule/day/"))
    page.get_by_text(f"{patient.display_name}").first.wait_for()
    order.refresh_from_db()
    assert order.status == Order.Status.SCHEDULED
    appointment = order.appointments.get()
    assert f"{timezone.localtime(appointment.starts_at):%H:%M}" == slot_time
    block = page.locator("details.appt", has_text=order.accession_number)
    assert block.count() == 1
    assert not has_horizontal_overflow(page)
    screenshot(page, "front-desk-day-view")

    # The calendar opened scrolled to the new block, its actions showing.
    assert block.evaluate("b => b.open")
    assert block.locator("summary").is_visible()
    in_view = block.evaluate(
        "b => { const r = b.getBoundingClientRect(), w = b.closest('.cal-wrap')"
        ".getBoundingClientRect(); return r.top >= w.top && r.top < w.bottom; }"
    )
    assert in_view, "the day view scrolled to the booked block"

    # Check in from the block.
    block.get_by_role("button", name="Check in").click()
    page.get_by_text(f"{patient.display_name} checked in").wait_for()
    order.refresh_from_db()
    assert order.status == Order.Status.ARRIVED
    assert page.console_errors == []  # type: ignore[attr-defined]

    # The CT room asks for its worklist, as the modality would.
    out = tmp_path / "mwl"
    out.mkdir()
    today = timezone.localdate().strftime("%Y%m%d")
    result = scu(
        "findscu",
        listener,
        "CT_ROOM1",
        "-W",
        "-X",
        "-od",
        str(out),
        "-k",
        f"{STEP}.ScheduledStationAETitle=CT_ROOM1",
        "-k",
        f"{STEP}.ScheduledProcedureStepStartDate={today}",
        "-k",
        f"{STEP}.ScheduledProcedureStepStartTime",
        "-k",
        f"{STEP}.Modality=CT",
        "-k",
        "PatientName",
        "-k",
        "PatientID",
        "-k",
        "AccessionNumber",
        "-k",
        "StudyInstanceUID",
    )
    assert result.returncode == 0, result.stderr
    answers = [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]
    assert [(str(a.PatientName), a.PatientID, a.AccessionNumber) for a in answers] == [
        ("Ōtake^Hana", "DESK001", order.accession_number)
    ]
    assert answers[0].StudyInstanceUID == order.study_instance_uid
    step = answers[0].ScheduledProcedureStepSequence[0]
    assert step.ScheduledProcedureStepStartTime.startswith(slot_time.replace(":", ""))
