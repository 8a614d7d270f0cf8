"""837P claim batches: checked by a structural validator written here, not by reading the
builder's own code back. Personas: North Imaging bills, Dr. Reed reads, Dr. Patel refers,
Jane Roe is the subscriber and Sam Roe her son."""

import dataclasses
import datetime as dt
import re
import string
import time
from decimal import Decimal

import pytest

from billing import x12
from billing.x12 import (
    Address,
    Batch,
    Claim,
    Person,
    Provider,
    ServiceLine,
    X12Error,
    claim_batch_837p,
    npi_is_valid,
)

# --- the validator -------------------------------------------------------------------

ISA_WIDTHS = (2, 10, 2, 10, 2, 15, 2, 15, 6, 4, 1, 5, 9, 1, 1, 1)
X12_CHARACTERS = set(string.ascii_letters + string.digits + " !\"&'()+,-./;?=%@[]_{}\\|<>#$")
DELIMITERS = set("*:^~\n")

_PROVIDER = r"NM1\*82 (PRV\*PE )?"
_BILLING = r"HL\*20 (PRV\*BI )?NM1\*85 N3 N4 REF\*EI "
_SUBSCRIBER = r"HL\*22 SBR NM1\*IL (N3 N4 )?(DMG )?NM1\*PR "
_PATIENT = r"HL\*23 PAT NM1\*QC N3 N4 DMG "
_LINE = rf"LX SV1 DTP\*472 REF\*6R ({_PROVIDER})?"
_CLAIM = rf"CLM (REF\*F8 )?HI (NM1\*DN )?({_PROVIDER})?({_LINE})+"
TRANSACTION_ORDER = re.compile(
    rf"ST BHT NM1\*41 PER NM1\*40 {_BILLING}({_SUBSCRIBER}({_PATIENT})?{_CLAIM})+SE "
)


def _token(segment: list[str]) -> str:
    """A segment's name for the order check: its tag, with the qualifier that names the loop."""
    tag = segment[0]
    if tag in {"NM1", "REF", "DTP", "PRV"}:
        return f"{tag}*{segment[1]}"
    if tag == "HL":
        return f"HL*{segment[3]}"
    return tag


def validate(text: str) -> list[list[str]]:
    """Check an interchange's structure and return its segments split into elements."""
    assert set(text) <= X12_CHARACTERS | DELIMITERS, set(text) - X12_CHARACTERS - DELIMITERS
    isa = text[:106]
    assert isa.startswith("ISA*") and isa.endswith("~") and isa.count("~") == 1
    isa_elements = isa[4:105].split("*")
    assert tuple(len(e) for e in isa_elements) == ISA_WIDTHS
    assert (isa_elements[10], isa_elements[11], isa_elements[15]) == ("^", "00501", ":")

    segments = [s.strip("\n").split("*") for s in text.split("~") if s.strip("\n")]
    assert all(s and s[-1] != "" for s in segments), "trailing empty element"
    isa_seg, gs, *body, ge, iea = segments
    assert (isa_seg[0], gs[0], ge[0], iea[0]) == ("ISA", "GS", "GE", "IEA")
    assert iea == ["IEA", "1", isa_seg[13]]
    assert gs[1] == "HC" and gs[8] == "005010X222A1" and ge[2] == gs[6]

    transactions: list[list[list[str]]] = []
    for segment in body:
        if segment[0] == "ST":
            transactions.append([])
        transactions[-1].append(segment)
    assert int(ge[1]) == len(transactions)
    assert len({t[0][2] for t in transactions}) == len(transactions), "ST02 repeats"
    for transaction in transactions:
        _validate_transaction(transaction)
    return segments


