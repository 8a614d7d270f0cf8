"""The HL7 message log pages: an administrator searches what the interfaces received and
sent, reads a message field by field, and replays failed ones; only their facilities'
messages, every read of one audited."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.messages import get_messages
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.roles import Role
from ris.hl7 import selectors, services, validation
from ris.hl7.models import InboundMessage, OutboundMessage, Partner
from tests.factories import PatientFactory, client_for, member

pytestmark = pytest.mark.django_db

Status = InboundMessage.Status
LIST = reverse("hl7:message_list")


def hl7(*segments: str) -> str:
    return "\r".join(segments)


def msh(control_id: str, message_type: str = "ADT^A01^ADT_A01", sender: str = "HIS") -> str:
    return (
        f"MSH|^~\\&|{sender}|HOSP|RADPACS|NORTH|20261201083000||{message_type}|{control_id}|P|2.5.1"
    )


def admit(control_id: str, *, family: str = "Smith", mrn: str = "123") -> str:
    return hl7(
        msh(control_id),
        "EVN|A01|20261201083000",
        f"PID|1||{mrn}^^^NORTH_MRN^MR||{family}^Anna||19800101|F",
        "PV1|1|O",
    )


def received(facility, text: str, **fields) -> InboundMessage:
    """A logged message as the listener stores it (columns read from the text)."""
    header = text.split("\r", 1)[0].split("|")
    defaults = {
        "sending_application": header[2],
        "sending_facility": header[3],
        "message_type": "^".join(header[8].split("^")[:2]),
        "control_id": header[9],
        "version": header[11],
        "status": Status.PROCESSED,
        "ack_code": "AA",
        "ack": hl7(
            "MSH|^~\\&|RADPACS|NORTH|HIS|HOSP|20261201083001||ACK^A01^ACK|A1|P|2.5.1",
            f"MSA|AA|{header[9]}",
        ),
    }
    fields = defaults | fields
    received_at = fields.pop("received_at", None)
    message = InboundMessage.objects.create(
        facility=facility, raw=text.encode(), text=text, **fields
    )
    if received_at:
        InboundMessage.objects.filter(pk=message.pk).update(received_at=received_at)
    return message


def admitted(facility, control_id: str, **fields) -> InboundMessage:
    family = fields.pop("family", "Smith")
    mrn = fields.pop("mrn", "123")
    fields.setdefault("patient_key", f"NORTH_MRN^{mrn}")
    fields.setdefault("patient_name", f"Anna {family}")
    return received(facility, admit(control_id, family=family, mrn=mrn), **fields)


def shown(response) -> list[str]:
    """Control ids of the list's rows, top to bottom."""
    return [row["message"].control_id for row in response.context["rows"]]


