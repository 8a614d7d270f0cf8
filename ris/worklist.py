"""Modality Worklist (PS3.4 K, IHE SWF RAD-5): the scheduled procedure steps a modality
asks for, one per booked appointment of an exam not yet started.

Matching (PS3.4 K.2.2.1 / C.2.2.2): Scheduled Station AE Title, Modality, Scheduled
Procedure Step Start Date (single value or range), Patient ID, Accession Number and
Requested Procedure ID by value or wildcard; Patient's Name by wildcard, case-insensitive.
Returned are the attributes the request asked for, Scheduled Procedure Step Sequence items
included (universal matching returns the value).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

from django.db.models import Q, QuerySet
from django.utils import timezone
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pacs.dimse.query import QueryError, wildcard_regex
from ris.models import Appointment, Order

SCHEDULED_STATUSES = (Order.Status.SCHEDULED, Order.Status.ARRIVED)
# Requested Procedure Priority (0040,1003) defined terms.
PRIORITY = {
    Order.Priority.STAT: "STAT",
    Order.Priority.URGENT: "HIGH",
    Order.Priority.ROUTINE: "ROUTINE",
}
DATE = re.compile(r"\d{8}")


def find(identifier: Dataset, *, facility_id: int, limit: int) -> Iterator[Dataset]:
    """The facility's scheduled steps matching `identifier`, as worklist responses."""
    step = _step_keys(identifier)
    rows = _matching(identifier, step, facility_id)
    name = _text(identifier, "PatientName")
    name_pattern = re.compile(wildcard_regex(name), re.IGNORECASE) if _is_pattern(name) else None
    shown = 0
    for appointment in rows.iterator(chunk_size=200):
        order = appointment.order
        if name and name_pattern is None and order.patient.dicom_name.lower() != name.lower():
            continue
        if name_pattern is not None and not name_pattern.match(order.patient.dicom_name):
            continue
        yield _response(identifier, appointment)
        shown += 1
        if shown >= limit:
            return


def _step_keys(identifier: Dataset) -> Dataset:
    sequence = identifier.get("ScheduledProcedureStepSequence")
    if sequence is None or len(sequence) == 0:
        return Dataset()
    if len(sequence) > 1:
        raise QueryError("Scheduled Procedure Step Sequence: one item expected in a query")
    return sequence[0]


def _text(dataset: Dataset, keyword: str) -> str:
    value = dataset.get(keyword)
    return str(value).strip() if value not in (None, "") else ""


def _is_pattern(value: str) -> bool:
    return "*" in value or "?" in value


def _value_or_wildcard(field: str, value: str) -> Q | None:
    if not value or value == "*":
        return None
    if _is_pattern(value):
        return Q(**{f"{field}__regex": wildcard_regex(value)})
    return Q(**{field: value})


def _date_condition(value: str) -> Q | None:
    """Single date or range (a-b, a-, -b) on the appointment's local start date."""
    if not value:
        return None
    low, dash, high = (part.strip() for part in value.partition("-"))
    if not dash:
        high = low
    for bound in (low, high):
        if bound and not DATE.fullmatch(bound):
            raise QueryError(
                f"Scheduled Procedure Step Start Date: {value!r} is not a date or range"
            )
    condition = Q()
    if low:
        condition &= Q(starts_at__gte=_local_midnight(low))
    if high:
        condition &= Q(starts_at__lt=_local_midnight(high) + dt.timedelta(days=1))
    return condition


def _local_midnight(da: str) -> dt.datetime:
    try:
        day = dt.datetime.strptime(da, "%Y%m%d").date()
    except ValueError as error:
        raise QueryError(f"Scheduled Procedure Step Start Date: {da!r} is not a date") from error
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


