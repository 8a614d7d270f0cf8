"""RIS business operations. Every write to patients, orders and appointments goes here."""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from django.db import IntegrityError, models, transaction
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from accounts import audit
from accounts.models import Facility, User
from billing import services as billing
from config import plain_sql
from pacs.dicom.vocabulary import UID_ROOT
from pacs.models import Study
from ris import scheduling, selectors
from ris.hl7 import outbox
from ris.models import (
    EXAM_TRANSITIONS,
    LONGEST_APPOINTMENT,
    Appointment,
    Order,
    OrderStatusChange,
    Patient,
    PatientContact,
    PatientIdentifier,
    PatientInsurance,
    PatientMerge,
    PerformedProcedureStep,
    Procedure,
    Room,
    RoomClosure,
    RoomHours,
    Visit,
    overlapping,
)

logger = logging.getLogger(__name__)


class RisError(Exception):
    """A request the RIS refuses; the message is safe to show to the user."""


# ---- Patient registry -----------------------------------------------------------------

# What a registration or an update (page, API, HL7 A08) may set on the patient row. The
# MRN and facility are the record's identity: they change only by a merge.
PATIENT_DETAIL_FIELDS = (
    "family_name",
    "given_name",
    "middle_name",
    "name_prefix",
    "name_suffix",
    "birth_date",
    "sex",
    "address_street",
    "address_other",
    "address_city",
    "address_state",
    "address_postal_code",
    "address_country",
    "home_phone",
    "mobile_phone",
    "email",
)
CONTACT_FIELDS = ("role", "family_name", "given_name", "relationship", "phone", "email")
INSURANCE_FIELDS = (
    "payer",
    "member_id",
    "group_number",
    "subscriber_name",
    "relationship_to_subscriber",
    "rank",
    "valid_from",
    "valid_until",
)

Row = Mapping[str, Any]


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
    address_street: str = "",
    address_other: str = "",
    address_city: str = "",
    address_state: str = "",
    address_postal_code: str = "",
    address_country: str = "",
    home_phone: str = "",
    mobile_phone: str = "",
    email: str = "",
    identifiers: Sequence[Row] = (),
    contacts: Sequence[Row] = (),
    insurance: Sequence[Row] = (),
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
    mrn_checked: bool = False,
) -> Patient:
    """Register a patient with their other identifiers, contacts and insurance.

    Whether the person is already registered under another MRN is the door's question
    (`selectors.possible_duplicates`): only the door can ask the user. `mrn_checked`:
    the caller has just found no record holding the MRN, in this transaction (the HL7
    upsert), so it is not looked up again; the unique constraint still refuses a record
    registered meanwhile.
    """
    issuer = mrn_issuer or facility.mrn_issuer
    holder = (
        None
        if mrn_checked
        else selectors.patient_holding(facility=facility, value=mrn, issuer=issuer)
    )
    if holder is not None and (holder.mrn_issuer, holder.mrn) == (issuer, mrn):
        raise RisError(f"A patient with MRN {mrn} ({issuer}) is already registered here.")
    if holder is not None:
        raise RisError(f"MRN {mrn} ({issuer}) is already an identifier of {holder}.")
    patient = Patient(
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
        address_street=address_street,
        address_other=address_other,
        address_city=address_city,
        address_state=address_state,
        address_postal_code=address_postal_code,
        address_country=address_country,
        home_phone=home_phone,
        mobile_phone=mobile_phone,
        email=email,
    )
    plain_sql.insert(patient)  # registrations come by the thousand from an HIS
    detail = _patient_lists_replace(
        patient, identifiers=identifiers, contacts=contacts, insurance=insurance, new=True
    )
    audit.record(
        action=audit.Action.CREATE,
        obj=patient,
        user=actor,
        actor=actor_name,
        door=door,
        detail=detail,
    )
    return patient


