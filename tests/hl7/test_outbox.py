"""HL7 out: what is queued for which partner when reports are released and exams move,
and how it gets there: over MLLP to a real listener, retried with backoff, dead after
the last attempt, never sent twice, one patient's messages in order."""

from __future__ import annotations

import contextlib
import datetime as dt
import socket
import threading
from collections.abc import Callable

import pytest
from django.utils import timezone

from accounts.models import AuditEvent
from ris import services
from ris.hl7 import ack, mllp, outbox, parse
from ris.hl7.models import OutboundMessage, Partner
from ris.models import Order, Report
from ris.reporting import services as reporting
from tests.factories import (
    PatientFactory,
    ProcedureFactory,
    exam_completed,
    exam_read,
    order_for,
    report_signed,
    report_written,
    signature_of,
)

pytestmark = pytest.mark.django_db

Status = OutboundMessage.Status
Answer = Callable[[parse.Message], "bytes | None"]


# ---- a partner's MLLP listener ------------------------------------------------------------


def acknowledge(code: str = "AA", reason: str = "") -> Answer:
    def answer(message: parse.Message) -> bytes:
        built = ack.build(message.header, code, reason=reason, error_code=204 if reason else 0)
        return built.encode()

    return answer


def assign_number(number: str) -> Answer:
    """ORR^O02 with ORC-1 NA: the placer's number for the filler number we sent."""

    def answer(message: parse.Message) -> bytes:
        orc = message.segment("ORC")
        assert orc is not None
        return "\r".join(
            [
                "MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201093006||ORR^O02^ORR_O02|R1|P|2.5.1",
                f"MSA|AA|{message.header.control_id}",
                f"ORC|NA|{number}^HIS|{orc.raw(3)}",
            ]
        ).encode()

    return answer


def silence(message: parse.Message) -> None:
    return None


class Peer:
    """A partner's listener on a free loopback port: keeps what it gets, answers with
    `answer` (None: says nothing and waits)."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.received: list[parse.Message] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.1)
        self.port = self._server.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                continue
            with connection:
                connection.settimeout(5)
                decoder = mllp.Decoder()
                with contextlib.suppress(OSError):  # the sender hung up
                    self._converse(connection, decoder)

    def _converse(self, connection: socket.socket, decoder: mllp.Decoder) -> None:
        while chunk := connection.recv(65536):
            for event in decoder.feed(chunk):
                if not isinstance(event, bytes):
                    continue
                message = parse.parse(event)
                self.received.append(message)
                reply = self.answer(message)
                if reply is None:
                    connection.recv(1)  # wait for the sender to give up
                    return
                connection.sendall(mllp.frame(reply))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._server.close()


@pytest.fixture
def peer():
    listener = Peer(acknowledge())
    yield listener
    listener.close()


def refused_port() -> int:
    """A loopback port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def partner_for(facility, port: int | None, **flags) -> Partner:
    values = {
        "name": "City HIS",
        "application": "HIS",
        "application_facility": "HOSP",
        "host": "127.0.0.1",
        "port": port,
    }
    return Partner.objects.create(facility=facility, **{**values, **flags})


@pytest.fixture
def his(facility_a, peer) -> Partner:
    return partner_for(facility_a, peer.port)


@pytest.fixture
def patient(facility_a):
    return PatientFactory(facility=facility_a, family_name="Müller", given_name="Zoë")


@pytest.fixture
def order(patient) -> Order:
    procedure = ProcedureFactory(facility=patient.facility, code="70450")
    return order_for(patient, procedure=procedure, placer_order_number="HIS-100")


def final_report(order: Order, radiologist, text: str = "No acute findings.") -> Report:
    """The exam done, its status messages out of the way, and its report signed final."""
    exam_read(order)
    OutboundMessage.objects.all().delete()
    return report_signed(order, radiologist, text)


def segment(message: OutboundMessage | parse.Message, name: str) -> parse.Segment:
    if isinstance(message, OutboundMessage):
        message = parse.parse(message.text.encode())
    found = message.segment(name)
    assert found is not None, name
    return found


def messages() -> list[OutboundMessage]:
    return list(OutboundMessage.objects.order_by("id"))


def make_due(row: OutboundMessage) -> None:
    """Time passes: the message's next attempt has come."""
    OutboundMessage.objects.filter(pk=row.pk).update(
        next_attempt_at=timezone.now() - dt.timedelta(seconds=1)
    )


# ---- what is queued ------------------------------------------------------------------------


