"""X12 837P (ASC X12N 005010X222A1) professional claim batches.

Frozen dataclasses in, interchange text out: the billing services map charges onto these
values, and Django stays out so the tests build a thousand claims in milliseconds.

One interchange (ISA/IEA) holds one functional group (GS/GE) of 837 transaction sets
(ST/SE) for one payer, at most `MAX_CLAIMS_PER_TRANSACTION` claims each (the TR3
recommends no more than 5000 CLM per ST). Each set carries, in TR3 order: header (BHT), 1000A
submitter, 1000B receiver, 2000A/2010AA billing provider, and per claim a 2000B
subscriber (2010BA, 2010BB payer), a 2000C/2010CA patient when the patient is not the
subscriber, the 2300 claim (CLM, REF*F8, HI, 2310A referring, 2310B rendering) and its
2400 lines (LX, SV1, DTP*472, REF*6R, 2420A rendering). Data that an 837P cannot carry
raises `X12Error`, whose message names the claim and is safe to show to the billing
office; values are never silently truncated.
"""

from __future__ import annotations

import datetime
import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

ELEMENT = "*"
COMPONENT = ":"
REPETITION = "^"
TERMINATOR = "~"
IMPLEMENTATION = "005010X222A1"

# TR3 limits: 5000 claims per ST-SE is the guide's recommendation, the others are rules
# (2300 HI: 12 diagnoses; 2400: 50 lines; SV101: 4 modifiers; SV107: 4 pointers).
MAX_CLAIMS_PER_TRANSACTION = 5000
MAX_DIAGNOSES = 12
MAX_LINES = 50
MAX_MODIFIERS = 4
MAX_POINTERS = 4

SELF = "18"
# PAT01 individual relationship codes the 837P allows in loop 2000C.
PATIENT_RELATIONSHIPS = frozenset({"01", "19", "20", "21", "39", "40", "53", "G8"})
# CLM05-3 claim frequency codes for professional claims.
FREQUENCIES = frozenset({"1", "7", "8"})
# SBR09 claim filing indicator codes (CI commercial, MB Medicare Part B, MC Medicaid...).
CLAIM_FILING_CODES = frozenset(
    {"11", "12", "13", "14", "15", "16", "17", "AM", "BL", "CH", "CI", "DS", "FI", "HM"}
    | {"LM", "MA", "MB", "MC", "OF", "TV", "VA", "WC", "ZZ"}
)
SEXES = frozenset({"M", "F", "U"})

# X12 basic and extended character sets, less our four delimiters (* : ^ ~).
_NOT_X12 = re.compile(r"[^A-Za-z0-9 !\"&'()+,\-./;?=%@\[\]_{}\\|<>#$]")
_DIGITS = re.compile(r"[0-9]+")
_PROCEDURE = re.compile(r"[A-Z0-9]{5}")
_MODIFIER = re.compile(r"[A-Z0-9]{2}")
_ICD10CM = re.compile(r"[A-Z][0-9][A-Z0-9]{1,5}")
_TAXONOMY = re.compile(r"[0-9]{3}[A-Z0-9]{6}X")
_STATE = re.compile(r"[A-Z]{2}")
_PLACE_OF_SERVICE = re.compile(r"[0-9]{2}")
_QUALIFIER = re.compile(r"[A-Z0-9]{2}")
_ZIP = re.compile(r"[0-9]{5}|[0-9]{9}")


class X12Error(ValueError):
    """Data an 837P cannot carry; the message says which claim and why, for the biller."""


@dataclass(frozen=True)
class Address:
    line1: str
    line2: str
    city: str
    state: str
    postal_code: str


@dataclass(frozen=True)
class Provider:
    """A billing, rendering, referring provider or the submitter; `tax_id` is the EIN."""

    last_name_or_org: str
    first_name: str = ""
    npi: str = ""
    tax_id: str = ""
    address: Address | None = None
    is_organization: bool = False
    taxonomy: str = ""


@dataclass(frozen=True)
class Person:
    """A subscriber or patient; `sex` is M, F or U."""

    last_name: str
    first_name: str
    middle_name: str
    birth_date: datetime.date | None
    sex: str
    address: Address | None


