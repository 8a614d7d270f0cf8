"""The application response to an order message, when its MSH-16 asks for one (HL7 v2.5.1
2.9.3, chapter 4): ORR^O02 for ORM^O01, ORI^O24 for OMI^O23.

MSA says whether the message was applied (AA) or not (AE, with an ERR); each order group
comes back as an ORC whose ORC-1 answers its order control (table 0119: OK accepted, UA
unable to accept, CR/UC cancelled or not, DR/UD discontinued or not, XR/UX changed or not)
and whose ORC-3 is our accession number, the filler order number. The placer's own fields
(ORC-2, OBR-2, OBR-4) go back as it sent them, in its delimiters. Django stays out.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ris.hl7 import ack
from ris.hl7.order_groups import CANCEL, CHANGE, DISCONTINUE, NEW, STATUS_CHANGED, OrderGroup
from ris.hl7.parse import Message, Segment

# What each order control is answered with, done and not done.
ANSWERS = {
    NEW: ("OK", "UA"),
    CANCEL: ("CR", "UC"),
    DISCONTINUE: ("DR", "UD"),
    CHANGE: ("XR", "UX"),
    STATUS_CHANGED: ("OK", "UA"),
}

# Our exam status as ORC-5 (table 0038).
ORDER_STATUS = {
    "requested": "SC",
    "scheduled": "SC",
    "arrived": "SC",
    "no_show": "SC",
    "in_progress": "IP",
    "completed": "CM",
    "reported": "CM",
    "final": "CM",
    "cancelled": "CA",
}

RESPONSES = {"ORM": ("ORR", "O02"), "OMI": ("ORI", "O24")}


@dataclass(frozen=True)
class Answer:
    """One group's answer: done or not, and the order it is about (if we have it)."""

    group: OrderGroup
    done: bool
    accession_number: str = ""
    status: str = ""
    study_instance_uid: str = ""
    procedure_step_id: str = ""
    modality: str = ""

    @property
    def order_control(self) -> str:
        done, refused = ANSWERS.get(self.group.control, ("OK", "UA"))
        return done if self.done else refused


def response_type(message: Message) -> str:
    """ "ORR^O02" or "ORI^O24"."""
    code, trigger = RESPONSES.get(message.header.message_code, RESPONSES["ORM"])
    return f"{code}^{trigger}"


def wanted(message: Message, *, success: bool) -> bool:
    """Whether MSH-16 asks for an application response for this outcome (table 0155:
    AL always, SU on success, ER on error, NE or empty never)."""
    kind = message.header.application_ack_type
    return kind == "AL" or (kind == "SU" and success) or (kind == "ER" and not success)


def build(
    message: Message,
    answers: list[Answer],
    *,
    code: str = ack.ACCEPT,
    reason: str = "",
    location: str = "",
    error_code: int = 0,
    our_application: str = "RADPACS",
    now: dt.datetime | None = None,
) -> tuple[str, str]:
    """The response's text and its control id (MSH-10)."""
    header = message.header
    # MSH, MSA and ERR as the ACK has them (application acknowledgement codes: AA/AE/AR).
    base = ack.build(
        header,
        code,
        reason=reason,
        location=location,
        error_code=error_code,
        our_application=our_application,
        now=now,
        enhanced=False,
    )
    segments = [s for s in base.split("\r") if s]
    fs = header.field_separator
    cs = header.encoding_characters[0]
    msh = segments[0].split(fs)
    response_code, trigger = response_type(message).split("^")
    # The message structure (MSH-9.3) as the ACK has it: from v2.4 on.
    parts = [response_code, trigger]
    if header.version not in ("2.3", "2.3.1"):
        parts.append(f"{response_code}_{trigger}")
    msh[8] = cs.join(parts)
    segments[0] = fs.join(msh)
    application = header.receiving_application or our_application
    imaging = header.message_code == "OMI"
    for answer in answers:
        segments.extend(_order_segments(message, answer, application, imaging=imaging))
    return "\r".join(segments) + "\r", msh[9]


def _order_segments(
    message: Message, answer: Answer, application: str, *, imaging: bool
) -> list[str]:
    header = message.header
    fs = header.field_separator
    cs = header.encoding_characters[0]
    group = answer.group

    def escaped(text: str) -> str:
        return ack.escape(text, header)

    placer = _field(message, group.orc, 2) or _field(message, group.obr, 2)
    if answer.accession_number:
        filler = cs.join([escaped(answer.accession_number), escaped(application)])
    else:
        filler = _field(message, group.orc, 3) or _field(message, group.obr, 3)
    orc = fs.join(
        ["ORC", answer.order_control, placer, filler, "", ORDER_STATUS.get(answer.status, "")]
    ).rstrip(fs)
    obr = fs.join(["OBR", str(group.number), placer, filler, _field(message, group.obr, 4)])
    segments = [orc, obr.rstrip(fs)]
    if imaging:
        if answer.accession_number:
            ipc = [
                "IPC",
                filler,
                filler,
                cs.join([escaped(answer.study_instance_uid), escaped(application)]),
                escaped(answer.procedure_step_id),
                cs.join([escaped(answer.modality), "", "DCM"]) if answer.modality else "",
            ]
            segments.append(fs.join(ipc).rstrip(fs))
        else:
            # IPC is required in ORI^O24: what the placer sent, or an empty one.
            segments.extend(str(ipc) for ipc in group.ipc or [])
            if not group.ipc:
                segments.append("IPC")
    return segments


def _field(message: Message, segment: Segment | None, field_number: int) -> str:
    """A whole field as the sender wrote it (components, repetitions, escapes)."""
    if segment is None:
        return ""
    fields = str(segment).split(message.header.field_separator)
    return fields[field_number] if field_number < len(fields) else ""
