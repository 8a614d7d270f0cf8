"""The messages we send: ORU^R01 reports and ORM^O01 order messages, structurally valid
HL7 v2.5.1 (hl7apy reads them strictly), escapes and Unicode coming back as written."""

from __future__ import annotations

import contextlib
import datetime as dt
import re
import zoneinfo
from pathlib import Path

import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import ValidationError
from hl7apy.parser import parse_message

from ris.hl7 import mllp, outbound, parse
from ris.hl7.outbound import Envelope, OrderData, PatientData, Person, ReportData

BERLIN = zoneinfo.ZoneInfo("Europe/Berlin")
AT = dt.datetime(2026, 12, 1, 9, 30, 5, tzinfo=BERLIN)
UID = "1.2.826.0.1.3680043.10.543.1"

# hl7apy takes ORM_O01's ORDER_DETAIL choice (OBR | RQD | RQ1 | RXO | ODS | ODT) for a
# sequence and asks for all of them: the one false positive of its strict validation.
_CHOICE_GROUP = "Missing required child ORM_O01_OBRRQDRQ1RXOODSODT_SUPPGRP."
# hl7apy finds the groups whatever order the segments come in: the order is checked
# here (v2.5.1 7.3.1 ORU_R01 and 4.4.1 ORM_O01, the segments we use).
_SEGMENT_ORDER = {
    "ORU_R01": re.compile(r"^MSH PID (PV1 )?(ORC )?OBR (OBX )*$"),
    "ORM_O01": re.compile(r"^MSH PID (PV1 )?ORC OBR $"),
}


def structure_problems(text: str, tmp_path: Path):
    """Parse with hl7apy (v2.5.1 message structures, groups found, strict), validate, and
    check the segment order; returns (message, problems), hl7apy's errors and warnings
    (table values, lengths) less its known false positive."""
    message = parse_message(text, find_groups=True, validation_level=VALIDATION_LEVEL.STRICT)
    report = tmp_path / "validation.txt"
    with contextlib.suppress(ValidationError):  # the report file lists every problem
        message.validate(report_file=str(report))
    lines = report.read_text().splitlines() if report.exists() else []
    problems = [line for line in lines if _CHOICE_GROUP not in line]
    names = "".join(segment[:3] + " " for segment in text.split("\r") if segment)
    if not _SEGMENT_ORDER[message.msh.msh_9.msh_9_3.value].match(names):
        problems.append(f"Segments out of order: {names}")
    return message, problems


def envelope(control_id: str = "0123456789ABCDEF0123") -> Envelope:
    return Envelope(
        sending_facility="NORTH",
        receiving_application="HIS",
        receiving_facility="HOSP",
        control_id=control_id,
        at=AT,
    )


def patient(**overrides) -> PatientData:
    values = {
        "mrn": "123456",
        "mrn_issuer": "NORTH_MRN",
        "name": Person("Smith", "Anna", "Maria"),
        "birth_date": dt.date(1980, 1, 2),
        "sex": "F",
    }
    return PatientData(**{**values, **overrides})


def order(**overrides) -> OrderData:
    values = {
        "accession_number": "NORTH0000042",
        "placer_order_number": "HIS-9001",
        "procedure_code": "70450",
        "procedure_name": "CT head without contrast",
        "priority": "stat",
        "ordering_provider": Person("Welby", "Marcus", degree="MD"),
        "observed_at": AT - dt.timedelta(hours=2),
    }
    return OrderData(**{**values, **overrides})


def report(text: str = "No acute findings.", status: str = outbound.FINAL) -> ReportData:
    return ReportData(
        text=text,
        result_status=status,
        status_changed_at=AT,
        interpreter=Person("Lee", "Sam", degree="MD", identifier="1234567893", authority="NPI"),
        study_instance_uids=(UID,),
    )


def read(text: str) -> parse.Message:
    return parse.parse(text.encode(outbound.ENCODING))


