"""HL7 out: messages for partners written in the business transaction that caused them,
delivered over MLLP by workers, retried with backoff, set aside as dead letters.

The outbox is also the message log: every row keeps the text sent, the partner's ACK,
the attempts and the last error.

Enqueueing (`results_enqueue`, `order_status_enqueue`, `order_announce_enqueue`) runs
inside the caller's transaction and queues the delivery task once it commits; nothing is
sent for a change that rolls back.

Delivery (`deliver`): one connection per message, the ACK read on it (HL7 original
mode, MLLP Release 2). AA or CA: sent. AE, AR, CE, CR, no answer within ACK_TIMEOUT, a
refused or broken connection, an answer that is not our ACK: failed, tried again after
30 s x 2^(attempts - 1), at most an hour, by the periodic `deliver_due`; after
settings.HL7_OUTBOUND_MAX_ATTEMPTS attempts the message is dead (kept, resent only by
`message_resend`).

Order: a partner gets one patient's messages in the order they were written (an ORM
"completed" never overtakes the "arrived" before it, a corrected ORU never its final).
A message waits while an older message for the same partner and patient is waiting or
failed-and-retrying; a dead one no longer holds the queue. Other patients' messages are
not held up by one that fails. When a message is sent, the next of its queue follows
in the same task.

Idempotence: a message is claimed before it is sent by a conditional update that sets
`next_attempt_at` to the end of a lease; only the worker whose update matched sends it,
and only it records the outcome. A sent (or dead) message is never claimed again. A
worker that dies mid-send leaves the lease to run out, and the sweep sends the message
again with the same control id (MSH-10), which receivers use to drop duplicates.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from accounts import audit
from accounts.models import Facility, User
from ris.hl7 import ack, mllp, outbound
from ris.hl7.models import OutboundMessage, Partner
from ris.hl7.values import zone
from ris.models import Order, OrderStatusChange, Report

logger = logging.getLogger(__name__)

Status = OutboundMessage.Status
UNSENT = (Status.PENDING, Status.FAILED)

CONNECT_TIMEOUT = 10.0  # seconds to open the connection
ACK_TIMEOUT = 30.0  # seconds for the whole answer to come back
BACKOFF_FIRST = 30  # seconds before the second attempt; doubles after each failure
BACKOFF_CAP = 3600
# A claimed message not finished by then (its worker died) may be claimed again.
LEASE = dt.timedelta(seconds=CONNECT_TIMEOUT + ACK_TIMEOUT + 60)
# A pending message this old whose task never ran (lost with a worker or the broker).
LOST_AFTER = dt.timedelta(seconds=60)
READ_SIZE = 64 * 1024
MAX_ANSWER_BYTES = 1024 * 1024

# OBR-25 / OBX-11 of each report status that is released.
RESULT_STATUS = {
    Report.Status.PRELIMINARY: outbound.PRELIMINARY,
    Report.Status.FINAL: outbound.FINAL,
    Report.Status.CORRECTED: outbound.CORRECTED,
    Report.Status.ADDENDED: outbound.CORRECTED,  # the whole report again, addendum included
}

# The exam statuses the placer hears of: ORC-1 and ORC-5 (tables 0119 and 0038), as IHE
# RAD-3 has the filler report them. Arrived is "in process" (the patient is here and the
# filler works on the order; 0038 has no "arrived", and SC is what it was before);
# completed is CM (performed; the result comes as ORU); our cancellation is OC with CA.
ORDER_STATUS = {
    Order.Status.ARRIVED: (outbound.STATUS_CHANGED, outbound.IN_PROCESS),
    Order.Status.COMPLETED: (outbound.STATUS_CHANGED, outbound.COMPLETED),
    Order.Status.CANCELLED: (outbound.ORDER_CANCELLED, outbound.CANCELLED),
}


# ---- enqueueing (inside the business transaction) --------------------------------------


def results_enqueue(*, report: Report, text: str | None = None) -> list[OutboundMessage]:
    """ORU^R01 of a released (preliminary, final, corrected or addended) report, for each
    partner of the facility that files results. `text`: the whole report as released
    (with its addenda), when not just `report.text`."""
    result_status = RESULT_STATUS.get(report.status)
    if result_status is None:
        return []
    partners = _partners(report.facility_id, "sends_results")
    if not partners:
        return []
    order = _order(report.order_id)
    patient = _patient_data(order)
    order_data = _order_data(order)
    report_data = _report_data(report, order, result_status, text)
    reason = f"report {report.pk} {report.get_status_display().lower()}"
    return [
        _enqueue(
            partner=partner,
            order=order,
            message_type="ORU^R01",
            reason=reason,
            build=lambda envelope: outbound.oru_r01(envelope, patient, order_data, report_data),
        )
        for partner in partners
    ]


def charge_post_enqueue(*, charge: Any, credit: bool = False) -> list[OutboundMessage]:
    """DFT^P03 of a charge ready to bill, or a credit (a reversal line, or `credit`: a
    posted charge voided), for each partner of the facility that does the billing.
    `charge` is a billing Charge."""
    partners = _partners(charge.facility_id, "posts_charges")
    if not partners:
        return []
    order = _order(charge.order_id)
    patient = _patient_data(order)
    credit = (
        credit or charge.adjusts_id is not None or (charge.amount is not None and charge.amount < 0)
    )
    data = outbound.ChargeData(
        charge_id=str(charge.pk),
        service_date=charge.service_date,
        posted_at=timezone.now().astimezone(zone(order.facility.timezone)),
        credit=credit,
        procedure_code=charge.procedure_code,
        procedure_name=order.procedure.name,
        modifiers=[m for m in charge.modifiers.split(",") if m],
        quantity=str(abs(Decimal(charge.units)).normalize()),
        unit_amount=str(charge.unit_price) if charge.unit_price is not None else "",
        extended_amount=str(abs(charge.amount)) if charge.amount is not None else "",
        diagnosis_codes=[c.strip() for c in charge.diagnosis_codes.split(",") if c.strip()],
        accession_number=order.accession_number,
        performed_by=outbound.Person(
            family=charge.rendering_name, identifier=charge.rendering_npi, authority="NPI"
        )
        if charge.rendering_npi
        else None,
        ordered_by=_person(order.referring_physician) if order.referring_physician else None,
    )
    reason = f"charge {charge.pk} {'credit' if credit else 'posted'}"
    return [
        _enqueue(
            partner=partner,
            order=order,
            message_type="DFT^P03",
            reason=reason,
            build=lambda envelope: outbound.dft_p03(envelope, patient, data),
        )
        for partner in partners
    ]


def order_status_enqueue(*, order: Order, status: str, door: str) -> list[OutboundMessage]:
    """ORM^O01 telling the placers an exam arrived, was completed or was cancelled.

    Only orders the partner knows: placed by it (a placer number) or announced to it.
    Changes that came in over HL7 are not echoed back to the HIS that made them."""
    codes = ORDER_STATUS.get(status)
    if codes is None or door == audit.Door.HL7:
        return []
    partners = _partners(order.facility_id, "sends_order_status")
    if not partners:
        return []
    order = _order(order.pk)
    partners = [p for p in partners if order.placer_order_number or p.announces_orders]
    if not partners:
        return []
    patient = _patient_data(order)
    order_data = _order_data(order)
    control, order_status = codes
    return [
        _enqueue(
            partner=partner,
            order=order,
            message_type="ORM^O01",
            reason=f"exam {Order.Status(status).label.lower()}",
            build=lambda envelope: outbound.orm_o01_status(
                envelope, patient, order_data, order_status=order_status, order_control=control
            ),
        )
        for partner in partners
    ]


def order_announce_enqueue(*, order: Order, door: str) -> list[OutboundMessage]:
    """ORM^O01 SN for an order made at our front desk, to each partner that gives placer
    numbers; not for one that came from the HIS or already has its number."""
    if door == audit.Door.HL7 or order.placer_order_number:
        return []
    partners = _partners(order.facility_id, "announces_orders")
    if not partners:
        return []
    order = _order(order.pk)
    patient = _patient_data(order)
    order_data = _order_data(order)
    return [
        _enqueue(
            partner=partner,
            order=order,
            message_type="ORM^O01",
            reason="order made here: placer number asked",
            build=lambda envelope: outbound.orm_o01_number_request(envelope, patient, order_data),
        )
        for partner in partners
    ]


def _partners(facility_id: int, flag: str) -> list[Partner]:
    """The facility's partners that take this kind of message and have an address."""
    return list(
        Partner.objects.filter(
            facility_id=facility_id, is_active=True, port__isnull=False, **{flag: True}
        )
        .exclude(host="")
        .order_by("id")
    )


