"""Modality Worklist C-FIND, queried by dcmtk's `findscu -W` as a modality would."""

import datetime as dt
import time
from pathlib import Path

import pytest
from django.utils import timezone
from pydicom import dcmread

from accounts.models import AuditEvent
from ris import services
from ris.models import Order
from tests.factories import (
    FacilityFactory,
    PatientFactory,
    ProcedureFactory,
    RoomFactory,
    order_for,
)
from tests.interop.conftest import scu

pytestmark = [
    pytest.mark.interop,
    # The worklist reads no image file: one image store is enough.
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]


def at(day: dt.date, hour: int) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, 0)))


@pytest.fixture
def schedule(listener):
    """Today: a CT exam and an MR exam booked, a CT exam in progress, a cancelled CT
    appointment; tomorrow a CT exam; another facility's CT exam today."""
    facility = listener.facility
    today = timezone.localdate()
    ct_room = RoomFactory(facility=facility, name="CT 1", modality="CT", ae_title="CT_ROOM1")
    mr_room = RoomFactory(facility=facility, name="MR 1", modality="MR", ae_title="MR_ROOM1")
    ct_head = ProcedureFactory(facility=facility, code="70450", name="CT head", modality="CT")
    mr_knee = ProcedureFactory(facility=facility, code="73721", name="MR knee", modality="MR")

    def booked(family: str, procedure, room, starts: dt.datetime, **order) -> Order:
        patient = PatientFactory(facility=facility, family_name=family, given_name="Ana")
        exam = order_for(patient, procedure=procedure, **order)
        services.appointment_book(order=exam, room=room, starts_at=starts)
        return exam

    exams = {
        "ct": booked("Núñez", ct_head, ct_room, at(today, 9), priority=Order.Priority.STAT),
        "mr": booked("Okafor", mr_knee, mr_room, at(today, 10)),
        "started": booked("Garcia", ct_head, ct_room, at(today, 11)),
        "cancelled": booked("Lee", ct_head, ct_room, at(today, 12)),
        "tomorrow": booked("Smith", ct_head, ct_room, at(today + dt.timedelta(days=1), 9)),
    }
    for status in (Order.Status.ARRIVED, Order.Status.IN_PROGRESS):
        services.order_status_set(order=exams["started"], status=status)
    exams["cancelled"].appointments.update(is_cancelled=True)
    elsewhere = FacilityFactory(code="SOUTH")
    other_room = RoomFactory(facility=elsewhere, modality="CT", ae_title="CT_SOUTH")
    patient = PatientFactory(facility=elsewhere, family_name="Elsewhere")
    other = order_for(patient, procedure=ProcedureFactory(facility=elsewhere))
    services.appointment_book(order=other, room=other_room, starts_at=at(today, 9))
    return {"listener": listener, "today": today.strftime("%Y%m%d"), **exams}


def worklist(listener, tmp_path: Path, calling_ae: str, *keys: str):
    out = tmp_path / f"mwl-{time.monotonic_ns()}"
    out.mkdir()
    options = ["-v", "-W", "-X", "-od", str(out)]
    for key in keys:
        options += ["-k", key]
    result = scu("findscu", listener, calling_ae, *options)
    return result, [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


STEP = "ScheduledProcedureStepSequence[0]"


def test_a_modality_gets_todays_steps_for_its_station_with_what_it_asked(schedule, tmp_path):
    result, responses = worklist(
        schedule["listener"],
        tmp_path,
        "CT_ROOM1",
        f"{STEP}.ScheduledStationAETitle=CT_ROOM1",
        f"{STEP}.ScheduledProcedureStepStartDate={schedule['today']}",
        f"{STEP}.ScheduledProcedureStepStartTime",
        f"{STEP}.Modality=CT",
        f"{STEP}.ScheduledProcedureStepDescription",
        f"{STEP}.ScheduledProcedureStepID",
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "AccessionNumber",
        "StudyInstanceUID",
        "RequestedProcedureID",
        "RequestedProcedureDescription",
        "RequestedProcedurePriority",
    )
    assert result.returncode == 0, result.stderr
    assert len(responses) == 1, [r.PatientName for r in responses]
    answer = responses[0]
    exam = schedule["ct"]
    assert str(answer.PatientName) == "Núñez^Ana"
    assert answer.PatientID == exam.patient.mrn
    assert answer.PatientBirthDate == exam.patient.birth_date.strftime("%Y%m%d")
    assert answer.AccessionNumber == exam.accession_number
    assert answer.RequestedProcedureID == exam.accession_number
    assert answer.StudyInstanceUID == exam.study_instance_uid != ""
    assert answer.RequestedProcedureDescription == "CT head"
    assert answer.RequestedProcedurePriority == "STAT"
    step = answer.ScheduledProcedureStepSequence[0]
    assert (step.ScheduledStationAETitle, step.Modality) == ("CT_ROOM1", "CT")
    assert step.ScheduledProcedureStepStartDate == schedule["today"]
    assert step.ScheduledProcedureStepStartTime == "090000"
    assert step.ScheduledProcedureStepDescription == "CT head"
    assert step.ScheduledProcedureStepID == str(exam.appointments.get().pk)
    assert "ReasonForTheRequestedProcedure" not in answer, "only the keys asked for"
    event = AuditEvent.objects.get(object_type="appointment", action=AuditEvent.Action.LIST)
    assert (event.actor, event.door, event.detail["matches"]) == ("CT_ROOM1", "dimse", 1)


def test_worklist_matching_by_date_range_modality_and_name(schedule, tmp_path):
    listener, today = schedule["listener"], schedule["today"]
    tomorrow = (timezone.localdate() + dt.timedelta(days=1)).strftime("%Y%m%d")

    def names(*keys: str) -> list[str]:
        result, responses = worklist(listener, tmp_path, "CT_ROOM1", "PatientName", *keys)
        assert result.returncode == 0, result.stderr
        return sorted(str(r.PatientName).split("^")[0] for r in responses)

    assert names(f"{STEP}.ScheduledProcedureStepStartDate={today}-{tomorrow}") == [
        "Núñez",
        "Okafor",
        "Smith",
    ], "in progress and cancelled steps are not on the worklist"
    assert names(f"{STEP}.Modality=MR") == ["Okafor"]
    assert names(f"{STEP}.ScheduledStationAETitle=CT_*") == ["Núñez", "Smith"]
    assert names(f"{STEP}.ScheduledProcedureStepStartDate={tomorrow}-") == ["Smith"]
    assert names("PatientName=oka*") == ["Okafor"]
    assert names(f"AccessionNumber={schedule['mr'].accession_number}") == ["Okafor"]
    assert "Elsewhere" not in names(), "another facility's schedule never shows"


def test_a_bad_date_gets_a_failure_status_with_the_reason(schedule, tmp_path):
    result, responses = worklist(
        schedule["listener"],
        tmp_path,
        "CT_ROOM1",
        f"{STEP}.ScheduledProcedureStepStartDate=2026-11-23",
    )
    assert responses == []
    output = result.stdout + result.stderr
    assert "Error: DataSetDoesNotMatchSOPClass" in output, output  # 0xA900


def test_an_unknown_station_is_refused(schedule, tmp_path):
    result, responses = worklist(schedule["listener"], tmp_path, "STRANGER", "PatientName")
    assert responses == []
    assert result.returncode != 0