def flashed(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def admin(facility_admin):
    return client_for(facility_admin)


@pytest.fixture
def other_admin(facility_b):
    """An administrator of facility B."""
    return client_for(member(facility_b, Role.ADMIN, username="southadmin"))


@pytest.fixture
def partner(facility_a):
    return Partner.objects.create(
        facility=facility_a, name="North HIS", application="HIS", application_facility="HOSP"
    )


# ---- the list ----------------------------------------------------------------------------


def test_an_admin_sees_their_facilitys_messages_newest_first_and_no_others(
    admin, facility_a, facility_b
):
    admitted(facility_a, "FIRST")
    admitted(facility_a, "SECOND", status=Status.FAILED, error="Unknown order.")
    admitted(facility_b, "SOUTHS")

    response = admin.get(LIST)

    assert response.status_code == 200
    assert shown(response) == ["SECOND", "FIRST"]
    html = response.content.decode()
    assert "Anna Smith" in html
    assert "Unknown order." in html
    assert "SOUTHS" not in html


def test_the_filters_narrow_the_list(admin, facility_a):
    long_ago = timezone.now() - dt.timedelta(days=30)
    admitted(facility_a, "ADT1", family="Jones", mrn="555123", received_at=long_ago)
    admitted(facility_a, "ADT2", family="Brown", mrn="777", status=Status.FAILED)
    received(
        facility_a,
        hl7(msh("ORM1", "ORM^O01", sender="RIS2"), "PID|1||9^^^NORTH_MRN^MR||Lee^Kim"),
        order_number="PL-42",
    )

    def search(**query) -> list[str]:
        response = admin.get(LIST, query)
        assert response.status_code == 200
        return sorted(shown(response))

    assert search(message_type="adt") == ["ADT1", "ADT2"]
    assert search(message_type="ORM^O01") == ["ORM1"]
    assert search(status=Status.FAILED) == ["ADT2"]
    assert search(control_id="ADT1") == ["ADT1"]
    assert search(patient="5512") == ["ADT1"], "a fragment of the MRN"
    assert search(patient="brow") == ["ADT2"], "a fragment of the name"
    assert search(order_number="PL-42") == ["ORM1"]
    assert search(sending_application="ris2") == ["ORM1"]
    today = timezone.localdate()
    assert search(since=today.isoformat()) == ["ADT2", "ORM1"]
    assert search(until=(today - dt.timedelta(days=1)).isoformat()) == ["ADT1"]
    assert search(status="nonsense") == ["ADT1", "ADT2", "ORM1"], "an invalid filter is dropped"


def test_the_error_queue_holds_failed_and_rejected_messages_with_counts_per_status(
    admin, facility_a
):
    admitted(facility_a, "OK1")
    admitted(facility_a, "OK2")
    admitted(facility_a, "BAD1", status=Status.FAILED)
    admitted(facility_a, "BAD2", status=Status.REJECTED, ack_code="AR")
    admitted(facility_a, "DUP1", status=Status.DUPLICATE)

    response = admin.get(reverse("hl7:message_errors"))

    assert sorted(shown(response)) == ["BAD1", "BAD2"]
    counts = {q["label"]: q["count"] for q in response.context["quick"]}
    assert counts["All"] == 5
    assert counts["Error queue"] == 2
    assert counts[Status.PROCESSED.label] == 2
    assert counts[Status.DUPLICATE.label] == 1
    assert counts[Status.RECEIVED.label] == 0
    assert "HL7 error queue" in response.content.decode()

    by_status = admin.get(LIST, {"status": Status.PROCESSED, "page": "1"})
    link = next(q for q in by_status.context["quick"] if q["label"] == Status.FAILED.label)
    assert link["url"] == f"{LIST}?status=failed", "the page number is dropped"


def test_the_list_reads_a_constant_number_of_queries(
    admin, facility_a, django_assert_max_num_queries
):
    PatientFactory(facility=facility_a, mrn="M0", mrn_issuer="NORTH_MRN")
    for index in range(3):
        admitted(facility_a, f"C{index}", mrn=f"M{index}")
    with CaptureQueriesContext(connection) as few:
        admin.get(LIST)
    for index in range(3, 60):
        admitted(facility_a, f"C{index}", mrn=f"M{index}", status=Status.FAILED)
    PatientFactory(facility=facility_a, mrn="M59", mrn_issuer="NORTH_MRN")
    with django_assert_max_num_queries(len(few)):
        response = admin.get(LIST)
    assert len(shown(response)) == 50
    assert response.context["page"].has_next()


def test_showing_the_list_is_audited_with_the_patients_it_names(admin, facility_a):
    patient = PatientFactory(facility=facility_a, mrn="123", mrn_issuer="NORTH_MRN")
    message = admitted(facility_a, "ADT1")

    admin.get(LIST, {"patient": "123"})

    event = AuditEvent.objects.get(action=AuditEvent.Action.LIST, object_type="inboundmessage")
    assert event.detail["ids"] == [message.pk]
    assert event.detail["query"]["patient"] == "123"
    assert list(event.patients.values_list("patient_id", flat=True)) == [patient.pk]


# ---- who may see -------------------------------------------------------------------------


def test_a_clerk_may_not_open_the_message_log(clerk, facility_a):
    message = admitted(facility_a, "ADT1", status=Status.FAILED)
    client = client_for(clerk)
    assert client.get(LIST).status_code == 403
    assert client.get(reverse("hl7:message_detail", args=[message.pk])).status_code == 403
    assert client.post(reverse("hl7:message_replay", args=[message.pk])).status_code == 403
    assert client.get(reverse("hl7:outbound_list")).status_code == 403
    message.refresh_from_db()
    assert message.attempts == 0


def test_an_admin_of_another_facility_never_sees_nor_replays_its_messages(
    other_admin, facility_a, partner
):
    message = admitted(facility_a, "ADT1", status=Status.FAILED)
    sent = OutboundMessage.objects.create(
        facility=facility_a, partner=partner, message_type="ORU^R01", control_id="OUT1", text="x"
    )

    assert shown(other_admin.get(LIST)) == []
    assert other_admin.get(reverse("hl7:message_errors")).context["rows"] == []
    assert other_admin.get(reverse("hl7:message_detail", args=[message.pk])).status_code == 404
    assert other_admin.post(reverse("hl7:message_replay", args=[message.pk])).status_code == 404
    assert other_admin.get(reverse("hl7:outbound_list")).context["rows"] == []
    assert other_admin.get(reverse("hl7:outbound_detail", args=[sent.pk])).status_code == 404

    response = other_admin.post(reverse("hl7:message_replay_many"), {"ids": [message.pk]})
    assert response.status_code == 302
    assert flashed(response) == ["A message ticked is not in your message log."]
    message.refresh_from_db()
    assert message.attempts == 0


def test_a_message_refused_before_its_sender_was_known_is_shown_to_superusers_only(
    settings, facility_a, facility_admin
):
    """It has no facility; shown to every facility's administrators it would leak the
    patient data it holds."""
    settings.HL7_DEFAULT_FACILITY = ""
    receipt = services.message_receive(admit("STRANGER").encode(), peer="10.0.0.9:4000")
    message = InboundMessage.objects.get(pk=receipt.message_id)
    assert (message.status, message.facility) == (Status.REJECTED, None)
    superuser = member(facility_a, Role.ADMIN, username="root", is_superuser=True)

    admin = client_for(facility_admin)
    assert shown(admin.get(LIST)) == []
    assert admin.get(reverse("hl7:message_detail", args=[message.pk])).status_code == 404

    root = client_for(superuser)
    assert shown(root.get(reverse("hl7:message_errors"))) == ["STRANGER"]
    detail = root.get(reverse("hl7:message_detail", args=[message.pk]))
    assert detail.status_code == 200
    assert "not a registered HL7 partner" in detail.content.decode()


# ---- one message -------------------------------------------------------------------------


def test_the_detail_shows_the_message_its_fields_and_the_ack_we_sent(admin, facility_a):
    message = admitted(facility_a, "ADT77", family="O'Neil")

    response = admin.get(reverse("hl7:message_detail", args=[message.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "EVN|A01|20261201083000\n" in html, "one segment a line"
    segments = response.context["view"].segments
    assert [s.name for s in segments] == ["MSH", "EVN", "PID", "PV1"]
    pid5 = next(f for f in segments[2].fields if f.name == "PID-5")
    assert pid5.repetitions == [["O'Neil", "Anna"]]
    assert '<th scope="row">PID-5</th>' in html
    assert "<li>Anna</li>" in html
    assert "MSA|AA|ADT77" in html, "the ACK we sent"
    assert response.context["warnings"] == []


def test_the_detail_escapes_the_message_content(admin, facility_a):
    message = admitted(
        facility_a,
        "XSS1",
        family="<script>alert(1)</script>",
        patient_name="<script>alert(1)</script>",
        status=Status.FAILED,
        error="<img src=x onerror=alert(2)>",
    )

    for url in (reverse("hl7:message_detail", args=[message.pk]), LIST):
        html = admin.get(url).content.decode()
        assert "<script>alert" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def test_structure_problems_are_shown_as_warnings_not_as_refusals(admin, facility_a):
    """hl7apy wants EVN and PV1 in an ADT^A01; our listener does not need them."""
    message = received(facility_a, hl7(msh("NOEVN"), "PID|1||123^^^NORTH_MRN^MR||Smith^Anna"))

    response = admin.get(reverse("hl7:message_detail", args=[message.pk]))

    warnings = response.context["warnings"]
    assert "Missing required child ADT_A01.EVN" in warnings
    assert "Missing required child ADT_A01.PV1" in warnings
    assert "Structure warnings" in response.content.decode()


def test_a_problem_repeated_in_every_segment_is_one_warning_counted():
    report = hl7(
        msh("ORU1", "ORU^R01^ORU_R01"),
        "PID|1||123^^^NORTH_MRN^MR||Smith^Anna",
        "OBR|1|PL1||CT^CT HEAD",
        *(f"OBX|{n}|TX|REPORT||line {n}" for n in range(1, 41)),
    )
    warnings = validation.structure_warnings(report)
    assert "Missing required child OBX.OBX_11 (40 times)" in warnings
    assert len(warnings) == len(set(warnings))


def test_a_message_that_is_not_hl7_is_still_shown(admin, facility_a):
    message = InboundMessage.objects.create(
        facility=facility_a,
        raw=b"hello <b>there</b>",
        text="hello <b>there</b>",
        status=Status.REJECTED,
        ack_code="AR",
        error="Not an HL7 v2 message: it must begin with an MSH segment.",
    )

    response = admin.get(reverse("hl7:message_detail", args=[message.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert "hello &lt;b&gt;there&lt;/b&gt;" in html
    assert "cannot be split into fields" in html
    assert response.context["warnings"], "hl7apy's complaint, as a warning"


def test_the_detail_links_a_duplicate_to_the_message_first_received(admin, facility_a):
    original = admitted(facility_a, "ADT1")
    again = admitted(facility_a, "ADT1", status=Status.DUPLICATE, duplicate_of=original)

    html = admin.get(reverse("hl7:message_detail", args=[again.pk])).content.decode()

    assert reverse("hl7:message_detail", args=[original.pk]) in html


def test_reading_a_message_is_audited_with_its_patient(admin, facility_a, facility_admin):
    patient = PatientFactory(facility=facility_a, mrn="123", mrn_issuer="NORTH_MRN")
    message = admitted(facility_a, "ADT1")

    admin.get(reverse("hl7:message_detail", args=[message.pk]))

    event = AuditEvent.objects.get(action=AuditEvent.Action.VIEW)
    assert (event.object_type, event.object_id) == ("inboundmessage", str(message.pk))
    assert (event.user, event.facility_id, event.door) == (
        facility_admin,
        facility_a.pk,
        AuditEvent.Door.PAGE,
    )
    assert list(event.patients.values_list("patient_id", flat=True)) == [patient.pk]


def test_message_view_numbers_msh_fields_as_the_standard_does():
    view = selectors.message_view(admit("C1").encode())
    fields = {f.name: f for f in view.segments[0].fields}
    assert fields["MSH-1"].raw == "|"
    assert fields["MSH-2"].raw == "^~\\&"
    assert fields["MSH-9"].repetitions == [["ADT", "A01", "ADT_A01"]]
    assert fields["MSH-10"].raw == "C1"
    escaped = selectors.message_view(hl7(msh("C2"), "NTE|1||a\\S\\b~c").encode())
    assert escaped.segments[1].fields[-1].repetitions == [["a^b"], ["c"]]


# ---- replay ------------------------------------------------------------------------------


@pytest.fixture
def unanswered_ack(facility_a, partner):
    """An ACK of a result we sent, that failed to apply."""
    OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORU^R01",
        control_id="OUT1",
        text=hl7(msh("OUT1", "ORU^R01")),
    )
    return received(
        facility_a,
        hl7(msh("ACK9", "ACK^R01^ACK"), "MSA|AA|OUT1"),
        status=Status.FAILED,
        attempts=1,
        error="Internal error (attempt 1): database went away",
    )


def test_replaying_a_failed_message_applies_it_and_is_audited(
    admin, unanswered_ack, facility_admin
):
    url = reverse("hl7:message_replay", args=[unanswered_ack.pk])

    response = admin.post(url)

    assert response.status_code == 302
    assert response.url == reverse("hl7:message_detail", args=[unanswered_ack.pk])
    unanswered_ack.refresh_from_db()
    assert (unanswered_ack.status, unanswered_ack.attempts) == (Status.PROCESSED, 2)
    assert OutboundMessage.objects.get(control_id="OUT1").ack_code == "AA"
    assert flashed(response) == ["ACK^R01 ACK9 replayed: AA for our ORU^R01 OUT1."]
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPDATE)
    assert (event.user, event.object_id) == (facility_admin, str(unanswered_ack.pk))
    assert event.detail["replay"] == {"from": "failed", "to": "processed"}


def test_a_processed_message_is_not_applied_twice(admin, unanswered_ack):
    url = reverse("hl7:message_replay", args=[unanswered_ack.pk])
    admin.post(url, follow=True)

    response = admin.post(url)

    assert flashed(response) == [
        "ACK^R01 ACK9 was processed already: replaying it would apply it twice."
    ]
    unanswered_ack.refresh_from_db()
    assert unanswered_ack.attempts == 2


def test_replaying_a_rejected_message_shows_why_it_cannot_be(admin, facility_a):
    message = admitted(facility_a, "ADT1", status=Status.REJECTED, ack_code="AR")

    response = admin.post(reverse("hl7:message_replay", args=[message.pk]), follow=True)

    assert response.status_code == 200
    assert (
        "ADT^A01 ADT1: A rejected message was never accepted: the sender must send it again."
        in response.content.decode()
    )
    message.refresh_from_db()
    assert (message.status, message.attempts) == (Status.REJECTED, 0)
    assert not AuditEvent.objects.filter(action=AuditEvent.Action.UPDATE).exists()


def test_replaying_a_duplicate_shows_why_it_cannot_be(admin, facility_a):
    original = admitted(facility_a, "ADT1")
    again = admitted(facility_a, "ADT1", status=Status.DUPLICATE, duplicate_of=original)

    response = admin.post(reverse("hl7:message_replay", args=[again.pk]))

    assert flashed(response) == [
        "ADT^A01 ADT1: A duplicate is applied through its original message."
    ]


def test_the_ticked_messages_are_replayed_oldest_first_and_the_list_shown_again(
    admin, facility_a, unanswered_ack
):
    stray = received(
        facility_a, hl7(msh("ACK10", "ACK^R01^ACK"), "MSA|AA|NOTOURS"), status=Status.FAILED
    )
    rejected = admitted(facility_a, "ADT1", status=Status.REJECTED)
    back = f"{reverse('hl7:message_errors')}?patient=x"

    response = admin.post(
        reverse("hl7:message_replay_many"),
        {"ids": [rejected.pk, stray.pk, unanswered_ack.pk], "next": back},
    )

    assert response.url == back
    assert flashed(response) == [
        "ACK^R01 ACK9 replayed: AA for our ORU^R01 OUT1.",
        "ACK^R01 ACK10 replayed, nothing to do: Acknowledges NOTOURS, which we did not send.",
        "ADT^A01 ADT1: A rejected message was never accepted: the sender must send it again.",
    ]
    assert set(InboundMessage.objects.values_list("control_id", "status")) == {
        ("ACK9", Status.PROCESSED),
        ("ACK10", Status.IGNORED),
        ("ADT1", Status.REJECTED),
    }


def test_a_replay_goes_back_to_this_site_only(admin, unanswered_ack):
    response = admin.post(
        reverse("hl7:message_replay_many"),
        {"ids": [unanswered_ack.pk], "next": "https://evil.example/phish"},
    )
    admin.get(response.url)  # the page that shows (and so consumes) the messages
    assert response.url == LIST

    nothing = admin.post(reverse("hl7:message_replay_many"), {"next": LIST})
    assert flashed(nothing) == ["Tick the messages to replay first."]


def test_the_list_offers_the_failed_messages_of_the_page_for_replay(admin, facility_a):
    failed = admitted(facility_a, "BAD1", status=Status.FAILED)
    admitted(facility_a, "OK1")

    response = admin.get(LIST)

    assert response.context["failed_ids"] == [failed.pk]
    html = response.content.decode()
    assert f'form="replay-selected" name="ids" value="{failed.pk}"' in html
    assert "Replay all 1 failed on this page" in html


# ---- sent --------------------------------------------------------------------------------


def test_the_outbound_log_shows_attempts_errors_and_the_partners_ack(
    admin, facility_a, facility_b, partner, facility_admin
):
    patient = PatientFactory(facility=facility_a)
    from tests.factories import order_for

    order = order_for(patient)
    result = hl7(msh("OUT1", "ORU^R01"), f"PID|1||{patient.mrn}||<b>Bold</b>^Al")
    sent = OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORU^R01",
        control_id="OUT1",
        text=result,
        order=order,
        status=OutboundMessage.Status.SENT,
        attempts=1,
        ack_code="AA",
        ack=hl7("MSH|^~\\&|HIS|HOSP|RADPACS|NORTH|20261201||ACK|K1|P|2.5.1", "MSA|AA|OUT1"),
        sent_at=timezone.now(),
    )
    OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORM^O01",
        control_id="OUT2",
        text=hl7(msh("OUT2", "ORM^O01")),
        status=OutboundMessage.Status.DEAD,
        attempts=8,
        last_error="Connection refused",
    )
    south = Partner.objects.create(facility=facility_b, name="South HIS", application="SHIS")
    OutboundMessage.objects.create(
        facility=facility_b, partner=south, message_type="ORU^R01", control_id="OUT3", text="x"
    )

    listing = admin.get(reverse("hl7:outbound_list"))
    assert [r["message"].control_id for r in listing.context["rows"]] == ["OUT2", "OUT1"]
    assert "Connection refused" in listing.content.decode()
    dead = admin.get(reverse("hl7:outbound_list"), {"status": "dead"})
    assert [r["message"].control_id for r in dead.context["rows"]] == ["OUT2"]
    assert [
        r["message"].control_id
        for r in admin.get(reverse("hl7:outbound_list"), {"message_type": "oru"}).context["rows"]
    ] == ["OUT1"]

    detail = admin.get(reverse("hl7:outbound_detail", args=[sent.pk]))
    html = detail.content.decode()
    assert "MSA|AA|OUT1" in html, "the partner's ACK"
    assert "&lt;b&gt;Bold&lt;/b&gt;" in html and "<b>Bold" not in html
    event = AuditEvent.objects.get(action=AuditEvent.Action.VIEW)
    assert (event.object_type, event.object_id, event.patient_id) == (
        "outboundmessage",
        str(sent.pk),
        patient.pk,
    )
    listed = AuditEvent.objects.filter(action=AuditEvent.Action.LIST).first()
    assert listed.user == facility_admin


def test_a_dead_message_is_sent_again_on_request_and_a_sent_one_is_not(
    admin, other_admin, facility_a, partner
):
    dead = OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORU^R01",
        control_id="DEAD1",
        text=hl7(msh("DEAD1", "ORU^R01")),
        status=OutboundMessage.Status.DEAD,
        attempts=10,
        last_error="Connection refused",
    )
    sent = OutboundMessage.objects.create(
        facility=facility_a,
        partner=partner,
        message_type="ORU^R01",
        control_id="SENT1",
        text=hl7(msh("SENT1", "ORU^R01")),
        status=OutboundMessage.Status.SENT,
    )
    page = admin.get(reverse("hl7:outbound_detail", args=[dead.pk])).content.decode()
    assert "Send again now" in page
    assert (
        "Send again now"
        not in admin.get(reverse("hl7:outbound_detail", args=[sent.pk])).content.decode()
    )

    assert other_admin.post(reverse("hl7:outbound_resend", args=[dead.pk])).status_code == 404
    response = admin.post(reverse("hl7:outbound_resend", args=[dead.pk]))
    assert response.status_code == 302
    assert flashed(response) == ["ORU^R01 DEAD1 queued to send again."]
    dead.refresh_from_db()
    assert (dead.status, dead.attempts) == (OutboundMessage.Status.PENDING, 0)
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.UPDATE, object_type="outboundmessage", object_id=str(dead.pk)
    ).exists()

    refused = admin.post(reverse("hl7:outbound_resend", args=[sent.pk]))
    assert "not sent again" in flashed(refused)[-1]
    sent.refresh_from_db()
    assert sent.status == OutboundMessage.Status.SENT