def test_a_final_report_queues_an_oru_for_the_partner(his, order, radiologist):
    report = final_report(order, radiologist)

    (row,) = messages()
    assert (row.partner, row.order, row.facility) == (his, order, order.facility)
    assert row.message_type == "ORU^R01"
    assert row.status == Status.PENDING
    assert row.reason == f"report {report.pk} final"
    assert segment(row, "OBR").value(25) == "F"
    assert segment(row, "MSH").value(10) == row.control_id


def test_nothing_is_sent_before_the_transaction_commits(
    his, order, radiologist, django_capture_on_commit_callbacks
):
    exam_read(order)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        final_report(order, radiologist)

    assert len(callbacks) == 1  # the delivery task, queued for after the commit
    assert messages()[0].status == Status.PENDING


def test_a_draft_is_not_sent_and_each_release_is(his, order, radiologist):
    report = report_written(order, radiologist, "Draft.")
    OutboundMessage.objects.all().delete()  # the exam's status messages
    assert messages() == []
    signature = signature_of(radiologist)

    reporting.report_sign(
        report=report, status=Report.Status.PRELIMINARY, actor=radiologist, signature=signature
    )
    reporting.report_sign(
        report=report, status=Report.Status.FINAL, actor=radiologist, signature=signature
    )
    reporting.report_correct(
        report=report,
        sections=[{"title": "", "text": "Amended."}],
        actor=radiologist,
        signature=signature,
        reason="wrong side",
    )
    reporting.addendum_save(report=report, text="Compared with the prior.", actor=radiologist)
    reporting.addendum_sign(report=report, actor=radiologist, signature=signature)

    rows = [row for row in messages() if row.message_type == "ORU^R01"]
    assert [segment(row, "OBR").value(25) for row in rows] == ["P", "F", "C", "C"]
    assert segment(rows[2], "OBX").value(5) == "Amended."
    texts = [obx.value(5) for obx in parse.parse(rows[3].text.encode()).all("OBX")]
    assert texts[0] == "Amended."
    assert texts[-2] == "Compared with the prior."  # the last OBX is the study's UID


@pytest.mark.parametrize(
    ("flags", "port"),
    [
        ({"sends_results": False}, 2575),
        ({"host": ""}, 2575),
        ({}, None),
        ({"is_active": False}, 2575),
    ],
)
def test_no_oru_for_a_partner_that_does_not_take_results_or_has_no_address(
    facility_a, order, radiologist, flags, port
):
    partner_for(facility_a, port, **flags)

    final_report(order, radiologist)

    assert messages() == []


def test_no_message_for_another_facilitys_partner(facility_b, order, radiologist, peer):
    partner_for(facility_b, peer.port)

    final_report(order, radiologist)

    assert messages() == []


@pytest.mark.parametrize(
    ("steps", "control", "status"),
    [
        ([Order.Status.ARRIVED], "SC", "IP"),
        ([Order.Status.ARRIVED, Order.Status.IN_PROGRESS, Order.Status.COMPLETED], "SC", "CM"),
        ([Order.Status.CANCELLED], "OC", "CA"),
    ],
)
def test_the_exam_arriving_completing_or_cancelled_is_told_to_the_placer(
    his, order, steps, control, status
):
    for step in steps:
        services.order_status_set(order=order, status=step)

    row = messages()[-1]
    assert row.message_type == "ORM^O01"
    orc = segment(row, "ORC")
    assert [orc.value(n) for n in (1, 2, 3, 5)] == [
        control,
        "HIS-100",
        order.accession_number,
        status,
    ]


def test_arrived_then_completed_are_two_messages_in_order(his, order):
    exam_completed(order)

    assert [segment(row, "ORC").value(5) for row in messages()] == ["IP", "CM"]


def test_other_status_changes_are_not_sent(his, order):
    services.order_status_set(order=order, status=Order.Status.SCHEDULED)
    services.order_status_set(order=order, status=Order.Status.NO_SHOW)

    assert messages() == []


def test_no_status_message_for_a_partner_that_does_not_take_them(facility_a, order, peer):
    partner_for(facility_a, peer.port, sends_order_status=False)

    services.order_status_set(order=order, status=Order.Status.ARRIVED)

    assert messages() == []


def test_status_changes_that_came_over_hl7_are_not_echoed(his, order):
    services.order_status_set(
        order=order, status=Order.Status.CANCELLED, door="hl7", actor_name="City HIS"
    )

    assert messages() == []