def _enqueue(
    *,
    partner: Partner,
    order: Order,
    message_type: str,
    reason: str,
    build: Callable[[outbound.Envelope], str],
) -> OutboundMessage:
    control_id = ack.control_id()
    facility = order.facility
    envelope = outbound.Envelope(
        sending_facility=facility.code,
        receiving_application=partner.application,
        receiving_facility=partner.application_facility,
        control_id=control_id,
        at=timezone.now().astimezone(zone(facility.timezone)),
    )
    row = OutboundMessage.objects.create(
        facility=facility,
        partner=partner,
        message_type=message_type,
        control_id=control_id,
        text=build(envelope),
        reason=reason[:100],
        order=order,
    )
    _dispatch_on_commit(row.pk)
    return row


def response_enqueue(
    *,
    facility: Facility,
    partner: Partner,
    message_type: str,
    control_id: str,
    text: str,
    reason: str,
    order: Order | None = None,
) -> OutboundMessage:
    """An answer to a message the partner sent (application ACK, ORR, ORI), built by the
    caller: queued like any outbound message, delivered after commit."""
    row = OutboundMessage.objects.create(
        facility=facility,
        partner=partner,
        message_type=message_type,
        control_id=control_id,
        text=text,
        reason=reason[:100],
        order=order,
    )
    _dispatch_on_commit(row.pk)
    return row