def test_a_final_report_is_an_oru_r01_that_hl7apy_reads_strictly(tmp_path):
    text = outbound.oru_r01(envelope(), patient(), order(), report("Line one.\nLine two."))

    message, problems = structure_problems(text, tmp_path)

    assert problems == []
    assert [child.name for child in message.children] == ["MSH", "ORU_R01_PATIENT_RESULT"]
    result = message.ORU_R01_PATIENT_RESULT
    assert result.ORU_R01_PATIENT.PID.pid_3.value == "123456^^^NORTH_MRN^MR"
    observation = result.ORU_R01_ORDER_OBSERVATION
    assert observation.ORC.orc_1.value == "RE"
    assert observation.OBR.obr_25.value == "F"
    assert len(observation.ORU_R01_OBSERVATION) == 3  # two lines and the study


def test_the_oru_carries_the_order_the_result_and_who_signed_it():
    message = read(outbound.oru_r01(envelope(), patient(), order(), report()))

    msh = message.segments[0]
    assert message.header.message_type == "ORU^R01"
    assert msh.value(9, 3) == "ORU_R01"
    assert (msh.value(3), msh.value(4), msh.value(5), msh.value(6)) == (
        "RADPACS",
        "NORTH",
        "HIS",
        "HOSP",
    )
    assert message.header.control_id == "0123456789ABCDEF0123"
    assert message.header.version == "2.5.1"
    assert message.header.charset == "UNICODE UTF-8"
    assert msh.value(7) == "20261201093005+0100"
    pid = message.segment("PID")
    assert (pid.value(3), pid.value(3, 4), pid.value(3, 5)) == ("123456", "NORTH_MRN", "MR")
    assert (pid.value(5), pid.value(5, 2), pid.value(5, 3)) == ("Smith", "Anna", "Maria")
    assert (pid.value(7), pid.value(8)) == ("19800102", "F")
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert (orc.value(2), orc.value(3)) == ("HIS-9001", "NORTH0000042")
    assert [obr.value(n) for n in (2, 3, 18)] == ["HIS-9001", "NORTH0000042", "NORTH0000042"]
    assert (obr.value(4), obr.value(4, 2), obr.value(4, 3)) == (
        "70450",
        "CT head without contrast",
        "C4",
    )
    assert obr.value(7) == "20261201073005+0100"
    assert obr.value(22) == "20261201093005+0100"
    assert obr.value(25) == "F"
    assert obr.value(27, 6) == "S"
    assert (obr.value(16, 2), obr.value(16, 3)) == ("Welby", "Marcus")
    # OBR-32, the principal result interpreter, as CNN subcomponents.
    assert [obr.value(32, 1, n) for n in (1, 2, 3, 7, 9)] == [
        "1234567893",
        "Lee",
        "Sam",
        "MD",
        "NPI",
    ]
    text_obx, study_obx = message.all("OBX")
    assert (text_obx.value(2), text_obx.value(3), text_obx.value(3, 3)) == ("TX", "18782-3", "LN")
    assert (text_obx.value(5), text_obx.value(11)) == ("No acute findings.", "F")
    assert (study_obx.value(2), study_obx.value(3), study_obx.value(3, 3)) == (
        "ST",
        "110180",
        "DCM",
    )
    assert (study_obx.value(5), study_obx.value(11)) == (UID, "F")


@pytest.mark.parametrize("status", [outbound.PRELIMINARY, outbound.FINAL, outbound.CORRECTED])
def test_every_obx_carries_the_result_status_of_the_obr(status):
    message = read(outbound.oru_r01(envelope(), patient(), order(), report("a\nb", status)))

    assert message.segment("OBR").value(25) == status
    assert {obx.value(11) for obx in message.all("OBX")} == {status}