def test_an_order_the_placer_does_not_know_gets_no_status_message(his, patient):
    walk_in_order = order_for(patient)  # made here, no placer number, not announced

    services.order_status_set(order=walk_in_order, status=Order.Status.ARRIVED)

    assert messages() == []


def test_an_order_made_at_the_front_desk_is_announced_sn(facility_a, patient, peer, clerk):
    partner_for(facility_a, peer.port, announces_orders=True)

    order = order_for(patient, actor=clerk)

    (row,) = messages()
    assert row.message_type == "ORM^O01"
    assert row.order == order
    orc = segment(row, "ORC")
    assert [orc.value(n) for n in (1, 2, 3)] == ["SN", "", order.accession_number]


def test_orders_from_the_his_or_with_a_placer_number_are_not_announced(facility_a, patient, peer):
    partner_for(facility_a, peer.port, announces_orders=True)

    order_for(patient, door="hl7")
    order_for(patient, placer_order_number="HIS-5")

    assert messages() == []


def test_no_announcement_without_a_partner_that_gives_numbers(his, patient):
    order_for(patient)

    assert messages() == []


# ---- delivery ------------------------------------------------------------------------------


def test_the_oru_reaches_the_partner_and_its_aa_is_kept(
    his, peer, order, radiologist, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        final_report(order, radiologist, "Findings: 3 | 4 ^ 5 & 6 ~ 7 \\ 8.\nImpression: ok.")

    (got,) = peer.received
    pid, obr = segment(got, "PID"), segment(got, "OBR")
    assert (pid.value(3), pid.value(3, 4), pid.value(3, 5)) == (
        order.patient.mrn,
        order.patient.mrn_issuer,
        "MR",
    )
    assert (pid.value(5), pid.value(5, 2)) == ("Müller", "Zoë")
    assert (obr.value(3), obr.value(25)) == (order.accession_number, "F")
    assert obr.value(32, 1, 2) == radiologist.last_name
    obx = got.all("OBX")
    assert [s.value(5) for s in obx if s.value(2) == "TX"] == [
        "Findings: 3 | 4 ^ 5 & 6 ~ 7 \\ 8.",
        "Impression: ok.",
    ]
    (uid,) = [s for s in obx if s.value(3) == "110180"]
    assert uid.value(5) == order.study_instance_uid
    row = messages()[0]
    assert (row.status, row.ack_code, row.attempts) == (Status.SENT, "AA", 1)
    assert row.sent_at is not None
    assert row.next_attempt_at is None
    assert f"MSA|AA|{row.control_id}" in row.ack
    assert got.header.control_id == row.control_id


def test_an_ae_fails_the_message_with_the_reason_and_a_backoff(
    his, peer, order, radiologist, django_capture_on_commit_callbacks
):
    peer.answer = acknowledge("AE", "Unknown patient")
    before = timezone.now()

    with django_capture_on_commit_callbacks(execute=True):
        final_report(order, radiologist)

    row = messages()[0]
    assert (row.status, row.attempts, row.ack_code) == (Status.FAILED, 1, "AE")
    assert row.last_error == "AE: Unknown patient; Unknown key identifier"  # ERR-8; ERR-3
    assert "MSA|AE|" in row.ack
    wait = row.next_attempt_at - before
    assert dt.timedelta(seconds=29) < wait < dt.timedelta(seconds=32)


def test_each_failure_doubles_the_wait_up_to_an_hour():
    waits = [outbox.backoff(n).total_seconds() for n in range(1, 10)]

    assert waits == [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]


def test_the_second_failure_waits_a_minute(his, peer, order, radiologist):
    peer.answer = acknowledge("AR", "Busy")
    final_report(order, radiologist)
    row = messages()[0]
    outbox.deliver(row.pk)
    make_due(row)
    before = timezone.now()

    outbox.deliver(row.pk)

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 2)
    wait = row.next_attempt_at - before
    assert dt.timedelta(seconds=59) < wait < dt.timedelta(seconds=62)


def test_a_refused_connection_fails_the_message(facility_a, order, radiologist):
    partner_for(facility_a, refused_port())
    final_report(order, radiologist)
    row = messages()[0]

    outbox.deliver(row.pk)

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 1)
    assert row.last_error == "Connection refused."
    assert row.ack_code == ""


def test_no_answer_in_time_fails_the_message(his, peer, order, radiologist, monkeypatch):
    monkeypatch.setattr(outbox, "ACK_TIMEOUT", 0.3)
    peer.answer = silence
    final_report(order, radiologist)
    row = messages()[0]

    outbox.deliver(row.pk)

    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert row.last_error == "No acknowledgement within 0.3 s."
    assert len(peer.received) == 1


