"""Modality Performed Procedure Step: a pynetdicom MPPS SCU reports an exam as a modality
does (N-CREATE IN PROGRESS, N-SET COMPLETED or DISCONTINUED) and the exam moves."""

from collections.abc import Iterator

import pytest
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep

from ris import services
from ris.models import Order, PerformedProcedureStep
from tests.factories import PatientFactory, ProcedureFactory, RoomFactory, order_for

pytestmark = [
    pytest.mark.interop,
    # MPPS reads no image file: one image store is enough.
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]

S = Order.Status


@pytest.fixture
def booked(listener) -> Order:
    facility = listener.facility
    room = RoomFactory(facility=facility, modality="CT", ae_title="CT_ROOM1")
    patient = PatientFactory(facility=facility, mrn="MRN7", family_name="Okafor")
    order = order_for(patient, procedure=ProcedureFactory(facility=facility, modality="CT"))
    services.appointment_book(order=order, room=room, starts_at=timezone.now())
    return order


@pytest.fixture
def modality(listener, booked) -> Iterator:
    """An association from the CT room's modality (known once its room exists),
    proposing the MPPS SOP class."""
    ae = AE(ae_title="CT_ROOM1")
    ae.add_requested_context(ModalityPerformedProcedureStep)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    yield assoc
    assoc.release()


def in_progress(order: Order) -> Dataset:
    """The N-CREATE attributes a modality sends when it starts the exam (PS3.4 F.7.2.1)."""
    scheduled = Dataset()
    scheduled.StudyInstanceUID = order.study_instance_uid
    scheduled.AccessionNumber = order.accession_number
    scheduled.RequestedProcedureID = order.accession_number
    scheduled.ScheduledProcedureStepID = "1"
    ds = Dataset()
    ds.ScheduledStepAttributesSequence = Sequence([scheduled])
    ds.PatientName = order.patient.dicom_name
    ds.PatientID = order.patient.mrn
    ds.PerformedStationAETitle = "CT_ROOM1"
    ds.PerformedProcedureStepStartDate = "20261123"
    ds.PerformedProcedureStepStartTime = "101500"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = Sequence([])
    return ds


def test_in_progress_then_completed_moves_the_exam_and_keeps_the_step(modality, booked):
    uid = generate_uid()
    status, _ = modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    booked.refresh_from_db()
    assert booked.status == S.IN_PROGRESS
    steps = list(booked.status_changes.values_list("to_status", "actor", "door"))
    assert steps[-2:] == [(S.ARRIVED, "CT_ROOM1", "dimse"), (S.IN_PROGRESS, "CT_ROOM1", "dimse")]

    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    done.PerformedProcedureStepEndDate = "20261123"
    done.PerformedProcedureStepEndTime = "103000"
    status, _ = modality.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    booked.refresh_from_db()
    assert booked.status == S.COMPLETED
    step = PerformedProcedureStep.objects.get(sop_instance_uid=uid)
    assert (step.order, step.status, step.station_ae_title) == (booked, "COMPLETED", "CT_ROOM1")
    kept = Dataset.from_json(step.attributes)
    assert (kept.PerformedProcedureStepID, kept.PerformedProcedureStepEndTime) == (
        "PPS1",
        "103000",
    )


def test_a_completed_step_may_no_longer_be_updated(modality, booked):
    uid = generate_uid()
    modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    modality.send_n_set(done, ModalityPerformedProcedureStep, uid)
    again = Dataset()
    again.PerformedProcedureStepStatus = "DISCONTINUED"
    status, _ = modality.send_n_set(again, ModalityPerformedProcedureStep, uid)
    assert (status.Status, status.ErrorID) == (0x0110, 0xA710)
    assert "may no longer be updated" in status.ErrorComment


def test_a_discontinued_step_puts_the_exam_back_with_the_reason(modality, booked):
    uid = generate_uid()
    modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    reason = Dataset()
    reason.CodeValue = "110514"
    reason.CodingSchemeDesignator = "DCM"
    reason.CodeMeaning = "Incorrect worklist entry selected"
    stop = Dataset()
    stop.PerformedProcedureStepStatus = "DISCONTINUED"
    stop.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence([reason])
    status, _ = modality.send_n_set(stop, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    booked.refresh_from_db()
    assert booked.status == S.ARRIVED
    last = booked.status_changes.last()
    assert last.reason == "MPPS discontinued: Incorrect worklist entry selected"


def test_bad_requests_get_the_right_status_and_a_reason(modality, booked):
    uid = generate_uid()
    wrong = in_progress(booked)
    wrong.PerformedProcedureStepStatus = "COMPLETED"
    status, _ = modality.send_n_create(wrong, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0106 and "created IN PROGRESS" in status.ErrorComment

    status, _ = modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    status, _ = modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0111

    done = Dataset()
    done.PerformedProcedureStepStatus = "FINISHED"
    status, _ = modality.send_n_set(done, ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0106 and "FINISHED" in status.ErrorComment
    status, _ = modality.send_n_set(done, ModalityPerformedProcedureStep, generate_uid())
    assert status.Status == 0x0112


def test_a_step_for_a_cancelled_exam_is_kept_and_the_exam_stays_cancelled(modality, booked):
    services.order_status_set(order=booked, status=S.CANCELLED, reason="duplicate order")
    uid = generate_uid()
    status, _ = modality.send_n_create(in_progress(booked), ModalityPerformedProcedureStep, uid)
    assert status.Status == 0x0000
    booked.refresh_from_db()
    assert booked.status == S.CANCELLED
    assert PerformedProcedureStep.objects.get(sop_instance_uid=uid).order == booked