def _matching(identifier: Dataset, step: Dataset, facility_id: int) -> QuerySet[Appointment]:
    rows = Appointment.objects.filter(
        facility_id=facility_id, is_cancelled=False, order__status__in=SCHEDULED_STATUSES
    ).select_related("order__patient", "order__procedure", "order__facility", "room")
    conditions = [
        _value_or_wildcard("room__ae_title", _text(step, "ScheduledStationAETitle")),
        _value_or_wildcard("room__modality", _text(step, "Modality")),
        _date_condition(_text(step, "ScheduledProcedureStepStartDate")),
        _value_or_wildcard("order__patient__mrn", _text(identifier, "PatientID")),
        _value_or_wildcard("order__accession_number", _text(identifier, "AccessionNumber")),
        _value_or_wildcard("order__accession_number", _text(identifier, "RequestedProcedureID")),
        _value_or_wildcard("order__study_instance_uid", _text(identifier, "StudyInstanceUID")),
    ]
    for condition in conditions:
        if condition is not None:
            rows = rows.filter(condition)
    return rows.order_by("starts_at", "pk")


def _full(appointment: Appointment) -> Dataset:
    """Every attribute the worklist can answer for one scheduled step."""
    order = appointment.order
    patient = order.patient
    procedure = order.procedure
    starts = timezone.localtime(appointment.starts_at)
    code = Dataset()
    code.CodeValue = procedure.code
    code.CodingSchemeDesignator = "C4" if procedure.code[:5].isdigit() else "99RADPACS"
    code.CodeMeaning = procedure.name[:64]
    step = Dataset()
    step.ScheduledStationAETitle = appointment.room.ae_title
    step.ScheduledStationName = appointment.room.name[:16]
    step.ScheduledProcedureStepStartDate = starts.strftime("%Y%m%d")
    step.ScheduledProcedureStepStartTime = starts.strftime("%H%M%S")
    step.Modality = appointment.room.modality
    step.ScheduledPerformingPhysicianName = ""
    step.ScheduledProcedureStepDescription = procedure.name[:64]
    step.ScheduledProtocolCodeSequence = Sequence([code])
    step.ScheduledProcedureStepID = str(appointment.pk)
    step.ScheduledProcedureStepStatus = (
        "ARRIVED" if order.status == Order.Status.ARRIVED else "SCHEDULED"
    )
    requested_code = Dataset()
    requested_code.update(code)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = patient.dicom_name
    ds.PatientID = patient.mrn
    ds.IssuerOfPatientID = patient.mrn_issuer
    ds.PatientBirthDate = patient.birth_date.strftime("%Y%m%d") if patient.birth_date else ""
    ds.PatientSex = patient.sex if patient.sex in ("M", "F", "O") else ""
    ds.AccessionNumber = order.accession_number
    ds.ReferringPhysicianName = order.referring_physician_name or (
        order.referring_physician.get_full_name() if order.referring_physician else ""
    )
    ds.StudyInstanceUID = order.study_instance_uid
    ds.RequestedProcedureID = order.accession_number
    ds.RequestedProcedureDescription = procedure.name[:64]
    ds.RequestedProcedureCodeSequence = Sequence([requested_code])
    ds.RequestedProcedurePriority = PRIORITY.get(order.priority, "ROUTINE")
    ds.ReasonForTheRequestedProcedure = order.reason[:64]
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _response(identifier: Dataset, appointment: Appointment) -> Dataset:
    """The asked-for attributes of the full answer (PS3.4 C.2.2.1: return keys only)."""
    full = _full(appointment)
    response = Dataset()
    response.SpecificCharacterSet = full.SpecificCharacterSet
    for element in identifier:
        if element.keyword in ("SpecificCharacterSet", "QueryRetrieveLevel"):
            continue
        if element.keyword not in full:
            response.add_new(element.tag, element.VR, [] if element.VR == "SQ" else None)
            continue
        if element.VR == "SQ" and element.keyword == "ScheduledProcedureStepSequence":
            asked = element.value[0] if element.value else Dataset()
            item = Dataset()
            source = full.ScheduledProcedureStepSequence[0]
            for key in asked or source:
                if key.keyword in source:
                    item[key.tag] = source[key.tag]
                else:
                    item.add_new(key.tag, key.VR, None)
            response.ScheduledProcedureStepSequence = Sequence([item])
            continue
        response[element.tag] = full[element.tag]
    return response