def test_report_text_with_delimiters_and_escapes_comes_back_as_written(tmp_path):
    lines = [
        r"Pipes | carets ^ ampersands & tildes ~ backslashes \ and \F\ as text",
        "",
        "Größe 3,4 mm — Ødem, 肺",
        "   indented",
    ]
    text = outbound.oru_r01(envelope(), patient(), order(), report("\r\n".join(lines) + "\n\n"))

    _, problems = structure_problems(text, tmp_path)
    assert problems == []
    obx = [s for s in read(text).all("OBX") if s.value(2) == "TX"]
    assert [s.value(5) for s in obx] == lines
    assert [s.value(1) for s in obx] == ["1", "2", "3", "4"]
    assert {s.value(4) for s in obx} == {"1"}  # one observation, its lines


def test_a_long_paragraph_is_wrapped_at_spaces_into_lines_of_80(tmp_path):
    paragraph = "  " + " ".join(f"word{n}" for n in range(60))
    text = outbound.oru_r01(envelope(), patient(), order(), report(paragraph))

    _, problems = structure_problems(text, tmp_path)
    assert problems == []
    lines = [s.value(5) for s in read(text).all("OBX") if s.value(2) == "TX"]
    assert len(lines) > 1
    assert max(len(line) for line in lines) <= 80
    assert all(line.startswith("  word") for line in lines)
    assert " ".join(line.strip() for line in lines) == paragraph.strip()


def test_control_characters_never_reach_the_wire():
    """VT and FS would break the MLLP frame; tabs become spaces."""
    text = outbound.oru_r01(envelope(), patient(), order(), report("a\x0bb\x1cc\x00d\tend\x07"))

    mllp.frame(text.encode())  # would raise on VT or FS
    assert read(text).segment("OBX").value(5) == "abcd    end"


def test_unicode_names_go_as_utf8_and_come_back(tmp_path):
    name = Person("Müller-Lüdenscheidt", "Zoë", prefix="Dr.", suffix="Jr")
    text = outbound.oru_r01(envelope(), patient(name=name), order(), report())

    _, problems = structure_problems(text, tmp_path)
    assert problems == []
    pid = parse.parse(text.encode("utf-8")).segment("PID")
    assert [pid.value(5, n) for n in (1, 2, 4, 5)] == ["Müller-Lüdenscheidt", "Zoë", "Jr", "Dr."]


def test_delimiters_in_names_and_codes_are_escaped():
    name = Person("O'Brien & Sons", "A^B")
    text = outbound.oru_r01(
        envelope(),
        patient(name=name),
        order(procedure_name="CT | head ^ neck"),
        report(),
    )

    message = read(text)
    assert (message.segment("PID").value(5), message.segment("PID").value(5, 2)) == (
        "O'Brien & Sons",
        "A^B",
    )
    assert message.segment("OBR").value(4, 2) == "CT | head ^ neck"


def test_an_empty_report_has_no_text_obx_only_the_study():
    message = read(outbound.oru_r01(envelope(), patient(), order(), report("  \n")))

    assert [obx.value(2) for obx in message.all("OBX")] == ["ST"]


def test_a_status_change_is_an_orm_o01_sc_with_the_order_status(tmp_path):
    text = outbound.orm_o01_status(envelope(), patient(), order(), order_status="IP")

    hl7apy_message, problems = structure_problems(text, tmp_path)
    assert problems == []
    assert [child.name for child in hl7apy_message.children] == [
        "MSH",
        "ORM_O01_PATIENT",
        "ORM_O01_ORDER",
    ]
    message = read(text)
    assert message.header.message_type == "ORM^O01"
    assert message.segments[0].value(9, 3) == "ORM_O01"
    orc = message.segment("ORC")
    assert [orc.value(n) for n in (1, 2, 3, 5)] == ["SC", "HIS-9001", "NORTH0000042", "IP"]
    assert orc.value(9) == "20261201093005+0100"
    obr = message.segment("OBR")
    assert (obr.value(2), obr.value(3), obr.value(4)) == ("HIS-9001", "NORTH0000042", "70450")
    assert obr.value(25) == ""