def patient_update(
    *,
    patient: Patient,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
    identifiers: Sequence[Row] | None = None,
    contacts: Sequence[Row] | None = None,
    insurance: Sequence[Row] | None = None,
    already_locked: bool = False,
    write_later: Callable[[Patient, list[str]], None] | None = None,
    **fields: Any,
) -> Patient:
    """Change demographics (any of PATIENT_DETAIL_FIELDS) and, when given, replace the
    lists of identifiers, contacts and insurance; the audit row says what changed, old
    and new. A merged record is closed: its survivor is the one to edit.
    `already_locked`: the caller read `patient` under a row lock in this transaction
    (`selectors.patient_holding(lock=True)`), so it is not read again, and undoes this
    change if it fails (no savepoint of its own: an HL7 handler runs in one).
    `write_later`: the changed columns are handed to it (the instance and their names)
    instead of being written now: an HL7 worker's batch writes them together."""
    unknown = set(fields) - set(PATIENT_DETAIL_FIELDS)
    if unknown:
        raise ValueError(f"patient_update cannot set {', '.join(sorted(unknown))}")
    with transaction.atomic(savepoint=not already_locked):
        locked = (
            patient if already_locked else Patient.objects.select_for_update().get(pk=patient.pk)
        )
        if locked.merged_into_id is not None:
            survivor = Patient.objects.get(pk=locked.merged_into_id)
            raise RisError(f"This record was merged into {survivor}: edit that one instead.")
        changed: dict[str, list[Any]] = {}
        for name, value in fields.items():
            old = getattr(locked, name)
            if old != value:
                changed[name] = [_jsonable(old), _jsonable(value)]
                setattr(locked, name, value)
        if changed and write_later is not None:
            write_later(locked, [*changed, "updated_at"])
        elif changed:
            plain_sql.update(locked, [*changed, "updated_at"])  # saved once per HL7 update
        detail: dict[str, Any] = {"changed": changed} if changed else {}
        detail |= _patient_lists_replace(
            locked, identifiers=identifiers, contacts=contacts, insurance=insurance
        )
        if detail:
            audit.record(
                action=audit.Action.UPDATE,
                obj=locked,
                user=actor,
                actor=actor_name,
                door=door,
                detail=detail,
            )
        return locked


@transaction.atomic
def patient_identifier_add(
    *,
    patient: Patient,
    value: str,
    issuer: str = "",
    type_code: str = PatientIdentifier.Type.MR,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
) -> PatientIdentifier:
    """Give the patient another identifier; one it already holds is returned as it is,
    so a message repeated by the HIS changes nothing."""
    existing = PatientIdentifier.objects.filter(
        facility_id=patient.facility_id, issuer=issuer, value=value, patient=patient
    ).first()
    if existing is not None:
        return existing
    _identifier_check_free(patient, issuer=issuer, value=value)
    identifier = PatientIdentifier.objects.create(
        facility_id=patient.facility_id,
        patient=patient,
        value=value,
        issuer=issuer,
        type_code=type_code,
    )
    audit.record(
        action=audit.Action.UPDATE,
        obj=patient,
        user=actor,
        actor=actor_name,
        door=door,
        detail={"identifiers": {"added": [str(identifier)]}},
    )
    return identifier


@transaction.atomic
def patient_identifier_remove(
    *,
    identifier: PatientIdentifier,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
) -> None:
    patient = identifier.patient
    identifier.delete()
    audit.record(
        action=audit.Action.UPDATE,
        obj=patient,
        user=actor,
        actor=actor_name,
        door=door,
        detail={"identifiers": {"removed": [str(identifier)]}},
    )


