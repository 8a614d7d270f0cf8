"""ADT in: patients registered, updated and merged by the HIS, and their visits.

HL7 v2.5.1 chapter 3 (read the same from v2.3 on). What a message says is applied
through the RIS services, like any other door, with the sender as the audit's actor.

How a field is read (2.5.3): a field left empty leaves the value as it is; the explicit
null "" clears it; a valued field is the whole new value, all its components and
repetitions (PID-11 replaces the whole address, PID-13 every phone and the email).
Segments that repeat are lists: NK1 segments replace the contacts and IN1 groups the
insurance when present, and leave them alone when absent. PID-3 adds identifiers and
never removes one: the MRN of a merged record, or an identifier another door added,
stays.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from accounts import audit
from accounts.models import Facility
from billing.models import Payer
from config import plain_sql
from ris import selectors, services
from ris.hl7.inbound import Context, Handler, NothingToDo
from ris.hl7.parse import (
    DATA_TYPE_ERROR,
    DUPLICATE_KEY_IDENTIFIER,
    REQUIRED_FIELD_MISSING,
    SEGMENT_SEQUENCE_ERROR,
    TABLE_VALUE_NOT_FOUND,
    UNKNOWN_KEY_IDENTIFIER,
    Hl7Error,
    Message,
    Segment,
)
from ris.hl7.values import hl7_date, hl7_datetime
from ris.models import Patient, PatientContact, PatientIdentifier, PatientInsurance, Visit

# HL7 table 0001 (PID-8) to our sexes: A (ambiguous) is other, N (not applicable) unknown.
SEXES = {
    "F": Patient.Sex.FEMALE,
    "M": Patient.Sex.MALE,
    "O": Patient.Sex.OTHER,
    "A": Patient.Sex.OTHER,
    "U": Patient.Sex.UNKNOWN,
    "N": Patient.Sex.UNKNOWN,
}
# HL7 table 0063 (NK1-3, IN1-17), the codes senders use, to our few relationships.
_R = PatientContact.Relationship
CONTACT_RELATIONSHIPS = {
    "SPO": _R.SPOUSE,
    "HUS": _R.SPOUSE,
    "WIF": _R.SPOUSE,
    "DOM": _R.PARTNER,
    "PAR": _R.PARENT,
    "FTH": _R.PARENT,
    "MTH": _R.PARENT,
    "CHD": _R.CHILD,
    "NCH": _R.CHILD,
    "SCH": _R.CHILD,
    "FCH": _R.CHILD,
    "SON": _R.CHILD,
    "DAU": _R.CHILD,
    "SIB": _R.SIBLING,
    "BRO": _R.SIBLING,
    "SIS": _R.SIBLING,
    "GRD": _R.GUARDIAN,
    "FND": _R.FRIEND,
    "FRN": _R.FRIEND,
}
_S = PatientInsurance.Relationship
# IN1-17: table 0063, and the X12 individual relationship codes some senders use there.
SUBSCRIBER_RELATIONSHIPS = {
    "SEL": _S.SELF,
    "18": _S.SELF,
    "SPO": _S.SPOUSE,
    "01": _S.SPOUSE,
    "CHD": _S.CHILD,
    "NCH": _S.CHILD,
    "SCH": _S.CHILD,
    "19": _S.CHILD,
}
# HL7 table 0131 (NK1-7); an NK1 without a role is the next of kin it is named for.
CONTACT_ROLES = {
    "N": PatientContact.Role.NEXT_OF_KIN,
    "C": PatientContact.Role.EMERGENCY,
}
IDENTIFIER_TYPES = frozenset(PatientIdentifier.Type.values)
PATIENT_CLASSES = frozenset(Visit.PatientClass.values)
ADDRESS_FIELDS = (
    "address_street",
    "address_other",
    "address_city",
    "address_state",
    "address_postal_code",
    "address_country",
)
PHONE_FIELDS = ("home_phone", "mobile_phone", "email")


# ---- reading ---------------------------------------------------------------------------


def _fit(model: type, name: str, value: str) -> str:
    """A value cut to its column (PostgreSQL refuses longer ones, SQLite does not)."""
    length = model._meta.get_field(name).max_length
    return value.strip()[:length] if length else value.strip()


def _issuer(segment: Segment, field: int, repetition: int = 1) -> str:
    """CX-4, the assigning authority: its namespace id, else its universal id (OID)."""
    return segment.value(field, 4, 1, repetition) or segment.value(field, 4, 2, repetition)


def _cx_key(segment: Segment, field: int) -> tuple[str, str, int]:
    """The repetition of a CX list typed MR (CX-5), else the first: value, issuer and
    which repetition it was (0 when the field is empty)."""
    for repetition in range(1, segment.repetitions(field) + 1):
        if segment.value(field, 5, repetition=repetition).upper() == "MR":
            return (
                segment.value(field, 1, repetition=repetition),
                _issuer(segment, field, repetition),
                repetition,
            )
    if segment.value(field):
        return segment.value(field), _issuer(segment, field), 1
    return "", "", 0


def pid_key(pid: Segment) -> tuple[str, str]:
    """The patient's MRN and its assigning authority (PID-3's MR repetition, else its
    first; PID-2 for v2.3 senders that still put it there), as `services` queues by."""
    value, issuer, _ = _cx_key(pid, 3)
    if value:
        return value, issuer
    return pid.value(2), _issuer(pid, 2)


def _xpn(segment: Segment, field: int, repetition: int) -> dict[str, str]:
    """XPN: family (FN-1, the full surname)^given^middle^suffix^prefix."""
    parts = {"family_name": 1, "given_name": 2, "middle_name": 3, "name_suffix": 4}
    name = {key: segment.value(field, c, repetition=repetition) for key, c in parts.items()}
    name["name_prefix"] = segment.value(field, 5, repetition=repetition)
    return name


def _preferred(segment: Segment, field: int, component: int, codes: tuple[str, ...]) -> int:
    """The repetition whose type code (e.g. XPN-7 L, XAD-7 H) comes first in `codes`,
    else the first."""
    count = segment.repetitions(field)
    for code in codes:
        for repetition in range(1, count + 1):
            if segment.value(field, component, repetition=repetition).upper() == code:
                return repetition
    return 1


def _xtn(segment: Segment, field: int, repetition: int) -> tuple[str, str]:
    """One XTN as (kind, text), kind "email", "mobile", "home" or "other" (work, beeper,
    fax...). XTN-2 use code (table 0201), XTN-3 equipment (table 0202); the number is
    XTN-1 as v2.3 sent it, else XTN-12, else built from XTN-5..8."""
    use = segment.value(field, 2, repetition=repetition).upper()
    equipment = segment.value(field, 3, repetition=repetition).upper()
    email = segment.value(field, 4, repetition=repetition)
    number = segment.value(field, 1, repetition=repetition) or segment.value(
        field, 12, repetition=repetition
    )
    if not number:
        country, area, local, extension = (
            segment.value(field, c, repetition=repetition) for c in (5, 6, 7, 8)
        )
        number = " ".join(p for p in (f"+{country}" if country else "", area, local) if p)
        if number and extension:
            number += f" x{extension}"
    if use == "NET" or equipment in ("INTERNET", "X.400") or (not email and "@" in number):
        return "email", email or number
    if equipment in ("CP", "BP") and use != "WPN":
        return ("mobile" if equipment == "CP" else "other"), number
    if use == "PRS":
        return "mobile", number
    if use in ("", "PRN", "ORN", "VHN") and equipment in ("", "PH"):
        return "home", number
    return "other", number


def _email(text: str) -> str:
    """An email address we can keep; one that is not an address is left out."""
    text = text.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    try:
        validate_email(text)
    except ValidationError:
        return ""
    return text[:254]


@dataclasses.dataclass
class PatientData:
    """What a message says of its patient: the PID-3 key, the demographics it carries
    (only the fields it valued or nulled), and the lists (None: leave them)."""

    mrn: str
    mrn_issuer: str
    fields: dict[str, Any]
    identifiers: list[dict[str, str]]
    contacts: list[dict[str, str]] | None
    insurance: list[dict[str, Any]] | None


def patient_data(message: Message) -> PatientData:
    """Read PID, NK1 and IN1 (with IN2) into what the registry stores; Hl7Error (AE) for
    a value that is not what its field must be, with the field's location. No database:
    the listener runs this to refuse a bad message before acknowledging it."""
    pid = message.segment("PID")
    if pid is None:
        raise Hl7Error(
            "The message has no PID segment.", location="PID", error_code=SEGMENT_SEQUENCE_ERROR
        )
    mrn, issuer = pid_key(pid)
    if not mrn:
        raise Hl7Error(
            "PID-3 (patient identifier list) is empty.",
            location="PID-3",
            error_code=REQUIRED_FIELD_MISSING,
        )
    if len(mrn) > Patient._meta.get_field("mrn").max_length:
        raise Hl7Error(
            f"Patient identifier {mrn[:20]}... (PID-3) is longer than 64 characters.",
            location="PID-3.1",
            error_code=DATA_TYPE_ERROR,
        )
    fields: dict[str, Any] = {}
    _read_name(pid, fields)
    if pid.is_null(7):
        fields["birth_date"] = None
    elif pid.value(7):
        fields["birth_date"] = hl7_date(pid.value(7), location="PID-7")
    if pid.is_null(8):
        fields["sex"] = Patient.Sex.UNKNOWN
    elif pid.value(8):
        code = pid.value(8).upper()
        if code not in SEXES:
            raise Hl7Error(
                f"Administrative sex {pid.value(8)!r} (PID-8) is not one of HL7 table 0001: "
                "F, M, O, U, A, N.",
                location="PID-8",
                error_code=TABLE_VALUE_NOT_FOUND,
            )
        fields["sex"] = SEXES[code]
    _read_address(pid, fields)
    _read_phones(pid, fields)
    return PatientData(
        mrn=mrn,
        mrn_issuer=_fit(Patient, "mrn_issuer", issuer),
        fields=fields,
        identifiers=_read_identifiers(pid),
        contacts=_read_contacts(message),
        insurance=_read_insurance(message),
    )


def _read_name(pid: Segment, fields: dict[str, Any]) -> None:
    """PID-5, the legal name (XPN-7 L) or the first; a null is ignored: the record keeps
    its name, as a patient cannot have none."""
    if pid.is_null(5) or not pid.repetitions(5):
        return
    name = _xpn(pid, 5, _preferred(pid, 5, 7, ("L",)))
    if not name["family_name"]:
        raise Hl7Error(
            "PID-5 (patient name) has no family name (PID-5.1).",
            location="PID-5.1",
            error_code=REQUIRED_FIELD_MISSING,
        )
    fields.update({key: _fit(Patient, key, value) for key, value in name.items()})


def _read_address(pid: Segment, fields: dict[str, Any]) -> None:
    """PID-11, the home address (XAD-7 H) or the first: street (SAD-1, else street name
    and dwelling number), other designation, city, state, postal code, country."""
    if pid.is_null(11):
        fields.update(dict.fromkeys(ADDRESS_FIELDS, ""))
        return
    if not pid.repetitions(11):
        return
    repetition = _preferred(pid, 11, 7, ("H", "L", "M"))
    street = pid.value(11, 1, 1, repetition) or " ".join(
        p for p in (pid.value(11, 1, 2, repetition), pid.value(11, 1, 3, repetition)) if p
    )
    values = [street] + [pid.value(11, c, repetition=repetition) for c in (2, 3, 4, 5, 6)]
    fields.update(
        {key: _fit(Patient, key, value) for key, value in zip(ADDRESS_FIELDS, values, strict=True)}
    )


def _read_phones(pid: Segment, fields: dict[str, Any]) -> None:
    """PID-13 (home phones, cell phones, email), as one value: home phone, mobile and
    email are what its repetitions say, blank when none says it. PID-14 (business
    phone) has no column of ours and is not read."""
    if pid.is_null(13):
        fields.update(dict.fromkeys(PHONE_FIELDS, ""))
        return
    if not pid.repetitions(13):
        return
    found: dict[str, str] = {}
    for repetition in range(1, pid.repetitions(13) + 1):
        kind, text = _xtn(pid, 13, repetition)
        if text and kind not in found:
            found[kind] = text
    fields["home_phone"] = _fit(Patient, "home_phone", found.get("home", ""))
    fields["mobile_phone"] = _fit(Patient, "mobile_phone", found.get("mobile", ""))
    fields["email"] = _email(found.get("email", ""))


def _read_identifiers(pid: Segment) -> list[dict[str, str]]:
    """PID-3's other repetitions: value (CX-1), issuer (CX-4), type (CX-5, table 0203;
    U for codes we do not list)."""
    _, _, key_repetition = _cx_key(pid, 3)
    rows = []
    for repetition in range(1, pid.repetitions(3) + 1):
        value = pid.value(3, 1, repetition=repetition)
        if repetition == key_repetition or not value:
            continue
        type_code = pid.value(3, 5, repetition=repetition).upper()
        rows.append(
            {
                "value": _fit(PatientIdentifier, "value", value),
                "issuer": _fit(PatientIdentifier, "issuer", _issuer(pid, 3, repetition)),
                "type_code": type_code if type_code in IDENTIFIER_TYPES else "U",
            }
        )
    return rows


def _read_contacts(message: Message) -> list[dict[str, str]] | None:
    """NK1 segments (None when there are none): name (NK1-2, else the organisation
    NK1-13), relationship (NK1-3), phone and email (NK1-5, else NK1-6), role (NK1-7).
    An NK1 without a name (e.g. NK1|1|"") names nobody: NK1s that all do so clear
    the list."""
    segments = message.all("NK1")
    if not segments:
        return None
    rows = []
    for nk1 in segments:
        family, given = nk1.value(2, 1), nk1.value(2, 2)
        if not family:
            family, given = nk1.value(13, 1), ""
        if not family:
            continue
        found: dict[str, str] = {}
        for field in (5, 6):
            for repetition in range(1, nk1.repetitions(field) + 1):
                kind, text = _xtn(nk1, field, repetition)
                kind = "email" if kind == "email" else "phone"
                if text and kind not in found:
                    found[kind] = text
        rows.append(
            {
                "family_name": _fit(PatientContact, "family_name", family),
                "given_name": _fit(PatientContact, "given_name", given),
                "relationship": CONTACT_RELATIONSHIPS.get(nk1.value(3).upper(), _R.OTHER),
                "role": CONTACT_ROLES.get(
                    nk1.value(7).upper(),
                    PatientContact.Role.OTHER if nk1.value(7) else PatientContact.Role.NEXT_OF_KIN,
                ),
                "phone": _fit(PatientContact, "phone", found.get("phone", "")),
                "email": _email(found.get("email", "")),
            }
        )
    return rows


def _read_insurance(message: Message) -> list[dict[str, Any]] | None:
    """IN1 groups (None when there are none), each with the IN2 after it: the company
    (IN1-3 id, IN1-4 name; resolved to a Payer when applied), member id (IN1-36 policy
    number, else IN1-49 insured's id, else IN2-6 Medicare / IN2-8 Medicaid number),
    group (IN1-8), valid dates (IN1-12/13), subscriber (IN1-16/17), rank (IN1-22, else
    the group's place). A group without a company or a member id (self-pay) is left
    out: nothing could be billed to it."""
    groups: list[tuple[Segment, Segment | None]] = []
    for segment in message.segments:
        if segment.name == "IN1":
            groups.append((segment, None))
        elif segment.name == "IN2" and groups and groups[-1][1] is None:
            groups[-1] = (groups[-1][0], segment)
    if not groups:
        return None
    rows = []
    for place, (in1, in2) in enumerate(groups, 1):
        company_id, company_name = in1.value(3), in1.value(4)
        member_id = in1.value(36) or in1.value(49)
        if not member_id and in2 is not None:
            member_id = in2.value(6) or in2.value(8)
        if not (company_id or company_name) or not member_id:
            continue
        valid_from = hl7_date(in1.value(12), location="IN1-12")
        valid_until = hl7_date(in1.value(13), location="IN1-13")
        if valid_from and valid_until and valid_until < valid_from:
            raise Hl7Error(
                f"Plan expiration {in1.value(13)} (IN1-13) is before its effective date "
                f"{in1.value(12)} (IN1-12).",
                location="IN1-13",
                error_code=DATA_TYPE_ERROR,
            )
        relationship = in1.value(17).upper()
        subscriber = ""
        if relationship not in ("", "SEL", "18"):
            name = _xpn(in1, 16, 1)
            subscriber = name["family_name"]
            if name["given_name"]:
                subscriber += f", {name['given_name']}"
        rank = in1.value(22)
        rows.append(
            {
                "company_id": company_id[:80],
                "company_name": company_name[:200],
                "member_id": _fit(PatientInsurance, "member_id", member_id),
                "group_number": _fit(PatientInsurance, "group_number", in1.value(8)),
                "subscriber_name": _fit(PatientInsurance, "subscriber_name", subscriber),
                "relationship_to_subscriber": SUBSCRIBER_RELATIONSHIPS.get(
                    relationship, _S.SELF if not relationship else _S.OTHER
                ),
                "rank": int(rank) if rank.isdigit() and 1 <= int(rank) <= 99 else place,
                "valid_from": valid_from,
                "valid_until": valid_until,
            }
        )
    return rows


@dataclasses.dataclass
class VisitData:
    """What PV1 says of the visit: its number (PV1-19) and the fields it valued or
    nulled: class (PV1-2), location (PV1-3), attending doctor (PV1-7), admitted (PV1-44),
    discharged (PV1-45)."""

    number: str
    fields: dict[str, Any]


def visit_data(message: Message, tz: str | dt.tzinfo) -> VisitData | None:
    """PV1 read (None without one); times without an offset are in `tz`."""
    pv1 = message.segment("PV1")
    if pv1 is None:
        return None
    fields: dict[str, Any] = {}
    if pv1.is_null(2):
        fields["patient_class"] = Visit.PatientClass.UNKNOWN
    elif pv1.value(2):
        code = pv1.value(2).upper()
        if code not in PATIENT_CLASSES:
            raise Hl7Error(
                f"Patient class {pv1.value(2)!r} (PV1-2) is not one of HL7 table 0004.",
                location="PV1-2",
                error_code=TABLE_VALUE_NOT_FOUND,
            )
        fields["patient_class"] = code
    if pv1.is_null(3):
        fields["location"] = ""
    elif pv1.repetitions(3):
        # PL: point of care^room^bed^facility^status^type^building^floor.
        place = "/".join(p for p in (pv1.value(3, c) for c in (1, 2, 3)) if p)
        building = ", ".join(p for p in (pv1.value(3, 7), pv1.value(3, 4)) if p)
        fields["location"] = _fit(
            Visit, "location", f"{place} ({building})" if place and building else place or building
        )
    if pv1.is_null(7):
        fields["attending_doctor"] = ""
    elif pv1.repetitions(7):
        # XCN: id^family^given^middle^suffix^prefix.
        family, given, middle = (pv1.value(7, c) for c in (2, 3, 4))
        name = f"{family}, {' '.join(p for p in (given, middle) if p)}".strip(", ")
        doctor_id = pv1.value(7, 1)
        text = f"{name} ({doctor_id})" if name and doctor_id else name or doctor_id
        fields["attending_doctor"] = _fit(Visit, "attending_doctor", text)
    for field, name in ((44, "admitted_at"), (45, "discharged_at")):
        if pv1.is_null(field):
            fields[name] = None
        elif pv1.value(field):
            fields[name] = hl7_datetime(pv1.value(field), tz, location=f"PV1-{field}")
    return VisitData(number=_fit(Visit, "visit_number", pv1.value(19)), fields=fields)


def event_time(message: Message, tz: str | dt.tzinfo) -> dt.datetime | None:
    """When the event happened: EVN-6 (occurred), else EVN-2 (recorded), else MSH-7."""
    evn = message.segment("EVN")
    for text, location in (
        (evn.value(6) if evn else "", "EVN-6"),
        (evn.value(2) if evn else "", "EVN-2"),
        (message.header.sent_at, "MSH-7"),
    ):
        if text:
            return hl7_datetime(text, tz, location=location)
    return None


def _check_patient(message: Message, facility: Facility) -> None:
    """On receipt: PID (and PV1) readable, or the sender hears why (AE)."""
    patient_data(message)
    visit_data(message, facility.timezone)


def _check_visit_event(message: Message, facility: Facility) -> None:
    pid = message.segment("PID")
    if pid is not None and not pid_key(pid)[0]:
        raise Hl7Error(
            "PID-3 (patient identifier list) is empty.",
            location="PID-3",
            error_code=REQUIRED_FIELD_MISSING,
        )
    visit_data(message, facility.timezone)


def _check_merge(message: Message, facility: Facility) -> None:
    groups = _merge_groups(message)
    if len(groups) != len(message.all("MRG")):
        raise Hl7Error(
            "Each MRG must follow the PID of the patient it is merged into.",
            location="MRG",
            error_code=SEGMENT_SEQUENCE_ERROR,
        )
    for pid, mrg in groups:
        if not pid_key(pid)[0]:
            raise Hl7Error(
                "PID-3 (surviving patient's identifier) is empty.",
                location="PID-3",
                error_code=REQUIRED_FIELD_MISSING,
            )
        if not _cx_key(mrg, 1)[0]:
            raise Hl7Error(
                "MRG-1 (prior patient identifier) is empty.",
                location="MRG-1",
                error_code=REQUIRED_FIELD_MISSING,
            )


# ---- patients --------------------------------------------------------------------------


@dataclasses.dataclass
class Upsert:
    """What bringing the patient up to date did: `outcome` for the message log ("" when
    nothing changed), `unchanged` why nothing did (for NothingToDo)."""

    patient: Patient
    outcome: str = ""
    unchanged: str = ""


def patient_upsert(message: Message, context: Context) -> Patient:
    """The live patient of the message's PID, registered when unknown and brought up to
    date when known (PID demographics and identifiers, NK1 contacts, IN1 insurance):
    what every message carrying a patient (ADT, ORM, OMI) does first.

    A PID naming a record that was merged answers with its survivor, unchanged: the
    message describes the closed record, not the survivor.
    """
    return _patient_upsert(message, context).patient


def _patient_upsert(message: Message, context: Context) -> Upsert:
    data = patient_data(message)
    facility = context.facility
    issuer = data.mrn_issuer or facility.mrn_issuer
    batch = context.patients
    key = (facility.pk, issuer, data.mrn)
    if batch is not None and key in batch.holders:
        holder = batch.holders[key]
    else:
        # Locked now: an update goes on from this read (the transaction holds it).
        holder = selectors.patient_holding(
            facility=facility, value=data.mrn, issuer=issuer, lock=True
        )
        if batch is not None:
            holder = batch.adopt(key, holder)
    if holder is None:
        patient = _patient_register(data, context)
        if batch is not None:
            batch.registered(key, patient, data.identifiers)
        return Upsert(patient, outcome=f"Registered MRN {patient.mrn} ({patient.display_name})")
    if holder.merged_into_id is None:
        return _patient_refresh(holder, data, context, locked=True)
    if batch is not None:
        batch.flush()  # the survivor is read the usual way, with the batch's writes done
    survivor = Patient.objects.get(pk=holder.merged_into_id)
    if (holder.mrn_issuer, holder.mrn) == (issuer, data.mrn):
        return Upsert(
            survivor,
            unchanged=f"MRN {data.mrn} was merged into MRN {survivor.mrn}: "
            "the closed record's details are not applied to the survivor.",
        )
    return _patient_refresh(survivor, data, context)


class PatientBatch:
    """The patients of an HL7 worker's batch of patient events (A01, A04, A05, A08,
    A28, A31), read and locked with one statement before the first is applied, their
    changed columns written together at the end: a read and an UPDATE per message cost
    more than what the message changed.

    `holders` is what `patient_holding` would answer now for each key (None: nobody);
    `instances` the one instance of each patient read, which later messages of the same
    patient go on from, their changes still in memory. Those writes must be done
    (`flush`) before anything else reads patients: the batch calls it before a message
    of another kind, and a merged record's path calls it before reading its survivor.
    """

    def __init__(self, keys: list[selectors.PatientKey]) -> None:
        self.holders: dict[selectors.PatientKey, Patient | None] = dict.fromkeys(keys)
        self.instances: dict[int, Patient] = {}
        self._unwritten: dict[int, set[str]] = {}
        for key, patient in selectors.patients_holding(keys).items():
            self.holders[key] = self.instances.setdefault(patient.pk, patient)

    def adopt(self, key: selectors.PatientKey, holder: Patient | None) -> Patient | None:
        """A holder read outside the batch's first statement: the batch's instance of it
        when it has one (with its changes not yet written)."""
        if holder is not None:
            holder = self.instances.setdefault(holder.pk, holder)
        self.holders[key] = holder
        return holder

    def registered(
        self, key: selectors.PatientKey, patient: Patient, identifiers: list[dict[str, str]]
    ) -> None:
        """A patient registered: it now holds its MRN, and the identifiers it was given
        may have changed hands (read again when asked)."""
        self.instances[patient.pk] = patient
        self.holders[key] = patient
        self.forget_identifiers(key[0], identifiers)

    def forget_identifiers(self, facility_id: int, identifiers: list[dict[str, str]]) -> None:
        values = {row["value"] for row in identifiers}
        for key in [k for k in self.holders if k[0] == facility_id and k[2] in values]:
            del self.holders[key]

    def write_later(self, patient: Patient, field_names: list[str]) -> None:
        """For `services.patient_update`: columns of a patient of the batch changed."""
        if self.instances.get(patient.pk) is not patient:
            raise RuntimeError(f"Patient {patient.pk} is not the batch's instance of it.")
        self._unwritten.setdefault(patient.pk, set()).update(field_names)

    def flush(self) -> None:
        """Write what changed (one statement per set of columns changed together) and
        forget what was read: from now on patients are read again."""
        groups: dict[tuple[str, ...], list[Patient]] = {}
        for pk, names in self._unwritten.items():
            groups.setdefault(tuple(sorted(names)), []).append(self.instances[pk])
        for names, patients in groups.items():
            plain_sql.update_many(patients, names)
        self._unwritten.clear()
        self.instances.clear()
        self.holders.clear()


def _patient_register(data: PatientData, context: Context) -> Patient:
    if not data.fields.get("family_name"):
        raise Hl7Error(
            f"MRN {data.mrn} is not registered here and PID-5 gives no family name "
            "to register it with.",
            location="PID-5.1",
            error_code=REQUIRED_FIELD_MISSING,
        )
    fields = {k: v for k, v in data.fields.items() if v is not None}
    patient = services.patient_create(
        facility=context.facility,
        mrn=data.mrn,
        mrn_issuer=data.mrn_issuer,
        identifiers=data.identifiers,
        contacts=data.contacts or (),
        insurance=_insurance_rows(data.insurance or [], context, existing=[]),
        actor_name=context.actor,
        door=audit.Door.HL7,
        mrn_checked=True,  # `_patient_upsert` found no holder
        **fields,
    )
    return patient


def _patient_refresh(
    patient: Patient, data: PatientData, context: Context, *, locked: bool = False
) -> Upsert:
    """Change what the message changes, nothing else, so the audit row (old and new)
    says only that. `locked`: `patient` was read under a row lock."""
    changes = {k: v for k, v in data.fields.items() if getattr(patient, k) != v}
    lists: dict[str, Any] = {}
    new = {
        (row["issuer"], row["value"]): row["type_code"]
        for row in data.identifiers
        if (row["issuer"], row["value"]) != (patient.mrn_issuer, patient.mrn)
    }
    # Only a message naming identifiers besides the MRN needs those the patient holds.
    held = {(i.issuer, i.value): i.type_code for i in patient.identifiers.all()} if new else {}
    if any(held.get(key) != type_code for key, type_code in new.items()):
        merged = held | new
        lists["identifiers"] = [
            {"issuer": issuer, "value": value, "type_code": type_code}
            for (issuer, value), type_code in merged.items()
        ]
    if data.contacts is not None:
        current = list(patient.contacts.order_by("id"))
        rows = _matched(data.contacts, current, key=_contact_key)
        if _list_differs(rows, current, services.CONTACT_FIELDS):
            lists["contacts"] = rows
    if data.insurance is not None:
        current_insurance = list(patient.insurance.order_by("rank", "id"))
        rows = _insurance_rows(data.insurance, context, existing=current_insurance)
        if _list_differs(rows, current_insurance, services.INSURANCE_FIELDS):
            lists["insurance"] = rows
    label = f"MRN {patient.mrn}"
    if not changes and not lists:
        return Upsert(patient, unchanged=f"{label} ({patient.display_name}) is up to date.")
    batch = context.patients if locked else None
    patient = services.patient_update(
        patient=patient,
        actor_name=context.actor,
        door=audit.Door.HL7,
        already_locked=locked,
        write_later=batch.write_later if batch is not None else None,
        **lists,
        **changes,
    )
    if batch is not None and "identifiers" in lists:
        batch.forget_identifiers(patient.facility_id, lists["identifiers"])
    return Upsert(patient, outcome=f"Updated {label}: {', '.join([*changes, *lists])}")


def _contact_key(row: Any) -> tuple[str, str]:
    get = row.get if isinstance(row, dict) else lambda name: getattr(row, name)
    return get("family_name").lower(), get("given_name").lower()


def _policy_key(row: Any) -> tuple[int, str]:
    if isinstance(row, dict):
        return row["payer"].pk, row["member_id"]
    return row.payer_id, row.member_id


def _matched(
    rows: list[dict[str, Any]], current: list[Any], *, key: Callable[[Any], Any]
) -> list[dict[str, Any]]:
    """Rows given the id of the existing row they describe (same `key`, in order), so an
    unchanged contact or policy keeps its row instead of being removed and added."""
    free: dict[Any, list[Any]] = {}
    for obj in current:
        free.setdefault(key(obj), []).append(obj)
    out = []
    for row in rows:
        candidates = free.get(key(row))
        out.append({**row, "id": candidates.pop(0).pk} if candidates else dict(row))
    return out


def _list_differs(rows: list[dict[str, Any]], current: list[Any], fields: tuple[str, ...]) -> bool:
    by_id = {obj.pk: obj for obj in current}
    if {row.get("id") for row in rows} != set(by_id) or len(rows) != len(current):
        return True
    return any(
        getattr(by_id[row["id"]], name) != row[name]
        for row in rows
        for name in fields
        if name in row
    )


def _insurance_rows(
    groups: list[dict[str, Any]], context: Context, *, existing: list[PatientInsurance]
) -> list[dict[str, Any]]:
    """IN1 groups as insurance rows, each with its Payer; rows matched to the policies
    the patient holds (same payer and member id)."""
    rows = []
    for group in groups:
        row = {k: v for k, v in group.items() if k not in ("company_id", "company_name")}
        row["payer"] = _payer(group["company_id"], group["company_name"], context)
        rows.append(row)
    return _matched(rows, existing, key=_policy_key)


def _payer(company_id: str, company_name: str, context: Context) -> Payer:
    """The facility's payer an IN1 names: by its id (IN1-3 against the payer id), else by
    name (IN1-4). One we do not know is created, as RIS registries do from the HIS's
    insurance master: billing reviews it (the HIS's company id may not be the payer id
    claims need) but the coverage is not lost."""
    payers = Payer.objects.filter(facility=context.facility)
    payer = payers.filter(payer_identifier=company_id).first() if company_id else None
    if payer is None and company_name:
        payer = payers.filter(name__iexact=company_name).first()
    if payer is None:
        name = company_name or f"Payer {company_id}"
        payer = Payer.objects.create(
            facility=context.facility, name=name, payer_identifier=company_id
        )
        audit.record(
            action=audit.Action.CREATE,
            door=audit.Door.HL7,
            actor=context.actor,
            obj=payer,
            detail={"from": "IN1", "payer_identifier": company_id, "name": name},
        )
    return payer


# ---- visits ----------------------------------------------------------------------------


def _visit_label(visit: Visit) -> str:
    return f"Visit {visit.visit_number}" if visit.visit_number else f"Visit #{visit.pk} (no number)"


def _visit_record(visit: Visit, context: Context, action: str, detail: dict[str, Any]) -> None:
    audit.record(action=action, door=audit.Door.HL7, actor=context.actor, obj=visit, detail=detail)


def _visit_upsert(
    message: Message, context: Context, patient: Patient, *, verb: str, create: bool
) -> str:
    """A01/A04/A05 (and A08 naming a visit number): the visit PV1-19 numbers made what
    PV1 says. Without a number: the patient's unnumbered visit admitted at the same time
    (PV1-44, else the event's time), so a message applied twice makes one visit."""
    tz = context.facility.timezone
    data = visit_data(message, tz)
    if data is None:
        return ""
    fields = dict(data.fields)
    if not data.number and (not create or fields.get("patient_class") in (None, "N")):
        # An update (A08) names its visit by number; PV1|1|N is "no visit", as A28/A31
        # and many A08s send it.
        return ""
    visits = Visit.objects.filter(facility=context.facility)
    admitted = fields["admitted_at"] if "admitted_at" in fields else event_time(message, tz)
    if data.number:
        visit = visits.filter(visit_number=data.number).select_related("patient").first()
    else:
        visit = visits.filter(patient=patient, visit_number="", admitted_at=admitted).first()
    if visit is None:
        if not (create or data.number):
            return ""
        if create:
            fields["admitted_at"] = admitted
        visit = Visit.objects.create(
            facility=context.facility, patient=patient, visit_number=data.number, **fields
        )
        _visit_record(visit, context, audit.Action.CREATE, {"visit": _jsonable(fields)})
        return f"{_visit_label(visit)} {verb}"
    changed = _visit_owner(visit, patient, data.number)
    if create and visit.is_cancelled:
        fields["is_cancelled"] = False  # admitted again under the number it cancelled
    for name, value in fields.items():
        if getattr(visit, name) != value:
            changed[name] = [_jsonable(getattr(visit, name)), _jsonable(value)]
            setattr(visit, name, value)
    if not changed:
        return ""
    visit.save()
    _visit_record(visit, context, audit.Action.UPDATE, {"changed": changed})
    return f"{_visit_label(visit)} updated: {', '.join(changed)}"


def _visit_owner(visit: Visit, patient: Patient, number: str) -> dict[str, Any]:
    """A visit is one patient's: one of a record merged into `patient` moves to it (a
    merge through another door did not move it); another patient's is refused."""
    if visit.patient_id == patient.pk:
        return {}
    owner = visit.patient
    if owner.merged_into_id == patient.pk:
        visit.patient = patient
        return {"patient": [owner.pk, patient.pk]}
    raise Hl7Error(
        f"Visit {number} (PV1-19) belongs to MRN {owner.mrn}, not to MRN {patient.mrn}.",
        location="PV1-19",
        error_code=DUPLICATE_KEY_IDENTIFIER,
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value.isoformat() if isinstance(value, dt.date) else value


def _known_patient(message: Message, context: Context) -> Patient:
    """The live patient of PID for a visit event; unknown: kept for replay after the
    registration arrives."""
    pid = message.segment("PID")
    assert pid is not None  # required on receipt
    mrn, issuer = pid_key(pid)
    patient = selectors.patient_by_identifier(
        facility=context.facility, value=mrn, issuer=issuer or context.facility.mrn_issuer
    )
    if patient is None:
        raise Hl7Error(
            f"MRN {mrn} (PID-3) is not registered here.",
            location="PID-3",
            error_code=UNKNOWN_KEY_IDENTIFIER,
            replayable=True,
        )
    return patient


def _known_visit(message: Message, context: Context, patient: Patient) -> Visit:
    """The visit PV1-19 names, or without a number the patient's one open visit."""
    data = visit_data(message, context.facility.timezone)
    number = data.number if data else ""
    visits = Visit.objects.filter(facility=context.facility).select_related("patient")
    if number:
        visit = visits.filter(visit_number=number).first()
        if visit is None:
            raise Hl7Error(
                f"Visit {number} (PV1-19) is not known here: its admission (A01/A04) "
                "has not been received.",
                location="PV1-19",
                error_code=UNKNOWN_KEY_IDENTIFIER,
                replayable=True,
            )
        if _visit_owner(visit, patient, number):
            visit.save(update_fields=["patient", "updated_at"])
        return visit
    open_visits = list(
        visits.filter(patient=patient, is_cancelled=False, discharged_at__isnull=True)[:2]
    )
    if len(open_visits) != 1:
        state = "no open visit" if not open_visits else "several open visits"
        raise Hl7Error(
            f"PV1-19 (visit number) is empty and MRN {patient.mrn} has {state}.",
            location="PV1-19",
            error_code=UNKNOWN_KEY_IDENTIFIER if not open_visits else REQUIRED_FIELD_MISSING,
            replayable=True,
        )
    return open_visits[0]


def _visit_set(visit: Visit, context: Context, **values: Any) -> None:
    changed = {
        name: [_jsonable(getattr(visit, name)), _jsonable(value)]
        for name, value in values.items()
        if getattr(visit, name) != value
    }
    for name, value in values.items():
        setattr(visit, name, value)
    visit.save(update_fields=[*values, "updated_at"])
    _visit_record(visit, context, audit.Action.UPDATE, {"changed": changed})


# ---- events ----------------------------------------------------------------------------


def _patient_event(verb: str, *, creates_visit: bool) -> Callable[[Message, Context], str]:
    """A01, A04, A05, A08, A28, A31: the patient registered or brought up to date (an
    update of an unknown patient registers it), and the visit PV1 describes."""

    def apply(message: Message, context: Context) -> str:
        result = _patient_upsert(message, context)
        parts = [result.outcome] if result.outcome else []
        visit = _visit_upsert(message, context, result.patient, verb=verb, create=creates_visit)
        if visit:
            parts.append(visit)
        if not parts:
            raise NothingToDo(result.unchanged)
        return "; ".join(parts)

    return apply


def discharge(message: Message, context: Context) -> str:
    """A03: the visit ends, at PV1-45, else when the event occurred (EVN-6, EVN-2, MSH-7)."""
    patient = _known_patient(message, context)
    visit = _known_visit(message, context, patient)
    tz = context.facility.timezone
    data = visit_data(message, tz)
    when = (data.fields.get("discharged_at") if data else None) or event_time(message, tz)
    label = _visit_label(visit)
    if visit.is_cancelled:
        raise Hl7Error(
            f"{label} was cancelled (A11): it cannot be discharged.",
            location="PV1-19",
            error_code=UNKNOWN_KEY_IDENTIFIER,
        )
    if visit.discharged_at == when:
        raise NothingToDo(f"{label} was already discharged then.")
    _visit_set(visit, context, discharged_at=when)
    return f"{label} discharged"


def cancel_discharge(message: Message, context: Context) -> str:
    """A13: the discharge was a mistake; the visit is open again."""
    patient = _known_patient(message, context)
    visit = _known_visit(message, context, patient)
    label = _visit_label(visit)
    if visit.discharged_at is None:
        raise NothingToDo(f"{label} is not discharged.")
    _visit_set(visit, context, discharged_at=None)
    return f"{label} discharge cancelled"


def cancel_admit(message: Message, context: Context) -> str:
    """A11: the admission (or registration) was a mistake; the visit is kept, marked."""
    patient = _known_patient(message, context)
    visit = _known_visit(message, context, patient)
    label = _visit_label(visit)
    if visit.is_cancelled:
        raise NothingToDo(f"{label} was already cancelled.")
    _visit_set(visit, context, is_cancelled=True)
    return f"{label} cancelled"


# ---- merges ----------------------------------------------------------------------------


def _merge_groups(message: Message) -> list[tuple[Segment, Segment]]:
    """A40 (ADT_A39): {PID [PD1] MRG [PV1]}: each MRG with the PID before it."""
    groups = []
    pid: Segment | None = None
    for segment in message.segments:
        if segment.name == "PID":
            pid = segment
        elif segment.name == "MRG" and pid is not None:
            groups.append((pid, segment))
    return groups


def _named(facility: Facility, value: str, issuer: str) -> Patient | None:
    """The record an identifier names, merged or not: by MRN, else by another
    identifier (the merge moved those to the survivor)."""
    issuer = issuer or facility.mrn_issuer
    patient = Patient.objects.filter(facility=facility, mrn_issuer=issuer, mrn=value).first()
    if patient is None:
        held = (
            PatientIdentifier.objects.filter(facility=facility, issuer=issuer, value=value)
            .select_related("patient")
            .first()
        )
        patient = held.patient if held else None
    return patient


def merge(message: Message, context: Context) -> str:
    """A40: each MRG's record (MRG-1, the prior patient identifier) merged into its PID's
    (the survivor). The survivor should exist; if it does not, it is registered from
    PID first, as the HIS's master index has it. The prior record must exist (kept for
    replay otherwise). A merge already done is nothing to do; a record merged into
    itself, or into one that was merged into it (a circle), is refused."""
    facility = context.facility
    done: list[str] = []
    already: list[str] = []
    for pid, mrg in _merge_groups(message):
        mrn, issuer = pid_key(pid)
        prior_mrn, prior_issuer, _ = _cx_key(mrg, 1)
        prior = _named(facility, prior_mrn, prior_issuer)
        if prior is None:
            raise Hl7Error(
                f"Prior patient MRN {prior_mrn} (MRG-1) is not registered here: "
                "there is nothing to merge.",
                location="MRG-1",
                error_code=UNKNOWN_KEY_IDENTIFIER,
                replayable=True,
            )
        survivor = _named(facility, mrn, issuer)
        registered = ""
        if survivor is None:
            data = patient_data(_single_pid(message, pid))
            survivor = _patient_register(data, context)
            registered = f"Registered MRN {survivor.mrn} ({survivor.display_name}); "
        if survivor.pk == prior.pk:
            raise Hl7Error(
                f"MRG-1 ({prior_mrn}) names the surviving patient itself (MRN {survivor.mrn}): "
                "a patient cannot be merged into itself.",
                location="MRG-1",
                error_code=DUPLICATE_KEY_IDENTIFIER,
            )
        if prior.merged_into_id == survivor.pk:
            already.append(f"MRN {prior.mrn} already merged into MRN {survivor.mrn}")
            continue
        if survivor.merged_into_id == prior.pk:
            raise Hl7Error(
                f"MRN {survivor.mrn} was itself merged into MRN {prior.mrn}: merging MRN "
                f"{prior.mrn} into it would make a circle.",
                location="MRG-1",
                error_code=DUPLICATE_KEY_IDENTIFIER,
            )
        record = services.patient_merge(
            surviving=survivor,
            merged=prior,
            actor_name=context.actor,
            door=audit.Door.HL7,
            reason=f"HL7 {message.header.message_type} {message.header.control_id}"[:200],
        )
        moved = record.summary
        counts = ", ".join(
            f"{moved[kind]} {kind if moved[kind] != 1 else one}"
            for kind, one in (("orders", "order"), ("studies", "study"), ("visits", "visit"))
            if moved.get(kind)
        )
        done.append(
            f"{registered}Merged MRN {prior.mrn} into MRN {survivor.mrn}"
            + (f" ({counts})" if counts else "")
        )
    if not done:
        raise NothingToDo("; ".join(already) + ".")
    return "; ".join(done + already)


def _single_pid(message: Message, pid: Segment) -> Message:
    """The message as if `pid` were its only PID (for registering an A40 survivor)."""
    return Message(
        text=message.text,
        header=message.header,
        segments=[s for s in message.segments if s.name != "PID" or s is pid],
    )


_PID = ("PID",)
# Messages that only register or update their patient (and visit): a worker applies a
# batch of them through one `PatientBatch`.
PATIENT_EVENTS = frozenset({"ADT^A01", "ADT^A04", "ADT^A05", "ADT^A08", "ADT^A28", "ADT^A31"})

HANDLERS: dict[str, Handler] = {
    "ADT^A01": Handler(_patient_event("admitted", creates_visit=True), _PID, _check_patient),
    "ADT^A04": Handler(_patient_event("registered", creates_visit=True), _PID, _check_patient),
    "ADT^A05": Handler(_patient_event("pre-admitted", creates_visit=True), _PID, _check_patient),
    "ADT^A08": Handler(_patient_event("recorded", creates_visit=False), _PID, _check_patient),
    "ADT^A28": Handler(_patient_event("recorded", creates_visit=False), _PID, _check_patient),
    "ADT^A31": Handler(_patient_event("recorded", creates_visit=False), _PID, _check_patient),
    "ADT^A03": Handler(discharge, ("PID", "PV1"), _check_visit_event),
    "ADT^A11": Handler(cancel_admit, ("PID", "PV1"), _check_visit_event),
    "ADT^A13": Handler(cancel_discharge, ("PID", "PV1"), _check_visit_event),
    "ADT^A40": Handler(merge, ("PID", "MRG"), _check_merge),
}
