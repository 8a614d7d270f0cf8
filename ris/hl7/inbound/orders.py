"""Orders in: ORM^O01 (v2.3 to 2.5.1) and OMI^O23 (2.5.1) from the HIS create, change and
cancel RIS orders, one per order group (ORC with its OBR), by ORC-1 (table 0119).

- NW: the patient from PID (`adt.patient_upsert`), the procedure from OBR-4 by code in
  the facility's catalogue, and a new order with our accession number. The placer order
  number (ORC-2, else OBR-2) is the order's key with the HIS. A NW again for an order we
  have, with nothing different, needs nothing; with something different (a HIS that
  re-sends an edited order as NW) it is applied as a change, the way XO is; for another
  patient it is an error (205).
- The accession number and study instance UID are always ours: IHE Scheduled Workflow
  (RAD TF-1) has the order filler assign them, and the worklist hands ours to the
  modality. What a sender proposes (IPC-1, IPC-3, ZDS-1) is noted in the outcome, and the
  application response tells the placer our accession number (ORC-3, the filler number).
- CA and DC cancel the exam (the exam lifecycle decides whether it still can) and its
  appointments; XO changes priority, procedure, referring physician, reason and
  diagnosis (`order_change`, audited); SC with ORC-5 CA or DC cancels, other statuses
  are recorded only: the RIS keeps the exam's status itself.
- On receipt (`check`), before the ACK: what the sender must correct earns AE and is not
  kept for replay; a procedure code not in the catalogue, or an order we do not know
  (unless its NW waits in the queue, to be applied first), earns AE and the message is
  kept as failed. A NW applied later re-applies the failed messages naming its order.
- When MSH-16 asks for it, an ORR^O02 (ORM) or ORI^O24 (OMI) is written to the outbox
  for the partner.

Fields the sender leaves empty are left as they are by a change; the explicit null ""
clears them (HL7 v2.5.1 2.5.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from accounts import audit
from accounts.models import Facility
from ris import services
from ris.hl7 import ack, order_responses, outbox, parse
from ris.hl7.inbound import Context, Handler, NothingToDo, adt
from ris.hl7.models import InboundMessage
from ris.hl7.order_groups import (
    CANCEL,
    CHANGE,
    CONTROLS,
    DISCONTINUE,
    NEW,
    ORDER_STATUSES,
    OrderGroup,
    Requested,
    ServiceCode,
    check_groups,
    order_groups,
    requested,
)
from ris.hl7.parse import Hl7Error, Message
from ris.models import Order, Patient, Procedure
from ris.services import RisError

# Column widths of Order.
DIAGNOSIS_LENGTH = 200
REFERRING_LENGTH = 200


@dataclass
class Outcome:
    """What one order group did."""

    group: OrderGroup
    order: Order | None
    text: str
    changed: bool = False
    created: bool = False


# ---- on receipt -----------------------------------------------------------------------


def check(message: Message, facility: Facility) -> None:
    """What can be decided before the ACK. Errors the sender must correct come first;
    then the catalogue and the orders, whose errors are kept for replay."""
    groups = check_groups(message)
    for group in groups:
        _diagnosis_text(requested(group))
    if any(group.control == NEW for group in groups):
        adt.patient_data(message)  # the patient a new order needs is readable
    created: set[str] = set()
    for group in groups:
        wanted = requested(group)
        if wanted.service is not None and group.control in (NEW, CHANGE):
            _procedure(facility, group, wanted.service)
        if group.control == NEW:
            created.add(group.placer_number)
        elif (
            group.placer_number not in created
            and _order(facility, group) is None
            and not _creation_waiting(facility, group.placer_number)
        ):
            raise _unknown(group)


def _creation_waiting(facility: Facility, placer: str) -> bool:
    """Whether a NW for this placer number waits in the queue (it will apply first: one
    patient's messages apply in arrival order). Found by the queue key (the first
    group's placer number), else among a few waiting messages that mention it."""
    if not placer:
        return False
    waiting = InboundMessage.objects.filter(
        status=InboundMessage.Status.RECEIVED, facility=facility
    ).only("raw")
    candidates = [
        *waiting.filter(order_number=placer),
        *waiting.filter(text__contains=placer).exclude(order_number=placer).order_by("-id")[:20],
    ]
    for row in candidates:
        try:
            earlier = parse.parse(bytes(row.raw))
        except Hl7Error:
            continue
        if any(g.control == NEW and g.placer_number == placer for g in order_groups(earlier)):
            return True
    return False


# ---- applying -------------------------------------------------------------------------


def order_message(message: Message, context: Context) -> str:
    """Apply each order group in turn, all or nothing (the caller's savepoint)."""
    groups = check_groups(message)
    outcomes: list[Outcome] = []
    patient: Patient | None = None
    for group in groups:
        if group.control == NEW:
            if patient is None:
                patient = adt.patient_upsert(message, context)
            outcomes.append(_new(group, patient, context))
        elif group.control in (CANCEL, DISCONTINUE):
            outcomes.append(_cancel(group, context, _order_of(group, context)))
        elif group.control == CHANGE:
            outcomes.append(_change(group, context))
        else:
            outcomes.append(_status(group, context))
    notes = [outcome.text for outcome in outcomes]
    created = [o.group.placer_number for o in outcomes if o.created]
    notes.extend(_apply_waiting(created, context))
    responded = _respond(message, context, outcomes)
    if responded:
        notes.append(responded)
    text = "; ".join(notes)
    if not any(outcome.changed for outcome in outcomes) and not responded:
        raise NothingToDo(text)
    return text


def _new(group: OrderGroup, patient: Patient, context: Context) -> Outcome:
    wanted = requested(group)
    assert wanted.service is not None  # check_groups
    placer = group.placer_number
    procedure = _procedure(context.facility, group, wanted.service)
    diagnosis, dropped = _diagnosis_text(wanted)
    existing = (
        Order.objects.filter(facility=context.facility, placer_order_number=placer)
        .select_related("patient", "procedure")
        .first()
    )
    if existing is not None:
        if existing.patient_id != patient.pk:
            raise Hl7Error(
                f"Placer order number {placer} is already {existing.accession_number}, "
                f"an order of another patient (MRN {existing.patient.mrn}).",
                location=group.number_location,
                error_code=parse.DUPLICATE_KEY_IDENTIFIER,
            )
        changes = _differences(existing, procedure, wanted, diagnosis)
        if not changes:
            return Outcome(
                group, existing, f"NW {placer}: already have it ({existing.accession_number})"
            )
        described = _describe(existing, changes)
        order = _order_change(existing, changes, context, group)
        return Outcome(
            group,
            order,
            f"NW {placer} again, with other content, taken as a change of "
            f"{order.accession_number}: {described}",
            changed=True,
        )
    order = services.order_create(
        patient=patient,
        procedure=procedure,
        priority=wanted.priority or Order.Priority.ROUTINE,
        placer_order_number=placer,
        referring_physician_name=(wanted.referring_physician_name or "")[:REFERRING_LENGTH],
        reason=wanted.reason or "",
        diagnosis_codes=diagnosis or "",
        actor_name=context.actor,
        door=audit.Door.HL7,
    )
    notes = [
        f"NW {placer}: ordered {procedure.code} {procedure.name} as {order.accession_number} "
        f"({order.get_priority_display()}) for MRN {patient.mrn}"
    ]
    if wanted.referring_physician_id:
        notes.append(f"referrer id {wanted.referring_physician_id}")
    if dropped:
        notes.append(f"diagnoses left out (no room): {', '.join(dropped)}")
    proposed = [
        f"{label} {value}"
        for label, value in (
            ("accession", wanted.proposed_accession),
            ("study UID", wanted.proposed_study_uid),
        )
        if value
    ]
    if proposed:
        notes.append(f"the sender's {' and '.join(proposed)} not used: we assign ours")
    return Outcome(group, order, ", ".join(notes), changed=True, created=True)


def _change(group: OrderGroup, context: Context) -> Outcome:
    order = _order_of(group, context)
    wanted = requested(group)
    procedure = _procedure(context.facility, group, wanted.service) if wanted.service else None
    diagnosis, dropped = _diagnosis_text(wanted)
    changes = _differences(order, procedure, wanted, diagnosis)
    key = _key(group)
    if not changes:
        return Outcome(group, order, f"XO {key}: nothing differs from {order.accession_number}")
    described = _describe(order, changes)
    order = _order_change(order, changes, context, group)
    text = f"XO {key}: changed {order.accession_number}: {described}"
    if dropped:
        text += f"; diagnoses left out (no room): {', '.join(dropped)}"
    return Outcome(group, order, text, changed=True)


def _cancel(group: OrderGroup, context: Context, order: Order, *, control: str = "") -> Outcome:
    """Cancel the exam, then its live appointments (with the exam cancelled first, the
    lifecycle's refusal, e.g. of a completed exam, is the message's error)."""
    control = control or group.control
    key = _key(group)
    if order.status == Order.Status.CANCELLED:
        return Outcome(group, order, f"{control} {key}: {order.accession_number} was cancelled")
    said = CONTROLS.get(control, f"status {control[3:]}")
    reason = _control_reason(group) or f"{said} from {_sender(context)}"
    try:
        services.order_status_set(
            order=order,
            status=Order.Status.CANCELLED,
            actor_name=context.actor,
            door=audit.Door.HL7,
            reason=reason,
        )
    except RisError as refusal:
        raise Hl7Error(
            f"{order.accession_number} (placer {order.placer_order_number or 'none'}): {refusal}",
            location=group.orc_at(1),
            error_code=parse.APPLICATION_INTERNAL_ERROR,
        ) from refusal
    appointments = list(order.appointments.filter(is_cancelled=False))
    for appointment in appointments:
        services.appointment_cancel(
            appointment=appointment,
            reason=reason,
            cancel_exam=True,
            actor_name=context.actor,
            door=audit.Door.HL7,
        )
    booked = f" and {len(appointments)} appointment(s)" if appointments else ""
    return Outcome(
        group, order, f"{control} {key}: cancelled {order.accession_number}{booked}", changed=True
    )


def _status(group: OrderGroup, context: Context) -> Outcome:
    """SC: the placer tells us the order's status (ORC-5, table 0038)."""
    order = _order_of(group, context)
    status = group.orc.value(5).strip().upper() if group.orc else ""
    if status in (CANCEL, DISCONTINUE):
        return _cancel(group, context, order, control=f"SC/{status}")
    said = ORDER_STATUSES.get(status, "unknown")
    text = (
        f"SC {_key(group)}: the placer says {said} (ORC-5 {status or 'empty'}); "
        f"{order.accession_number} stays {order.get_status_display().lower()}"
    )
    return Outcome(group, order, text)


def _order_change(
    order: Order, changes: dict[str, Any], context: Context, group: OrderGroup
) -> Order:
    try:
        return services.order_change(
            order=order, **changes, actor_name=context.actor, door=audit.Door.HL7
        )
    except RisError as refusal:
        raise Hl7Error(
            str(refusal), location=group.orc_at(1), error_code=parse.APPLICATION_INTERNAL_ERROR
        ) from refusal


def _apply_waiting(placers: list[str], context: Context) -> list[str]:
    """The failed messages naming orders just created (a cancel that came before its
    order), applied again now, in arrival order, in this transaction."""
    if not placers:
        return []
    from ris.hl7 import services as hl7_services  # it imports the handlers

    waiting = (
        InboundMessage.objects.filter(
            facility=context.facility,
            status=InboundMessage.Status.FAILED,
            order_number__in=placers,
        )
        .exclude(pk=context.message_id)
        .order_by("id")
    )
    notes = []
    for row in waiting:
        replayed = hl7_services.message_replay(message=row)
        notes.append(
            f"then message {row.pk} ({replayed.message_type}): "
            f"{replayed.get_status_display().lower()}"
        )
    return notes


# ---- reading the group against our data -----------------------------------------------


def _procedure(facility: Facility, group: OrderGroup, service: ServiceCode) -> Procedure:
    """The catalogue's procedure by OBR-4's code, else by its alternate code."""
    codes = [code.upper() for code in (service.code, service.alternate_code) if code]
    found = {p.code: p for p in Procedure.objects.filter(facility=facility, code__in=codes)}
    for code in codes:
        if code in found:
            return found[code]
    also = f" or {service.alternate_code}" if service.alternate_code else ""
    raise Hl7Error(
        f"Procedure {service}{also} (OBR-4) is not in the catalogue of {facility.name}: "
        "add it, then replay this message.",
        location=group.obr_at(4),
        error_code=parse.TABLE_VALUE_NOT_FOUND,
        replayable=True,
    )


def _diagnosis_text(wanted: Requested) -> tuple[str | None, list[str]]:
    """The DG1 codes as the order keeps them ("R51.9, S06.0X0A"), and those left out
    because the column is full; Hl7Error at the DG1 whose code is not ICD-10."""
    if wanted.diagnoses is None:
        return None, []
    kept: list[str] = []
    dropped: list[str] = []
    for diagnosis in wanted.diagnoses:
        try:
            code = services.icd10_codes_clean(diagnosis.code)
        except RisError as error:
            raise Hl7Error(
                f"Diagnosis {diagnosis.code} (DG1-3): {error}",
                location=diagnosis.location,
                error_code=parse.TABLE_VALUE_NOT_FOUND,
            ) from error
        if code in kept:
            continue
        if len(", ".join([*kept, code])) > DIAGNOSIS_LENGTH:
            dropped.append(code)
        else:
            kept.append(code)
    return ", ".join(kept), dropped


def _differences(
    order: Order, procedure: Procedure | None, wanted: Requested, diagnosis: str | None
) -> dict[str, Any]:
    """What differs from the order, as `order_change` arguments; unsaid fields are no
    change."""
    changes: dict[str, Any] = {}
    if procedure is not None and procedure.pk != order.procedure_id:
        changes["procedure"] = procedure
    if wanted.priority is not None and wanted.priority != order.priority:
        changes["priority"] = wanted.priority
    referring = wanted.referring_physician_name
    texts = {
        "referring_physician_name": referring[:REFERRING_LENGTH] if referring is not None else None,
        "reason": wanted.reason,
        "diagnosis_codes": diagnosis,
    }
    for name, value in texts.items():
        if value is not None and value != getattr(order, name):
            changes[name] = value
    return changes


def _describe(order: Order, changes: dict[str, Any]) -> str:
    def shown(name: str, value: Any) -> str:
        if name == "procedure":
            return value.code
        return repr(value) if isinstance(value, str) and name != "priority" else str(value)

    return ", ".join(
        f"{name.replace('_', ' ')} {shown(name, getattr(order, name))} -> {shown(name, value)}"
        for name, value in changes.items()
    )


def _order(facility: Facility, group: OrderGroup) -> Order | None:
    """The order a group names: by placer order number, else by our accession number
    (ORC-3, the filler number); both given and naming two orders is an error."""
    orders = Order.objects.filter(facility=facility).select_related("procedure")
    placer, filler = group.placer_number, group.filler_number
    by_placer = orders.filter(placer_order_number=placer).first() if placer else None
    by_filler = orders.filter(accession_number=filler).first() if filler else None
    if by_placer and by_filler and by_placer.pk != by_filler.pk:
        raise Hl7Error(
            f"Placer order number {placer} is {by_placer.accession_number}, but the filler "
            f"order number (ORC-3) says {filler}.",
            location=group.orc_at(3),
            error_code=parse.UNKNOWN_KEY_IDENTIFIER,
        )
    return by_placer or by_filler


def _order_of(group: OrderGroup, context: Context) -> Order:
    order = _order(context.facility, group)
    if order is None:
        raise _unknown(group)
    return order


def _unknown(group: OrderGroup) -> Hl7Error:
    verb = CONTROLS.get(group.control, "order").split()[0]
    return Hl7Error(
        f"No order {_key(group)} here to {verb}: kept, to apply when the order arrives.",
        location=group.number_location if group.placer_number else group.orc_at(3),
        error_code=parse.UNKNOWN_KEY_IDENTIFIER,
        replayable=True,
    )


def _key(group: OrderGroup) -> str:
    return group.placer_number or f"with accession {group.filler_number}"


def _control_reason(group: OrderGroup) -> str:
    """ORC-16, order control code reason (CE): its text, else its code."""
    if group.orc is None:
        return ""
    return (group.orc.value(16, 2) or group.orc.value(16, 1)).strip()


def _sender(context: Context) -> str:
    return context.partner.name if context.partner else "the HIS"


# ---- the application response ---------------------------------------------------------


def _respond(message: Message, context: Context, outcomes: list[Outcome]) -> str:
    """The ORR^O02 / ORI^O24 written to the outbox when MSH-16 asks for it (AL, SU);
    what was done about it, for the outcome."""
    if not order_responses.wanted(message, success=True):
        return ""
    answers = [_answer(outcome.group, outcome.order) for outcome in outcomes]
    first = next((o.order for o in outcomes if o.order is not None), None)
    return _write_response(message, context, answers, order=first)


def respond_to_failure(message: Message, context: Context, error: Exception) -> str:
    """The response for a message that could not be applied, when MSH-16 asks for one
    on error (AL, ER): every group unable (UA, UC, UD, UX), MSA AE with the ERR.

    It has to be written outside the savepoint the failed apply rolled back: the
    framework calls it after the failure (`Handler.respond`)."""
    if not order_responses.wanted(message, success=False):
        return ""
    answers = []
    for group in order_groups(message):
        order = None
        if group.control != NEW:  # a NW's number may be another patient's order
            try:
                order = _order(context.facility, group)
            except Hl7Error:
                order = None
        answers.append(_answer(group, order, done=False))
    return _write_response(
        message,
        context,
        answers,
        code=ack.ERROR,
        reason=getattr(error, "reason", str(error)),
        location=getattr(error, "location", ""),
        error_code=getattr(error, "error_code", parse.APPLICATION_INTERNAL_ERROR),
    )


def _answer(group: OrderGroup, order: Order | None, *, done: bool = True) -> order_responses.Answer:
    if order is None:
        return order_responses.Answer(group=group, done=done)
    booked = order.appointments.filter(is_cancelled=False).values_list("pk", flat=True).first()
    return order_responses.Answer(
        group=group,
        done=done,
        accession_number=order.accession_number,
        status=order.status,
        study_instance_uid=order.study_instance_uid,
        procedure_step_id=str(booked or ""),
        modality=order.procedure.modality,
    )


def _write_response(
    message: Message,
    context: Context,
    answers: list[order_responses.Answer],
    *,
    order: Order | None = None,
    **ack_fields: Any,
) -> str:
    kind = order_responses.response_type(message)
    partner = context.partner
    if partner is None or not partner.can_receive:
        sender = partner.name if partner else message.header.sending_application or "sender"
        return f"no {kind} sent: {sender} is not a partner we can send to (host and port)"
    text, control_id = order_responses.build(message, answers, **ack_fields)
    outbox.response_enqueue(
        facility=context.facility,
        partner=partner,
        message_type=kind,
        control_id=control_id,
        text=text,
        reason=f"answer to HL7 message {context.message_id} ({message.header.control_id})",
        order=order,
    )
    return f"{kind} {control_id} queued for {partner.name}"


HANDLERS: dict[str, Handler] = {
    "ORM^O01": Handler(
        apply=order_message,
        required_segments=("ORC",),
        check=check,
        respond=respond_to_failure,
    ),
    "OMI^O23": Handler(
        apply=order_message,
        required_segments=("ORC",),
        check=check,
        respond=respond_to_failure,
    ),
}