@transaction.atomic
def patient_merge(
    *,
    surviving: Patient,
    merged: Patient,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
    reason: str = "",
) -> PatientMerge:
    """Merge a duplicate record into the surviving one (HL7 A40).

    Orders, studies, identifiers, contacts and insurance move to the survivor; the
    duplicate's MRN becomes an identifier of the survivor, so a study or message still
    carrying it finds the right patient. The duplicate stays, closed, pointing at the
    survivor, and the merge is kept as history.
    """
    if surviving.pk == merged.pk:
        raise RisError("A patient cannot be merged into itself.")
    if surviving.facility_id != merged.facility_id:
        raise RisError("Only records of the same facility can be merged.")
    # Lock both in one order, so two merges of the same pair queue instead of deadlocking.
    rows = Patient.objects.select_for_update().filter(pk__in=[surviving.pk, merged.pk])
    locked = {p.pk: p for p in rows.order_by("pk")}
    survivor, duplicate = locked[surviving.pk], locked[merged.pk]
    if duplicate.merged_into_id is not None:
        target = Patient.objects.get(pk=duplicate.merged_into_id)
        raise RisError(f"MRN {duplicate.mrn} was already merged into MRN {target.mrn}.")
    if survivor.merged_into_id is not None:
        target = Patient.objects.get(pk=survivor.merged_into_id)
        raise RisError(
            f"MRN {survivor.mrn} was itself merged into MRN {target.mrn}: "
            "merge into that record instead."
        )
    now = timezone.now()
    summary: dict[str, Any] = {
        "orders": Order.objects.filter(patient=duplicate).update(patient=survivor, updated_at=now),
        # Reports hang off orders, so they move with them; a later model holding its own
        # patient column (report, charge) is moved here too.
        "studies": Study.objects.filter(patient=duplicate).update(patient=survivor),
        "visits": Visit.objects.filter(patient=duplicate).update(patient=survivor),
    }
    PatientIdentifier.objects.filter(
        patient=duplicate, issuer=survivor.mrn_issuer, value=survivor.mrn
    ).delete()
    summary["identifiers"] = PatientIdentifier.objects.filter(patient=duplicate).update(
        patient=survivor
    )
    if not PatientIdentifier.objects.filter(
        facility_id=survivor.facility_id, issuer=duplicate.mrn_issuer, value=duplicate.mrn
    ).exists():
        PatientIdentifier.objects.create(
            facility_id=survivor.facility_id,
            patient=survivor,
            value=duplicate.mrn,
            issuer=duplicate.mrn_issuer,
            type_code=PatientIdentifier.Type.MR,
        )
    summary["contacts"] = PatientContact.objects.filter(patient=duplicate).update(patient=survivor)
    summary |= _insurance_move(duplicate, survivor)
    # Records merged into the duplicate before now live in the survivor too: merged_into
    # always names where a record lives now, the PatientMerge rows keep the path.
    summary["earlier_merges"] = Patient.objects.filter(merged_into=duplicate).update(
        merged_into=survivor
    )
    summary["kept_mrn"] = f"{duplicate.mrn} ({duplicate.mrn_issuer})"
    duplicate.merged_into = survivor
    duplicate.save(update_fields=["merged_into", "updated_at"])
    merge = PatientMerge.objects.create(
        facility_id=survivor.facility_id,
        surviving=survivor,
        merged=duplicate,
        user=actor,
        actor=actor_name[:100],
        door=door,
        reason=reason[:200],
        summary=summary,
    )
    for obj, detail in (
        (survivor, {"absorbed": duplicate.pk, **summary}),
        (duplicate, {"merged_into": survivor.pk}),
    ):
        audit.record(
            action=audit.Action.UPDATE,
            obj=obj,
            user=actor,
            actor=actor_name,
            door=door,
            detail={"merge": detail, **({"reason": reason} if reason else {})},
        )
    merged.merged_into = survivor
    return merge


def _insurance_move(duplicate: Patient, survivor: Patient) -> dict[str, int]:
    """The duplicate's coverage goes after the survivor's (the survivor's primary stays
    primary); a policy the survivor already holds is dropped, not doubled."""
    held = set(survivor.insurance.values_list("payer_id", "member_id"))
    rank = max((r for r in survivor.insurance.values_list("rank", flat=True)), default=0)
    moved = dropped = 0
    for row in duplicate.insurance.order_by("rank", "id"):
        if (row.payer_id, row.member_id) in held:
            row.delete()
            dropped += 1
            continue
        rank += 1
        row.patient, row.rank = survivor, rank
        row.save(update_fields=["patient", "rank"])
        held.add((row.payer_id, row.member_id))
        moved += 1
    return {"insurance": moved, "insurance_already_held": dropped}


def _patient_lists_replace(
    patient: Patient,
    *,
    identifiers: Sequence[Row] | None,
    contacts: Sequence[Row] | None,
    insurance: Sequence[Row] | None,
    new: bool = False,
) -> dict[str, Any]:
    """Replace whichever lists are given; what changed, for the audit row. A `new`
    patient has no rows yet: nothing is read (registrations come by the thousand)."""
    detail: dict[str, Any] = {}
    if identifiers is not None:
        detail["identifiers"] = _identifiers_replace(patient, identifiers, new=new)
    if contacts is not None and (contacts or not new):
        detail["contacts"] = _rows_replace(
            patient, PatientContact, contacts, CONTACT_FIELDS, new=new
        )
    if insurance is not None and (insurance or not new):
        for row in insurance:
            payer = row.get("payer")
            if payer is not None and payer.facility_id != patient.facility_id:
                raise RisError(f"{payer} is not a payer of this facility.")
        detail["insurance"] = _rows_replace(
            patient, PatientInsurance, insurance, INSURANCE_FIELDS, new=new
        )
    return {kind: changes for kind, changes in detail.items() if changes}


