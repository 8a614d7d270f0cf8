"""RIS business operations. Every write to patients, orders and appointments goes here."""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone
from pydicom.uid import generate_uid

from accounts import audit
from accounts.models import Facility, User
from pacs.dicom.vocabulary import UID_ROOT
from ris.models import (
    EXAM_TRANSITIONS,
    Appointment,
    Order,
    OrderStatusChange,
    Patient,
    Procedure,
    Room,
)


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
    """Book an order on a room; the scheduling issue adds slot search and overlap rules."""
    if room.facility_id != order.facility_id:
        raise RisError("The room is not in the order's facility.")
    if order.status not in (Order.Status.REQUESTED, Order.Status.SCHEDULED):
        raise RisError(f"An order that is {order.get_status_display().lower()} cannot be booked.")
    ends_at = starts_at + dt.timedelta(minutes=order.procedure.duration_minutes)
    appointment = Appointment.objects.create(
        facility=order.facility, order=order, room=room, starts_at=starts_at, ends_at=ends_at
    )
    audit.record(action=audit.Action.CREATE, obj=appointment, user=actor, door=door)
    order_status_set(order=order, status=Order.Status.SCHEDULED, actor=actor, door=door)
    return appointment


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
