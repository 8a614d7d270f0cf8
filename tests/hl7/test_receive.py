"""Receiving HL7: stored before acknowledged, refused with the right code and reason,
duplicates applied once, one patient's messages applied in arrival order."""

from __future__ import annotations

import datetime as dt
import threading
import time

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import AuditEvent
from ris.hl7 import services, tasks
from ris.hl7.inbound import HANDLERS, Handler
from ris.hl7.models import InboundMessage, OutboundMessage, Partner
from ris.hl7.parse import Hl7Error
from ris.models import Patient
from tests.factories import FacilityFactory

pytestmark = pytest.mark.django_db

Status = InboundMessage.Status


def hl7(*segments: str) -> bytes:
    return "\r".join(segments).encode()


def msh(
    control_id: str = "MSG001",
    message_type: str = "ADT^A01^ADT_A01",
    *,
    version: str = "2.5.1",
    sender: str = "HIS",
    accept: str = "",
    application: str = "",
    processing: str = "P",
) -> str:
    return (
        f"MSH|^~\\&|{sender}|HOSP|RADPACS|NORTH|20261201083000||{message_type}|{control_id}|"
        f"{processing}|{version}|||{accept}|{application}"
    )


def admit(control_id: str = "MSG001", *, family: str = "Smith", mrn: str = "123") -> bytes:
    return hl7(
        msh(control_id),
        "EVN|A01|20261201083000",
        f"PID|1||{mrn}^^^NORTH_MRN^MR||{family}^Anna||19800101|F",
        "PV1|1|O",
    )


def msa(segment_text: str, *, index: int = 1) -> str:
    """MSA-`index` of an ACK."""
    line = next(s for s in segment_text.split("\r") if s.startswith("MSA|"))
    return line.split("|")[index]


def err(segment_text: str) -> str:
    return next((s for s in segment_text.split("\r") if s.startswith("ERR|")), "")


@pytest.fixture
def default_facility(settings, facility_a):
    settings.HL7_DEFAULT_FACILITY = facility_a.code
    return facility_a


def receive(raw: bytes, capture) -> services.Receipt:
    with capture(execute=True):
        return services.message_receive(raw, peer="127.0.0.1:5000")


