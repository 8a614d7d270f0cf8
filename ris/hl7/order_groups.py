"""Reading the orders in ORM^O01 (v2.3 to 2.5.1) and OMI^O23 (2.5.1), HL7 v2.5.1 chapter 4.

A message carries one or more order groups, each an ORC (what to do: ORC-1, table 0119)
with its OBR (what is ordered) and what follows it: TQ1 (OMI timing), DG1, IPC (OMI
imaging procedure control), ZDS (the IHE Scheduled Workflow study instance UID), NTE and
OBX (not used). This module reads them into plain values and says where each came from
("OBR[2]-4") for the error a sender gets back. Django stays out.

Fields follow HL7's reading rules: an absent field means "no change" (None here), the
explicit null "" means "clear the value" ("" here); which matters for a change (XO).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ris.hl7.parse import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    Hl7Error,
    Message,
    Segment,
)

# ORC-1 order control codes (table 0119) we act on.
NEW = "NW"
CANCEL = "CA"
DISCONTINUE = "DC"
CHANGE = "XO"
STATUS_CHANGED = "SC"
CONTROLS = {
    NEW: "new order",
    CANCEL: "cancel order",
    DISCONTINUE: "discontinue order",
    CHANGE: "change order",
    STATUS_CHANGED: "status changed",
}

# TQ-6 / TQ1-9 priority (tables 0027 and 0485) to the RIS's priorities. "T" (timing
# critical) has to be done at its time: as urgent. Codes not here leave the priority as
# it is (routine for a new order).
PRIORITIES = {
    "S": "stat",
    "STAT": "stat",
    "A": "urgent",
    "ASAP": "urgent",
    "U": "urgent",
    "URGENT": "urgent",
    "T": "urgent",
    "R": "routine",
    "ROUTINE": "routine",
    "P": "routine",
    "C": "routine",
    "PRN": "routine",
}

# ORC-5 order status (table 0038), what the placer says about an order (SC).
ORDER_STATUSES = {
    "A": "some results available",
    "CA": "cancelled",
    "CM": "completed",
    "DC": "discontinued",
    "ER": "in error (order not found)",
    "HD": "on hold",
    "IP": "in process",
    "RP": "replaced",
    "SC": "in process, scheduled",
}

# DG1-3.3 (or the v2.3 DG1-2 coding method) naming ICD-9: not the ICD-10 billing needs.
ICD9_SYSTEMS = frozenset({"I9", "I9C", "I9CM", "ICD9", "ICD9CM", "ICD-9", "ICD-9-CM", "I9CDX"})

# Our columns' widths: a longer value is an error the sender has to fix.
PLACER_NUMBER_LENGTH = 64


@dataclass
class OrderGroup:
    """One ORC with its OBR and the segments that belong to them."""

    number: int  # 1-based, in message order
    orc: Segment | None
    orc_sequence: int  # which ORC of the message (for "ORC[2]-2"); 0 when none
    obr: Segment | None = None
    obr_sequence: int = 0
    tq1: Segment | None = None
    dg1: list[tuple[Segment, int]] = field(default_factory=list)
    ipc: list[Segment] = field(default_factory=list)
    zds: Segment | None = None

    @property
    def control(self) -> str:
        return self.orc.value(1).upper() if self.orc else ""

    def orc_at(self, field_number: int, component: int = 0) -> str:
        return location("ORC", self.orc_sequence, field_number, component)

    def obr_at(self, field_number: int, component: int = 0) -> str:
        return location("OBR", self.obr_sequence, field_number, component)

    @property
    def placer_number(self) -> str:
        """ORC-2.1, else OBR-2.1 (EI entity identifier; the namespace is not kept)."""
        return ((self.orc.value(2) if self.orc else "") or _value(self.obr, 2)).strip()

    @property
    def filler_number(self) -> str:
        """ORC-3.1, else OBR-3.1: our accession number when the placer knows it."""
        return ((self.orc.value(3) if self.orc else "") or _value(self.obr, 3)).strip()

    @property
    def number_location(self) -> str:
        """Where the order's key was read: ORC-2, or OBR-2 when ORC-2 was empty."""
        if self.orc is not None and self.orc.value(2).strip():
            return self.orc_at(2)
        if self.obr is not None and self.obr.value(2).strip():
            return self.obr_at(2)
        return self.orc_at(2) if self.orc is not None else self.obr_at(2)


@dataclass(frozen=True)
class ServiceCode:
    """OBR-4 (CE/CWE): the code, its text and coding system, and the alternate code."""

    code: str
    text: str
    system: str
    alternate_code: str = ""
    alternate_text: str = ""

    def __str__(self) -> str:
        text = f" ({self.text})" if self.text else ""
        return f"{self.code}{text}"


@dataclass(frozen=True)
class Diagnosis:
    """A DG1-3 code and where it was read."""

    code: str
    location: str


