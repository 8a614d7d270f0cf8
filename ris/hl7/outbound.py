"""The messages we send, HL7 v2.5.1, built as ER7 text from plain values.

- ORU^R01 (7.3.1): a report, preliminary, final or corrected, to the partners that file
  results. One OBX of type TX per line of the report (the common reading of TX, which
  repeats lines; receivers join the OBX with the same OBX-3 and OBX-4; long lines wrapped
  at 80 characters), OBX-11 the result
  status as in OBR-25; then one OBX per DICOM study read, OBX-3
  "110180^Study Instance UID^DCM" (PS3.16 CID 7001 codes it so; 113014 is "Study").
- ORM^O01 (4.4.1) from the order filler to the placer (IHE RAD-3, Filler Order
  Management): a status change, ORC-1 "SC" with ORC-5 from table 0038, or "OC" with ORC-5
  "CA" when we cancel an exam; and "SN" (send number), an order made at our front desk
  announced with our accession as filler number and no placer number, which the placer
  answers "NA" (number assigned) with its ORC-2.
- DFT^P03 (6.4.3): a charge posted to the HIS's patient accounting, for facilities
  whose HIS bills: EVN, PID, PV1, one FT1 (FT1-6 "CG" charge, or "CD" credit for a
  reversal; FT1-7/25 the procedure, FT1-26 its modifiers, FT1-19 the ICD-10 codes).

Pure functions: no Django, no database; the outbox gathers the values from the models.
`reply_read` reads the partner's answer (ACK or ORR^O02) to what we sent.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field

from ris.hl7 import parse
from ris.hl7.ack import escape

OUR_APPLICATION = "RADPACS"
VERSION = "2.5.1"
CHARSET = "UNICODE UTF-8"  # MSH-18, table 0211: the text goes out as UTF-8
ENCODING = "utf-8"

# OBR-25 / OBX-11 result status (table 0123).
PRELIMINARY = "P"
FINAL = "F"
CORRECTED = "C"

# ORC-1 order control codes (table 0119).
STATUS_CHANGED = "SC"
ORDER_CANCELLED = "OC"  # cancelled by the filler, unsolicited
SEND_NUMBER = "SN"
NUMBER_ASSIGNED = "NA"

# ORC-5 order status (table 0038).
IN_PROCESS = "IP"
COMPLETED = "CM"
CANCELLED = "CA"
SCHEDULED = "SC"

# Report lines are wrapped to this width: receivers show TX in fixed-width boxes, many
# limit a line (hl7apy reads OBX-5 as ST, at most 199 characters).
REPORT_LINE_WIDTH = 80
# OBX-3 of the report text (LOINC "Radiology Study observation (narrative)") and of the
# study it reads (DICOM PS3.16, DCM 110180).
REPORT_TEXT_CODE = ("18782-3", "Radiology Study observation", "LN")
STUDY_UID_CODE = ("110180", "Study Instance UID", "DCM")
# OBR-24, diagnostic service section (table 0074).
RADIOLOGY = "RAD"
# OBR-27.6 / TQ priority (table 0027).
PRIORITIES = {"stat": "S", "urgent": "A", "routine": "R"}

_CPT = re.compile(r"^\d{4}[0-9FTU]$")
_HCPCS = re.compile(r"^[A-V]\d{4}$")


@dataclass(frozen=True)
class Envelope:
    """MSH: who we are (MSH-3/4), who it is for (MSH-5/6), when and under which id."""

    sending_facility: str
    receiving_application: str
    receiving_facility: str
    control_id: str
    at: dt.datetime
    processing_id: str = "P"


@dataclass(frozen=True)
class Person:
    """A person named in XPN/XCN/CNN order: family, given, middle, suffix, prefix,
    degree; `identifier` (e.g. the NPI) issued by `authority`."""

    family: str
    given: str = ""
    middle: str = ""
    suffix: str = ""
    prefix: str = ""
    degree: str = ""
    identifier: str = ""
    authority: str = ""

    @classmethod
    def from_dicom(cls, name: str, identifier: str = "") -> Person | None:
        """A DICOM PN (Family^Given^Middle^Prefix^Suffix, PS3.5 6.2), or None if empty."""
        parts = [*name.split("=", 1)[0].split("^"), "", "", "", "", ""][:5]
        if not any(parts) and not identifier:
            return None
        family, given, middle, prefix, suffix = parts
        return cls(family, given, middle, suffix, prefix, identifier=identifier)


@dataclass(frozen=True)
class PatientData:
    mrn: str
    mrn_issuer: str
    name: Person
    birth_date: dt.date | None = None
    sex: str = "U"
    patient_class: str = "U"  # PV1-2, table 0004
    visit_number: str = ""  # PV1-19


@dataclass(frozen=True)
class OrderData:
    accession_number: str
    placer_order_number: str
    procedure_code: str
    procedure_name: str
    priority: str = "routine"
    ordering_provider: Person | None = None
    observed_at: dt.datetime | None = None  # OBR-7: when the exam was performed


@dataclass(frozen=True)
class ReportData:
    text: str
    result_status: str  # P, F or C
    status_changed_at: dt.datetime
    interpreter: Person | None = None
    study_instance_uids: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class ChargeData:
    """One FT1: our charge id (FT1-2), dates, amounts, codes, who did and ordered it."""

    charge_id: str
    service_date: dt.date
    posted_at: dt.datetime
    credit: bool
    procedure_code: str
    procedure_name: str
    modifiers: Sequence[str]
    quantity: str
    unit_amount: str
    extended_amount: str
    diagnosis_codes: Sequence[str]
    accession_number: str
    performed_by: Person | None = None
    ordered_by: Person | None = None


# FT1-6 transaction type (table 0017).
CHARGE = "CG"
CREDIT = "CD"


# ---- ER7 -------------------------------------------------------------------------------


def _text(value: str) -> str:
    """A value made safe for a field: control characters (which ER7 and MLLP's frame
    bytes forbid) dropped, delimiters escaped (2.7.4), line breaks as \\.br\\."""
    value = value.replace("\t", " ")
    return escape("".join(char for char in value if char >= " " or char in "\r\n"))


def _components(*parts: str) -> str:
    """Values joined as components, each escaped; trailing empty components dropped."""
    return "^".join(_text(part) for part in parts).rstrip("^")


def _subcomponents(*parts: str) -> str:
    return "&".join(_text(part) for part in parts).rstrip("&")


def _segment(name: str, *fields: str) -> str:
    """A segment from its fields (already escaped), trailing empty fields dropped."""
    return "|".join([name, *fields]).rstrip("|")


def timestamp(value: dt.datetime) -> str:
    """DTM to the second with the offset (2.A.22): YYYYMMDDHHMMSS+ZZZZ."""
    if value.tzinfo is None:
        raise ValueError("HL7 timestamps are sent with their offset: give an aware datetime.")
    return value.strftime("%Y%m%d%H%M%S%z")


def _optional_timestamp(value: dt.datetime | None) -> str:
    return timestamp(value) if value is not None else ""


def coding_system(code: str) -> str:
    """Table 0396 for a procedure code: CPT-4 (five digits, or four and F/T/U), HCPCS
    level II (a letter and four digits), else local."""
    if _CPT.match(code):
        return "C4"
    if _HCPCS.match(code):
        return "HCPCS"
    return "L"


def _msh(envelope: Envelope, message_type: str) -> str:
    return _segment(
        "MSH",
        "^~\\&",
        _text(OUR_APPLICATION),
        _text(envelope.sending_facility),
        _text(envelope.receiving_application),
        _text(envelope.receiving_facility),
        timestamp(envelope.at),
        "",
        message_type,
        _text(envelope.control_id),
        _text(envelope.processing_id),
        VERSION,
        "",  # MSH-13 sequence number
        "",  # MSH-14 continuation pointer
        "",  # MSH-15, MSH-16 empty: original acknowledgement mode
        "",
        "",  # MSH-17 country
        CHARSET,
    )


def _pid(patient: PatientData) -> str:
    name = patient.name
    return _segment(
        "PID",
        "1",
        "",
        _components(patient.mrn, "", "", patient.mrn_issuer, "MR"),
        "",
        _components(name.family, name.given, name.middle, name.suffix, name.prefix),
        "",
        patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "",
        _text(patient.sex or "U"),
    )


def _pv1(patient: PatientData) -> str:
    fields = ["1", _text(patient.patient_class or "U")] + [""] * 16
    fields.append(_components(patient.visit_number))  # PV1-19
    return _segment("PV1", *fields)


def _xcn(person: Person | None) -> str:
    if person is None:
        return ""
    return _components(
        person.identifier,
        person.family,
        person.given,
        person.middle,
        person.suffix,
        person.prefix,
        person.degree,
        "",  # XCN-8 source table
        person.authority,  # XCN-9 assigning authority (HD-1)
    )


def _cnn(person: Person | None) -> str:
    """NDL-1 (CNN) of OBR-32: the person as subcomponents."""
    if person is None:
        return ""
    return _subcomponents(
        person.identifier,
        person.family,
        person.given,
        person.middle,
        person.suffix,
        person.prefix,
        person.degree,
        "",  # CNN-8 source table
        person.authority,  # CNN-9 assigning authority namespace id
    )


def _procedure(order: OrderData) -> str:
    code = order.procedure_code
    return _components(code, order.procedure_name, coding_system(code))


def _orc(
    order: OrderData,
    control: str,
    at: dt.datetime,
    *,
    placer: bool = True,
    status: str = "",
) -> str:
    fields = [
        _text(control),
        _components(order.placer_order_number) if placer else "",
        _components(order.accession_number),
        "",  # ORC-4 placer group number
        _text(status),
        "",  # ORC-6 response flag
        "",  # ORC-7 quantity/timing (OBR-27 carries the priority)
        "",  # ORC-8 parent
        timestamp(at),  # ORC-9 date/time of transaction
        "",  # ORC-10 entered by
        "",  # ORC-11 verified by
        _xcn(order.ordering_provider),  # ORC-12 ordering provider
    ]
    return _segment("ORC", *fields)


def _obr(
    order: OrderData,
    *,
    placer: bool = True,
    report: ReportData | None = None,
) -> str:
    fields = [""] * 32
    fields[0] = "1"
    fields[1] = _components(order.placer_order_number) if placer else ""
    fields[2] = _components(order.accession_number)
    fields[3] = _procedure(order)
    fields[6] = _optional_timestamp(order.observed_at)  # OBR-7
    fields[15] = _xcn(order.ordering_provider)  # OBR-16
    fields[17] = _components(order.accession_number)  # OBR-18, IHE: the accession number
    fields[23] = RADIOLOGY  # OBR-24
    fields[26] = "^^^^^" + PRIORITIES.get(order.priority, "R")  # OBR-27.6
    if report is not None:
        fields[21] = timestamp(report.status_changed_at)  # OBR-22
        fields[24] = _text(report.result_status)  # OBR-25
        fields[31] = _cnn(report.interpreter)  # OBR-32 principal result interpreter
    return _segment("OBR", *fields)


def _obx(
    set_id: int,
    value_type: str,
    code: tuple[str, str, str],
    sub_id: str,
    value: str,
    status: str,
    observed_at: dt.datetime | None,
) -> str:
    fields = [""] * 14
    fields[0] = str(set_id)
    fields[1] = value_type
    fields[2] = _components(*code)
    fields[3] = _text(sub_id)
    fields[4] = _text(value)
    fields[10] = _text(status)  # OBX-11
    fields[13] = _optional_timestamp(observed_at)  # OBX-14
    return _segment("OBX", *fields)


def _join(segments: Sequence[str]) -> str:
    return "\r".join(segments) + "\r"


def report_lines(text: str) -> list[str]:
    """The report as the lines its OBX segments carry: line breaks of any kind, trailing
    blank lines dropped, blank lines inside kept (they are the paragraphs), tabs as
    spaces (TX allows no control characters), and a line longer than REPORT_LINE_WIDTH
    wrapped at spaces, its indentation kept."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\t", "    ")
    text = "".join(char for char in text if char == "\n" or char >= " ")
    if not text.strip():
        return []
    lines: list[str] = []
    for line in text.rstrip().split("\n"):
        line = line.rstrip()
        if len(line) <= REPORT_LINE_WIDTH:
            lines.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        lines += textwrap.wrap(
            line,
            width=REPORT_LINE_WIDTH,
            subsequent_indent=indent,
            break_on_hyphens=False,
        )
    return lines