def _validate_transaction(segments: list[list[str]]) -> None:
    st, se = segments[0], segments[-1]
    assert st[:4] == ["ST", "837", st[2], "005010X222A1"]
    assert se == ["SE", str(len(segments)), st[2]]
    assert segments[1][:3] == ["BHT", "0019", "00"] and segments[1][6] == "CH"
    order = "".join(_token(s) + " " for s in segments)
    assert TRANSACTION_ORDER.fullmatch(order), order

    levels: dict[str, str] = {}
    hls = [s for s in segments if s[0] == "HL"]
    for number, hl in enumerate(hls, start=1):
        assert hl[1] == str(number)
        parent_level = {"20": None, "22": "20", "23": "22"}[hl[3]]
        assert levels.get(hl[2]) == parent_level if hl[2] else parent_level is None
        has_children = any(other[2] == hl[1] for other in hls)
        assert hl[4] == ("1" if has_children else "0")
        levels[hl[1]] = hl[3]

    for claim in _claims(segments):
        tags = [s[0] for s in claim]
        assert tags[0] == "CLM" and "HI" in tags and "LX" in tags
        lines = [s for s in claim if s[0] == "SV1"]
        assert Decimal(claim[0][2]) == sum(Decimal(s[2]) for s in lines)
        assert [s[1] for s in claim if s[0] == "LX"] == [str(n) for n in range(1, len(lines) + 1)]
        diagnoses = next(s for s in claim if s[0] == "HI")[1:]
        assert 1 <= len(diagnoses) <= 12
        assert [d.split(":")[0] for d in diagnoses] == ["ABK"] + ["ABF"] * (len(diagnoses) - 1)
        for line in lines:
            assert line[1].startswith("HC:") and line[3] == "UN"
            assert all(1 <= int(p) <= len(diagnoses) for p in line[7].split(":"))

    for index, segment in enumerate(segments):
        if segment[0] == "HL" and segment[3] == "22":
            sbr = segments[index + 1]
            assert sbr[2] == ("18" if segment[4] == "0" else "")


def _claims(segments: list[list[str]]) -> list[list[list[str]]]:
    """The 2300 loops: from each CLM to the next HL or SE."""
    claims: list[list[list[str]]] = []
    current: list[list[str]] | None = None
    for segment in segments:
        if segment[0] == "CLM":
            current = [segment]
            claims.append(current)
        elif segment[0] in {"HL", "SE"}:
            current = None
        elif current is not None:
            current.append(segment)
    return claims


def find(segments: list[list[str]], tag: str, qualifier: str | None = None) -> list[list[str]]:
    return [s for s in segments if s[0] == tag and (qualifier is None or s[1] == qualifier)]


# --- personas and builders ------------------------------------------------------------

NORTH_IMAGING_NPI = "1234567893"
DR_REED_NPI = "1245319599"
DR_PATEL_NPI = "1558598797"
DR_OKAFOR_NPI = "1987654328"

NORTH_IMAGING = Provider(
    "North Imaging",
    npi=NORTH_IMAGING_NPI,
    tax_id="12-3456789",
    address=Address("100 Main St", "Suite 2", "Springfield", "IL", "62701-1234"),
    is_organization=True,
    taxonomy="261QR0200X",
)
DR_REED = Provider("Reed", "Alice", npi=DR_REED_NPI, taxonomy="2085R0202X")
DR_PATEL = Provider("Patel", "Ravi", npi=DR_PATEL_NPI)
DR_OKAFOR = Provider("Okafor", "Chidi", npi=DR_OKAFOR_NPI)
HOME = Address("12 Elm St", "", "Springfield", "IL", "62704")
JANE = Person("Roe", "Jane", "Q", dt.date(1980, 4, 2), "F", HOME)
SAM = Person("Roe", "Sam", "", dt.date(2012, 9, 30), "M", HOME)


def line(**changes: object) -> ServiceLine:
    base = ServiceLine(
        procedure_code="74177",
        modifiers=(),
        charge=Decimal("850.00"),
        units=Decimal("1"),
        service_date=dt.date(2026, 3, 4),
        diagnosis_pointers=(1,),
        line_id="CHG1",
    )
    return dataclasses.replace(base, **changes)


def claim(**changes: object) -> Claim:
    base = Claim(
        claim_id="ACC1001",
        subscriber=JANE,
        member_id="XYZ123456789",
        group_number="GRP42",
        relationship="18",
        patient=None,
        place_of_service="22",
        diagnosis_codes=("R10.9",),
        lines=(line(),),
        referring=DR_PATEL,
        rendering=DR_REED,
    )
    return dataclasses.replace(base, **changes)