@dataclass(frozen=True)
class Requested:
    """What a group asks for; None: not said (a change leaves it, a new order defaults)."""

    service: ServiceCode | None
    priority: str | None
    referring_physician_name: str | None
    referring_physician_id: str
    reason: str | None
    diagnoses: tuple[Diagnosis, ...] | None
    # What the placer (or an order filler upstream) proposed as the imaging identifiers:
    # recorded, not used; we assign our own (IHE RAD TF-1 Scheduled Workflow).
    proposed_accession: str = ""
    proposed_study_uid: str = ""


def location(segment: str, sequence: int, field_number: int, component: int = 0) -> str:
    """An ERR location: "OBR-4", "OBR[2]-4", "ORC-7.6"."""
    where = segment if sequence <= 1 else f"{segment}[{sequence}]"
    where += f"-{field_number}"
    return f"{where}.{component}" if component else where


def _value(segment: Segment | None, field_number: int, component: int = 1) -> str:
    return segment.value(field_number, component) if segment is not None else ""


def order_groups(message: Message) -> list[OrderGroup]:
    """The message's order groups in order. A second OBR after an ORC's first starts a
    group of its own that shares that ORC (some senders do that); DG1 segments before
    the first ORC belong to every group."""
    groups: list[OrderGroup] = []
    shared_dg1: list[tuple[Segment, int]] = []
    counts: dict[str, int] = {}
    current: OrderGroup | None = None
    for segment in message.segments:
        counts[segment.name] = counts.get(segment.name, 0) + 1
        sequence = counts[segment.name]
        if segment.name == "ORC":
            current = OrderGroup(number=len(groups) + 1, orc=segment, orc_sequence=sequence)
            groups.append(current)
        elif segment.name == "OBR":
            if current is None or current.obr is not None:
                orc = current.orc if current else None
                current = OrderGroup(
                    number=len(groups) + 1,
                    orc=orc,
                    orc_sequence=current.orc_sequence if current else 0,
                )
                groups.append(current)
            current.obr = segment
            current.obr_sequence = sequence
        elif segment.name == "DG1":
            if current is None:
                shared_dg1.append((segment, sequence))
            else:
                current.dg1.append((segment, sequence))
        elif current is not None and segment.name == "TQ1" and current.tq1 is None:
            current.tq1 = segment
        elif current is not None and segment.name == "IPC":
            current.ipc.append(segment)
        elif current is not None and segment.name == "ZDS":
            current.zds = segment
    for group in groups:
        group.dg1[:0] = shared_dg1
    return groups


def check_groups(message: Message) -> list[OrderGroup]:
    """The groups, each with an order control we act on and a key to find its order
    by; Hl7Error (AE) for a message the sender has to correct."""
    groups = order_groups(message)
    if not groups:
        raise Hl7Error(
            f"{message.header.message_type} has no ORC segment: nothing is ordered.",
            location="ORC",
            error_code=SEGMENT_SEQUENCE_ERROR,
        )
    placers: dict[str, int] = {}
    for group in groups:
        control = group.control
        if group.orc is None or not control:
            raise Hl7Error(
                f"Order {group.number}: ORC-1 (order control) is empty.",
                location=group.orc_at(1) if group.orc else "ORC",
                error_code=REQUIRED_FIELD_MISSING,
            )
        if control not in CONTROLS:
            known = ", ".join(CONTROLS)
            raise Hl7Error(
                f"Order control {control} (ORC-1) is not supported here; we take {known}.",
                location=group.orc_at(1),
                error_code=TABLE_VALUE_NOT_FOUND,
            )
        placer = group.placer_number
        if len(placer) > PLACER_NUMBER_LENGTH:
            raise Hl7Error(
                f"Placer order number {placer[:20]}... is longer than "
                f"{PLACER_NUMBER_LENGTH} characters.",
                location=group.number_location,
                error_code=DATA_TYPE_ERROR,
            )
        if control == NEW:
            if group.obr is None:
                raise Hl7Error(
                    f"Order {placer or group.number}: a new order needs its OBR segment.",
                    location="OBR",
                    error_code=SEGMENT_SEQUENCE_ERROR,
                )
            if not placer:
                raise Hl7Error(
                    "A new order needs its placer order number (ORC-2 or OBR-2).",
                    location=group.orc_at(2),
                    error_code=REQUIRED_FIELD_MISSING,
                )
            if placer in placers:
                raise Hl7Error(
                    f"Placer order number {placer} is given to orders {placers[placer]} "
                    f"and {group.number} of this message.",
                    location=group.number_location,
                    error_code=DUPLICATE_KEY_IDENTIFIER,
                )
            placers[placer] = group.number
            if requested(group).service is None:
                raise Hl7Error(
                    f"Order {placer}: OBR-4 (universal service identifier) is empty.",
                    location=group.obr_at(4),
                    error_code=REQUIRED_FIELD_MISSING,
                )
            if message.segment("PID") is None:
                raise Hl7Error(
                    "A new order needs the patient: the PID segment is missing.",
                    location="PID",
                    error_code=SEGMENT_SEQUENCE_ERROR,
                )
        elif not placer and not group.filler_number:
            raise Hl7Error(
                f"Order {group.number}: give the placer order number (ORC-2) or our "
                "accession number (ORC-3) of the order to "
                f"{CONTROLS[control].split()[0]}.",
                location=group.orc_at(2),
                error_code=REQUIRED_FIELD_MISSING,
            )
        requested(group)  # diagnosis codes and priority read, or Hl7Error
    return groups