@dataclass(frozen=True)
class ServiceLine:
    """One 2400 line; `line_id` is our charge id, echoed back by the payer's 835."""

    procedure_code: str
    modifiers: tuple[str, ...]
    charge: Decimal
    units: Decimal
    service_date: datetime.date
    diagnosis_pointers: tuple[int, ...]
    line_id: str
    rendering: Provider | None = None


@dataclass(frozen=True)
class Claim:
    """One 2300 claim. `relationship` is "18" (self) or the PAT01 code of the patient."""

    claim_id: str
    subscriber: Person
    member_id: str
    group_number: str
    relationship: str
    patient: Person | None
    place_of_service: str
    diagnosis_codes: tuple[str, ...]
    lines: tuple[ServiceLine, ...]
    referring: Provider | None = None
    rendering: Provider | None = None
    frequency: str = "1"
    original_reference: str = ""


@dataclass(frozen=True)
class Batch:
    """One interchange of claims for one payer.

    `claim_filing_code` is SBR09 (TR3 requires it until the national plan id exists);
    the qualifiers are ISA05/ISA07, "ZZ" (mutually defined) unless the partner says.
    """

    sender_id: str
    receiver_id: str
    interchange_number: int
    group_number: int
    created_at: datetime.datetime
    submitter: Provider
    submitter_contact: str
    submitter_phone: str
    receiver_name: str
    billing_provider: Provider
    payer_name: str
    payer_id: str
    claims: tuple[Claim, ...]
    test: bool = False
    claim_filing_code: str = "CI"
    sender_qualifier: str = "ZZ"
    receiver_qualifier: str = "ZZ"


def npi_is_valid(npi: str) -> bool:
    """The NPI check digit: Luhn over the number prefixed with 80840 (health, USA)."""
    if len(npi) != 10 or not _DIGITS.fullmatch(npi):
        return False
    total = 0
    for position, char in enumerate(reversed("80840" + npi)):
        digit = int(char)
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def claim_batch_837p(batch: Batch, *, line_breaks: bool = True) -> str:
    """The interchange text of `batch`, or X12Error naming the first value it cannot carry.

    `line_breaks` puts a newline after each `~`: easier to read, and most payers accept
    it; turn it off for those whose translators count it as data.
    """
    sender = _envelope_id(batch.sender_id, "sender")
    receiver = _envelope_id(batch.receiver_id, "receiver")
    for number, what in ((batch.interchange_number, "interchange"), (batch.group_number, "group")):
        if not 1 <= number <= 999_999_999:
            raise X12Error(f"Batch: {what} control number must be 1 to 999999999")
    if not batch.claims:
        raise X12Error("Batch: no claims")
    when = batch.created_at
    payer = _name(batch.payer_name, "Payer", "name")
    filing = "claim filing indicator code"
    header = _Header(
        date=when.strftime("%Y%m%d"),
        time=when.strftime("%H%M"),
        leading=tuple(_leading_segments(batch, sender, receiver)),
        billing=tuple(_billing_provider_segments(batch.billing_provider)),
        billing_npi=batch.billing_provider.npi.strip(),
        payer=_nm1("PR", "2", payer, "", "", "PI", _required(batch.payer_id, "Payer", "id", 80)),
        filing=_code(batch.claim_filing_code, "Batch", filing, None, CLAIM_FILING_CODES),
    )
    group = str(batch.group_number)
    segments = [
        _isa(batch, sender, receiver),
        _segment(
            "GS", "HC", sender, receiver, header.date, header.time, group, "X", IMPLEMENTATION
        ),
    ]
    size = MAX_CLAIMS_PER_TRANSACTION
    chunks = [batch.claims[start : start + size] for start in range(0, len(batch.claims), size)]
    for number, claims in enumerate(chunks, start=1):
        segments += _transaction(batch, header, claims, control=f"{number:04d}")
    segments.append(_segment("GE", str(len(chunks)), group))
    segments.append(_segment("IEA", "1", f"{batch.interchange_number:09d}"))
    terminator = TERMINATOR + "\n" if line_breaks else TERMINATOR
    return terminator.join(segments) + terminator


