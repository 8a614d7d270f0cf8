"""Orders from the HIS: ORM^O01 and OMI^O23 create, change and cancel RIS orders; what
cannot be applied yet is kept and applied when it can; the application response goes
to the outbox when the sender asks for it."""

from __future__ import annotations

from pathlib import Path

import pytest
from hl7apy.parser import parse_message

from accounts.models import AuditEvent
from ris import services as ris_services
from ris.hl7 import order_groups, parse, services
from ris.hl7.models import InboundMessage, OutboundMessage, Partner
from ris.models import Order, OrderStatusChange
from tests.factories import ProcedureFactory, RoomFactory, appointment_for, exam_completed

pytestmark = pytest.mark.django_db

MESSAGES = Path(__file__).parent / "messages"
Status = InboundMessage.Status


def corpus(name: str, **replace: str) -> bytes:
    text = (MESSAGES / name).read_text(encoding="utf-8")
    for old, new in replace.items():
        text = text.replace(old, new)
    return text.encode("utf-8")


def segment(text: str, name: str, *, index: int = 0) -> list[str]:
    """The fields of the `index`th segment called `name` (field 0 is the name)."""
    lines = [s for s in text.replace("\n", "\r").split("\r") if s.startswith(f"{name}|")]
    return lines[index].split("|")


def msa_code(receipt: services.Receipt) -> str:
    assert receipt.ack is not None
    return segment(receipt.ack, "MSA")[1]


@pytest.fixture
def facility(settings, facility_a):
    """Facility A takes messages from unregistered senders, with a small catalogue."""
    settings.HL7_DEFAULT_FACILITY = facility_a.code
    ProcedureFactory(facility=facility_a, code="70450", name="CT head without contrast")
    ProcedureFactory(facility=facility_a, code="71046", name="XR chest 2 views", modality="DX")
    ProcedureFactory(facility=facility_a, code="74177", name="CT abdomen and pelvis with contrast")
    return facility_a


@pytest.fixture
def his(facility):
    """The HIS as a partner we can answer (an MLLP address)."""
    return Partner.objects.create(
        facility=facility,
        name="General HIS",
        application="HIS",
        application_facility="GENHOSP",
        host="127.0.0.1",
        port=2576,
    )


@pytest.fixture
def receive(django_capture_on_commit_callbacks):
    """Receive a message as the listener does, and let its processing run."""

    def receive(raw: bytes) -> services.Receipt:
        with django_capture_on_commit_callbacks(execute=True):
            return services.message_receive(raw, peer="test")

    return receive


def row_of(receipt: services.Receipt) -> InboundMessage:
    return InboundMessage.objects.get(pk=receipt.message_id)


# ---- new orders -----------------------------------------------------------------------


def test_a_new_order_gets_our_accession_number(facility, receive):
    receipt = receive(corpus("orm_swf_new.hl7"))

    assert msa_code(receipt) == "AA"
    order = Order.objects.get(placer_order_number="PO1001")
    assert order.accession_number == "NORTH0000001"
    assert order.facility == facility
    assert order.procedure.code == "70450"
    assert order.status == Order.Status.REQUESTED
    assert order.priority == Order.Priority.ROUTINE
    assert order.referring_physician_name == "House^Gregory^^Dr"
    assert order.reason == "Headache, worsening"
    assert order.diagnosis_codes == "R51.9"
    assert (order.patient.mrn, order.patient.family_name) == ("100234", "Doe")
    row = row_of(receipt)
    assert row.status == Status.PROCESSED
    assert "NORTH0000001" in row.outcome


def test_the_study_uid_the_sender_proposes_is_noted_but_ours_is_kept(facility, receive):
    receipt = receive(corpus("orm_swf_new.hl7"))

    order = Order.objects.get(placer_order_number="PO1001")
    assert order.study_instance_uid
    assert not order.study_instance_uid.startswith("1.2.840.113619.2.55.3")
    assert "study UID 1.2.840.113619.2.55.3" in row_of(receipt).outcome