def batch(*claims: Claim, **changes: object) -> Batch:
    base = Batch(
        sender_id="NORTHIMG",
        receiver_id="CLEARHOUSE",
        interchange_number=123,
        group_number=45,
        created_at=dt.datetime(2026, 3, 5, 14, 30),
        submitter=NORTH_IMAGING,
        submitter_contact="Pat Biller",
        submitter_phone="(217) 555-0100",
        receiver_name="Clear House",
        billing_provider=NORTH_IMAGING,
        payer_name="Acme Health",
        payer_id="ACME1",
        claims=claims or (claim(),),
    )
    return dataclasses.replace(base, **changes)


def build(*claims: Claim, **changes: object) -> list[list[str]]:
    return validate(claim_batch_837p(batch(*claims, **changes)))


# --- the validator catches what it should ----------------------------------------------


def test_the_validator_catches_a_wrong_segment_count():
    text = claim_batch_837p(batch()).replace("~\nSE*", "~\nSE*9")
    with pytest.raises(AssertionError):
        validate(text)


def test_the_validator_catches_a_claim_total_that_is_not_the_sum_of_its_lines():
    text = claim_batch_837p(batch()).replace("CLM*ACC1001*850*", "CLM*ACC1001*851*")
    with pytest.raises(AssertionError):
        validate(text)


# --- behaviours -------------------------------------------------------------------------


def test_a_batch_of_claims_for_one_payer_passes_the_validator():
    claims = (
        claim(),
        claim(claim_id="ACC1002", relationship="19", patient=SAM, referring=None),
        claim(
            claim_id="ACC1003",
            diagnosis_codes=("S72.001A", "W19.XXXA"),
            lines=(line(), line(procedure_code="73502", line_id="CHG2", diagnosis_pointers=(1, 2))),
        ),
    )
    segments = build(*claims, test=True)

    isa = segments[0]
    assert isa[6].rstrip() == "NORTHIMG" and isa[8].rstrip() == "CLEARHOUSE"
    assert (isa[9], isa[10], isa[13], isa[15]) == ("260305", "1430", "000000123", "T")
    gs = ["GS", "HC", "NORTHIMG", "CLEARHOUSE", "20260305", "1430", "45", "X", "005010X222A1"]
    assert segments[1] == gs
    assert find(segments, "NM1", "41")[0][-2:] == ["46", "NORTHIMG"]
    assert find(segments, "PER") == [["PER", "IC", "PAT BILLER", "TE", "2175550100"]]
    assert find(segments, "NM1", "85") == [
        ["NM1", "85", "2", "NORTH IMAGING", "", "", "", "", "XX", NORTH_IMAGING_NPI]
    ]
    assert find(segments, "N4")[0] == ["N4", "Springfield", "IL", "627011234"]
    assert find(segments, "REF", "EI") == [["REF", "EI", "123456789"]]
    assert find(segments, "PRV", "BI") == [["PRV", "BI", "PXC", "261QR0200X"]]
    assert find(segments, "NM1", "PR")[0] == [
        "NM1",
        "PR",
        "2",
        "ACME HEALTH",
        *[""] * 4,
        "PI",
        "ACME1",
    ]
    assert [c[1] for c in find(segments, "CLM")] == ["ACC1001", "ACC1002", "ACC1003"]
    assert find(segments, "CLM")[2][2] == "1700"
    assert len(find(segments, "HL")) == 1 + 3 + 1


def test_the_subscriber_who_is_the_patient_carries_demographics_and_no_patient_loop():
    segments = build(claim())
    assert find(segments, "HL", "2") == [["HL", "2", "1", "22", "0"]]
    assert find(segments, "SBR") == [["SBR", "P", "18", "GRP42", "", "", "", "", "", "CI"]]
    assert find(segments, "NM1", "IL") == [
        ["NM1", "IL", "1", "ROE", "JANE", "Q", "", "", "MI", "XYZ123456789"]
    ]
    assert find(segments, "DMG") == [["DMG", "D8", "19800402", "F"]]
    assert not find(segments, "PAT") and not find(segments, "NM1", "QC")