def _identifiers_replace(
    patient: Patient, rows: Sequence[Row], *, new: bool = False
) -> dict[str, list[str]]:
    """Identifiers are known by issuer and value (HL7 CX-4 + CX-1): rows that stay keep
    their row, a new type code is updated in place. The MRN itself is not repeated."""
    wanted: dict[tuple[str, str], str] = {}
    for row in rows:
        value, issuer = row["value"].strip(), row.get("issuer", "").strip()
        if value and (issuer, value) != (patient.mrn_issuer, patient.mrn):
            wanted[(issuer, value)] = row.get("type_code") or PatientIdentifier.Type.MR
    if new and not wanted:
        return {}
    existing = {} if new else {(i.issuer, i.value): i for i in patient.identifiers.all()}
    removed = [existing.pop(key) for key in list(existing) if key not in wanted]
    PatientIdentifier.objects.filter(pk__in=[i.pk for i in removed]).delete()
    added: list[str] = []
    for (issuer, value), type_code in wanted.items():
        identifier = existing.get((issuer, value))
        if identifier is not None:
            if identifier.type_code != type_code:
                identifier.type_code = type_code
                identifier.save(update_fields=["type_code"])
            continue
        _identifier_check_free(patient, issuer=issuer, value=value)
        added.append(
            str(
                PatientIdentifier.objects.create(
                    facility_id=patient.facility_id,
                    patient=patient,
                    value=value,
                    issuer=issuer,
                    type_code=type_code,
                )
            )
        )
    changes = {"added": added, "removed": [str(i) for i in removed]}
    return {key: items for key, items in changes.items() if items}


def _identifier_check_free(patient: Patient, *, issuer: str, value: str) -> None:
    """One identifier names one patient of a facility: not another's identifier, nor
    another's MRN (unless that record was merged into this one)."""
    holder = (
        PatientIdentifier.objects.filter(
            facility_id=patient.facility_id, issuer=issuer, value=value
        )
        .exclude(patient=patient)
        .select_related("patient")
        .first()
    )
    if holder is not None:
        raise RisError(f"Identifier {value} ({issuer}) already belongs to {holder.patient}.")
    owner = (
        Patient.objects.filter(facility_id=patient.facility_id, mrn_issuer=issuer, mrn=value)
        .exclude(pk=patient.pk)
        .exclude(merged_into=patient)
        .first()
    )
    if owner is not None:
        raise RisError(f"{value} ({issuer}) is the MRN of {owner}: merge the two records instead.")


def _rows_replace(
    patient: Patient,
    model: type[PatientContact] | type[PatientInsurance],
    rows: Sequence[Row],
    fields: Sequence[str],
    *,
    new: bool = False,
) -> dict[str, list[int]]:
    """Make a patient's list (contacts, insurance) what `rows` says: a row with an `id`
    updates that row, one without is added, and rows not named are removed."""
    existing = {} if new else {obj.pk: obj for obj in model.objects.filter(patient=patient)}
    named = {row["id"] for row in rows if row.get("id")}
    unknown = named - set(existing)
    if unknown:
        raise RisError(f"No such {model._meta.verbose_name} of this patient: {sorted(unknown)}.")
    removed = sorted(set(existing) - named)
    model.objects.filter(pk__in=removed).delete()
    added: list[int] = []
    changed: list[int] = []
    for row in rows:
        values = {name: row[name] for name in fields if name in row}
        obj = existing.get(row.get("id") or 0)
        if obj is None:
            added.append(model.objects.create(patient=patient, **values).pk)
            continue
        differs = [name for name, value in values.items() if getattr(obj, name) != value]
        if differs:
            for name in differs:
                setattr(obj, name, values[name])
            obj.save(update_fields=differs)
            changed.append(obj.pk)
    changes = {"added": added, "changed": changed, "removed": removed}
    return {key: ids for key, ids in changes.items() if ids}


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


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
    actor_name: str = "",
    door: str = audit.Door.PAGE,
) -> Order:
    if procedure.facility_id != patient.facility_id:
        raise RisError("The procedure is not in the patient's facility catalogue.")
    if patient.merged_into_id is not None:
        raise RisError(
            f"MRN {patient.mrn} was merged into MRN {patient.merged_into.mrn}: "
            "order for that record."
        )
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
    audit.record(action=audit.Action.CREATE, obj=order, user=actor, actor=actor_name, door=door)
    outbox.order_announce_enqueue(order=order, door=door)
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
    live = order.appointments.filter(is_cancelled=False).first()
    if live is not None:
        local = timezone.localtime(live.starts_at)
        raise RisError(
            f"{order.accession_number} is already booked ({live.room.name} "
            f"{local:%Y-%m-%d %H:%M}): move that appointment instead."
        )
    appointment = _room_take(order=order, room=room, starts_at=starts_at)
    audit.record(action=audit.Action.CREATE, obj=appointment, user=actor, door=door)
    order_status_set(order=order, status=Order.Status.SCHEDULED, actor=actor, door=door)
    return appointment