def test_an_accepted_message_is_stored_then_acknowledged_with_its_control_id(
    default_facility, django_capture_on_commit_callbacks
):
    receipt = receive(admit("CTRL42"), django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == "AA"
    assert msa(receipt.ack, index=2) == "CTRL42"
    row = InboundMessage.objects.get(pk=receipt.message_id)
    assert (row.control_id, row.message_type, row.version) == ("CTRL42", "ADT^A01", "2.5.1")
    assert row.peer == "127.0.0.1:5000"
    assert bytes(row.raw) == admit("CTRL42")
    assert row.ack == receipt.ack
    assert row.patient_key == "NORTH_MRN^123"
    assert row.facility == default_facility
    assert row.status == Status.PROCESSED


@pytest.mark.parametrize(
    ("raw", "code", "error_code", "reason"),
    [
        (b"hello, this is not HL7", "AR", "100", "must begin with an MSH segment"),
        (hl7(msh(version="2.9"), "PID|1||1"), "AR", "203", "Version 2.9 (MSH-12)"),
        (hl7(msh(message_type="RDE^O11"), "PID|1||1"), "AR", "200", "RDE^O11 (MSH-9)"),
        (hl7(msh(message_type="ADT^A99"), "PID|1||1"), "AR", "201", "Event A99"),
        (hl7(msh(control_id=""), "PID|1||1"), "AR", "101", "MSH-10"),
        (hl7(msh(processing="X"), "PID|1||1"), "AR", "202", "Processing id X"),
        (hl7(msh(), "EVN|A01"), "AE", "100", "needs a PID segment"),
    ],
)
def test_a_message_we_cannot_take_gets_the_right_code_and_reason_and_is_kept(
    default_facility, django_capture_on_commit_callbacks, raw, code, error_code, reason
):
    receipt = receive(raw, django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == code
    assert f"|{error_code}^" in err(receipt.ack)
    row = InboundMessage.objects.get(pk=receipt.message_id)
    assert row.status == Status.REJECTED
    assert reason in row.error
    assert bytes(row.raw) == raw


def test_a_sender_not_registered_is_refused_when_there_is_no_default_facility(
    facility_a, django_capture_on_commit_callbacks
):
    receipt = receive(admit(), django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == "AR"
    assert "not a registered HL7 partner" in InboundMessage.objects.get().error


def test_a_registered_partner_files_its_messages_under_its_facility(
    facility_a, django_capture_on_commit_callbacks
):
    other = FacilityFactory(code="EAST")
    Partner.objects.create(facility=other, name="East HIS", application="HIS")
    receipt = receive(admit(), django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == "AA"
    row = InboundMessage.objects.get()
    assert row.facility == other
    assert row.partner.name == "East HIS"


def test_a_message_sent_again_with_the_same_control_id_is_applied_once(
    default_facility, django_capture_on_commit_callbacks
):
    first = receive(admit("DUP1"), django_capture_on_commit_callbacks)
    # The sender lost our ACK and resends, stamping MSH-7 anew.
    again = admit("DUP1").replace(b"20261201083000||ADT", b"20261201083500||ADT")
    second = receive(again, django_capture_on_commit_callbacks)
    assert msa(second.ack) == "AA"
    row = InboundMessage.objects.get(pk=second.message_id)
    assert row.status == Status.DUPLICATE
    assert row.duplicate_of_id == first.message_id
    assert Patient.objects.filter(facility=default_facility, mrn="123").count() == 1


def test_the_same_control_id_with_other_content_is_a_new_message(
    default_facility, django_capture_on_commit_callbacks
):
    receive(admit("SAME", mrn="1"), django_capture_on_commit_callbacks)
    receipt = receive(admit("SAME", mrn="2"), django_capture_on_commit_callbacks)
    assert InboundMessage.objects.get(pk=receipt.message_id).status == Status.PROCESSED
    assert Patient.objects.filter(mrn__in=["1", "2"]).count() == 2


@pytest.mark.parametrize(
    ("accept", "code_sent"),
    [("AL", "CA"), ("NE", None), ("ER", None), ("SU", "CA")],
)
def test_enhanced_mode_answers_as_msh15_asks_on_success(
    default_facility, django_capture_on_commit_callbacks, accept, code_sent
):
    raw = hl7(
        msh(accept=accept, application="NE"),
        "PID|1||5^^^NORTH_MRN^MR||Doe^Jo",
    )
    receipt = receive(raw, django_capture_on_commit_callbacks)
    assert (msa(receipt.ack) if receipt.ack else None) == code_sent


def test_enhanced_mode_reports_an_error_as_commit_reject_when_asked_for_errors(
    default_facility, django_capture_on_commit_callbacks
):
    raw = hl7(msh(version="2.9", accept="ER", application="NE"), "PID|1||5")
    receipt = receive(raw, django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == "CR"


def test_one_patients_messages_apply_in_arrival_order_whichever_task_runs_first(
    default_facility, django_capture_on_commit_callbacks
):
    # Both are stored before either is applied (the tasks are captured, not run).
    with django_capture_on_commit_callbacks(execute=False):
        first = services.message_receive(admit("A", family="Smith"), peer="x")
        second = services.message_receive(
            hl7(
                msh("B", "ADT^A08^ADT_A01"),
                "EVN|A08|20261201090000",
                "PID|1||123^^^NORTH_MRN^MR||Jones^Anna||19800101|F",
            ),
            peer="x",
        )
    # The worker that picks up the second message applies the first one before it.
    services.message_process(second.message_id)
    rows = InboundMessage.objects.in_bulk([first.message_id, second.message_id])
    assert rows[first.message_id].status == Status.PROCESSED
    assert rows[second.message_id].status == Status.PROCESSED
    assert rows[first.message_id].processed_at <= rows[second.message_id].processed_at
    assert Patient.objects.get(mrn="123").family_name == "Jones"
    # The first message's own task then finds nothing left to do.
    services.message_process(first.message_id)
    assert Patient.objects.get(mrn="123").family_name == "Jones"


def test_an_unexpected_error_is_retried_then_set_aside_without_blocking_the_patient(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    def explode(message, context):
        raise RuntimeError("database on fire")

    monkeypatch.setitem(HANDLERS, "ADT^A01", Handler(apply=explode, required_segments=("PID",)))
    with django_capture_on_commit_callbacks(execute=False):
        receipt = services.message_receive(admit("BOOM"), peer="x")
    for attempt in range(1, services.MAX_ATTEMPTS):
        with pytest.raises(services.ProcessingDeferred):
            services.message_process(receipt.message_id)
        row = InboundMessage.objects.get(pk=receipt.message_id)
        assert (row.status, row.attempts) == (Status.RECEIVED, attempt)
        assert "database on fire" in row.error
    services.message_process(receipt.message_id)
    row = InboundMessage.objects.get(pk=receipt.message_id)
    assert row.status == Status.FAILED
    assert "database on fire" in row.error


def test_messages_announced_together_are_applied_by_one_task_in_arrival_order(
    default_facility, django_capture_on_commit_callbacks
):
    announced: list[int] = []
    with django_capture_on_commit_callbacks(execute=True):
        for n, family in enumerate(["Smith", "Jones", "Brown"]):
            services.message_receive(
                admit(f"BATCH{n}", family=family), peer="x", announce=announced.append
            )
    assert len(announced) == 3
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {Status.RECEIVED}

    tasks.process_messages.delay(announced)

    assert set(InboundMessage.objects.values_list("status", flat=True)) == {Status.PROCESSED}
    assert Patient.objects.get(mrn="123").family_name == "Brown"


def _stored(capture, *messages: bytes) -> list[int]:
    with capture(execute=False):
        return [services.message_receive(raw, peer="x").message_id for raw in messages]


def test_a_batch_leaves_a_queue_whose_earlier_message_waits_outside_it(
    default_facility, django_capture_on_commit_callbacks
):
    first, second, other = _stored(
        django_capture_on_commit_callbacks,
        admit("Q1", family="Smith"),
        admit("Q2", family="Jones"),
        admit("Q3", family="Brown", mrn="456"),
    )

    outcome = services.messages_process([second, other])

    assert (outcome.applied, outcome.behind, outcome.deferred) == (1, [second], [])
    statuses = dict(InboundMessage.objects.values_list("id", "status"))
    assert statuses == {first: Status.RECEIVED, second: Status.RECEIVED, other: Status.PROCESSED}
    # The task hands it to the one-message path, which applies the queue in order.
    tasks.process_messages.delay([second])
    assert Patient.objects.get(mrn="123").family_name == "Jones"
    assert set(InboundMessage.objects.values_list("status", flat=True)) == {Status.PROCESSED}


def test_an_unexpected_error_in_a_batch_holds_its_queue_only(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    applying = HANDLERS["ADT^A01"]

    def explode_on_boom(message, context):
        if "Boom" in message.text:
            raise RuntimeError("database on fire")
        return applying.apply(message, context)

    monkeypatch.setitem(
        HANDLERS, "ADT^A01", Handler(apply=explode_on_boom, required_segments=("PID",))
    )
    boom, after, other = _stored(
        django_capture_on_commit_callbacks,
        admit("B1", family="Boom"),
        admit("B2", family="Jones"),
        admit("B3", family="Brown", mrn="456"),
    )

    outcome = services.messages_process([boom, after, other])

    assert (outcome.applied, outcome.behind, outcome.deferred) == (1, [], [boom, after])
    rows = {row.pk: row for row in InboundMessage.objects.all()}
    assert (rows[boom].status, rows[boom].attempts) == (Status.RECEIVED, 1)
    assert "database on fire" in rows[boom].error
    assert (rows[after].status, rows[after].attempts) == (Status.RECEIVED, 0)
    assert rows[other].status == Status.PROCESSED
    assert not Patient.objects.filter(mrn="123").exists()


def test_a_batch_of_messages_done_already_applies_nothing_again(
    default_facility, django_capture_on_commit_callbacks
):
    ids = _stored(django_capture_on_commit_callbacks, admit("D1"), admit("D2", family="Jones"))
    services.messages_process(ids)

    assert services.messages_process(ids) == services.BatchOutcome(0, [], [])
    assert Patient.objects.get(mrn="123").family_name == "Jones"


def test_a_batch_drains_waiting_messages_oldest_first_but_not_those_tried_before(
    default_facility, django_capture_on_commit_callbacks
):
    tried, first, second, other = _stored(
        django_capture_on_commit_callbacks,
        admit("T1", mrn="789"),
        admit("W1", family="Jones"),
        admit("W2", family="Brown"),
        admit("W3", family="White", mrn="456"),
    )
    InboundMessage.objects.filter(pk=tried).update(attempts=1)  # waits for its retry

    outcome = services.messages_process([other], drain=10)

    assert (outcome.applied, outcome.behind, outcome.deferred) == (3, [], [])
    assert Patient.objects.get(mrn="123").family_name == "Brown"  # W1, then W2
    assert Patient.objects.get(mrn="456").family_name == "White"
    assert InboundMessage.objects.get(pk=tried).status == Status.RECEIVED
    assert services.messages_process([first, second], drain=10).applied == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks of two connections")
def test_a_batch_leaves_messages_another_worker_holds_without_waiting(default_facility):
    ids = [
        services.message_receive(raw, peer="x", announce=lambda _id: None).message_id
        for raw in (admit("L1"), admit("L2", family="Brown", mrn="456"))
    ]
    holding, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                InboundMessage.objects.select_for_update().get(pk=ids[0])
                holding.set()
                release.wait(10)
        finally:
            connections.close_all()

    worker = threading.Thread(target=other_worker)
    worker.start()
    try:
        assert holding.wait(10)
        # Waiting on the lock would have applied both once the other worker let go.
        outcome = services.messages_process(ids)
    finally:
        release.set()
        worker.join()
    assert (outcome.applied, outcome.behind) == (1, [ids[0]])
    assert InboundMessage.objects.get(pk=ids[0]).status == Status.RECEIVED
    assert InboundMessage.objects.get(pk=ids[1]).status == Status.PROCESSED


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="two connections at once")
def test_a_copy_arriving_while_the_first_is_being_stored_is_taken_as_a_duplicate(
    default_facility,
):
    """The first copy's insert holds its copy key until it commits: the second copy's
    insert waits on the unique index, then finds the key taken, instead of both being
    taken as new."""
    first_inserted, first_may_commit = threading.Event(), threading.Event()
    receipts = []

    def first_copy() -> None:
        try:
            with transaction.atomic():
                receipts.append(
                    services.message_receive(admit("SAME"), peer="a", announce=lambda _id: None)
                )
                first_inserted.set()
                first_may_commit.wait(10)
        finally:
            connections.close_all()

    sender = threading.Thread(target=first_copy)
    sender.start()
    try:
        assert first_inserted.wait(10)
        second = threading.Timer(0.5, first_may_commit.set)  # while the copy waits
        second.start()
        started = time.monotonic()
        copy = services.message_receive(admit("SAME"), peer="b", announce=lambda _id: None)
        waited = time.monotonic() - started
    finally:
        first_may_commit.set()
        sender.join()
    assert waited >= 0.4  # it did wait for the first copy's commit
    row = InboundMessage.objects.get(pk=copy.message_id)
    assert row.status == Status.DUPLICATE
    assert row.duplicate_of_id == receipts[0].message_id
    assert row.copy_key is None
    assert InboundMessage.objects.get(pk=receipts[0].message_id).status == Status.RECEIVED


def test_messages_stored_before_copy_keys_get_theirs_from_the_migration(
    default_facility, django_capture_on_commit_callbacks
):
    """0003 keys the first copy of each message the old lookup would have found, so a
    resend of a message stored before the upgrade is still a duplicate."""
    import importlib

    from django.apps import apps

    migration = importlib.import_module("ris.hl7.migrations.0003_copy_key")
    first = receive(admit("OLD1"), django_capture_on_commit_callbacks)
    later = receive(admit("OLD1", mrn="9"), django_capture_on_commit_callbacks)
    InboundMessage.objects.update(copy_key=None)
    # Rows the old lookup skipped: a rejected message, and a second original copy.
    rejected = InboundMessage.objects.create(control_id="OLD2", status=Status.REJECTED)
    copy = InboundMessage.objects.get(pk=first.message_id)
    copy.pk = None
    copy.save()
    migration.key_first_copies(apps, None)
    keys = dict(InboundMessage.objects.values_list("id", "copy_key"))
    assert keys[first.message_id] is not None and keys[later.message_id] is not None
    assert bytes(keys[first.message_id]) != bytes(keys[later.message_id])
    assert keys[rejected.pk] is None and keys[copy.pk] is None
    resend = receive(admit("OLD1"), django_capture_on_commit_callbacks)
    assert InboundMessage.objects.get(pk=resend.message_id).duplicate_of_id == first.message_id


def test_messages_whose_task_was_lost_are_queued_again(
    default_facility, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        receipt = services.message_receive(admit("LOST"), peer="x")
    InboundMessage.objects.filter(pk=receipt.message_id).update(
        received_at=timezone.now() - dt.timedelta(minutes=5)
    )
    assert services.messages_requeue() == 1
    assert InboundMessage.objects.get(pk=receipt.message_id).status == Status.PROCESSED
    assert services.messages_requeue() == 0


def test_an_application_ack_from_the_partner_is_kept_on_the_message_it_answers(
    facility_a, django_capture_on_commit_callbacks
):
    partner = Partner.objects.create(facility=facility_a, name="HIS", application="HIS")
    sent = OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORU^R01",
        control_id="OUT0001",
        text="MSH|...",
    )
    raw = hl7(msh("ACK77", "ACK^R01^ACK"), "MSA|AA|OUT0001")
    receipt = receive(raw, django_capture_on_commit_callbacks)
    assert msa(receipt.ack) == "AA"
    sent.refresh_from_db()
    assert (sent.ack_code, sent.ack) == ("AA", raw.decode())
    assert InboundMessage.objects.get(pk=receipt.message_id).outcome == "AA for our ORU^R01 OUT0001"


def test_the_listener_reads_partners_once_per_cache_period(
    facility_a, settings, django_capture_on_commit_callbacks, monkeypatch
):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    settings.HL7_PARTNER_CACHE_SECONDS = 30
    monkeypatch.setattr(services, "_partners", {})
    Partner.objects.create(facility=facility_a, name="HIS", application="HIS")
    with CaptureQueriesContext(connection) as queries:
        receive(admit("C1", mrn="1"), django_capture_on_commit_callbacks)
        receive(admit("C2", mrn="2"), django_capture_on_commit_callbacks)
    partner_reads = [
        q for q in queries.captured_queries if q["sql"].startswith('SELECT "hl7_partner"')
    ]
    assert len(partner_reads) == 1
    assert InboundMessage.objects.filter(facility=facility_a).count() == 2


def test_a_batch_that_applies_cleanly_takes_no_savepoint_per_message(
    default_facility, django_capture_on_commit_callbacks
):
    mrns = ["123", "456", "789"]
    registered = [admit(f"S{mrn}", family="Smith", mrn=mrn) for mrn in mrns]
    services.messages_process(_stored(django_capture_on_commit_callbacks, *registered))
    updates = [admit(f"U{mrn}", family="Jones", mrn=mrn) for mrn in mrns]
    ids = _stored(django_capture_on_commit_callbacks, *updates)
    with CaptureQueriesContext(connection) as queries:
        outcome = services.messages_process(ids)
    assert outcome.applied == 3
    assert set(Patient.objects.values_list("family_name", flat=True)) == {"Jones"}
    savepoints = [q for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")]
    assert len(savepoints) == 1  # the batch's transaction, inside the test's
    # The three outcomes (and the three audit rows) are written together.
    outcome_writes = [
        q for q in queries.captured_queries if 'UPDATE "hl7_inboundmessage"' in q["sql"]
    ]
    assert len(outcome_writes) == 1


def test_a_failure_in_a_batch_takes_back_its_own_message_only(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    """Run again with savepoints: the messages before the failed one are applied once
    (one audit row each), the failed one's half-done writes are gone."""
    applying = HANDLERS["ADT^A01"]

    def write_then_refuse(message, context):
        outcome = applying.apply(message, context)
        if "Refused" in message.text:
            raise Hl7Error("Refused after writing.", location="PID-5")
        return outcome

    monkeypatch.setitem(
        HANDLERS, "ADT^A01", Handler(apply=write_then_refuse, required_segments=("PID",))
    )
    before, refused, after = _stored(
        django_capture_on_commit_callbacks,
        admit("F1", family="Smith"),
        admit("F2", family="Refused", mrn="456"),
        admit("F3", family="Brown", mrn="789"),
    )

    outcome = services.messages_process([before, refused, after])

    assert outcome.applied == 3  # the refusal is an outcome (failed), not a deferral
    statuses = dict(InboundMessage.objects.values_list("id", "status"))
    assert statuses == {before: Status.PROCESSED, refused: Status.FAILED, after: Status.PROCESSED}
    assert InboundMessage.objects.get(pk=refused).attempts == 1
    assert set(Patient.objects.values_list("mrn", flat=True)) == {"123", "789"}
    created = AuditEvent.objects.filter(action=AuditEvent.Action.CREATE)
    first, last = (Patient.objects.get(mrn=mrn).pk for mrn in ("123", "789"))
    # The first message ran twice (rolled back, then again), the last once: same rows.
    assert created.filter(patient_id=first).count() == created.filter(patient_id=last).count()
    assert created.filter(patient_id=first).exists()


def test_a_message_of_another_type_in_a_batch_sees_the_adt_outcomes_before_it(
    default_facility, django_capture_on_commit_callbacks, monkeypatch
):
    """Order handlers read other messages' status: the ADT outcomes the batch holds back
    are written before a message of another type is applied."""
    seen: list[str] = []

    def look(message, context):
        seen.extend(
            InboundMessage.objects.filter(control_id="SEEN1").values_list("status", flat=True)
        )
        return "looked"

    monkeypatch.setitem(HANDLERS, "ACK^A01", Handler(apply=look, required_segments=()))
    ids = _stored(
        django_capture_on_commit_callbacks,
        admit("SEEN1"),
        hl7(msh("SEEN2", "ACK^A01"), "MSA|AA|OUT-1"),
    )
    assert services.messages_process(ids).applied == 2
    assert seen == [Status.PROCESSED]