def test_a_patient_who_is_not_the_subscriber_gets_a_2000c_loop():
    segments = build(claim(relationship="19", patient=SAM))
    hls = find(segments, "HL")
    assert hls == [
        ["HL", "1", "", "20", "1"],
        ["HL", "2", "1", "22", "1"],
        ["HL", "3", "2", "23", "0"],
    ]
    assert find(segments, "SBR")[0][2] == ""
    assert find(segments, "PAT") == [["PAT", "19"]]
    assert find(segments, "NM1", "QC") == [["NM1", "QC", "1", "ROE", "SAM"]]
    # Demographics are the patient's only: Sam's birth date, not Jane's.
    assert find(segments, "DMG") == [["DMG", "D8", "20120930", "M"]]


def test_hierarchical_levels_keep_counting_across_claims():
    claims = (claim(), claim(claim_id="B", relationship="01", patient=SAM), claim(claim_id="C"))
    assert [s[1:] for s in find(build(*claims), "HL")] == [
        ["1", "", "20", "1"],
        ["2", "1", "22", "0"],
        ["3", "1", "22", "1"],
        ["4", "3", "23", "0"],
        ["5", "1", "22", "0"],
    ]


def test_a_patient_relationship_needs_a_patient_and_self_refuses_another_person():
    with pytest.raises(X12Error, match="relationship 19 but no patient"):
        claim_batch_837p(batch(claim(relationship="19")))
    with pytest.raises(X12Error, match="relationship 18"):
        claim_batch_837p(batch(claim(patient=SAM)))
    with pytest.raises(X12Error, match="relationship code 99 is not valid"):
        claim_batch_837p(batch(claim(relationship="99", patient=SAM)))


def test_diagnosis_codes_are_written_without_the_dot_and_lines_point_at_them():
    lines = (
        line(diagnosis_pointers=(2, 1)),
        line(procedure_code="71046", line_id="CHG2", diagnosis_pointers=(3,)),
    )
    segments = build(claim(diagnosis_codes=("R10.9", "k80.20", "Z87.891"), lines=lines))
    assert find(segments, "HI") == [["HI", "ABK:R109", "ABF:K8020", "ABF:Z87891"]]
    assert [s[7] for s in find(segments, "SV1")] == ["2:1", "3"]


def test_a_pointer_to_a_diagnosis_the_claim_does_not_have_is_refused():
    with pytest.raises(X12Error, match="line 1: diagnosis pointers"):
        claim_batch_837p(batch(claim(lines=(line(diagnosis_pointers=(2,)),))))


def test_professional_and_technical_components_carry_modifiers_26_and_tc():
    lines = (
        line(modifiers=("26",)),
        line(modifiers=("TC", "RT"), line_id="CHG2", charge=Decimal("125.50")),
    )
    segments = build(claim(lines=lines))
    sv1 = find(segments, "SV1")
    assert sv1[0] == ["SV1", "HC:74177:26", "850", "UN", "1", "", "", "1"]
    assert sv1[1][1:3] == ["HC:74177:TC:RT", "125.5"]
    assert find(segments, "CLM")[0][2] == "975.5"
    assert find(segments, "DTP", "472")[0] == ["DTP", "472", "D8", "20260304"]
    assert [s[2] for s in find(segments, "REF", "6R")] == ["CHG1", "CHG2"]


def test_an_unknown_modifier_or_procedure_code_is_refused():
    with pytest.raises(X12Error, match="modifier 2 is not valid"):
        claim_batch_837p(batch(claim(lines=(line(modifiers=("2",)),))))
    with pytest.raises(X12Error, match="procedure code 7417 is not valid"):
        claim_batch_837p(batch(claim(lines=(line(procedure_code="7417"),))))


def test_the_claim_is_written_with_place_of_service_and_the_usual_indicators():
    segments = build(claim(place_of_service="11"))
    assert find(segments, "CLM") == [
        ["CLM", "ACC1001", "850", "", "", "11:B:1", "Y", "A", "Y", "Y"]
    ]
    assert not find(segments, "REF", "F8")


def test_a_replacement_claim_carries_frequency_7_and_the_payers_claim_number():
    segments = build(claim(frequency="7", original_reference="PAYER-CCN-998877"))
    assert find(segments, "CLM")[0][5] == "22:B:7"
    assert find(segments, "REF", "F8") == [["REF", "F8", "PAYER-CCN-998877"]]


def test_a_void_carries_frequency_8_and_the_payers_claim_number():
    segments = build(claim(frequency="8", original_reference="998877"))
    assert find(segments, "CLM")[0][5] == "22:B:8"
    assert find(segments, "REF", "F8") == [["REF", "F8", "998877"]]