# An exam may move while the patient is expected, missed it, or waits at the desk.
MOVABLE_STATUSES = frozenset({Order.Status.SCHEDULED, Order.Status.NO_SHOW, Order.Status.ARRIVED})


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
    if order.status not in MOVABLE_STATUSES:
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
    actor_name: str = "",
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
        actor=actor_name,
        door=door,
        detail={"cancelled": True, "reason": reason},
    )
    status = Order.Status.CANCELLED if cancel_exam else Order.Status.REQUESTED
    order_status_set(
        order=order,
        status=status,
        actor=actor,
        actor_name=actor_name,
        door=door,
        reason=reason,
    )
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
        raise RisError(f"No free time in the next 24 hours in {names} for {order.procedure.name}.")
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
    if room.pk not in {r.pk for r in scheduling.rooms_for(order.procedure)}:
        raise RisError(f"{room.name} does not perform {order.procedure.name}.")
    ends_at = starts_at + dt.timedelta(minutes=order.procedure.duration_minutes)
    # Bookings of one room queue on its row: the overlap check below then sees every
    # booking committed before it. PostgreSQL's exclusion constraint is the backstop.
    Room.objects.select_for_update().filter(pk=room.pk).first()
    clash = (
        Appointment.objects.filter(overlapping(starts_at, ends_at), room=room, is_cancelled=False)
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
    outbox.order_status_enqueue(order=order, status=status, door=door)
    billing.charges_on_exam_status(order=order, status=status, door=door)
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


# ---- Rooms: schedulable resources a facility administrator sets up --------------------

WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def room_hours_problems(rows: Sequence[Row]) -> dict[int, str]:
    """What is wrong with each opening-hours row, by its index in `rows`: closing before it
    opens, or overlapping another row of its weekday. The form shows these beside the rows;
    `room_hours_set` refuses them. Rows that only touch (12:30 then 12:30) are fine."""
    problems: dict[int, str] = {}
    by_weekday: dict[int, list[int]] = {}
    for index, row in enumerate(rows):
        if row["weekday"] not in range(7):
            problems[index] = "Choose a weekday."
        elif row["closes"] <= row["opens"]:
            problems[index] = (
                f"Closes at {row['closes']:%H:%M}, not after it opens ({row['opens']:%H:%M}); "
                "hours past midnight take a row on the next day."
            )
        else:
            by_weekday.setdefault(row["weekday"], []).append(index)
    for weekday, indexes in by_weekday.items():
        indexes.sort(key=lambda i: (rows[i]["opens"], rows[i]["closes"]))
        # The row reaching latest so far: a later-opening row starting before its end overlaps.
        latest = indexes[0]
        for index in indexes[1:]:
            row, before = rows[index], rows[latest]
            if row["opens"] < before["closes"]:
                problems[index] = (
                    f"Overlaps {WEEKDAY_NAMES[weekday]} {before['opens']:%H:%M}\N{EN DASH}"
                    f"{before['closes']:%H:%M}; a break is the gap between two rows."
                )
            if row["closes"] > before["closes"]:
                latest = index
    return problems


def _hours_text(rows: Iterable[tuple[int, dt.time, dt.time]]) -> list[str]:
    return [f"{WEEKDAY_NAMES[w][:3]} {o:%H:%M}-{c:%H:%M}" for w, o, c in sorted(rows)]


@transaction.atomic
def room_hours_set(
    *,
    room: Room,
    rows: Sequence[Row],
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> list[RoomHours]:
    """Replace the room's opening hours with `rows` (weekday, opens, closes). Bookings
    already made stay where they are, inside the new hours or not: moving them is the
    front desk's call."""
    problems = room_hours_problems(rows)
    if problems:
        raise RisError(" ".join(f"Row {i + 1}: {problems[i]}" for i in sorted(problems)))
    # Bookings of the room queue on its row (see _room_take): none is checked against
    # hours half replaced.
    Room.objects.select_for_update().filter(pk=room.pk).first()
    old = _hours_text(RoomHours.objects.filter(room=room).values_list("weekday", "opens", "closes"))
    new = _hours_text((row["weekday"], row["opens"], row["closes"]) for row in rows)
    if old == new:
        return list(RoomHours.objects.filter(room=room))
    RoomHours.objects.filter(room=room).delete()
    hours = RoomHours.objects.bulk_create(
        RoomHours(room=room, weekday=row["weekday"], opens=row["opens"], closes=row["closes"])
        for row in rows
    )
    audit.record(
        action=audit.Action.UPDATE,
        obj=room,
        user=actor,
        door=door,
        detail={"hours": {"old": old, "new": new}},
    )
    return hours


ModelT = TypeVar("ModelT", bound=models.Model)


def _create_or_change(
    model: type[ModelT], existing: ModelT | None, fields: dict[str, Any], **create: Any
) -> tuple[ModelT, dict[str, list[Any]]]:
    """Create the row (`existing` None), or lock it and change the fields that differ.
    Returns the row and what changed as {field: [old, new]}, for the audit trail."""
    if existing is None:
        return model._default_manager.create(**create, **fields), {}
    saved = model._default_manager.select_for_update().get(pk=existing.pk)
    changed = {
        key: [getattr(saved, key), value]
        for key, value in fields.items()
        if getattr(saved, key) != value
    }
    for key, (_, value) in changed.items():
        setattr(saved, key, value)
    if changed:
        saved.save(update_fields=list(changed))
    return saved, changed


def _links_changed(before: dict[int, str], after: dict[int, str]) -> dict[str, list[str]]:
    """The names linked and unlinked between two {pk: name} sets; empty when the same."""
    added = sorted(name for pk, name in after.items() if pk not in before)
    removed = sorted(name for pk, name in before.items() if pk not in after)
    return {"added": added, "removed": removed} if added or removed else {}


@transaction.atomic
def room_save(
    *,
    facility: Facility,
    name: str,
    modality: str,
    ae_title: str,
    is_active: bool = True,
    procedures: Iterable[Procedure] = (),
    hours: Sequence[Row] | None = None,
    room: Room | None = None,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Room:
    """Add a room (`room` None) or change one: its fields, the procedures it performs and,
    when given, its opening hours, in one transaction. A room stays in its facility: its
    bookings and AE title belong there."""
    procedures = list(procedures)
    if room is not None and room.facility_id != facility.pk:
        raise RisError("A room cannot move to another facility; add a new room there.")
    foreign = [p for p in procedures if p.facility_id != facility.pk]
    if foreign:
        names = ", ".join(f"{p.code} {p.name}" for p in foreign)
        raise RisError(f"Not in the catalogue of {facility.name}: {names}.")
    others = Room.objects.exclude(pk=room.pk) if room is not None else Room.objects.all()
    if others.filter(ae_title=ae_title).exists():
        # Another facility's room may hold it: say so without naming it.
        raise RisError(f"AE title {ae_title} is already used by another room.")
    if others.filter(facility=facility, name=name).exists():
        raise RisError(f"{facility.name} already has a room named {name}.")
    fields = {"name": name, "modality": modality, "ae_title": ae_title, "is_active": is_active}
    try:
        with transaction.atomic():
            saved, changed = _create_or_change(Room, room, fields, facility=facility)
    except IntegrityError as error:
        raise RisError(f"AE title {ae_title} or name {name} was taken meanwhile.") from error
    before = {p.pk: p.code for p in saved.procedures.all()} if room is not None else {}
    saved.procedures.set(procedures)
    detail: dict[str, Any] = {"changed": changed} if changed else {}
    links = _links_changed(before, {p.pk: p.code for p in procedures})
    if links:
        detail["procedures"] = links
    if room is None:
        audit.record(action=audit.Action.CREATE, obj=saved, user=actor, door=door, detail=detail)
    elif detail:
        audit.record(action=audit.Action.UPDATE, obj=saved, user=actor, door=door, detail=detail)
    if hours is not None:
        room_hours_set(room=saved, rows=hours, actor=actor, door=door)
    return saved


@transaction.atomic
def room_closure_add(
    *,
    room: Room,
    starts_at: dt.datetime,
    ends_at: dt.datetime,
    reason: str = "",
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> tuple[RoomClosure, list[Appointment]]:
    """Close a room for a while. Appointments already booked then are not touched: the
    closure is saved and they are returned, for the user to move one by one."""
    if ends_at <= starts_at:
        raise RisError("A closure ends after it starts.")
    # Queue with bookings of the room, so none slips into the closure unseen.
    Room.objects.select_for_update().filter(pk=room.pk).first()
    closure = RoomClosure.objects.create(
        room=room, starts_at=starts_at, ends_at=ends_at, reason=reason.strip()[:200]
    )
    affected = selectors.closure_appointments(room=room, starts_at=starts_at, ends_at=ends_at)
    audit.record(
        action=audit.Action.CREATE,
        obj=closure,
        user=actor,
        door=door,
        facility=room.facility,
        detail={
            "room": room.pk,
            "starts_at": starts_at.isoformat(),
            "ends_at": ends_at.isoformat(),
            "reason": closure.reason,
            "affected": [a.order.accession_number for a in affected],
        },
    )
    return closure, affected


@transaction.atomic
def room_closure_remove(
    *, closure: RoomClosure, actor: User | None = None, door: str = audit.Door.PAGE
) -> None:
    """Open the room again for the closure's time (its opening hours apply again)."""
    audit.record(
        action=audit.Action.DELETE,
        obj=closure,
        user=actor,
        door=door,
        facility=closure.room.facility,
        detail={
            "room": closure.room_id,
            "starts_at": closure.starts_at.isoformat(),
            "ends_at": closure.ends_at.isoformat(),
            "reason": closure.reason,
        },
    )
    closure.delete()


# ---- end rooms ------------------------------------------------------------------------


# ---- Procedure catalogue: what a facility orders and books, set up by its administrator -

# A procedure's duration bounds, in minutes: the database's check constraints.
PROCEDURE_MINUTES = range(1, int(LONGEST_APPOINTMENT.total_seconds() // 60) + 1)


@transaction.atomic
def procedure_save(
    *,
    facility: Facility,
    code: str,
    name: str,
    modality: str,
    body_part: str = "",
    duration_minutes: int,
    uses_contrast: bool = False,
    preparation: str = "",
    is_active: bool = True,
    rooms: Iterable[Room] = (),
    procedure: Procedure | None = None,
    actor: User | None = None,
    door: str = audit.Door.PAGE,
) -> Procedure:
    """Add a procedure to the facility's catalogue (`procedure` None) or change one, with
    the rooms that perform it (none: any room of its modality). A procedure is never
    deleted, since orders keep pointing at it: `is_active` False stops offering it. It
    stays in its facility: its orders and fees belong there."""
    rooms = list(rooms)
    if procedure is not None and procedure.facility_id != facility.pk:
        raise RisError("A procedure cannot move to another facility; add it there.")
    if duration_minutes not in PROCEDURE_MINUTES:
        raise RisError(
            f"A procedure lasts {PROCEDURE_MINUTES[0]} to {PROCEDURE_MINUTES[-1]} minutes."
        )
    foreign = [room for room in rooms if room.facility_id != facility.pk]
    if foreign:
        names = ", ".join(room.name for room in foreign)
        raise RisError(f"Not a room of {facility.name}: {names}.")
    if selectors.procedure_code_taken(facility=facility, code=code, procedure=procedure):
        raise RisError(f"Code {code} is already in the catalogue of {facility.name}.")
    fields = {
        "code": code,
        "name": name,
        "modality": modality,
        "body_part": body_part,
        "duration_minutes": duration_minutes,
        "uses_contrast": uses_contrast,
        "preparation": preparation,
        "is_active": is_active,
    }
    try:
        with transaction.atomic():
            saved, changed = _create_or_change(Procedure, procedure, fields, facility=facility)
    except IntegrityError as error:
        # Another save took the code between the check above and this one.
        raise RisError(f"Code {code} was added to the catalogue meanwhile.") from error
    before = {r.pk: r.name for r in saved.rooms.all()} if procedure is not None else {}
    saved.rooms.set(rooms)
    detail: dict[str, Any] = {"changed": changed} if changed else {}
    links = _links_changed(before, {r.pk: r.name for r in rooms})
    if links:
        detail["rooms"] = links
    if procedure is None:
        detail["fields"] = fields
        audit.record(action=audit.Action.CREATE, obj=saved, user=actor, door=door, detail=detail)
    elif detail:
        audit.record(action=audit.Action.UPDATE, obj=saved, user=actor, door=door, detail=detail)
    return saved


# ---- end procedure catalogue ----------------------------------------------------------


# ---- Orders from HL7 --------------------------------------------------------------------

# An exam that has not started may still become another procedure.
PROCEDURE_CHANGEABLE = frozenset(
    {Order.Status.REQUESTED, Order.Status.SCHEDULED, Order.Status.ARRIVED, Order.Status.NO_SHOW}
)


@transaction.atomic
def order_change(
    *,
    order: Order,
    procedure: Procedure | None = None,
    priority: str | None = None,
    referring_physician_name: str | None = None,
    reason: str | None = None,
    diagnosis_codes: str | None = None,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.PAGE,
) -> Order:
    """Change what was ordered (the placer's XO, a clerk's correction): None leaves a
    field as it is. Audited with each field's old and new value.

    A cancelled exam is not changed (order again). The procedure changes only before the
    exam starts, and only to one the booked room (if any) performs; a booking keeps its
    time. The row is locked, like a status change, so two doors apply one after the other.
    """
    locked = Order.objects.select_for_update().select_related("procedure").get(pk=order.pk)
    if locked.status == Order.Status.CANCELLED:
        raise RisError(f"{locked.accession_number} is cancelled: it cannot be changed.")
    changed: dict[str, list[Any]] = {}
    if procedure is not None and procedure.pk != locked.procedure_id:
        if locked.status not in PROCEDURE_CHANGEABLE:
            raise RisError(
                f"{locked.accession_number} is {locked.get_status_display().lower()}: "
                f"it cannot become {procedure.code} {procedure.name}."
            )
        if procedure.facility_id != locked.facility_id:
            raise RisError("The procedure is not in the order's facility catalogue.")
        if not procedure.is_active:
            raise RisError(f"{procedure.code} {procedure.name} is no longer offered.")
        booked = locked.appointments.filter(is_cancelled=False).select_related("room").first()
        if booked is not None and booked.room_id not in {
            room.pk for room in scheduling.rooms_for(procedure)
        }:
            raise RisError(
                f"{booked.room.name}, where {locked.accession_number} is booked, does not "
                f"perform {procedure.name}: move the appointment first."
            )
        changed["procedure"] = [locked.procedure.code, procedure.code]
        locked.procedure = procedure
    if priority is not None:
        if priority not in Order.Priority.values:
            raise RisError(f"Priority {priority!r} is not one of ours.")
        if priority != locked.priority:
            changed["priority"] = [locked.priority, priority]
            locked.priority = priority
    if diagnosis_codes is not None:
        diagnosis_codes = icd10_codes_clean(diagnosis_codes)
    texts = {
        "referring_physician_name": referring_physician_name,
        "reason": reason,
        "diagnosis_codes": diagnosis_codes,
    }
    for name, value in texts.items():
        if value is not None and value != getattr(locked, name):
            changed[name] = [getattr(locked, name), value]
            setattr(locked, name, value)
    if changed:
        locked.save(update_fields=[*changed, "updated_at"])
        audit.record(
            action=audit.Action.UPDATE,
            obj=locked,
            user=actor,
            actor=actor_name,
            door=door,
            detail={"changed": changed},
        )
    return locked


# ---- end orders from HL7 ----------------------------------------------------------------


# ---- placer numbers -------------------------------------------------------------------


@transaction.atomic
def order_placer_number_assign(
    *,
    order: Order,
    placer_order_number: str,
    actor: User | None = None,
    actor_name: str = "",
    door: str = audit.Door.HL7,
) -> Order:
    """Give an order the placer's number (HL7 ORC-2), as the HIS assigns it for an order
    made here (ORR NA). Refused when another order of the facility has it, or the order
    already has another one."""
    number = placer_order_number.strip()
    if not number:
        raise RisError("The placer order number is empty.")
    if len(number) > Order._meta.get_field("placer_order_number").max_length:
        raise RisError(f"Placer order number {number} is too long.")
    locked = Order.objects.select_for_update().get(pk=order.pk)
    if locked.placer_order_number == number:
        return locked
    if locked.placer_order_number:
        raise RisError(
            f"{locked.accession_number} already has placer order number "
            f"{locked.placer_order_number}."
        )
    taken = (
        Order.objects.filter(facility_id=locked.facility_id, placer_order_number=number)
        .exclude(pk=locked.pk)
        .values_list("accession_number", flat=True)
        .first()
    )
    if taken is not None:
        raise RisError(f"Placer order number {number} is already used here ({taken}).")
    try:
        with transaction.atomic():
            Order.objects.filter(pk=locked.pk).update(
                placer_order_number=number, updated_at=timezone.now()
            )
    except IntegrityError as error:
        raise RisError(f"Placer order number {number} was taken meanwhile.") from error
    locked.placer_order_number = number
    order.placer_order_number = number
    audit.record(
        action=audit.Action.UPDATE,
        obj=locked,
        user=actor,
        actor=actor_name,
        door=door,
        detail={"placer_order_number": ["", number]},
    )
    return locked