def _dispatch_on_commit(message_id: int) -> None:
    """Queue the delivery once the transaction commits. A broker that cannot take it
    does not undo the business change: the sweep finds the message (robust)."""
    from ris.hl7 import tasks

    transaction.on_commit(lambda: tasks.deliver_message.delay(message_id), robust=True)


# ---- the values the builders take --------------------------------------------------------


def _order(order_id: int) -> Order:
    return Order.objects.select_related(
        "facility", "patient", "procedure", "referring_physician"
    ).get(pk=order_id)


def _person(user: User) -> outbound.Person:
    return outbound.Person(
        family=user.last_name or user.username,
        given=user.first_name,
        degree=user.title,
        identifier=user.npi,
        authority="NPI" if user.npi else "",
    )


def _patient_data(order: Order) -> outbound.PatientData:
    patient = order.patient
    name = outbound.Person(
        family=patient.family_name,
        given=patient.given_name,
        middle=patient.middle_name,
        suffix=patient.name_suffix,
        prefix=patient.name_prefix,
    )
    visit = (
        patient.visits.filter(is_cancelled=False, discharged_at=None)
        .only("patient_class", "visit_number")
        .order_by("-id")
        .first()
    )
    return outbound.PatientData(
        mrn=patient.mrn,
        mrn_issuer=patient.mrn_issuer,
        name=name,
        birth_date=patient.birth_date,
        sex=patient.sex,
        patient_class=visit.patient_class if visit else "U",
        visit_number=visit.visit_number if visit else "",
    )


def _order_data(order: Order) -> outbound.OrderData:
    if order.referring_physician is not None:
        provider: outbound.Person | None = _person(order.referring_physician)
    else:
        provider = outbound.Person.from_dicom(order.referring_physician_name)
    return outbound.OrderData(
        accession_number=order.accession_number,
        placer_order_number=order.placer_order_number,
        procedure_code=order.procedure.code,
        procedure_name=order.procedure.name,
        priority=order.priority,
        ordering_provider=provider,
        observed_at=_local(_performed_at(order), order.facility),
    )