# ---- messages --------------------------------------------------------------------------


def oru_r01(envelope: Envelope, patient: PatientData, order: OrderData, report: ReportData) -> str:
    """ORU^R01^ORU_R01: the report of one order."""
    segments = [
        _msh(envelope, "ORU^R01^ORU_R01"),
        _pid(patient),
        _pv1(patient),
        _orc(order, "RE", envelope.at),
        _obr(order, report=report),
    ]
    set_id = 0
    observed_at = order.observed_at
    for line in report_lines(report.text):
        set_id += 1
        segments.append(
            _obx(set_id, "TX", REPORT_TEXT_CODE, "1", line, report.result_status, observed_at)
        )
    for number, uid in enumerate(report.study_instance_uids, start=1):
        set_id += 1
        segments.append(
            _obx(set_id, "ST", STUDY_UID_CODE, str(number), uid, report.result_status, None)
        )
    return _join(segments)


def orm_o01_status(
    envelope: Envelope,
    patient: PatientData,
    order: OrderData,
    *,
    order_status: str,
    order_control: str = STATUS_CHANGED,
) -> str:
    """ORM^O01^ORM_O01 telling the placer where its order is (ORC-1 SC, or OC when we
    cancelled it; ORC-5 table 0038)."""
    return _join(
        [
            _msh(envelope, "ORM^O01^ORM_O01"),
            _pid(patient),
            _pv1(patient),
            _orc(order, order_control, envelope.at, status=order_status),
            _obr(order),
        ]
    )