@pytest.mark.parametrize("frequency", ["7", "8"])
def test_a_correction_without_the_payers_claim_number_is_refused(frequency):
    with pytest.raises(X12Error, match="Claim ACC1001: a replacement or void needs"):
        claim_batch_837p(batch(claim(frequency=frequency)))


def test_an_unknown_frequency_is_refused():
    with pytest.raises(X12Error, match="claim frequency code 3 is not valid"):
        claim_batch_837p(batch(claim(frequency="3")))


def test_the_npi_check_digit_is_luhn_with_the_80840_prefix():
    assert npi_is_valid("1234567893")  # the CMS worked example
    assert not npi_is_valid("1234567890")
    assert not npi_is_valid("123456789")
    assert not npi_is_valid("123456789X")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"billing_provider": dataclasses.replace(NORTH_IMAGING, npi="1234567890")},
            "Billing provider: NPI 1234567890 has a wrong check digit",
        ),
        (
            {"billing_provider": dataclasses.replace(NORTH_IMAGING, npi="12345")},
            "Billing provider: NPI must be 10 digits",
        ),
        (
            {"claims": (claim(rendering=dataclasses.replace(DR_REED, npi="1245319590")),)},
            "Claim ACC1001, rendering provider: NPI 1245319590 has a wrong check digit",
        ),
        (
            {"claims": (claim(referring=dataclasses.replace(DR_PATEL, npi="1558598790")),)},
            "Claim ACC1001, referring provider: NPI 1558598790 has a wrong check digit",
        ),
    ],
)
def test_a_bad_npi_is_refused(changes, message):
    with pytest.raises(X12Error, match=re.escape(message)):
        claim_batch_837p(batch(**changes))


def test_a_claim_without_a_diagnosis_is_refused():
    with pytest.raises(X12Error, match=r"^Claim ACC1001: no diagnosis code$"):
        claim_batch_837p(batch(claim(diagnosis_codes=())))


def test_a_claim_with_twelve_diagnoses_is_accepted_and_thirteen_refused():
    codes = (*(f"M54.{n}" for n in range(10)), "R10.9", "R51.9")
    segments = build(claim(diagnosis_codes=codes))
    assert len(find(segments, "HI")[0]) == 1 + 12
    with pytest.raises(X12Error, match="more than 12 diagnosis codes"):
        claim_batch_837p(batch(claim(diagnosis_codes=(*codes, "Z00.00"))))


def test_a_malformed_or_repeated_diagnosis_code_is_refused():
    with pytest.raises(X12Error, match="diagnosis code 1234 is not valid"):
        claim_batch_837p(batch(claim(diagnosis_codes=("123.4",))))
    with pytest.raises(X12Error, match="listed twice"):
        claim_batch_837p(batch(claim(diagnosis_codes=("R10.9", "R109"))))


def test_delimiters_and_foreign_characters_in_a_name_are_cleaned_and_upper_cased():
    jane = dataclasses.replace(JANE, last_name="O'Roe*Smith~", first_name="Jo:sé^\nAnn")
    segments = build(claim(subscriber=jane, claim_id="ACC*1001"))
    assert find(segments, "NM1", "IL")[0][3:5] == ["O'ROESMITH", "JOSE ANN"]
    assert find(segments, "CLM")[0][1] == "ACC1001"


def test_a_name_made_only_of_delimiters_is_refused():
    jane = dataclasses.replace(JANE, last_name="*~:")
    with pytest.raises(X12Error, match="Claim ACC1001, subscriber: no last name"):
        claim_batch_837p(batch(claim(subscriber=jane)))


def test_a_patient_needs_a_birth_date_and_an_address():
    no_birth_date = dataclasses.replace(SAM, birth_date=None)
    with pytest.raises(X12Error, match="patient: no birth date"):
        claim_batch_837p(batch(claim(relationship="19", patient=no_birth_date)))
    no_address = dataclasses.replace(SAM, address=None)
    with pytest.raises(X12Error, match="patient: no address"):
        claim_batch_837p(batch(claim(relationship="19", patient=no_address)))