def _performed_at(order: Order) -> dt.datetime | None:
    """When the exam was performed (OBR-7): it started, else it was completed, else its
    images came."""
    changes = dict(
        OrderStatusChange.objects.filter(
            order=order, to_status__in=[Order.Status.IN_PROGRESS, Order.Status.COMPLETED]
        )
        .order_by("-changed_at", "-id")
        .values_list("to_status", "changed_at")
    )  # the earliest of each status wins, as it comes last
    return (
        changes.get(Order.Status.IN_PROGRESS)
        or changes.get(Order.Status.COMPLETED)
        or order.images_received_at
    )


def _report_data(
    report: Report, order: Order, result_status: str, text: str | None
) -> outbound.ReportData:
    uids = list(
        dict.fromkeys(order.studies.order_by("id").values_list("study_instance_uid", flat=True))
    )
    if not uids and order.study_instance_uid:
        uids = [order.study_instance_uid]
    changed_at = report.signed_at or report.updated_at or timezone.now()
    return outbound.ReportData(
        text=report.text if text is None else text,
        result_status=result_status,
        status_changed_at=_local(changed_at, order.facility),
        interpreter=_person(report.signed_by) if report.signed_by else None,
        study_instance_uids=tuple(uids),
    )


def _local(value: dt.datetime | None, facility: Facility) -> dt.datetime | None:
    return value.astimezone(zone(facility.timezone)) if value is not None else None


# ---- delivery (a worker) ------------------------------------------------------------------


class DeliveryError(Exception):
    """The message did not get through: why, and the answer if one came."""

    def __init__(self, reason: str, *, ack_code: str = "", answer: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.ack_code = ack_code
        self.answer = answer


def deliver(message_id: int) -> None:
    """Send a message if it is due and first in its queue, then the ones waiting behind
    it. Safe to call any number of times, from any number of workers."""
    current: int | None = message_id
    for _ in range(1000):
        if current is None:
            return
        row = _claim(current)
        if row is None or not _send(row):
            return
        current = _next_in_queue(row)


def _queue(row: OutboundMessage) -> Q:
    """The messages that go to this partner in order with this one: its patient's."""
    if row.order_id is None:
        return Q(pk=row.pk)
    return Q(partner_id=row.partner_id, order__patient_id=row.order.patient_id)


def _claim(message_id: int) -> OutboundMessage | None:
    """The message, leased to this worker, if it may be sent now; None otherwise."""
    row = (
        OutboundMessage.objects.select_related("partner", "order")
        .filter(pk=message_id, status__in=UNSENT)
        .first()
    )
    if row is None or not row.partner.can_receive:
        return None
    now = timezone.now()
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        return None  # retrying later, or another worker holds it
    ahead = OutboundMessage.objects.filter(_queue(row), pk__lt=row.pk, status__in=UNSENT)
    if ahead.exists():
        return None  # the older message goes first; this one follows it
    lease = now + LEASE
    claimed = OutboundMessage.objects.filter(
        pk=row.pk, status=row.status, attempts=row.attempts, next_attempt_at=row.next_attempt_at
    ).update(next_attempt_at=lease)
    if not claimed:
        return None
    row.next_attempt_at = lease
    return row


def _next_in_queue(row: OutboundMessage) -> int | None:
    return (
        OutboundMessage.objects.filter(_queue(row), pk__gt=row.pk, status__in=UNSENT)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )


def _send(row: OutboundMessage) -> bool:
    """One attempt; True when the message is settled (sent, or dead) and the next of its
    queue may go, False when it waits for another attempt."""
    partner = row.partner
    try:
        raw = exchange(partner.host, int(partner.port or 0), row.text.encode(outbound.ENCODING))
        answer = raw.decode(outbound.ENCODING, errors="replace")
        try:
            reply = outbound.reply_read(raw, row.control_id)
        except outbound.ReplyError as error:
            raise DeliveryError(str(error), answer=answer) from error
        if not reply.accepted:
            reason = f"{reply.code}: {reply.text or 'no reason given'}"
            raise DeliveryError(reason, ack_code=reply.code, answer=answer)
    except (OSError, ValueError, DeliveryError) as error:
        return _failed(row, error)
    except Exception as error:  # a bug must not retry for ever: counted like a failure
        logger.exception("HL7 %s %s could not be sent", row.message_type, row.control_id)
        return _failed(row, error)
    _sent(row, reply, answer)
    return True


def exchange(host: str, port: int, payload: bytes) -> bytes:
    """Send one message in an MLLP frame and return the first frame that comes back.

    OSError (refused, reset, unreachable), TimeoutError when no whole answer comes within
    ACK_TIMEOUT, ConnectionError when the partner hangs up without one."""
    decoder = mllp.Decoder(max_size=MAX_ANSWER_BYTES)
    with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT) as connection:
        deadline = time.monotonic() + ACK_TIMEOUT
        connection.settimeout(ACK_TIMEOUT)
        connection.sendall(mllp.frame(payload))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"No acknowledgement within {ACK_TIMEOUT:g} s.")
            connection.settimeout(remaining)
            try:
                chunk = connection.recv(READ_SIZE)
            except TimeoutError as error:
                raise TimeoutError(f"No acknowledgement within {ACK_TIMEOUT:g} s.") from error
            if not chunk:
                raise ConnectionError("The partner closed the connection without an answer.")
            for event in decoder.feed(chunk):
                if isinstance(event, bytes):
                    return event
                if isinstance(event, mllp.Oversize):
                    raise ConnectionError(f"The answer is too big ({event.size} bytes).")