def requested(group: OrderGroup) -> Requested:
    """What the group asks for, read from its ORC, TQ1, OBR, DG1, IPC and ZDS."""
    obr = group.obr
    return Requested(
        service=_service(obr),
        priority=_priority(group),
        referring_physician_name=_referring_name(group),
        referring_physician_id=_referring_id(group),
        reason=_reason(obr),
        diagnoses=_diagnoses(group),
        proposed_accession=group.ipc[0].value(1) if group.ipc else "",
        proposed_study_uid=(
            (group.ipc[0].value(3) if group.ipc else "") or _value(group.zds, 1)
        ).strip(),
    )


def _service(obr: Segment | None) -> ServiceCode | None:
    if obr is None or not (obr.value(4, 1).strip() or obr.value(4, 4).strip()):
        return None
    return ServiceCode(
        code=obr.value(4, 1).strip(),
        text=obr.value(4, 2).strip(),
        system=obr.value(4, 3).strip(),
        alternate_code=obr.value(4, 4).strip(),
        alternate_text=obr.value(4, 5).strip(),
    )


def _priority(group: OrderGroup) -> str | None:
    """TQ1-9 (2.5.1), else ORC-7.6, else OBR-27.6 (TQ, v2.3 to 2.5)."""
    candidates = (
        (group.tq1, 9, 1),
        (group.orc, 7, 6),
        (group.obr, 27, 6),
    )
    for segment, field_number, component in candidates:
        code = _value(segment, field_number, component).strip().upper()
        if code:
            return PRIORITIES.get(code)
    return None


def _referring_name(group: OrderGroup) -> str | None:
    """ORC-12, else OBR-16 (XCN: id^family^given^middle^suffix^prefix) as a DICOM PN,
    Family^Given^Middle^Prefix^Suffix, the way the worklist hands it to the modality.
    In v2.4+ the family name is an FN whose first subcomponent is the surname."""
    for segment, field_number in ((group.orc, 12), (group.obr, 16)):
        if segment is None:
            continue
        if segment.is_null(field_number):
            return ""
        if not segment.repetitions(field_number):
            continue
        parts = [
            segment.value(field_number, component).replace("^", " ").strip()
            for component in (2, 3, 4, 6, 5)
        ]
        name = "^".join(parts).rstrip("^")
        if name:
            return name
    return None


def _referring_id(group: OrderGroup) -> str:
    for segment, field_number in ((group.orc, 12), (group.obr, 16)):
        value = _value(segment, field_number).strip()
        if value:
            return value
    return ""


def _reason(obr: Segment | None) -> str | None:
    """OBR-31 reason for study (CE, repeating: each one's text, else its code), else
    OBR-13 relevant clinical information."""
    if obr is None:
        return None
    if obr.is_null(31):
        return ""
    reasons = []
    for repetition in range(1, obr.repetitions(31) + 1):
        text = obr.value(31, 2, repetition=repetition) or obr.value(31, 1, repetition=repetition)
        if text.strip():
            reasons.append(text.strip())
    if reasons:
        return "; ".join(reasons)
    if obr.is_null(13):
        return ""
    clinical = obr.value(13).strip()
    return clinical or None


def _diagnoses(group: OrderGroup) -> tuple[Diagnosis, ...] | None:
    """DG1-3.1 of each DG1 (ICD-10), in order, each once; None when there is no DG1.
    The codes' shape is the RIS's to check (`icd10_codes_clean`)."""
    if not group.dg1:
        return None
    codes: dict[str, Diagnosis] = {}
    for dg1, sequence in group.dg1:
        code = dg1.value(3, 1).strip().upper()
        system = (dg1.value(3, 3) or dg1.value(2)).strip().upper()
        if not code:
            continue
        if system in ICD9_SYSTEMS:
            raise Hl7Error(
                f"Diagnosis {code} is coded in ICD-9 ({system}); send ICD-10 codes.",
                location=location("DG1", sequence, 3),
                error_code=TABLE_VALUE_NOT_FOUND,
            )
        codes.setdefault(code, Diagnosis(code=code, location=location("DG1", sequence, 3)))
    return tuple(codes.values())