def _isa(batch: Batch, sender: str, receiver: str) -> str:
    """ISA: fixed widths (106 characters with the terminator), so it is not cleaned."""
    qualifiers = [
        _code(value, "Batch", "interchange id qualifier", _QUALIFIER)
        for value in (batch.sender_qualifier, batch.receiver_qualifier)
    ]
    elements = ["ISA", "00", " " * 10, "00", " " * 10]
    elements += [qualifiers[0], sender.ljust(15), qualifiers[1], receiver.ljust(15)]
    elements += [batch.created_at.strftime("%y%m%d"), batch.created_at.strftime("%H%M")]
    elements += [REPETITION, "00501", f"{batch.interchange_number:09d}", "0"]
    elements += ["T" if batch.test else "P", COMPONENT]
    return ELEMENT.join(elements)


def _nm1(entity: str, kind: str, last: str, first: str = "", middle: str = "", *ids: str) -> str:
    """NM1: entity code, type (1 person, 2 organization), name, then qualifier and id."""
    return _segment("NM1", entity, kind, last, first, middle, "", "", *ids)


@dataclass(frozen=True)
class _Header:
    """What every ST-SE of a batch repeats, checked and built once."""

    date: str
    time: str
    leading: tuple[str, ...]
    billing: tuple[str, ...]
    billing_npi: str
    payer: str
    filing: str


def _transaction(
    batch: Batch, header: _Header, claims: tuple[Claim, ...], *, control: str
) -> list[str]:
    """One ST-SE: header, submitter, receiver, billing provider, then the claims' loops."""
    reference = f"{batch.interchange_number:09d}{control}"  # BHT03, unique per transaction
    segments = [
        _segment("ST", "837", control, IMPLEMENTATION),
        # 0019 information source/receiver/subscriber/dependent; 00 original; CH chargeable.
        _segment("BHT", "0019", "00", reference, header.date, header.time, "CH"),
        *header.leading,
        _segment("HL", "1", "", "20", "1"),
        *header.billing,
    ]
    hl = 1
    for claim in claims:
        hl = _claim_loops(claim, header, segments, hl)
    segments.append(_segment("SE", str(len(segments) + 1), control))
    return segments


def _leading_segments(batch: Batch, sender: str, receiver: str) -> list[str]:
    """1000A submitter (NM1*41, PER*IC) and 1000B receiver (NM1*40); NM109 is the ETIN."""
    submitter = batch.submitter
    phone = "".join(_DIGITS.findall(batch.submitter_phone))
    if len(phone) == 11 and phone.startswith("1"):
        phone = phone[1:]
    if len(phone) != 10:
        raise X12Error("Submitter: phone must be 10 digits with the area code")
    return [
        _nm1("41", *_entity_name(submitter, "Submitter"), "46", sender),
        _segment("PER", "IC", _clean(batch.submitter_contact).upper(), "TE", phone),
        _nm1("40", "2", _name(batch.receiver_name, "Receiver", "name"), "", "", "46", receiver),
    ]


def _billing_provider_segments(provider: Provider) -> list[str]:
    """2000A PRV*BI and 2010AA: NPI, a street address with ZIP+4, and the EIN (REF*EI)."""
    where = "Billing provider"
    npi = _npi(provider.npi, where, required=True)
    if provider.address is None:
        raise X12Error(f"{where}: no address")
    ein = provider.tax_id.replace("-", "").strip()
    if not re.fullmatch(r"[0-9]{9}", ein):
        raise X12Error(f"{where}: EIN must be 9 digits")
    return [
        *_taxonomy(provider, where, "BI"),
        _nm1("85", *_entity_name(provider, where), "XX", npi),
        *_address(provider.address, where, zip_plus_four=True),
        _segment("REF", "EI", ein),
    ]