def test_a_v23_order_takes_its_priority_from_orc_7_and_its_reason_unescaped(facility, receive):
    receipt = receive(corpus("orm_v23_stat.hl7"))

    assert msa_code(receipt) == "AA"
    order = Order.objects.get(placer_order_number="PO1002")
    assert order.priority == Order.Priority.STAT
    assert order.procedure.code == "71046"
    assert order.reason == "Fall & chest pain; r/o fx | PTX"
    assert order.referring_physician_name == "Cuddy^Lisa"  # OBR-16 when ORC-12 is empty
    assert order.diagnosis_codes == ""


def test_an_omi_order_reads_tq1_priority_unicode_names_and_keeps_our_identifiers(facility, receive):
    receipt = receive(corpus("omi_new.hl7"))

    assert msa_code(receipt) == "AA"
    order = Order.objects.get(placer_order_number="PO2001")
    assert order.priority == Order.Priority.URGENT
    assert order.procedure.code == "74177"
    assert (order.patient.family_name, order.patient.given_name) == ("Müller", "Zoë")
    assert order.referring_physician_name == "Šimůnek^Jiří^^MUDr."
    assert order.reason == "Bauchschmerzen \N{EN DASH} unklar"
    assert order.diagnosis_codes == "R10.9, K35.80"
    assert order.accession_number == "NORTH0000001"  # not the sender's HISACC77
    assert order.study_instance_uid != "1.2.3.4.5.6.7"
    outcome = row_of(receipt).outcome
    assert "accession HISACC77" in outcome
    assert "we assign ours" in outcome


def test_two_order_groups_make_two_orders(facility, receive):
    receipt = receive(corpus("orm_two_groups.hl7"))

    assert row_of(receipt).status == Status.PROCESSED
    first = Order.objects.get(placer_order_number="PO3001")
    second = Order.objects.get(placer_order_number="PO3002")
    assert (first.procedure.code, first.priority, first.diagnosis_codes, first.reason) == (
        "70450",
        Order.Priority.ROUTINE,
        "R55",
        "Syncope",
    )
    assert (second.procedure.code, second.priority, second.diagnosis_codes, second.reason) == (
        "71046",
        Order.Priority.URGENT,
        "R05.9",
        "Cough",
    )
    assert first.patient == second.patient
    assert first.accession_number != second.accession_number


def test_the_same_message_received_twice_is_applied_once(facility, receive):
    first = receive(corpus("orm_swf_new.hl7"))
    again = receive(corpus("orm_swf_new.hl7"))

    assert msa_code(first) == msa_code(again) == "AA"
    assert row_of(again).status == Status.DUPLICATE
    assert row_of(again).duplicate_of_id == first.message_id
    assert Order.objects.filter(placer_order_number="PO1001").count() == 1


