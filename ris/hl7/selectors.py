"""Reads of the HL7 message log: the messages an administrator may see, searched and
counted, and a message laid out segment by segment for reading."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from accounts.models import User
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from ris.hl7 import parse
from ris.hl7.models import InboundMessage, OutboundMessage
from ris.models import Patient

# What a list row shows; the raw bytes, text and ACK stay in the database.
INBOUND_LIST_FIELDS = (
    "id",
    "received_at",
    "facility__code",
    "sending_application",
    "sending_facility",
    "control_id",
    "message_type",
    "patient_key",
    "patient_name",
    "order_number",
    "status",
    "ack_code",
    "outcome",
    "error",
    "error_location",
    "attempts",
)
OUTBOUND_LIST_FIELDS = (
    "id",
    "created_at",
    "facility__code",
    "partner__name",
    "message_type",
    "control_id",
    "reason",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "ack_code",
    "sent_at",
)


def inbound_messages(*, user: User) -> QuerySet[InboundMessage]:
    """Messages received for the facilities the user administers.

    A message refused before its sender was known (not HL7, an unregistered sender) has
    no facility; it still holds patient data, so only superusers see those, never the
    administrators of every facility.
    """
    visible = Q(facility_id__in=_managed_facility_ids(user))
    if user.is_superuser:
        visible |= Q(facility__isnull=True)
    return InboundMessage.objects.filter(visible)


def inbound_message_search(
    *,
    user: User,
    statuses: Iterable[str] = (),
    message_type: str = "",
    control_id: str = "",
    patient: str = "",
    order_number: str = "",
    sending_application: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[InboundMessage]:
    """The log filtered, newest first, without the message bodies. `patient` matches a
    fragment of the identifier (MRN) or of the name; `message_type` "ADT" matches every
    ADT event, "ADT^A08" that one."""
    messages = inbound_messages(user=user)
    statuses = list(statuses)
    if statuses:
        messages = messages.filter(status__in=statuses)
    if message_type:
        messages = messages.filter(message_type__istartswith=message_type)
    if control_id:
        messages = messages.filter(control_id=control_id)
    if patient:
        messages = messages.filter(
            Q(patient_key__icontains=patient) | Q(patient_name__icontains=patient)
        )
    if order_number:
        messages = messages.filter(order_number=order_number)
    if sending_application:
        messages = messages.filter(sending_application__iexact=sending_application)
    messages = _received_between(messages, "received_at", since, until)
    return messages.select_related("facility").only(*INBOUND_LIST_FIELDS).order_by("-id")


def status_counts(messages: QuerySet) -> dict[str, int]:
    """How many of the messages are in each status (one query)."""
    rows = messages.order_by().values("status").annotate(n=Count("id"))
    return {row["status"]: row["n"] for row in rows}


def inbound_message_detail(*, user: User, pk: int) -> InboundMessage | None:
    return inbound_messages(user=user).select_related("facility", "partner").filter(pk=pk).first()


def message_patient_ids(messages: Iterable[InboundMessage]) -> list[int]:
    """The registered patients the messages are about, for the audit trail: a message's
    PID-3 identifier matched to a patient's MRN (and issuer, when the message names one)
    at the message's facility. Best effort: a patient registered under another
    identifier is not found; one query whatever the number of messages."""
    keys: set[tuple[int, str, str]] = set()
    for message in messages:
        if message.facility_id and message.patient_key:
            issuer, _, identifier = message.patient_key.rpartition("^")
            if identifier:
                keys.add((message.facility_id, issuer, identifier))
    if not keys:
        return []
    candidates = Patient.objects.filter(
        facility_id__in={f for f, _, _ in keys}, mrn__in={i for _, _, i in keys}
    ).values_list("pk", "facility_id", "mrn_issuer", "mrn")
    wanted = {(f, i) for f, _, i in keys}
    issuers = {(f, i): issuer for f, issuer, i in keys}
    return sorted(
        pk
        for pk, facility_id, mrn_issuer, mrn in candidates
        if (facility_id, mrn) in wanted and issuers[(facility_id, mrn)] in ("", mrn_issuer)
    )


def outbound_messages(*, user: User) -> QuerySet[OutboundMessage]:
    """Messages we send to the partners of the facilities the user administers."""
    return OutboundMessage.objects.filter(facility_id__in=_managed_facility_ids(user))


def outbound_message_search(
    *,
    user: User,
    statuses: Iterable[str] = (),
    message_type: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[OutboundMessage]:
    messages = outbound_messages(user=user)
    statuses = list(statuses)
    if statuses:
        messages = messages.filter(status__in=statuses)
    if message_type:
        messages = messages.filter(message_type__istartswith=message_type)
    messages = _received_between(messages, "created_at", since, until)
    return (
        messages.select_related("facility", "partner")
        .only(*OUTBOUND_LIST_FIELDS)
        .annotate(patient_id=F("order__patient_id"))
        .order_by("-id")
    )


def outbound_message_detail(*, user: User, pk: int) -> OutboundMessage | None:
    """A message we send, with the patient of its order (for the audit trail)."""
    return (
        outbound_messages(user=user)
        .select_related("facility", "partner", "order")
        .annotate(patient_id=F("order__patient_id"))
        .filter(pk=pk)
        .first()
    )


def _managed_facility_ids(user: User) -> set[int]:
    return facility_ids_for(user, Capability.MANAGE_FACILITY)


def _received_between(
    messages: QuerySet, field: str, since: dt.date | None, until: dt.date | None
) -> QuerySet:
    """Rows of local days `since` to `until`, both included, as a range on the indexed
    timestamp."""
    if since:
        messages = messages.filter(**{f"{field}__gte": _start_of(since)})
    if until:
        messages = messages.filter(**{f"{field}__lt": _start_of(until + dt.timedelta(days=1))})
    return messages


def _start_of(day: dt.date) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time.min))


# ---- reading a message -------------------------------------------------------------------


@dataclass(frozen=True)
class FieldView:
    """One valued field: "PID-5", its text as sent, and its repetitions' components
    with the escape sequences decoded."""

    name: str
    raw: str
    repetitions: list[list[str]]

    @property
    def is_compound(self) -> bool:
        return len(self.repetitions) > 1 or any(len(r) > 1 for r in self.repetitions)


@dataclass(frozen=True)
class SegmentView:
    name: str
    fields: list[FieldView]


@dataclass(frozen=True)
class MessageView:
    """A message laid out to read: one line per segment, and each segment's fields. When
    it cannot be split (not HL7 at all), `segments` is empty and `problem` says why."""

    lines: list[str]
    segments: list[SegmentView]
    problem: str = ""


def message_view(raw: bytes | str) -> MessageView:
    """`raw` as received (bytes, decoded with its MSH-18) or as we wrote it (text)."""
    data = _encoded(raw) if isinstance(raw, str) else bytes(raw)
    try:
        message = parse.parse(data)
    except parse.Hl7Error as error:
        text = parse.normalize(data).decode("utf-8", errors="replace")
        return MessageView(lines=text.split("\r"), segments=[], problem=error.reason)
    return MessageView(
        lines=message.text.split("\r"),
        segments=[_segment_view(segment, message) for segment in message.segments],
    )


def _segment_view(segment: parse.Segment, message: parse.Message) -> SegmentView:
    header = message.header
    fs = header.field_separator
    cs, rs = header.encoding_characters[0], header.encoding_characters[1]
    parts = str(segment).split(fs)
    if segment.name == "MSH":
        # MSH-1 is the separator itself, so the split is one field behind the numbering.
        values = {1: fs, **{number: value for number, value in enumerate(parts[1:], start=2)}}
    else:
        values = dict(enumerate(parts[1:], start=1))
    fields = []
    for number, value in values.items():
        if not value:
            continue
        if segment.name == "MSH" and number in (1, 2):
            repetitions = [[value]]
        else:
            repetitions = [
                [message.unescape(component) for component in repetition.split(cs)]
                for repetition in value.split(rs)
            ]
        fields.append(
            FieldView(name=f"{segment.name}-{number}", raw=value, repetitions=repetitions)
        )
    return SegmentView(name=segment.name, fields=fields)


def _encoded(text: str) -> bytes:
    """Text we wrote, as the bytes sent: in the character set its MSH-18 names."""
    msh = text.split("\r", 1)[0]
    fields = msh.split(msh[3:4] or "|")
    charset = fields[17].split("^", 1)[0].split("~", 1)[0].strip() if len(fields) > 17 else ""
    return text.encode(parse.CHARSETS.get(charset.upper(), "utf-8"), errors="replace")