def _claim_loops(claim: Claim, header: _Header, out: list[str], hl: int) -> int:
    """Append 2000B, 2000C when needed, 2300 and 2400 for one claim; return the last HL."""
    claim_id = _clean(claim.claim_id)
    if not claim_id:
        raise X12Error("Claim: no patient control number (claim id)")
    if len(claim_id) > 20:
        raise X12Error(f"Claim {claim_id}: claim id longer than 20 characters")
    where = f"Claim {claim_id}"
    relationship = _clean(claim.relationship).upper()
    if relationship == SELF:
        if claim.patient is not None and claim.patient != claim.subscriber:
            raise X12Error(f"{where}: relationship 18 (self) but a different patient is given")
        patient = None
    elif relationship in PATIENT_RELATIONSHIPS:
        if claim.patient is None:
            raise X12Error(f"{where}: relationship {relationship} but no patient is given")
        patient = claim.patient
    else:
        raise X12Error(f"{where}: relationship code {relationship or '(empty)'} is not valid")

    subscriber_hl = hl + 1
    out.append(_segment("HL", str(subscriber_hl), "1", "22", "0" if patient is None else "1"))
    sbr02 = SELF if patient is None else ""
    out.append(_segment("SBR", "P", sbr02, claim.group_number, *[""] * 5, header.filing))
    member_id = _required(claim.member_id, where, "member id", 80)
    out += _person(claim.subscriber, "IL", f"{where}, subscriber", patient is None, member_id)
    out.append(header.payer)
    hl = subscriber_hl
    if patient is not None:
        hl += 1
        out.append(_segment("HL", str(hl), str(subscriber_hl), "23", "0"))
        out.append(_segment("PAT", relationship))
        out += _person(patient, "QC", f"{where}, patient", True, "")
    _claim(claim, where, header.billing_npi, out)
    return hl


def _claim(claim: Claim, where: str, billing_npi: str, out: list[str]) -> None:
    """2300 CLM, REF*F8, HI, 2310A/B, then the 2400 lines."""
    place = _code(claim.place_of_service, where, "place of service", _PLACE_OF_SERVICE)
    frequency = _code(claim.frequency, where, "claim frequency code", None, FREQUENCIES)
    if not claim.lines:
        raise X12Error(f"{where}: no service lines")
    if len(claim.lines) > MAX_LINES:
        raise X12Error(f"{where}: more than {MAX_LINES} service lines")
    diagnoses = _diagnoses(claim.diagnosis_codes, where)
    charges = [_cents(line.charge, f"{where}, line {n}") for n, line in enumerate(claim.lines, 1)]
    total = _number(sum(charges, Decimal(0)))
    # CLM06-09: provider signature on file, assigned, benefits assigned, release of information.
    clm05 = (place, "B", frequency)
    out.append(_segment("CLM", claim.claim_id, total, "", "", clm05, "Y", "A", "Y", "Y"))
    if frequency != "1":
        if not _clean(claim.original_reference):
            raise X12Error(f"{where}: a replacement or void needs the payer's claim number")
        reference = _required(claim.original_reference, where, "payer claim number", 50)
        out.append(_segment("REF", "F8", reference))
    out.append(
        _segment("HI", *((("ABK" if n == 0 else "ABF"), code) for n, code in enumerate(diagnoses)))
    )
    if claim.referring is not None:
        referring = f"{where}, referring provider"
        if claim.referring.is_organization:
            raise X12Error(f"{referring}: must be a person")
        out += _provider(claim.referring, "DN", referring, required_npi=False)
    claim_rendering_npi = billing_npi
    if claim.rendering is not None and claim.rendering.npi.strip() != billing_npi:
        out += _provider(claim.rendering, "82", f"{where}, rendering provider")
        claim_rendering_npi = claim.rendering.npi.strip()
    for number, (line, charge) in enumerate(zip(claim.lines, charges, strict=True), start=1):
        _line(line, number, charge, len(diagnoses), f"{where}, line {number}", out)
        if line.rendering is not None and line.rendering.npi.strip() != claim_rendering_npi:
            out += _provider(line.rendering, "82", f"{where}, line {number} rendering provider")