def _describe(error: Exception) -> str:
    if isinstance(error, DeliveryError):
        return error.reason
    if isinstance(error, ConnectionRefusedError):
        return "Connection refused."
    if isinstance(error, TimeoutError):
        return str(error) if str(error) else "Timed out."
    return f"{type(error).__name__}: {error}"


def backoff(attempts: int) -> dt.timedelta:
    """How long to wait after the `attempts`-th failure: 30 s, 1, 2, 4 ... min, at most 1 h."""
    return dt.timedelta(seconds=min(BACKOFF_FIRST * 2 ** max(attempts - 1, 0), BACKOFF_CAP))


def _failed(row: OutboundMessage, error: Exception) -> bool:
    attempts = row.attempts + 1
    now = timezone.now()
    dead = attempts >= settings.HL7_OUTBOUND_MAX_ATTEMPTS
    reason = _describe(error)
    fields = {
        "attempts": attempts,
        "status": Status.DEAD if dead else Status.FAILED,
        "next_attempt_at": None if dead else now + backoff(attempts),
        "last_error": reason,
    }
    if isinstance(error, DeliveryError) and error.answer:
        fields.update(ack_code=error.ack_code[:2], ack=error.answer)
    _settle(row, fields)
    log = logger.error if dead else logger.warning
    log(
        "HL7 %s %s to %s, attempt %s: %s%s",
        row.message_type,
        row.control_id,
        row.partner.name,
        attempts,
        reason,
        " (dead letter)" if dead else "",
    )
    return dead


def _sent(row: OutboundMessage, reply: outbound.Reply, answer: str) -> None:
    with transaction.atomic():
        fields = {
            "attempts": row.attempts + 1,
            "status": Status.SENT,
            "next_attempt_at": None,
            "sent_at": timezone.now(),
            "ack_code": reply.code,
            "ack": answer,
            "last_error": "",
        }
        if not _settle(row, fields):
            return
        if reply.placer_order_number and row.order_id is not None and _asks_number(row):
            problem = _placer_number_take(row, reply)
            if problem:
                OutboundMessage.objects.filter(pk=row.pk).update(last_error=problem)
                row.last_error = problem


