"""RIS business operations. Every write to patients, orders and appointments goes here."""

from __future__ import annotations

import datetime as dt
import logging
import re

from django.db import IntegrityError, transaction
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from accounts import audit
from accounts.models import Facility, User
from pacs.dicom.vocabulary import UID_ROOT
from ris import scheduling
from ris.models import (
    EXAM_TRANSITIONS,
    Appointment,
    Order,
    OrderStatusChange,
    Patient,
    PerformedProcedureStep,
    Procedure,
    Room,
)

logger = logging.getLogger(__name__)


class RisError(Exception):
    """A request the RIS refuses; the message is safe to show to the user."""


@transaction.atomic
def patient_create(
    *,
    facility: Facility,
    mrn: str,
    family_name: str,
    given_name: str = "",
    middle_name: str = "",
    name_prefix: str = "",
    name_suffix: str = "",
    birth_date: dt.date | None = None,
    sex: str = Patient.Sex.UNKNOWN,
    mrn_issuer: str = "",
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Patient:
    issuer = mrn_issuer or facility.mrn_issuer
    if Patient.objects.filter(facility=facility, mrn_issuer=issuer, mrn=mrn).exists():
        raise RisError(f"A patient with MRN {mrn} ({issuer}) is already registered here.")
    patient = Patient.objects.create(
        facility=facility,
        mrn=mrn,
        mrn_issuer=issuer,
        family_name=family_name,
        given_name=given_name,
        middle_name=middle_name,
        name_prefix=name_prefix,
        name_suffix=name_suffix,
        birth_date=birth_date,
        sex=sex,
    )
    audit.record(action=audit.Action.CREATE, obj=patient, user=actor, door=door)
    return patient


ICD10_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$")


def icd10_codes_clean(codes: str) -> str:
    """ICD-10(-CM) codes as "R51.9, S06.0X0A": upper-cased, comma separated, each checked
    for shape (letter, digit, digit or letter, then up to four more), so billing can use them."""
    cleaned = [code.strip().upper() for code in codes.replace(";", ",").split(",") if code.strip()]
    bad = [code for code in cleaned if not ICD10_CODE.match(code)]
    if bad:
        raise RisError(f"Not an ICD-10 code: {', '.join(bad)}.")
    return ", ".join(cleaned)


def accession_number_next(facility: Facility) -> str:
    """The facility's next accession number, e.g. NORTH0000042; call inside a transaction.

    The counter row is locked, so two clerks never get the same number; DICOM SH
    allows 16 characters, which the 8-character facility code leaves room for.
    """
    locked = Facility.objects.select_for_update().get(pk=facility.pk)
    locked.accession_counter += 1
    locked.save(update_fields=["accession_counter"])
    return f"{locked.code.upper()}{locked.accession_counter:07d}"


@transaction.atomic
def order_create(
    *,
    patient: Patient,
    procedure: Procedure,
    priority: str = Order.Priority.ROUTINE,
    placer_order_number: str = "",
    referring_physician: User | None = None,
    referring_physician_name: str = "",
    reason: str = "",
    diagnosis_codes: str = "",
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Order:
    if procedure.facility_id != patient.facility_id:
        raise RisError("The procedure is not in the patient's facility catalogue.")
    if not procedure.is_active:
        raise RisError(f"{procedure.code} {procedure.name} is no longer offered.")
    diagnosis_codes = icd10_codes_clean(diagnosis_codes)
    if (
        placer_order_number
        and Order.objects.filter(
            facility=patient.facility, placer_order_number=placer_order_number
        ).exists()
    ):
        raise RisError(f"Placer order number {placer_order_number} is already used here.")
    order = Order.objects.create(
        facility=patient.facility,
        patient=patient,
        procedure=procedure,
        accession_number=accession_number_next(patient.facility),
        study_instance_uid=generate_uid(prefix=UID_ROOT),
        placer_order_number=placer_order_number,
        priority=priority,
        referring_physician=referring_physician,
        referring_physician_name=referring_physician_name,
        reason=reason,
        diagnosis_codes=diagnosis_codes,
    )
    audit.record(action=audit.Action.CREATE, obj=order, user=actor, door=door)
    return order


@transaction.atomic
def appointment_book(
    *,
    order: Order,
    room: Room,
    starts_at: dt.datetime,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Appointment:
    """Book an order on a room: inside the room's opening hours, never over another booking."""
    if order.status not in (Order.Status.REQUESTED, Order.Status.SCHEDULED):
        raise RisError(f"An order that is {order.get_status_display().lower()} cannot be booked.")
    appointment = _room_take(order=order, room=room, starts_at=starts_at)
    audit.record(action=audit.Action.CREATE, obj=appointment, user=actor, door=door)
    order_status_set(order=order, status=Order.Status.SCHEDULED, actor=actor, door=door)
    return appointment


@transaction.atomic
def appointment_move(
    *,
    appointment: Appointment,
    room: Room,
    starts_at: dt.datetime,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
    reason: str = "",
) -> Appointment:
    """Move an exam to another time or room. The old appointment stays, cancelled, and the
    new one points to it, so the history shows where the patient was expected before."""
    order = appointment.order
    if order.status not in (Order.Status.SCHEDULED, Order.Status.NO_SHOW, Order.Status.ARRIVED):
        raise RisError(f"An exam that is {order.get_status_display().lower()} cannot be moved.")
    # Lock both rooms in one order, so two clerks moving exams between the same two rooms
    # in opposite directions queue instead of deadlocking.
    list(
        Room.objects.select_for_update()
        .filter(pk__in={room.pk, appointment.room_id})
        .order_by("pk")
    )
    old = Appointment.objects.select_for_update().get(pk=appointment.pk)
    if old.is_cancelled:
        raise RisError("This appointment was cancelled; book the exam again instead.")
    local = timezone.localtime(starts_at)
    _appointment_cancelled(
        old,
        reason=f"moved to {room.name} {local:%Y-%m-%d %H:%M}" + (f": {reason}" if reason else ""),
    )
    moved = _room_take(order=order, room=room, starts_at=starts_at, moved_from=old)
    audit.record(
        action=audit.Action.UPDATE,
        obj=moved,
        user=actor,
        door=door,
        detail={"moved_from": old.pk, **({"reason": reason} if reason else {})},
    )
    if order.status == Order.Status.NO_SHOW:
        order_status_set(
            order=order, status=Order.Status.SCHEDULED, actor=actor, door=door, reason="rebooked"
        )
    return moved


@transaction.atomic
def appointment_cancel(
    *,
    appointment: Appointment,
    reason: str,
    cancel_exam: bool = False,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Appointment:
    """Cancel an appointment. The exam goes back to requested, to be booked again, unless
    `cancel_exam` cancels it too (the patient or the referrer no longer wants it)."""
    reason = reason.strip()
    if not reason:
        raise RisError("Give a reason for the cancellation.")
    locked = Appointment.objects.select_for_update().select_related("order").get(pk=appointment.pk)
    if locked.is_cancelled:
        raise RisError("This appointment is already cancelled.")
    order = locked.order
    if not cancel_exam and order.status != Order.Status.SCHEDULED:
        raise RisError(
            f"The exam is {order.get_status_display().lower()}: cancel the exam, "
            "not only its appointment."
        )
    _appointment_cancelled(locked, reason=reason)
    audit.record(
        action=audit.Action.UPDATE,
        obj=locked,
        user=actor,
        door=door,
        detail={"cancelled": True, "reason": reason},
    )
    status = Order.Status.CANCELLED if cancel_exam else Order.Status.REQUESTED
    order_status_set(order=order, status=status, actor=actor, door=door, reason=reason)
    appointment.is_cancelled = True
    return locked


@transaction.atomic
def walk_in(
    *,
    order: Order,
    room: Room | None = None,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
    now: dt.datetime | None = None,
) -> Appointment:
    """The patient is here without an appointment: put the exam in the first room that is
    free now (or `room`), regardless of opening hours, and mark the patient arrived."""
    if order.status != Order.Status.REQUESTED:
        raise RisError(
            f"An exam that is {order.get_status_display().lower()} cannot be a walk-in; "
            "check the patient in on its appointment instead."
        )
    rooms = [room] if room is not None else scheduling.rooms_for(order.procedure)
    if not rooms:
        raise RisError(f"No room can perform {order.procedure.name}.")
    duration = dt.timedelta(minutes=order.procedure.duration_minutes)
    list(Room.objects.select_for_update().filter(pk__in=[r.pk for r in rooms]).order_by("pk"))
    now = now or timezone.now()
    best: tuple[dt.datetime, str, Room] | None = None
    for candidate in rooms:
        start = scheduling.earliest_free(candidate, duration, not_before=now)
        if start is not None and (best is None or (start, candidate.name) < best[:2]):
            best = (start, candidate.name, candidate)
    if best is None:
        names = ", ".join(r.name for r in rooms)
        raise RisError(f"No time left today in {names} for {order.procedure.name}.")
    appointment = _room_take(
        order=order, room=best[2], starts_at=best[0], opening_hours=False, is_walk_in=True
    )
    audit.record(
        action=audit.Action.CREATE, obj=appointment, user=actor, door=door, detail={"walk_in": True}
    )
    order_status_set(
        order=order, status=Order.Status.ARRIVED, actor=actor, door=door, reason="walk-in"
    )
    return appointment


def _room_take(
    *,
    order: Order,
    room: Room,
    starts_at: dt.datetime,
    opening_hours: bool = True,
    **fields: object,
) -> Appointment:
    """The one place an appointment row is written: the room is locked, then checked free
    (and open, unless `opening_hours` is off for a walk-in); call inside a transaction."""
    if room.facility_id != order.facility_id:
        raise RisError("The room is not in the order's facility.")
    if not room.is_active:
        raise RisError(f"{room.name} is out of use.")
    ends_at = starts_at + dt.timedelta(minutes=order.procedure.duration_minutes)
    # Bookings of one room queue on its row: the overlap check below then sees every
    # booking committed before it. PostgreSQL's exclusion constraint is the backstop.
    Room.objects.select_for_update().filter(pk=room.pk).first()
    clash = (
        Appointment.objects.filter(
            room=room, is_cancelled=False, starts_at__lt=ends_at, ends_at__gt=starts_at
        )
        .select_related("order")
        .first()
    )
    if clash is not None:
        raise RisError(_booked_message(room, clash))
    local = timezone.localtime(starts_at)
    if opening_hours and scheduling.has_hours(room):
        if not scheduling.fits_opening(room, starts_at, ends_at):
            raise RisError(
                f"{room.name} is not open (or closed for service) at {local:%Y-%m-%d %H:%M} "
                f"for {order.procedure.duration_minutes} minutes."
            )
    elif scheduling.closure_during(room, starts_at, ends_at):
        raise RisError(f"{room.name} is closed for service at {local:%Y-%m-%d %H:%M}.")
    try:
        with transaction.atomic():
            return Appointment.objects.create(
                facility=order.facility,
                order=order,
                room=room,
                starts_at=starts_at,
                ends_at=ends_at,
                **fields,
            )
    except IntegrityError as error:
        if "appointment_no_double_booking" not in str(error):
            raise
        raise RisError(f"{room.name} was booked for that time meanwhile.") from error


def _appointment_cancelled(appointment: Appointment, *, reason: str) -> None:
    appointment.is_cancelled = True
    appointment.cancelled_at = timezone.now()
    appointment.cancel_reason = reason[:200]
    appointment.save(update_fields=["is_cancelled", "cancelled_at", "cancel_reason"])


def _booked_message(room: Room, clash: Appointment) -> str:
    start = timezone.localtime(clash.starts_at)
    end = timezone.localtime(clash.ends_at)
    return (
        f"{room.name} is booked {start:%Y-%m-%d %H:%M} to {end:%H:%M} "
        f"({clash.order.accession_number})."
    )


@transaction.atomic
def order_status_set(
    *,
    order: Order,
    status: str,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
    reason: str = "",
) -> Order:
    """Move the exam to `status` if the lifecycle allows it from where it is now.

    The row is locked, so two doors (a clerk, the modality's MPPS, the HIS) changing the
    same exam at once apply one after the other, each checked against the other's result.
    """
    current = Order.objects.select_for_update().only("status").get(pk=order.pk).status
    if status == current:
        order.status = current
        return order
    allowed = EXAM_TRANSITIONS.get(current, frozenset())
    if status not in allowed:
        labels = dict(Order.Status.choices)
        options = ", ".join(sorted(labels[s].lower() for s in allowed)) or "nothing: it is closed"
        raise RisError(
            f"An exam that is {labels[current].lower()} cannot become "
            f"{labels.get(status, status).lower()} (it can become: {options})."
        )
    Order.objects.filter(pk=order.pk).update(status=status, updated_at=timezone.now())
    order.status = status
    OrderStatusChange.objects.create(
        order=order,
        from_status=current,
        to_status=status,
        user=actor,
        actor=actor_name[:100],
        door=door,
        reason=reason[:200],
    )
    audit.record(
        action=audit.Action.UPDATE,
        obj=order,
        user=actor,
        actor=actor_name,
        door=door,
        detail={"status": [current, status], **({"reason": reason} if reason else {})},
    )
    return order


# ---- Modality Performed Procedure Step (PS3.4 F.7) -----------------------------------


class MppsError(Exception):
    """An N-CREATE or N-SET refused: `status` is the DIMSE status, the message says why."""

    def __init__(self, status: int, message: str, error_id: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id


# DIMSE statuses (PS3.7 C) and the MPPS-specific error ID (PS3.4 F.7.2.2.4).
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MAY_NO_LONGER_BE_UPDATED = 0xA710

_MPPS = PerformedProcedureStep.Status


def _mpps_status(attributes: Dataset, *, required: bool) -> str | None:
    value = str(attributes.get("PerformedProcedureStepStatus", "") or "").strip()
    if not value:
        if required:
            raise MppsError(MISSING_ATTRIBUTE, "Performed Procedure Step Status is missing")
        return None
    if value not in _MPPS.values:
        raise MppsError(
            INVALID_ATTRIBUTE_VALUE,
            f"status {value!r}: not IN PROGRESS, COMPLETED or DISCONTINUED",
        )
    return value


def _performed_order(attributes: Dataset, facility: Facility) -> Order | None:
    """The exam the step performs: by accession number, else the worklist's Study UID."""
    for item in attributes.get("ScheduledStepAttributesSequence") or []:
        accession = str(item.get("AccessionNumber", "") or "").strip()
        study_uid = str(item.get("StudyInstanceUID", "") or "").strip()
        orders = Order.objects.filter(facility=facility)
        order = (accession and orders.filter(accession_number=accession).first()) or (
            study_uid and orders.filter(study_instance_uid=study_uid).first()
        )
        if order:
            return order
    return None


def _move_exam(order: Order, steps: tuple[str, ...], *, station: str, reason: str) -> None:
    """Walk the exam through `steps`; a step the lifecycle refuses (the exam was cancelled
    meanwhile, say) leaves the exam where it is: the step itself is kept regardless."""
    for status in steps:
        try:
            order_status_set(
                order=order, status=status, actor_name=station, door=audit.Door.DIMSE, reason=reason
            )
        except RisError as refusal:
            logger.warning("MPPS from %s for %s: %s", station, order.accession_number, refusal)
            return


@transaction.atomic
def mpps_create(
    *, facility: Facility, station_ae_title: str, sop_instance_uid: str, attributes: Dataset
) -> PerformedProcedureStep:
    """N-CREATE: the modality started an exam (status IN PROGRESS, PS3.4 F.7.2.1)."""
    status = _mpps_status(attributes, required=True)
    if status != _MPPS.IN_PROGRESS:
        raise MppsError(
            INVALID_ATTRIBUTE_VALUE, "a performed procedure step is created IN PROGRESS"
        )
    if PerformedProcedureStep.objects.filter(sop_instance_uid=sop_instance_uid).exists():
        raise MppsError(DUPLICATE_SOP_INSTANCE, "a step with this SOP Instance UID exists")
    order = _performed_order(attributes, facility)
    step = PerformedProcedureStep.objects.create(
        facility=facility,
        order=order,
        sop_instance_uid=sop_instance_uid,
        status=status,
        station_ae_title=station_ae_title[:16],
        attributes=attributes.to_json_dict(),
    )
    if order is not None and order.status in (Order.Status.SCHEDULED, Order.Status.REQUESTED):
        # Started without a check-in at the desk: the patient is evidently there.
        _move_exam(order, (Order.Status.ARRIVED,), station=station_ae_title, reason="MPPS")
    if order is not None:
        _move_exam(order, (Order.Status.IN_PROGRESS,), station=station_ae_title, reason="MPPS")
    audit.record(
        action=audit.Action.CREATE,
        obj=step,
        actor=station_ae_title,
        door=audit.Door.DIMSE,
        facility=facility,
        detail={"status": status, "order": order.accession_number if order else None},
    )
    return step


@transaction.atomic
def mpps_set(
    *, facility: Facility, station_ae_title: str, sop_instance_uid: str, changes: Dataset
) -> PerformedProcedureStep:
    """N-SET: more attributes, and finally COMPLETED or DISCONTINUED (PS3.4 F.7.2.2)."""
    step = (
        PerformedProcedureStep.objects.select_for_update()
        .filter(sop_instance_uid=sop_instance_uid, facility=facility)
        .first()
    )
    if step is None:
        raise MppsError(NO_SUCH_OBJECT_INSTANCE, "no performed procedure step with this UID")
    if step.status != _MPPS.IN_PROGRESS:
        raise MppsError(
            PROCESSING_FAILURE,
            f"the step is {step.status} and may no longer be updated",
            MAY_NO_LONGER_BE_UPDATED,
        )
    status = _mpps_status(changes, required=False) or step.status
    merged = Dataset.from_json(step.attributes)
    for element in changes:
        merged[element.tag] = element
    step.status = status
    step.attributes = merged.to_json_dict()
    step.save(update_fields=["status", "attributes", "updated_at"])
    order = step.order
    if order is not None and status == _MPPS.COMPLETED:
        _move_exam(order, (Order.Status.COMPLETED,), station=station_ae_title, reason="MPPS")
    if order is not None and status == _MPPS.DISCONTINUED:
        reason = "MPPS discontinued"
        for code in changes.get("PerformedProcedureStepDiscontinuationReasonCodeSequence") or []:
            reason = f"MPPS discontinued: {code.get('CodeMeaning', '')}".rstrip(": ")
        _move_exam(order, (Order.Status.ARRIVED,), station=station_ae_title, reason=reason)
    audit.record(
        action=audit.Action.UPDATE,
        obj=step,
        actor=station_ae_title,
        door=audit.Door.DIMSE,
        facility=facility,
        detail={"status": status},
    )
    return step