def orm_o01_number_request(envelope: Envelope, patient: PatientData, order: OrderData) -> str:
    """ORM^O01^ORM_O01 with ORC-1 SN: an order made here, our accession as filler
    number (ORC-3, OBR-3), no placer number yet; the placer answers NA with its number."""
    return _join(
        [
            _msh(envelope, "ORM^O01^ORM_O01"),
            _pid(patient),
            _pv1(patient),
            _orc(order, SEND_NUMBER, envelope.at, placer=False),
            _obr(order, placer=False),
        ]
    )


def dft_p03(envelope: Envelope, patient: PatientData, charge: ChargeData) -> str:
    """DFT^P03^DFT_P03: post one charge (or its credit) to the HIS's patient account."""
    code = charge.procedure_code
    procedure = _components(code, charge.procedure_name, coding_system(code))
    fields = [""] * 26
    fields[0] = "1"
    fields[1] = _text(charge.charge_id)  # FT1-2 transaction id
    fields[3] = charge.service_date.strftime("%Y%m%d")  # FT1-4 transaction date
    fields[4] = timestamp(charge.posted_at)  # FT1-5 posting date
    fields[5] = CREDIT if charge.credit else CHARGE  # FT1-6
    fields[6] = procedure  # FT1-7 transaction code
    fields[9] = _text(charge.quantity)  # FT1-10
    fields[10] = _components(charge.extended_amount)  # FT1-11 extended amount (CP)
    fields[11] = _components(charge.unit_amount)  # FT1-12 unit amount
    fields[18] = "~".join(_components(c, "", "I10") for c in charge.diagnosis_codes)  # FT1-19
    fields[19] = _xcn(charge.performed_by)  # FT1-20
    fields[20] = _xcn(charge.ordered_by)  # FT1-21
    fields[22] = _components(charge.accession_number)  # FT1-23 filler order number
    fields[24] = procedure  # FT1-25 procedure code
    fields[25] = "~".join(_components(m, "", "CPT") for m in charge.modifiers)  # FT1-26
    return _join(
        [
            _msh(envelope, "DFT^P03^DFT_P03"),
            _segment("EVN", "P03", timestamp(charge.posted_at)),
            _pid(patient),
            _pv1(patient),
            _segment("FT1", *fields),
        ]
    )