def _settle(row: OutboundMessage, fields: dict[str, object]) -> bool:
    """Record the outcome, if this worker's lease still holds the message."""
    updated = OutboundMessage.objects.filter(
        pk=row.pk, status__in=UNSENT, next_attempt_at=row.next_attempt_at
    ).update(**fields)
    if updated:
        for name, value in fields.items():
            setattr(row, name, value)
    return bool(updated)


def answer_record(*, sent: OutboundMessage, text: str) -> str:
    """A partner's answer to `sent` that came as a message of its own (an application
    ACK, or the ORR^O02 carrying the placer number it assigned, ORC-1 NA): kept with the
    message, the number taken. Returns what went wrong with the number, in words, or "";
    outbound.ReplyError when it is not an answer to `sent`."""
    reply = outbound.reply_read(text.encode(), sent.control_id)
    OutboundMessage.objects.filter(pk=sent.pk).update(ack_code=reply.code, ack=text)
    sent.ack_code, sent.ack = reply.code, text
    if reply.placer_order_number and sent.order_id is not None and _asks_number(sent):
        return _placer_number_take(sent, reply)
    return ""


def _asks_number(row: OutboundMessage) -> bool:
    """Whether the message was an SN (a number is taken only in answer to one)."""
    return f"\rORC|{outbound.SEND_NUMBER}|" in row.text


def _placer_number_take(row: OutboundMessage, reply: outbound.Reply) -> str:
    """The placer number the partner assigned in its answer (ORC-1 NA) set on the order;
    what went wrong, in words, or ""."""
    from ris import services

    order = row.order
    assert order is not None
    if reply.assigned_for and reply.assigned_for != order.accession_number:
        return (
            f"Placer number {reply.placer_order_number} was assigned to filler number "
            f"{reply.assigned_for}, not {order.accession_number}: not taken."
        )
    try:
        services.order_placer_number_assign(
            order=order,
            placer_order_number=reply.placer_order_number,
            actor_name=f"{row.partner.name} (HL7 answer to {row.control_id})",
            door=audit.Door.HL7,
        )
    except services.RisError as error:
        return f"Placer number {reply.placer_order_number} not taken: {error}"
    return ""


# ---- the sweep and the dead letters ----------------------------------------------------


def deliver_due(*, limit: int = 1000) -> int:
    """Queue what is due: failed messages whose next attempt has come, pending ones whose
    task was lost (or whose worker died holding them). One task per queue (partner and
    patient): its head; the rest follow it. Returns how many tasks were queued."""
    from ris.hl7 import tasks

    now = timezone.now()
    due = (
        OutboundMessage.objects.filter(status__in=UNSENT, partner__is_active=True)
        .exclude(partner__host="")
        .filter(
            Q(next_attempt_at__lte=now)
            | Q(status=Status.PENDING, next_attempt_at=None, created_at__lt=now - LOST_AFTER)
        )
        .order_by("id")
        .values_list("id", "partner_id", "order__patient_id")[:limit]
    )
    heads: dict[tuple[object, ...], int] = {}
    for message_id, partner_id, patient_id in due:
        key = (partner_id, patient_id) if patient_id is not None else ("message", message_id)
        heads.setdefault(key, message_id)
    for message_id in heads.values():
        tasks.deliver_message.delay(message_id)
    return len(heads)


@transaction.atomic
def message_resend(*, message: OutboundMessage) -> OutboundMessage:
    """Send a dead (or failed) message again now, its attempts counted afresh: after the
    partner fixed what made it refuse. A sent message is not sent again."""
    from ris.services import RisError

    row = OutboundMessage.objects.select_for_update().get(pk=message.pk)
    if row.status == Status.SENT:
        raise RisError("The partner has acknowledged this message: it is not sent again.")
    row.status = Status.PENDING
    row.attempts = 0
    row.next_attempt_at = None
    row.save(update_fields=["status", "attempts", "next_attempt_at"])
    _dispatch_on_commit(row.pk)
    return row