def _line(
    line: ServiceLine, number: int, charge: Decimal, diagnoses: int, where: str, out: list[str]
) -> None:
    """2400 LX, SV1 (HC procedure and modifiers, charge, units, pointers), DTP*472, REF*6R."""
    code = _code(line.procedure_code, where, "procedure code", _PROCEDURE)
    if len(line.modifiers) > MAX_MODIFIERS:
        raise X12Error(f"{where}: more than {MAX_MODIFIERS} modifiers")
    modifiers = [_code(m, where, "modifier", _MODIFIER) for m in line.modifiers]
    pointers = line.diagnosis_pointers
    if not pointers:
        raise X12Error(f"{where}: no diagnosis pointer")
    if len(pointers) > MAX_POINTERS:
        raise X12Error(f"{where}: more than {MAX_POINTERS} diagnosis pointers")
    if len(set(pointers)) != len(pointers) or not all(1 <= p <= diagnoses for p in pointers):
        raise X12Error(f"{where}: diagnosis pointers must be distinct, from 1 to {diagnoses}")
    if not line.units.is_finite() or line.units <= 0:
        raise X12Error(f"{where}: units must be more than zero")
    out += [
        _segment("LX", str(number)),
        _segment(
            "SV1",
            ("HC", code, *modifiers),
            _number(charge),
            "UN",
            _number(line.units),
            "",
            "",
            tuple(str(p) for p in pointers),
        ),
        _segment("DTP", "472", "D8", line.service_date.strftime("%Y%m%d")),
        _segment("REF", "6R", _required(line.line_id, where, "line id", 50)),
    ]


def _person(person: Person, entity: str, where: str, is_patient: bool, member_id: str) -> list[str]:
    """NM1 (IL subscriber with MI member id, or QC patient), and for the patient N3/N4, DMG.

    TR3 wants address and demographics only of whoever is the patient; a subscriber who is
    not the patient still gets an address when we have one.
    """
    last = _name(person.last_name, where, "last name")
    first, middle = _clean(person.first_name).upper(), _clean(person.middle_name).upper()
    ids = ("MI", member_id) if member_id else ()
    segments = [_nm1(entity, "1", last, first, middle, *ids)]
    if person.address is not None:
        segments += _address(person.address, where)
    elif is_patient:
        raise X12Error(f"{where}: no address")
    if is_patient:
        if person.birth_date is None:
            raise X12Error(f"{where}: no birth date")
        sex = _code(person.sex, where, "sex (M, F or U)", None, SEXES)
        segments.append(_segment("DMG", "D8", person.birth_date.strftime("%Y%m%d"), sex))
    return segments


def _provider(
    provider: Provider, entity: str, where: str, *, required_npi: bool = True
) -> list[str]:
    """NM1 of a 2310/2420 provider with its NPI (XX), and PRV*PE when a taxonomy is known."""
    npi = _npi(provider.npi, where, required=required_npi)
    ids = ("XX", npi) if npi else ()
    segments = [_nm1(entity, *_entity_name(provider, where), *ids)]
    if entity == "82":
        segments += _taxonomy(provider, where, "PE")
    return segments


def _entity_name(provider: Provider, where: str) -> tuple[str, str, str, str]:
    """NM102-NM105: entity type, then last name or organization, first and middle name."""
    last = _name(provider.last_name_or_org, where, "name")
    if provider.is_organization:
        return "2", last, "", ""
    return "1", last, _clean(provider.first_name).upper(), ""


def _taxonomy(provider: Provider, where: str, qualifier: str) -> list[str]:
    """PRV with the NUCC taxonomy code (PXC), when the provider has one."""
    if not provider.taxonomy.strip():
        return []
    code = _code(provider.taxonomy, where, "taxonomy code", _TAXONOMY)
    return [_segment("PRV", qualifier, "PXC", code)]


def _address(address: Address, where: str, *, zip_plus_four: bool = False) -> list[str]:
    """N3 and N4 of a U.S. address; the billing provider's ZIP must be all nine digits."""
    postal = address.postal_code.strip().replace("-", "")
    if not _ZIP.fullmatch(postal):
        raise X12Error(f"{where}: ZIP code must be 5 or 9 digits")
    if zip_plus_four and len(postal) != 9:
        raise X12Error(f"{where}: ZIP code must have 9 digits (ZIP+4)")
    return [
        _segment("N3", _required(address.line1, where, "street address", 55), address.line2),
        _segment(
            "N4",
            _required(address.city, where, "city", 30),
            _code(address.state, where, "state", _STATE),
            postal,
        ),
    ]


