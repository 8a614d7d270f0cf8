"""Writing, signing, correcting and adding to reports; claiming exams; critical results."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core import mail
from django.test import RequestFactory
from django.utils import timezone

from accounts.models import AuditEvent, Notification
from accounts.roles import Role
from accounts.services import PasswordNotConfirmed, Signature, password_confirm
from ris.hl7.models import OutboundMessage
from ris.models import CriticalResult, Order, Report, ReportTemplate, ReportVersion
from ris.reporting import selectors
from ris.reporting import services as reporting
from ris.services import RisError
from tests.factories import (
    PASSWORD,
    PatientFactory,
    ProcedureFactory,
    exam_read,
    member,
    order_for,
    report_signed,
    report_written,
    signature_of,
)

pytestmark = pytest.mark.django_db

Status = Report.Status


@pytest.fixture
def order(facility_a) -> Order:
    patient = PatientFactory(facility=facility_a, family_name="Doe", given_name="Jane")
    return exam_read(order_for(patient, procedure=ProcedureFactory(facility=facility_a)))


@pytest.fixture
def other_radiologist(facility_a):
    return member(facility_a, Role.RADIOLOGIST, username="rad2", first_name="Ann", last_name="Lee")


def free(text: str) -> list[dict[str, str]]:
    return [{"title": "", "text": text}]


# ---- sections -----------------------------------------------------------------------------


def test_sections_become_one_text_with_titles_in_capitals():
    sections = [
        {"title": "Clinical information", "text": "Headache."},
        {"title": "Technique", "text": "  "},
        {"title": "Findings", "text": "No bleed.\nNo mass."},
        {"title": "", "text": "Free words."},
    ]

    assert reporting.sections_text(sections) == (
        "CLINICAL INFORMATION:\nHeadache.\n\nFINDINGS:\nNo bleed.\nNo mass.\n\nFree words."
    )


@pytest.mark.parametrize(
    "sections",
    [[{"title": 1, "text": "x"}], ["text"], [{"title": "t", "text": "x" * 200_001}]],
)
def test_malformed_sections_are_refused(sections):
    with pytest.raises(RisError):
        reporting.sections_clean(sections)


# ---- claiming ------------------------------------------------------------------------------


def test_a_claimed_exam_cannot_be_claimed_by_another_radiologist(
    order, radiologist, other_radiologist
):
    reporting.reading_claim(order=order, actor=radiologist)

    with pytest.raises(RisError, match="is being read by"):
        reporting.reading_claim(order=order, actor=other_radiologist)
    reporting.reading_claim(order=order, actor=radiologist)  # one's own again: fine
    order.refresh_from_db()
    assert order.reading_radiologist == radiologist
    assert order.reading_claimed_at is not None


def test_a_released_claim_can_be_taken_by_another(order, radiologist, other_radiologist):
    reporting.reading_claim(order=order, actor=radiologist)
    with pytest.raises(RisError, match="someone else"):
        reporting.reading_release(order=order, actor=other_radiologist)

    reporting.reading_release(order=order, actor=radiologist)
    reporting.reading_claim(order=order, actor=other_radiologist)

    order.refresh_from_db()
    assert order.reading_radiologist == other_radiologist


def test_an_exam_is_assigned_over_a_claim_and_audited(order, radiologist, other_radiologist):
    reporting.reading_claim(order=order, actor=radiologist)

    reporting.reading_assign(order=order, radiologist=other_radiologist, actor=radiologist)

    order.refresh_from_db()
    assert order.reading_radiologist == other_radiologist
    details = [e.detail for e in AuditEvent.objects.filter(object_type="order", action="update")]
    assert {"reading_radiologist": [radiologist.pk, other_radiologist.pk]} in details


def test_only_radiologists_of_the_facility_claim_or_are_assigned(
    order, radiologist, clerk, facility_b
):
    outsider = member(facility_b, Role.RADIOLOGIST, username="far")
    with pytest.raises(RisError, match="does not read"):
        reporting.reading_claim(order=order, actor=clerk)
    with pytest.raises(RisError, match="does not read"):
        reporting.reading_assign(order=order, radiologist=outsider, actor=radiologist)


# ---- writing -------------------------------------------------------------------------------


def test_starting_a_report_claims_the_exam_and_uses_the_template(order, radiologist):
    template = ReportTemplate.objects.create(
        facility=order.facility,
        name="CT head",
        sections=[{"title": "Findings", "text": "Brain: [[Brain: normal | abnormal]]"}],
    )

    report = reporting.report_start(order=order, actor=radiologist, template=template)

    assert report.status == Status.DRAFT
    assert report.sections == [{"title": "Findings", "text": "Brain: [[Brain: normal | abnormal]]"}]
    assert report.author == radiologist
    order.refresh_from_db()
    assert order.reading_radiologist == radiologist
    # Starting again gives the same report, whoever asks.
    assert reporting.report_start(order=order, actor=radiologist) == report


def test_a_report_is_not_started_on_an_exam_someone_else_reads(
    order, radiologist, other_radiologist
):
    reporting.reading_claim(order=order, actor=other_radiologist)

    with pytest.raises(RisError, match="someone else"):
        reporting.report_start(order=order, actor=radiologist)


def test_a_stale_autosave_is_refused_not_silently_applied(order, radiologist):
    report = reporting.report_start(order=order, actor=radiologist)
    opened_at = report.revision
    reporting.report_draft_save(
        report=report, sections=free("From tab one."), actor=radiologist, revision=opened_at
    )

    with pytest.raises(RisError, match="changed elsewhere"):
        reporting.report_draft_save(
            report=report, sections=free("From tab two."), actor=radiologist, revision=opened_at
        )
    report.refresh_from_db()
    assert report.text == "From tab one."
    assert report.revision == opened_at + 1


# ---- signing -------------------------------------------------------------------------------


def test_signing_final_keeps_a_version_moves_the_exam_and_is_audited(order, radiologist):
    report = report_written(order, radiologist, "Normal.")

    report = reporting.report_sign(
        report=report, status=Status.FINAL, actor=radiologist, signature=signature_of(radiologist)
    )

    assert (report.status, report.signed_by) == (Status.FINAL, radiologist)
    assert report.final_at is not None and report.preliminary_at == report.final_at
    (version,) = report.versions.all()
    assert (version.number, version.status, version.text) == (1, Status.FINAL, "Normal.")
    order.refresh_from_db()
    assert order.status == Order.Status.FINAL
    event = AuditEvent.objects.filter(object_type="report", action="update").order_by("pk").last()
    assert event.detail == {"status": ["draft", "final"], "version": 1}
    assert event.patient_id == order.patient_id


def test_preliminary_then_final_makes_two_versions_and_reported_then_final(order, radiologist):
    report = report_written(order, radiologist, "Probably normal.")
    signature = signature_of(radiologist)

    reporting.report_sign(
        report=report, status=Status.PRELIMINARY, actor=radiologist, signature=signature
    )
    order.refresh_from_db()
    assert order.status == Order.Status.REPORTED
    reporting.report_draft_save(report=report, sections=free("Normal."), actor=radiologist)
    report = reporting.report_sign(
        report=report, status=Status.FINAL, actor=radiologist, signature=signature
    )

    assert [(v.status, v.text) for v in report.versions.order_by("number")] == [
        (Status.PRELIMINARY, "Probably normal."),
        (Status.FINAL, "Normal."),
    ]
    order.refresh_from_db()
    assert order.status == Order.Status.FINAL


def test_a_final_report_text_never_changes(order, radiologist):
    report = report_signed(order, radiologist, "Normal.")

    with pytest.raises(RisError, match="addendum"):
        reporting.report_draft_save(report=report, sections=free("Changed."), actor=radiologist)
    with pytest.raises(RisError, match="cannot be signed"):
        reporting.report_sign(
            report=report,
            status=Status.PRELIMINARY,
            actor=radiologist,
            signature=signature_of(radiologist),
        )
    report.refresh_from_db()
    assert report.text == "Normal."


def test_an_empty_report_or_one_with_blanks_is_not_signed(order, radiologist):
    report = report_written(order, radiologist, "  ")
    with pytest.raises(RisError, match="empty"):
        reporting.report_sign(
            report=report,
            status=Status.FINAL,
            actor=radiologist,
            signature=signature_of(radiologist),
        )

    reporting.report_draft_save(
        report=report,
        sections=[{"title": "Findings", "text": "Lungs: [[Lungs: clear | nodule]]. [[Heart]]"}],
        actor=radiologist,
    )
    with pytest.raises(RisError, match="blanks before signing: Lungs, Heart"):
        reporting.report_sign(
            report=report,
            status=Status.FINAL,
            actor=radiologist,
            signature=signature_of(radiologist),
        )
    assert ReportVersion.objects.count() == 0


def test_a_signature_is_the_signers_own_and_fresh(order, radiologist, other_radiologist):
    report = report_written(order, radiologist)

    with pytest.raises(PasswordNotConfirmed, match="own password"):
        reporting.report_sign(
            report=report,
            status=Status.FINAL,
            actor=radiologist,
            signature=signature_of(other_radiologist),
        )
    stale = Signature(user=radiologist, confirmed_at=timezone.now() - dt.timedelta(minutes=5))
    with pytest.raises(PasswordNotConfirmed, match="too long ago"):
        reporting.report_sign(
            report=report, status=Status.FINAL, actor=radiologist, signature=stale
        )


def test_a_radiologist_password_confirms_and_a_wrong_one_is_counted(radiologist):
    request = RequestFactory().post("/", REMOTE_ADDR="127.0.0.1")

    assert (
        password_confirm(request=request, user=radiologist, password=PASSWORD).user == radiologist
    )
    with pytest.raises(PasswordNotConfirmed, match="not your password"):
        password_confirm(request=request, user=radiologist, password="guess")
    from axes.models import AccessAttempt

    assert AccessAttempt.objects.filter(username=radiologist.username).exists()


def test_only_signers_sign(order, radiologist, facility_a):
    resident = member(facility_a, Role.TECHNOLOGIST, username="tech")
    report = report_written(order, radiologist)

    with pytest.raises(RisError, match="does not sign"):
        reporting.report_sign(
            report=report, status=Status.FINAL, actor=resident, signature=signature_of(resident)
        )


def test_an_exam_with_images_not_closed_by_the_technologist_is_completed_by_the_report(
    facility_a, radiologist
):
    patient = PatientFactory(facility=facility_a)
    order = order_for(patient, procedure=ProcedureFactory(facility=facility_a))
    from ris.services import order_status_set

    order_status_set(order=order, status=Order.Status.ARRIVED)
    Order.objects.filter(pk=order.pk).update(images_received_at=timezone.now())
    order.refresh_from_db()

    report_signed(order, radiologist)

    steps = list(order.status_changes.values_list("to_status", "reason"))
    assert steps[-3:] == [
        (Order.Status.IN_PROGRESS, "reported"),
        (Order.Status.COMPLETED, "reported"),
        (Order.Status.FINAL, ""),
    ]


def test_an_exam_without_images_or_completion_is_not_reported(facility_a, radiologist):
    patient = PatientFactory(facility=facility_a)
    order = order_for(patient, procedure=ProcedureFactory(facility=facility_a))
    from ris.services import order_status_set

    order_status_set(order=order, status=Order.Status.ARRIVED)

    report = reporting.report_start(order=order, actor=radiologist)
    reporting.report_draft_save(report=report, sections=free("Normal."), actor=radiologist)
    with pytest.raises(RisError, match="no images"):
        reporting.report_sign(
            report=report,
            status=Status.FINAL,
            actor=radiologist,
            signature=signature_of(radiologist),
        )


# ---- after final: corrections and addenda -----------------------------------------------------


def test_a_correction_replaces_the_words_and_keeps_every_version(order, radiologist):
    report = report_signed(order, radiologist, "Left kidney stone.")

    report = reporting.report_correct(
        report=report,
        sections=free("Right kidney stone."),
        actor=radiologist,
        signature=signature_of(radiologist),
        reason="Wrong side.",
    )

    assert report.status == Status.CORRECTED
    assert [v.text for v in report.versions.order_by("number")] == [
        "Left kidney stone.",
        "Right kidney stone.",
    ]
    event = AuditEvent.objects.filter(object_type="report").order_by("pk").last()
    assert event.detail["reason"] == "Wrong side."


def test_a_correction_needs_a_reason_and_new_words(order, radiologist):
    report = report_signed(order, radiologist, "Normal.")
    signature = signature_of(radiologist)

    with pytest.raises(RisError, match="why"):
        reporting.report_correct(
            report=report,
            sections=free("Other."),
            actor=radiologist,
            signature=signature,
            reason=" ",
        )
    with pytest.raises(RisError, match="says the same"):
        reporting.report_correct(
            report=report,
            sections=free("Normal."),
            actor=radiologist,
            signature=signature,
            reason="typo",
        )


def test_an_addendum_is_signed_and_joins_the_report(order, radiologist):
    report = report_signed(order, radiologist, "Normal.")

    reporting.addendum_save(report=report, text="Draft words.", actor=radiologist)
    reporting.addendum_save(report=report, text="Compared with 2023: stable.", actor=radiologist)
    report = reporting.addendum_sign(
        report=report, actor=radiologist, signature=signature_of(radiologist)
    )

    assert report.status == Status.ADDENDED
    assert report.text == "Normal."  # the final words stay as they were
    latest = report.versions.order_by("number").last()
    assert latest.text.startswith("Normal.\n\nADDENDUM (")
    assert latest.text.endswith("):\nCompared with 2023: stable.")
    assert report.addenda.get().signed_by == radiologist


def test_an_addendum_is_only_for_a_final_report_and_not_signed_empty(order, radiologist):
    report = report_written(order, radiologist)
    with pytest.raises(RisError, match="final report"):
        reporting.addendum_save(report=report, text="x", actor=radiologist)

    report = reporting.report_sign(
        report=report, status=Status.FINAL, actor=radiologist, signature=signature_of(radiologist)
    )
    with pytest.raises(RisError, match="no addendum"):
        reporting.addendum_sign(
            report=report, actor=radiologist, signature=signature_of(radiologist)
        )


# ---- critical results ----------------------------------------------------------------------


@pytest.fixture
def referring(facility_a):
    return member(facility_a, Role.REFERRING_PHYSICIAN, username="gp", email="gp@example.org")


def test_a_critical_result_notifies_the_referring_physician_in_app_and_by_email(
    order, radiologist, referring, django_capture_on_commit_callbacks
):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    report = report_signed(order, radiologist, "Pneumothorax.")

    with django_capture_on_commit_callbacks(execute=True):
        critical = reporting.critical_result_flag(
            report=report, finding="Large left pneumothorax.", actor=radiologist
        )

    report.refresh_from_db()
    assert report.is_critical
    (note,) = Notification.objects.filter(user=referring)
    assert note.kind == "critical_result" and note.read_at is None
    assert "Large left pneumothorax." in note.body
    (email,) = mail.outbox
    assert email.to == ["gp@example.org"]
    assert "Pneumothorax" not in email.body  # e-mail carries a link, not the report
    assert f"/reporting/critical/{critical.pk}/" in email.body
    critical.refresh_from_db()
    assert critical.emailed_at is not None and critical.notified_at is not None
    assert list(selectors.critical_results(user=radiologist)) == [critical]


def test_the_referring_physician_acknowledges_once(order, radiologist, referring):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    critical = reporting.critical_result_flag(
        report=report_signed(order, radiologist), finding="Bleed.", actor=radiologist
    )

    with pytest.raises(RisError, match="Only the physician"):
        reporting.critical_result_acknowledge(critical=critical, actor=radiologist)
    reporting.critical_result_acknowledge(critical=critical, actor=referring)
    with pytest.raises(RisError, match="already"):
        reporting.critical_result_acknowledge(critical=critical, actor=referring)

    critical.refresh_from_db()
    assert (critical.acknowledged_by, critical.acknowledged_via) == (referring, "app")
    assert Notification.objects.get().read_at is not None
    assert list(selectors.critical_results(user=radiologist)) == []


def test_a_critical_result_without_a_user_to_tell_waits_for_a_phone_call(order, radiologist):
    Order.objects.filter(pk=order.pk).update(referring_physician_name="SMITH^JOHN")
    critical = reporting.critical_result_flag(
        report=report_signed(order, radiologist), finding="Bleed.", actor=radiologist
    )
    assert (critical.recipient, critical.recipient_name, critical.notified_at) == (
        None,
        "SMITH JOHN",
        None,
    )
    with pytest.raises(RisError, match="read the result back"):
        reporting.critical_result_acknowledge(critical=critical, actor=radiologist, via="phone")

    reporting.critical_result_acknowledge(
        critical=critical, actor=radiologist, via="phone", note="Dr Smith, read back 10:32"
    )

    critical.refresh_from_db()
    assert critical.acknowledgement_note == "Dr Smith, read back 10:32"
    assert CriticalResult.objects.filter(acknowledged_at__isnull=True).count() == 0


# ---- the worklist ---------------------------------------------------------------------------


def test_the_worklist_puts_stat_first_then_the_longest_waiting(facility_a, radiologist):
    patient = PatientFactory(facility=facility_a)
    procedure = ProcedureFactory(facility=facility_a)
    now = timezone.now()
    routine_old = exam_read(order_for(patient, procedure=procedure))
    routine_new = exam_read(order_for(patient, procedure=procedure))
    stat = exam_read(order_for(patient, procedure=procedure, priority=Order.Priority.STAT))
    not_in = order_for(patient, procedure=procedure)  # no images yet
    for order, minutes in ((routine_old, 90), (routine_new, 10), (stat, 1)):
        Order.objects.filter(pk=order.pk).update(
            images_received_at=now - dt.timedelta(minutes=minutes)
        )

    listed = list(selectors.reading_worklist(user=radiologist))

    assert listed == [stat, routine_old, routine_new]
    assert not_in not in listed


def test_a_final_exam_leaves_the_worklist_and_filters_narrow_it(
    facility_a, radiologist, other_radiologist
):
    patient = PatientFactory(facility=facility_a)
    ct = ProcedureFactory(facility=facility_a, modality="CT", code="CT1")
    mr = ProcedureFactory(facility=facility_a, modality="MR", code="MR1")
    done = exam_read(order_for(patient, procedure=ct))
    mine = exam_read(order_for(patient, procedure=ct))
    theirs = exam_read(order_for(patient, procedure=mr))
    report_signed(done, radiologist)
    reporting.reading_claim(order=mine, actor=radiologist)
    report_written(theirs, other_radiologist)

    def listed(**filters):
        return set(
            selectors.reading_worklist(
                user=radiologist, filters=selectors.WorklistFilter(**filters)
            )
        )

    assert listed() == {mine, theirs}
    assert listed(modality="MR") == {theirs}
    assert listed(radiologist="me") == {mine}
    assert listed(radiologist=str(other_radiologist.pk)) == {theirs}
    assert listed(report="draft") == {theirs}
    assert listed(report="unread") == {mine}
    assert listed(radiologist="none") == set()


def test_the_worklist_shows_nothing_of_another_facility(order, facility_b):
    far = member(facility_b, Role.RADIOLOGIST, username="far")

    assert list(selectors.reading_worklist(user=far)) == []


def test_signing_queues_the_result_for_the_his_once_per_release(order, radiologist, facility_a):
    from ris.hl7.models import Partner

    Partner.objects.create(
        facility=facility_a,
        name="HIS",
        application="HIS",
        application_facility="",
        host="127.0.0.1",
        port=1,
        sends_results=True,
    )

    report_signed(order, radiologist, status=Status.PRELIMINARY)

    assert list(
        OutboundMessage.objects.filter(message_type="ORU^R01").values_list("reason", flat=True)
    ) == [f"report {order.reports.get().pk} preliminary"]


def test_only_the_reader_writes_or_signs_the_report(order, radiologist, other_radiologist):
    report = report_written(order, radiologist, "Mine.")

    with pytest.raises(RisError, match="have it assigned to you"):
        reporting.report_draft_save(
            report=report, sections=free("Theirs."), actor=other_radiologist
        )
    with pytest.raises(RisError, match="have it assigned to you"):
        reporting.report_sign(
            report=report,
            status=Status.FINAL,
            actor=other_radiologist,
            signature=signature_of(other_radiologist),
        )
    reporting.reading_assign(order=order, radiologist=other_radiologist, actor=radiologist)
    reporting.report_draft_save(report=report, sections=free("Theirs."), actor=other_radiologist)

    report.refresh_from_db()
    assert report.text == "Theirs."