def test_an_ack_of_another_message_fails_it(his, peer, order, radiologist):
    peer.answer = lambda message: (
        b"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201||ACK|X|P|2.5.1\rMSA|AA|SOMEONE-ELSE"
    )
    final_report(order, radiologist)
    row = messages()[0]

    outbox.deliver(row.pk)

    row.refresh_from_db()
    assert row.status == Status.FAILED
    assert "acknowledges SOMEONE-ELSE" in row.last_error


def test_the_message_is_dead_after_the_last_attempt(facility_a, order, radiologist, settings):
    settings.HL7_OUTBOUND_MAX_ATTEMPTS = 3
    partner_for(facility_a, refused_port())
    final_report(order, radiologist)
    row = messages()[0]

    for _ in range(3):
        make_due(row)
        outbox.deliver(row.pk)

    row.refresh_from_db()
    assert (row.status, row.attempts, row.next_attempt_at) == (Status.DEAD, 3, None)
    assert row.last_error == "Connection refused."
    make_due(row)  # a dead letter stays put
    outbox.deliver(row.pk)
    assert outbox.deliver_due() == 0
    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.DEAD, 3)


def test_a_failed_message_is_not_tried_before_its_time(his, peer, order, radiologist):
    peer.answer = acknowledge("AE", "Not yet")
    final_report(order, radiologist)
    row = messages()[0]
    outbox.deliver(row.pk)
    peer.answer = acknowledge()

    outbox.deliver(row.pk)
    assert outbox.deliver_due() == 0

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.FAILED, 1)
    assert len(peer.received) == 1


def test_the_sweep_sends_a_failed_message_once_its_time_has_come(his, peer, order, radiologist):
    peer.answer = acknowledge("AE", "Not yet")
    final_report(order, radiologist)
    row = messages()[0]
    outbox.deliver(row.pk)
    peer.answer = acknowledge()
    make_due(row)

    assert outbox.deliver_due() == 1

    row.refresh_from_db()
    assert (row.status, row.attempts, row.last_error) == (Status.SENT, 2, "")


def test_the_sweep_sends_a_pending_message_whose_task_was_lost(his, peer, order, radiologist):
    final_report(order, radiologist)  # its task is never run: no commit in this test
    row = messages()[0]
    assert outbox.deliver_due() == 0  # young: its task may still come

    OutboundMessage.objects.filter(pk=row.pk).update(
        created_at=timezone.now() - dt.timedelta(minutes=5)
    )
    assert outbox.deliver_due() == 1

    row.refresh_from_db()
    assert row.status == Status.SENT
    assert len(peer.received) == 1


def test_a_sent_message_is_never_sent_again(his, peer, order, radiologist):
    final_report(order, radiologist)
    row = messages()[0]
    outbox.deliver(row.pk)

    outbox.deliver(row.pk)
    OutboundMessage.objects.filter(pk=row.pk).update(
        created_at=timezone.now() - dt.timedelta(hours=1)
    )
    outbox.deliver_due()

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)
    assert len(peer.received) == 1


def test_a_message_another_worker_holds_is_not_sent(his, peer, order, radiologist):
    final_report(order, radiologist)
    row = messages()[0]
    assert outbox._claim(row.pk) is not None  # a worker took it, and is sending

    outbox.deliver(row.pk)
    outbox.deliver_due()

    assert peer.received == []


def test_a_message_whose_worker_died_is_sent_again_after_the_lease(his, peer, order, radiologist):
    final_report(order, radiologist)
    row = messages()[0]
    outbox._claim(row.pk)  # the worker dies here
    make_due(row)  # its lease runs out

    assert outbox.deliver_due() == 1

    row.refresh_from_db()
    assert row.status == Status.SENT


# ---- order per partner and patient ------------------------------------------------------------


def test_a_newer_message_waits_while_an_older_one_for_the_patient_retries(
    his, peer, order, radiologist, django_capture_on_commit_callbacks
):
    peer.answer = acknowledge("AE", "Down for maintenance")
    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=order, status=Order.Status.ARRIVED)
    peer.answer = acknowledge()

    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=order, status=Order.Status.IN_PROGRESS)
        services.order_status_set(order=order, status=Order.Status.COMPLETED)

    arrived, completed = messages()
    assert (arrived.status, completed.status) == (Status.FAILED, Status.PENDING)
    assert len(peer.received) == 1

    make_due(arrived)
    assert outbox.deliver_due() == 1  # the head of the queue; the rest follows it

    assert [row.status for row in messages()] == [Status.SENT, Status.SENT]
    assert [segment(m, "ORC").value(5) for m in peer.received] == ["IP", "IP", "CM"]