def test_a_new_order_sent_again_under_another_control_id_needs_nothing(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    again = receive(corpus("orm_swf_new.hl7", SWF0001="SWF0002"))

    assert msa_code(again) == "AA"
    row = row_of(again)
    assert row.status == Status.IGNORED
    assert "already have it (NORTH0000001)" in row.outcome
    assert Order.objects.count() == 1


def test_a_new_order_sent_again_with_other_content_is_taken_as_a_change(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    again = receive(
        corpus("orm_swf_new.hl7", SWF0001="SWF0002", **{"^^^20240115090000^^R": "^^^^^S"})
    )

    row = row_of(again)
    assert row.status == Status.PROCESSED
    assert "taken as a change" in row.outcome
    assert Order.objects.get(placer_order_number="PO1001").priority == Order.Priority.STAT
    assert Order.objects.count() == 1


def test_an_unknown_procedure_code_fails_and_is_applied_on_replay_once_in_the_catalogue(
    facility, receive
):
    receipt = receive(corpus("orm_unknown_procedure.hl7"))

    assert msa_code(receipt) == "AE"
    assert segment(receipt.ack, "ERR")[3].startswith("103^")  # v2.5.1 ERR-3
    row = row_of(receipt)
    assert row.status == Status.FAILED
    assert row.error_location == "OBR-4"
    assert "76499" in row.error
    assert "UNLISTED DIAGNOSTIC RADIOGRAPHIC PROCEDURE" in row.error
    assert not Order.objects.exists()

    ProcedureFactory(facility=facility, code="76499", name="Unlisted radiographic procedure")
    replayed = services.message_replay(message=row)

    assert replayed.status == Status.PROCESSED
    assert Order.objects.get(placer_order_number="PO4001").procedure.code == "76499"


def test_a_diagnosis_that_is_not_icd10_is_refused_on_receipt(facility, receive):
    receipt = receive(corpus("orm_bad_diagnosis.hl7"))

    assert msa_code(receipt) == "AE"
    row = row_of(receipt)
    assert row.status == Status.REJECTED
    assert row.error_location == "DG1[2]-3"
    assert "7840" in row.error
    assert not Order.objects.exists()


def test_an_order_control_we_do_not_take_is_refused(facility, receive):
    receipt = receive(corpus("orm_swf_new.hl7", **{"ORC|NW|": "ORC|RP|"}))

    assert msa_code(receipt) == "AE"
    row = row_of(receipt)
    assert (row.status, row.error_location) == (Status.REJECTED, "ORC-1")


# ---- cancel and discontinue -----------------------------------------------------------


def test_a_cancel_cancels_the_exam_and_its_appointment(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    order = Order.objects.get(placer_order_number="PO1001")
    appointment = appointment_for(order, RoomFactory(facility=facility))

    receipt = receive(corpus("orm_cancel.hl7"))

    assert msa_code(receipt) == "AA"
    order.refresh_from_db()
    appointment.refresh_from_db()
    assert order.status == Order.Status.CANCELLED
    assert appointment.is_cancelled
    assert appointment.cancel_reason == "Patient refused"
    change = OrderStatusChange.objects.filter(order=order).last()
    assert (change.to_status, change.door, change.reason) == (
        Order.Status.CANCELLED,
        "hl7",
        "Patient refused",
    )
    assert f"HL7 message {receipt.message_id}" in change.actor
    assert row_of(receipt).status == Status.PROCESSED


def test_a_cancel_for_an_unknown_order_is_kept_and_applied_when_its_order_arrives(
    facility, receive
):
    cancel = receive(corpus("orm_cancel.hl7"))

    assert msa_code(cancel) == "AE"
    assert "204&Unknown key identifier" in segment(cancel.ack, "ERR")[1]  # v2.3.1 ERR-1
    row = row_of(cancel)
    assert (row.status, row.error_location) == (Status.FAILED, "ORC-2")

    new = receive(corpus("orm_swf_new.hl7"))

    assert msa_code(new) == "AA"
    order = Order.objects.get(placer_order_number="PO1001")
    assert order.status == Order.Status.CANCELLED
    assert row_of(cancel).status == Status.PROCESSED
    assert f"then message {cancel.message_id}" in row_of(new).outcome


def test_a_resend_of_a_kept_cancel_is_kept_too_and_the_first_copy_stays_the_original(
    facility, receive
):
    """Both copies stay for replay, as before copy keys; a later accepted copy would be
    the first one's duplicate."""
    first = receive(corpus("orm_cancel.hl7"))
    again = receive(corpus("orm_cancel.hl7"))
    assert msa_code(first) == msa_code(again) == "AE"
    assert row_of(first).status == row_of(again).status == Status.FAILED
    assert row_of(first).copy_key is not None
    assert row_of(again).copy_key is None


def test_a_cancel_whose_order_waits_in_the_queue_is_accepted(
    facility, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as waiting:
        new = services.message_receive(corpus("orm_swf_new.hl7"), peer="test")
        cancel = services.message_receive(corpus("orm_cancel.hl7"), peer="test")

    assert msa_code(cancel) == "AA"
    assert row_of(cancel).status == Status.RECEIVED
    for callback in waiting:
        callback()
    assert row_of(new).status == row_of(cancel).status == Status.PROCESSED
    assert Order.objects.get(placer_order_number="PO1001").status == Order.Status.CANCELLED


def test_a_cancel_of_a_completed_exam_fails_with_the_lifecycle_reason(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    order = exam_completed(Order.objects.get(placer_order_number="PO1001"))

    receipt = receive(corpus("orm_cancel.hl7"))

    assert msa_code(receipt) == "AA"  # accepted on receipt; applying it is what fails
    row = row_of(receipt)
    assert row.status == Status.FAILED
    assert "cannot become cancelled" in row.error
    assert row.error_location == "ORC-1"
    order.refresh_from_db()
    assert order.status == Order.Status.COMPLETED


def test_a_discontinue_finds_the_order_by_our_accession_number(facility, receive):
    receive(corpus("orm_swf_new.hl7"))

    receipt = receive(corpus("orm_discontinue_by_filler.hl7"))

    assert msa_code(receipt) == "AA"
    order = Order.objects.get(accession_number="NORTH0000001")
    assert order.status == Order.Status.CANCELLED
    assert order.status_changes.last().reason == "Ordered in error"


def test_a_cancel_of_an_order_already_cancelled_needs_nothing(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    receive(corpus("orm_cancel.hl7"))

    again = receive(corpus("orm_cancel.hl7", **{"CAN-0001": "CAN-0002"}))

    assert row_of(again).status == Status.IGNORED
    assert "was cancelled" in row_of(again).outcome


# ---- changes and status ---------------------------------------------------------------


def test_a_change_order_changes_the_priority_and_is_audited(facility, receive):
    receive(corpus("orm_swf_new.hl7"))

    receipt = receive(corpus("orm_change_priority.hl7"))

    assert msa_code(receipt) == "AA"
    order = Order.objects.get(placer_order_number="PO1001")
    assert order.priority == Order.Priority.STAT
    assert order.reason == "Headache, worsening"  # not sent: left as it was
    event = AuditEvent.objects.filter(object_type="order", action=AuditEvent.Action.UPDATE).last()
    assert event.detail == {"changed": {"priority": ["routine", "stat"]}}
    assert event.door == "hl7"
    assert f"HL7 message {receipt.message_id}" in event.actor
    assert "priority routine -> stat" in row_of(receipt).outcome


def test_a_change_order_changes_the_procedure_of_an_exam_not_started(facility, receive):
    receive(corpus("orm_swf_new.hl7"))

    receipt = receive(corpus("orm_change_priority.hl7", **{"70450^CT HEAD": "71046^XR CHEST"}))

    assert row_of(receipt).status == Status.PROCESSED
    assert Order.objects.get(placer_order_number="PO1001").procedure.code == "71046"
    assert "procedure 70450 -> 71046" in row_of(receipt).outcome


def test_a_change_order_cannot_change_the_procedure_of_an_exam_in_progress(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    order = Order.objects.get(placer_order_number="PO1001")
    for status in (Order.Status.ARRIVED, Order.Status.IN_PROGRESS):
        ris_services.order_status_set(order=order, status=status)

    receipt = receive(corpus("orm_change_priority.hl7", **{"70450^CT HEAD": "71046^XR CHEST"}))

    row = row_of(receipt)
    assert row.status == Status.FAILED
    assert "is in progress: it cannot become 71046" in row.error
    order.refresh_from_db()
    assert (order.procedure.code, order.priority) == ("70450", Order.Priority.ROUTINE)


def test_a_change_order_that_changes_nothing_needs_nothing(facility, receive):
    receive(corpus("orm_swf_new.hl7"))
    receive(corpus("orm_change_priority.hl7"))

    again = receive(corpus("orm_change_priority.hl7", **{"XO-0001": "XO-0002"}))

    assert row_of(again).status == Status.IGNORED


def test_a_status_message_is_recorded_without_moving_the_exam(facility, receive):
    receive(corpus("orm_swf_new.hl7"))

    receipt = receive(corpus("orm_status_in_process.hl7"))

    row = row_of(receipt)
    assert row.status == Status.IGNORED
    assert "the placer says in process" in row.outcome
    assert Order.objects.get(placer_order_number="PO1001").status == Order.Status.REQUESTED


def test_a_status_message_saying_cancelled_cancels_the_exam(facility, receive):
    receive(corpus("orm_swf_new.hl7"))

    receive(corpus("orm_status_in_process.hl7", **{"|IP": "|CA"}))

    assert Order.objects.get(placer_order_number="PO1001").status == Order.Status.CANCELLED


# ---- the application response ---------------------------------------------------------


def test_an_orr_with_our_accession_number_goes_to_the_outbox_when_the_sender_asks(
    facility, his, receive
):
    receipt = receive(corpus("orm_new_ack_al.hl7"))

    assert msa_code(receipt) == "CA"  # enhanced mode: the commit acknowledgement
    response = OutboundMessage.objects.get()
    # Sent right after commit; nobody listens on the test's port, so it waits for a retry.
    assert (response.message_type, response.status, response.partner) == (
        "ORR^O02",
        OutboundMessage.Status.FAILED,
        his,
    )
    assert response.attempts == 1
    assert response.order == Order.objects.get(placer_order_number="PO5001")
    msh = segment(response.text, "MSH")
    assert (msh[8], msh[10], msh[11]) == ("ORR^O02^ORR_O02", "P", "2.5.1")
    assert segment(response.text, "MSA")[1:3] == ["AA", "ACK-5001"]
    orc = segment(response.text, "ORC")
    assert orc[1:4] == ["OK", "PO5001^HIS", "NORTH0000001^RADPACS"]
    assert orc[5] == "SC"
    assert f"ORR^O02 {response.control_id} queued for General HIS" in row_of(receipt).outcome
    # hl7apy finds the message structure's groups: the ORC is the response's order.
    parsed = parse_message(response.text.rstrip("\r"))
    assert parsed.orr_o02_response.orr_o02_order.orc.orc_3.to_er7() == "NORTH0000001^RADPACS"


def test_an_ori_answers_an_omi_cancel(facility, his, receive):
    receive(corpus("omi_new.hl7"))

    receive(corpus("omi_cancel.hl7"))

    response = OutboundMessage.objects.get()
    assert response.message_type == "ORI^O24"
    assert segment(response.text, "MSH")[8] == "ORI^O24^ORI_O24"
    assert segment(response.text, "ORC")[1:4] == ["CR", "PO2001^HIS", "NORTH0000001^RADPACS"]
    assert segment(response.text, "ORC")[5] == "CA"
    ipc = segment(response.text, "IPC")
    order = Order.objects.get(placer_order_number="PO2001")
    assert ipc[1] == "NORTH0000001^RADPACS"
    assert ipc[3] == f"{order.study_instance_uid}^RADPACS"
    parsed = parse_message(response.text.rstrip("\r"))
    assert parsed.ori_o24_response.ori_o24_order.ipc.ipc_1.to_er7() == "NORTH0000001^RADPACS"


def test_no_response_is_written_for_a_sender_we_cannot_reach(facility, receive):
    receipt = receive(corpus("orm_new_ack_al.hl7"))

    assert not OutboundMessage.objects.exists()
    assert "no ORR^O02 sent" in row_of(receipt).outcome
    assert Order.objects.filter(placer_order_number="PO5001").exists()


def test_no_response_is_written_when_the_sender_does_not_ask(facility, his, receive):
    receive(corpus("orm_swf_new.hl7"))

    assert not OutboundMessage.objects.exists()


def test_the_response_to_a_failure_says_unable_to_cancel(facility, his, receive):
    """What the framework's failure hook is to write (see orders.respond_to_failure)."""
    from ris.hl7.inbound import Context, orders

    receive(corpus("orm_swf_new.hl7"))
    message = parse.parse(corpus("orm_cancel.hl7", **{"|2.3.1": "|2.3.1|||AL|AL"}))
    error = parse.Hl7Error("An exam that is completed cannot become cancelled.", location="ORC-1")
    context = Context(facility=facility, partner=his, message_id=1)

    outcome = orders.respond_to_failure(message, context, error)

    response = OutboundMessage.objects.get()
    assert outcome == f"ORR^O02 {response.control_id} queued for General HIS"
    assert segment(response.text, "MSH")[8] == "ORR^O02"  # v2.3.1: no structure
    assert segment(response.text, "MSA")[1:4] == [
        "AE",
        "CAN-0001",
        "An exam that is completed cannot become cancelled.",
    ]
    orc = segment(response.text, "ORC")
    assert orc[1:6] == ["UC", "PO1001^HIS", "NORTH0000001^RADPACS", "", "SC"]


# ---- reading the groups (no database) -------------------------------------------------


def test_dg1_before_the_first_orc_belongs_to_every_group():
    message = parse.parse(
        b"MSH|^~\\&|HIS|H|RIS|R|20240101||ORM^O01|1|P|2.3\r"
        b"PID|1||1^^^H^MR||Doe^Jo\r"
        b"DG1|1||R51.9^Headache^I10\r"
        b"ORC|NW|A1\rOBR|1|A1||70450\r"
        b"ORC|NW|A2\rOBR|1|A2||71046\rDG1|1||R05.9^Cough^I10\r"
    )

    groups = order_groups.order_groups(message)

    codes = [[d.code for d in order_groups.requested(g).diagnoses or ()] for g in groups]
    assert codes == [["R51.9"], ["R51.9", "R05.9"]]
    assert [g.obr_at(4) for g in groups] == ["OBR-4", "OBR[2]-4"]


def test_an_explicit_null_clears_and_an_empty_field_leaves_alone():
    orc = "ORC|XO|A1" + "|" * 10 + '""'  # ORC-12, the ordering provider
    obr = "OBR|1|A1||70450" + "|" * 27 + '""'  # OBR-31, the reason for study
    message = parse.parse(f"MSH|^~\\&|HIS|H|RIS|R|20240101||ORM^O01|1|P|2.3\r{orc}\r{obr}".encode())

    wanted = order_groups.requested(order_groups.order_groups(message)[0])

    assert wanted.referring_physician_name == ""
    assert wanted.reason == ""
    assert wanted.priority is None
    assert wanted.diagnoses is None


def test_a_cancel_that_fails_gets_its_unable_to_cancel_response_through_the_real_path(
    facility, his, receive
):
    receive(corpus("orm_swf_new.hl7"))
    exam_completed(Order.objects.get(placer_order_number="PO1001"))
    OutboundMessage.objects.all().delete()  # status updates to the HIS, not under test

    receipt = receive(corpus("orm_cancel.hl7", **{"|2.3.1": "|2.3.1|||AL|AL"}))

    row = row_of(receipt)
    assert row.status == InboundMessage.Status.FAILED
    assert "cannot become cancelled" in row.error
    response = OutboundMessage.objects.get(message_type="ORR^O02")
    assert row.outcome == f"ORR^O02 {response.control_id} queued for General HIS"
    assert segment(response.text, "MSA")[1] == "AE"
    assert segment(response.text, "ORC")[1] == "UC"


def test_a_cancel_without_pid_queues_behind_the_order_it_cancels(
    facility, django_capture_on_commit_callbacks
):
    bare = corpus("orm_cancel.hl7").split(b"\n")
    bare = b"\n".join(line for line in bare if not line.startswith(b"PID|"))
    with django_capture_on_commit_callbacks() as waiting:
        new = services.message_receive(corpus("orm_swf_new.hl7"), peer="test")
        cancel = services.message_receive(bare, peer="test")

    assert row_of(cancel).patient_key == row_of(new).patient_key != ""
    # The cancel's worker runs first: it applies the new order before the cancel.
    for callback in reversed(waiting):
        callback()
    assert row_of(new).status == row_of(cancel).status == Status.PROCESSED
    assert Order.objects.get(placer_order_number="PO1001").status == Order.Status.CANCELLED