def _diagnoses(codes: tuple[str, ...], where: str) -> list[str]:
    """ICD-10-CM codes without the dot, principal first; at most 12, no repeats."""
    if not codes:
        raise X12Error(f"{where}: no diagnosis code")
    if len(codes) > MAX_DIAGNOSES:
        raise X12Error(f"{where}: more than {MAX_DIAGNOSES} diagnosis codes")
    cleaned = [_code(code.replace(".", ""), where, "diagnosis code", _ICD10CM) for code in codes]
    if len(set(cleaned)) != len(cleaned):
        raise X12Error(f"{where}: a diagnosis code is listed twice")
    return cleaned


def _npi(npi: str, where: str, *, required: bool) -> str:
    """The NPI, checked: 10 digits and the Luhn check digit."""
    npi = npi.strip()
    if not npi:
        if required:
            raise X12Error(f"{where}: no NPI")
        return ""
    if len(npi) != 10 or not _DIGITS.fullmatch(npi):
        raise X12Error(f"{where}: NPI must be 10 digits")
    if not npi_is_valid(npi):
        raise X12Error(f"{where}: NPI {npi} has a wrong check digit")
    return npi


def _envelope_id(value: str, what: str) -> str:
    """ISA06/ISA08 (and GS02/GS03): 1 to 15 characters."""
    text = _clean(value)
    if not 1 <= len(text) <= 15:
        raise X12Error(f"Batch: {what} id must be 1 to 15 characters")
    return text


def _cents(amount: Decimal, where: str) -> Decimal:
    """A charge in whole cents, not negative: never rounded, so totals match the ledger."""
    if not amount.is_finite() or amount < 0 or amount != amount.quantize(Decimal("0.01")):
        raise X12Error(f"{where}: charge must be zero or more, in whole cents")
    return amount


def _number(value: Decimal) -> str:
    """X12 R (decimal) type: no exponent, no trailing zeros ("125", "125.5")."""
    return format(value.normalize(), "f")


def _code(
    value: str,
    where: str,
    what: str,
    pattern: re.Pattern[str] | str | None,
    allowed: frozenset[str] | None = None,
) -> str:
    """A code upper-cased and checked against its pattern or set of allowed values."""
    code = _clean(value).upper()
    valid = bool(code) and (
        re.fullmatch(pattern, code) is not None if pattern is not None else code in (allowed or ())
    )
    if not valid:
        raise X12Error(f"{where}: {what} {code or '(empty)'} is not valid")
    return code


def _name(value: str, where: str, what: str) -> str:
    """A required name, cleaned and upper-cased."""
    return _required(value, where, what, 60).upper()


def _required(value: str, where: str, what: str, max_length: int) -> str:
    """A cleaned value that must not be empty nor longer than the element allows."""
    text = _clean(value)
    if not text:
        raise X12Error(f"{where}: no {what}")
    if len(text) > max_length:
        raise X12Error(f"{where}: {what} longer than {max_length} characters")
    return text


def _clean(value: str) -> str:
    """Only X12 basic/extended characters, no delimiters, single spaces.

    Accents are folded to ASCII (JOSÉ → JOSE) rather than dropped: a name a payer can
    match beats one with a letter missing.
    """
    if not value.isascii():
        value = unicodedata.normalize("NFKD", value).encode("ascii", "ignore").decode("ascii")
    return " ".join(_NOT_X12.sub("", " ".join(value.split())).split())


def _segment(tag: str, *elements: str | tuple[str, ...]) -> str:
    """A segment from its elements (a tuple is a composite), cleaned, trailing empties cut."""
    parts = [tag]
    for element in elements:
        if isinstance(element, tuple):
            components = [_clean(component) for component in element]
            while components and not components[-1]:
                components.pop()
            parts.append(COMPONENT.join(components))
        else:
            parts.append(_clean(element))
    while parts[-1] == "":
        parts.pop()
    return ELEMENT.join(parts)