def test_another_patients_messages_are_not_held_up(
    his, peer, order, radiologist, django_capture_on_commit_callbacks
):
    peer.answer = acknowledge("AE", "Unknown patient")
    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=order, status=Order.Status.ARRIVED)
    peer.answer = acknowledge()
    other = order_for(PatientFactory(facility=order.facility), placer_order_number="HIS-200")

    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=other, status=Order.Status.ARRIVED)

    held, sent = messages()
    assert (held.status, sent.status) == (Status.FAILED, Status.SENT)


def test_a_dead_message_no_longer_holds_its_queue(
    his, peer, order, radiologist, settings, django_capture_on_commit_callbacks
):
    settings.HL7_OUTBOUND_MAX_ATTEMPTS = 1
    peer.answer = acknowledge("AR", "Rejected")
    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=order, status=Order.Status.ARRIVED)
    peer.answer = acknowledge()

    with django_capture_on_commit_callbacks(execute=True):
        services.order_status_set(order=order, status=Order.Status.CANCELLED)

    assert [row.status for row in messages()] == [Status.DEAD, Status.SENT]


def test_a_dead_letter_can_be_sent_again(
    facility_a, peer, order, radiologist, settings, django_capture_on_commit_callbacks
):
    settings.HL7_OUTBOUND_MAX_ATTEMPTS = 1
    partner = partner_for(facility_a, refused_port())
    with django_capture_on_commit_callbacks(execute=True):
        final_report(order, radiologist)
    row = messages()[0]
    assert row.status == Status.DEAD
    Partner.objects.filter(pk=partner.pk).update(port=peer.port)  # the address is fixed

    with django_capture_on_commit_callbacks(execute=True):
        outbox.message_resend(message=row)

    row.refresh_from_db()
    assert (row.status, row.attempts) == (Status.SENT, 1)


def test_a_sent_message_cannot_be_resent(his, peer, order, radiologist):
    final_report(order, radiologist)
    row = messages()[0]
    outbox.deliver(row.pk)

    with pytest.raises(services.RisError):
        outbox.message_resend(message=row)


# ---- the placer number the HIS assigns -------------------------------------------------------


def test_the_number_the_his_assigns_becomes_the_orders_placer_number(
    facility_a, patient, peer, clerk, django_capture_on_commit_callbacks
):
    partner_for(facility_a, peer.port, announces_orders=True)
    peer.answer = assign_number("HIS-777")

    with django_capture_on_commit_callbacks(execute=True):
        order = order_for(patient, actor=clerk)

    order.refresh_from_db()
    assert order.placer_order_number == "HIS-777"
    row = messages()[0]
    assert (row.status, row.ack_code, row.last_error) == (Status.SENT, "AA", "")
    event = AuditEvent.objects.filter(object_type="order", door="hl7").get()
    assert event.detail == {"placer_order_number": ["", "HIS-777"]}
    assert event.actor.startswith("City HIS")


def test_a_number_another_order_has_is_not_taken(
    facility_a, patient, peer, clerk, django_capture_on_commit_callbacks
):
    order_for(patient, placer_order_number="HIS-777")
    partner_for(facility_a, peer.port, announces_orders=True)
    peer.answer = assign_number("HIS-777")

    with django_capture_on_commit_callbacks(execute=True):
        order = order_for(patient, actor=clerk)

    order.refresh_from_db()
    assert order.placer_order_number == ""
    row = messages()[0]
    assert row.status == Status.SENT  # the HIS took our message; its number we refuse
    assert "HIS-777 not taken" in row.last_error
    assert "already used here" in row.last_error


# ---- the services behind it ----------------------------------------------------------------------


def test_a_placer_number_is_given_once(order, patient):
    fresh = order_for(patient)

    services.order_placer_number_assign(order=fresh, placer_order_number="HIS-9", actor_name="HIS")
    services.order_placer_number_assign(  # the same again: nothing to do
        order=fresh, placer_order_number="HIS-9", actor_name="HIS"
    )

    fresh.refresh_from_db()
    assert fresh.placer_order_number == "HIS-9"
    with pytest.raises(services.RisError, match="already has"):
        services.order_placer_number_assign(
            order=fresh, placer_order_number="HIS-10", actor_name="HIS"
        )
    with pytest.raises(services.RisError, match="already used"):
        services.order_placer_number_assign(
            order=order_for(patient), placer_order_number="HIS-100", actor_name="HIS"
        )