def test_the_billing_provider_needs_a_nine_digit_zip_and_an_ein():
    five_digit_zip = dataclasses.replace(
        NORTH_IMAGING, address=dataclasses.replace(NORTH_IMAGING.address, postal_code="62701")
    )
    with pytest.raises(X12Error, match="Billing provider: ZIP code must have 9 digits"):
        claim_batch_837p(batch(billing_provider=five_digit_zip))
    with pytest.raises(X12Error, match="Billing provider: EIN must be 9 digits"):
        claim_batch_837p(batch(billing_provider=dataclasses.replace(NORTH_IMAGING, tax_id="")))


def test_charges_are_x12_decimals_and_fractions_of_a_cent_are_refused():
    lines = (line(charge=Decimal("100.00")), line(charge=Decimal("0.10"), line_id="CHG2"))
    segments = build(claim(lines=lines))
    assert [s[2] for s in find(segments, "SV1")] == ["100", "0.1"]
    assert find(segments, "CLM")[0][2] == "100.1"
    with pytest.raises(X12Error, match="line 1: charge must be zero or more, in whole cents"):
        claim_batch_837p(batch(claim(lines=(line(charge=Decimal("10.005")),))))


def test_a_rendering_provider_who_is_the_billing_provider_is_not_repeated():
    segments = build(claim(rendering=NORTH_IMAGING))
    assert not find(segments, "NM1", "82")


def test_the_referring_and_rendering_providers_are_named_on_the_claim():
    segments = build(claim())
    assert find(segments, "NM1", "DN") == [
        ["NM1", "DN", "1", "PATEL", "RAVI", "", "", "", "XX", DR_PATEL_NPI]
    ]
    assert find(segments, "NM1", "82") == [
        ["NM1", "82", "1", "REED", "ALICE", "", "", "", "XX", DR_REED_NPI]
    ]
    assert find(segments, "PRV", "PE") == [["PRV", "PE", "PXC", "2085R0202X"]]


def test_a_line_read_by_another_radiologist_gets_its_own_rendering_provider():
    lines = (line(rendering=DR_REED), line(line_id="CHG2", rendering=DR_OKAFOR))
    segments = build(claim(lines=lines))
    rendering = find(segments, "NM1", "82")
    assert [s[3] for s in rendering] == ["REED", "OKAFOR"]  # 2310B, then 2420A on line 2
    tags = [_token(s) for s in segments]
    assert tags.index("NM1*82") < tags.index("LX")
    assert tags[-5:] == ["REF*6R", "NM1*82", "SE", "GE", "IEA"]


def test_the_same_batch_gives_the_same_text():
    claims = tuple(claim(claim_id=f"ACC{n}") for n in range(20))
    assert claim_batch_837p(batch(*claims)) == claim_batch_837p(batch(*claims))


def test_without_line_breaks_segments_follow_each_other():
    text = claim_batch_837p(batch(), line_breaks=False)
    assert "\n" not in text and text.endswith("~")
    validate(text)
    assert text.replace("~", "~\n") == claim_batch_837p(batch())


def test_a_large_batch_is_split_into_several_transaction_sets(monkeypatch):
    monkeypatch.setattr(x12, "MAX_CLAIMS_PER_TRANSACTION", 2)
    segments = build(*(claim(claim_id=f"ACC{n}") for n in range(5)))
    assert [s[2] for s in find(segments, "ST")] == ["0001", "0002", "0003"]
    assert find(segments, "GE")[0][1] == "3"
    assert len(find(segments, "CLM")) == 5


def test_a_batch_without_claims_is_refused():
    with pytest.raises(X12Error, match="Batch: no claims"):
        claim_batch_837p(dataclasses.replace(batch(), claims=()))


def test_a_thousand_claims_build_in_under_a_second():
    claims = tuple(
        claim(
            claim_id=f"ACC{n}",
            relationship="19" if n % 3 else "18",
            patient=SAM if n % 3 else None,
            diagnosis_codes=("R10.9", "K80.20"),
            lines=(line(modifiers=("26",)), line(line_id=f"C{n}", diagnosis_pointers=(2, 1))),
        )
        for n in range(1000)
    )
    started = time.perf_counter()
    text = claim_batch_837p(batch(*claims))
    elapsed = time.perf_counter() - started
    assert elapsed < 1.0, elapsed
    assert len(find(validate(text), "CLM")) == 1000