# ---- the partner's answer ---------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the partner answered on the connection: MSA-1, its words, and a placer order
    number it assigned (ORC-1 NA) to the filler number `assigned_for`."""

    code: str
    text: str = ""
    placer_order_number: str = ""
    assigned_for: str = ""

    @property
    def accepted(self) -> bool:
        return self.code in ("AA", "CA")


class ReplyError(Exception):
    """An answer that is not an acknowledgement of our message."""


def reply_read(raw: bytes, control_id: str) -> Reply:
    """Read an ACK or ORR^O02 answering the message `control_id` (MSA-2)."""
    try:
        message = parse.parse(raw)
    except parse.Hl7Error as error:
        raise ReplyError(f"The answer is not HL7: {error.reason}") from error
    msa = message.segment("MSA")
    if msa is None:
        raise ReplyError(f"The answer ({message.header.message_type or 'no type'}) has no MSA.")
    code = msa.value(1).upper()
    if code not in ("AA", "AE", "AR", "CA", "CE", "CR"):
        raise ReplyError(f"MSA-1 {code or '(empty)'} is not an acknowledgement code.")
    answered = msa.value(2)
    if answered != control_id:
        raise ReplyError(f"The answer acknowledges {answered or '(no id)'}, not {control_id}.")
    words = [msa.value(3)]  # v2.3 text message
    for err in message.all("ERR"):
        words += [err.value(8), err.value(3, 2), err.value(1, 4, 2)]
    text = "; ".join(dict.fromkeys(word for word in words if word))
    number = assigned_for = ""
    for orc in message.all("ORC"):
        if orc.value(1).upper() == NUMBER_ASSIGNED and orc.value(2):
            number, assigned_for = orc.value(2), orc.value(3)
            break
    return Reply(code=code, text=text, placer_order_number=number, assigned_for=assigned_for)