# ---- application acknowledgements (enhanced mode, MSH-16) ---------------------------------


def adt(control_id: str, event: str, *, application_ack: str) -> bytes:
    return "\r".join(
        [
            f"MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201083000||ADT^{event}^ADT_A01|{control_id}|P|"
            f"2.5.1|||NE|{application_ack}",
            f"EVN|{event}|20261201083000",
            "PID|1||555^^^NORTH_MRN^MR||Ode^Ana||19800101|F",
            "PV1|1|O|||||||||||||||||V77",
        ]
    ).encode()


def received_by(peer: Peer, count: int) -> list[parse.Message]:
    for _ in range(100):
        if len(peer.received) >= count:
            break
        threading.Event().wait(0.05)
    return peer.received


def test_an_adt_applied_gets_its_application_ack_when_msh16_asks_always(
    facility_a, his, peer, django_capture_on_commit_callbacks
):
    from ris.hl7 import services as hl7_services

    with django_capture_on_commit_callbacks(execute=True):
        receipt = hl7_services.message_receive(adt("APP1", "A01", application_ack="AL"))

    assert receipt.ack is None  # MSH-15 NE: no accept acknowledgement on the connection
    [answer] = received_by(peer, 1)
    assert answer.header.message_type == "ACK^A01"
    assert (answer.segment("MSA").value(1), answer.segment("MSA").value(2)) == ("AA", "APP1")
    sent = OutboundMessage.objects.get(message_type="ACK")
    assert sent.status == OutboundMessage.Status.SENT
    assert f"ACK {sent.control_id} queued for City HIS" in (
        hl7_services.InboundMessage.objects.get(pk=receipt.message_id).outcome
    )


def test_an_adt_that_fails_gets_an_ae_with_the_reason_when_msh16_asks_on_error(
    facility_a, his, peer, django_capture_on_commit_callbacks
):
    from ris.hl7 import services as hl7_services

    with django_capture_on_commit_callbacks(execute=True):
        hl7_services.message_receive(adt("OK1", "A01", application_ack="ER"))
        hl7_services.message_receive(adt("BAD1", "A03", application_ack="ER"))
        hl7_services.message_receive(adt("BAD2", "A03", application_ack="ER"))

    # A01 succeeded (no ACK on success with ER), the first A03 discharged the visit, and
    # the second A03 discharged it again: nothing to do, no ACK either.
    assert OutboundMessage.objects.filter(message_type="ACK").count() == 0
    with django_capture_on_commit_callbacks(execute=True):
        hl7_services.message_receive(
            adt("BAD3", "A03", application_ack="ER").replace(b"V77", b"V404")
        )
    [answer] = received_by(peer, 1)
    assert (answer.segment("MSA").value(1), answer.segment("MSA").value(2)) == ("AE", "BAD3")
    assert "V404" in answer.segment("ERR").value(8)


def test_a_number_the_his_assigns_later_in_an_orr_of_its_own_is_taken(
    facility_a, patient, peer, clerk, django_capture_on_commit_callbacks
):
    from ris.hl7 import services as hl7_services

    partner_for(facility_a, peer.port, announces_orders=True)
    peer.answer = acknowledge()  # the HIS only acknowledges the SN on the connection
    with django_capture_on_commit_callbacks(execute=True):
        order = order_for(patient, actor=clerk)
    announced = messages()[0]
    assert announced.status == Status.SENT
    order.refresh_from_db()
    assert order.placer_order_number == ""

    later = "\r".join(
        [
            "MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201100000||ORR^O02^ORR_O02|R9|P|2.5.1",
            f"MSA|AA|{announced.control_id}",
            f"ORC|NA|HIS-888^HIS|{order.accession_number}^RADPACS",
        ]
    ).encode()
    with django_capture_on_commit_callbacks(execute=True):
        receipt = hl7_services.message_receive(later)

    order.refresh_from_db()
    assert order.placer_order_number == "HIS-888"
    row = hl7_services.InboundMessage.objects.get(pk=receipt.message_id)
    assert row.status == "processed"
    assert row.outcome == (
        f"AA for our ORM^O01 {announced.control_id}; {order.accession_number} has placer "
        "number HIS-888"
    )