def test_our_cancellation_is_order_control_oc_with_status_ca():
    text = outbound.orm_o01_status(
        envelope(), patient(), order(), order_status="CA", order_control="OC"
    )

    orc = read(text).segment("ORC")
    assert (orc.value(1), orc.value(5)) == ("OC", "CA")


def test_an_order_made_here_is_announced_with_sn_and_no_placer_number(tmp_path):
    text = outbound.orm_o01_number_request(envelope(), patient(), order(placer_order_number=""))

    _, problems = structure_problems(text, tmp_path)
    assert problems == []
    message = read(text)
    orc, obr = message.segment("ORC"), message.segment("OBR")
    assert [orc.value(n) for n in (1, 2, 3)] == ["SN", "", "NORTH0000042"]
    assert (obr.value(2), obr.value(3)) == ("", "NORTH0000042")


def test_the_visit_goes_in_pv1():
    text = outbound.orm_o01_status(
        envelope(),
        patient(patient_class="I", visit_number="V778"),
        order(),
        order_status="CM",
    )

    pv1 = read(text).segment("PV1")
    assert (pv1.value(2), pv1.value(19)) == ("I", "V778")


@pytest.mark.parametrize(
    ("code", "system"),
    [("70450", "C4"), ("0042T", "C4"), ("G0202", "HCPCS"), ("CTHEAD", "L"), ("704", "L")],
)
def test_procedure_codes_name_their_coding_system(code, system):
    assert outbound.coding_system(code) == system


def test_timestamps_carry_their_offset_and_naive_ones_are_refused():
    assert outbound.timestamp(dt.datetime(2026, 7, 1, 8, 0, tzinfo=BERLIN)) == (
        "20260701080000+0200"
    )
    with pytest.raises(ValueError):
        outbound.timestamp(dt.datetime(2026, 7, 1, 8, 0))


# ---- reading the answer -----------------------------------------------------------------


def answer(*segments: str) -> bytes:
    return "\r".join(segments).encode()


ACK_MSH = "MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201093006||ACK^O01^ACK|A1|P|2.5.1"


def test_an_aa_answering_our_message_is_accepted():
    reply = outbound.reply_read(answer(ACK_MSH, "MSA|AA|CTRL1"), "CTRL1")

    assert reply.accepted
    assert reply.code == "AA"


def test_an_ae_says_why():
    reply = outbound.reply_read(
        answer(
            ACK_MSH,
            "MSA|AE|CTRL1",
            "ERR||OBR^1^3|204^Unknown key identifier^HL70357|E||||Order not found",
        ),
        "CTRL1",
    )

    assert not reply.accepted
    assert reply.code == "AE"
    assert reply.text == "Order not found; Unknown key identifier"


def test_an_answer_to_another_message_is_not_our_ack():
    with pytest.raises(outbound.ReplyError, match="acknowledges OTHER"):
        outbound.reply_read(answer(ACK_MSH, "MSA|AA|OTHER"), "CTRL1")


@pytest.mark.parametrize("raw", [b"garbage", answer(ACK_MSH), answer(ACK_MSH, "MSA|XX|CTRL1")])
def test_what_is_not_an_ack_is_an_error(raw):
    with pytest.raises(outbound.ReplyError):
        outbound.reply_read(raw, "CTRL1")


def test_the_placer_number_assigned_in_an_orr_is_read():
    reply = outbound.reply_read(
        answer(
            "MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201093006||ORR^O02^ORR_O02|A2|P|2.5.1",
            "MSA|AA|CTRL1",
            "PID|1||123456^^^NORTH_MRN^MR||Smith^Anna",
            "ORC|NA|HIS-777^HIS|NORTH0000042^RADPACS",
        ),
        "CTRL1",
    )

    assert reply.accepted
    assert (reply.placer_order_number, reply.assigned_for) == ("HIS-777", "NORTH0000042")
