"""The radiologist's pages: worklist, reading page, signing with the password, addenda,
corrections, the printable report and its PDF, critical results, who sees what."""

from __future__ import annotations

import json

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.roles import Role
from ris.models import CriticalResult, Order, Report, ReportTemplate
from tests.factories import (
    PASSWORD,
    PatientFactory,
    ProcedureFactory,
    client_for,
    exam_read,
    member,
    order_for,
    report_signed,
    report_written,
)

pytestmark = pytest.mark.django_db

Status = Report.Status


@pytest.fixture
def order(facility_a) -> Order:
    patient = PatientFactory(facility=facility_a, family_name="Doe", given_name="Jane")
    return exam_read(order_for(patient, procedure=ProcedureFactory(facility=facility_a)))


@pytest.fixture
def rad(radiologist):
    return client_for(radiologist)


def exam_url(order: Order) -> str:
    return reverse("reporting:exam", args=[order.pk])


# ---- worklist ---------------------------------------------------------------------------------


def test_the_worklist_lists_exams_to_read_and_is_audited(rad, order):
    response = rad.get(reverse("reporting:worklist"))

    assert response.status_code == 200
    assert response.context["orders"] == [order]
    assert exam_url(order) in response.content.decode()
    event = AuditEvent.objects.filter(object_type="order", action="list").order_by("pk").last()
    assert event.detail["query"]["list"] == "reading"


def test_the_worklist_filters_by_modality_and_radiologist(rad, order):
    assert rad.get(reverse("reporting:worklist"), {"modality": "MR"}).context["orders"] == []
    assert rad.get(reverse("reporting:worklist"), {"radiologist": "none"}).context["orders"] == [
        order
    ]


def test_front_desk_cannot_open_the_worklist_or_an_exam(clerk, order):
    client = client_for(clerk)

    assert client.get(reverse("reporting:worklist")).status_code == 403
    assert client.get(exam_url(order)).status_code == 403


def test_the_old_reading_list_address_leads_to_the_worklist(rad):
    response = rad.get(reverse("ris:reading_list"))

    assert response.status_code == 302
    assert response["Location"] == reverse("reporting:worklist")


# ---- the reading page ---------------------------------------------------------------------


def test_the_reading_page_shows_the_images_beside_the_report(rad, facility_a, settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    from tests.factories import archived_study

    patient = PatientFactory(facility=facility_a)
    order = order_for(patient)
    study = archived_study(facility_a, patient.mrn, accession=order.accession_number)
    exam_read(order)

    page = rad.get(exam_url(order)).content.decode()

    viewer = reverse("viewer:study", args=[study.study_instance_uid])
    assert f'<iframe class="reading-viewer" name="reading-viewer" src="{viewer}"' in page
    assert "Start report" in page
    framed = rad.get(viewer)
    assert framed["X-Frame-Options"] == "SAMEORIGIN"
    assert "frame-ancestors 'self'" in framed["Content-Security-Policy"]


def test_an_exam_of_another_facility_is_not_found(order, facility_b):
    far = client_for(member(facility_b, Role.RADIOLOGIST, username="far"))

    assert far.get(exam_url(order)).status_code == 404
    assert far.post(reverse("reporting:claim", args=[order.pk])).status_code == 404


def test_claiming_shows_who_reads_it_to_the_others(rad, order, facility_a):
    other = client_for(
        member(facility_a, Role.RADIOLOGIST, username="rad2", first_name="Ann", last_name="Lee")
    )
    rad.post(reverse("reporting:claim", args=[order.pk]))

    page = other.get(exam_url(order)).content.decode()
    assert "Another radiologist is reading this exam." in page
    response = other.post(reverse("reporting:claim", args=[order.pk]), follow=True)
    assert "is being read by" in response.content.decode()


def test_a_report_started_from_a_template_is_written_and_signed_with_the_password(
    rad, order, radiologist
):
    template = ReportTemplate.objects.create(
        facility=order.facility,
        name="Plain",
        sections=[
            {"title": "Findings", "text": "[[Lungs: clear | nodule]]"},
            {"title": "Impression", "text": ""},
        ],
    )
    rad.post(reverse("reporting:start", args=[order.pk]), {"template": template.pk})
    report = order.reports.get()
    assert report.template == template

    fields = {
        "title_0": "Findings",
        "text_0": "Lungs clear.",
        "title_1": "Impression",
        "text_1": "Normal chest.",
        "revision": report.revision,
    }
    wrong = rad.post(
        reverse("reporting:save", args=[report.pk]),
        {**fields, "sign": "final", "password": "guess"},
    )
    assert wrong.status_code == 400
    assert "That is not your password" in wrong.content.decode()
    report.refresh_from_db()
    assert report.status == Status.DRAFT
    assert report.text == "FINDINGS:\nLungs clear.\n\nIMPRESSION:\nNormal chest."  # kept

    fields["revision"] = report.revision
    right = rad.post(
        reverse("reporting:save", args=[report.pk]),
        {**fields, "sign": "final", "password": PASSWORD},
    )
    assert right.status_code == 302
    report.refresh_from_db()
    assert (report.status, report.signed_by) == (Status.FINAL, radiologist)


def test_the_editor_script_posts_its_sections_as_json(rad, order, radiologist):
    report = report_written(order, radiologist, "x")
    sections = [{"title": "", "text": "From the script."}]

    rad.post(
        reverse("reporting:save", args=[report.pk]),
        {"sections": json.dumps(sections), "revision": report.revision},
    )

    report.refresh_from_db()
    assert report.text == "From the script."


def test_autosave_saves_and_refuses_a_stale_page(rad, order, radiologist):
    report = report_written(order, radiologist, "x")
    url = reverse("reporting:autosave", args=[report.pk])

    def post(body):
        return rad.post(url, json.dumps(body), content_type="application/json")

    saved = post({"sections": [{"title": "", "text": "Autosaved."}], "revision": report.revision})
    assert saved.status_code == 200
    assert saved.json()["revision"] == report.revision + 1
    stale = post({"sections": [{"title": "", "text": "Old tab."}], "revision": report.revision})
    assert stale.status_code == 409
    assert "changed elsewhere" in stale.json()["error"]
    assert post({"sections": "nope"}).status_code == 400
    report.refresh_from_db()
    assert report.text == "Autosaved."


def test_autosave_answers_json_errors_to_strangers(client, order, radiologist, facility_b):
    report = report_written(order, radiologist, "x")
    url = reverse("reporting:autosave", args=[report.pk])
    body = json.dumps({"sections": [], "revision": None})

    assert client.post(url, body, content_type="application/json").status_code == 401
    far = client_for(member(facility_b, Role.RADIOLOGIST, username="far"))
    assert far.post(url, body, content_type="application/json").status_code == 404


def test_an_addendum_is_written_then_signed_from_the_page(rad, order, radiologist):
    report = report_signed(order, radiologist, "Normal.")
    url = reverse("reporting:addendum", args=[report.pk])

    rad.post(url, {"text": "Stable since 2023."})
    assert report.addenda.get().signed_at is None
    rad.post(url, {"text": "Stable since 2023.", "sign": "1", "password": PASSWORD})

    report.refresh_from_db()
    assert report.status == Status.ADDENDED
    page = rad.get(exam_url(order)).content.decode()
    assert "Stable since 2023." in page


def test_a_correction_is_signed_with_a_reason(rad, order, radiologist):
    report = report_signed(order, radiologist, "Left.")
    url = reverse("reporting:correct", args=[report.pk])
    assert rad.get(url).status_code == 200

    refused = rad.post(url, {"title_0": "", "text_0": "Right.", "reason": "", "password": PASSWORD})
    assert refused.status_code == 400
    done = rad.post(
        url, {"title_0": "", "text_0": "Right.", "reason": "Wrong side.", "password": PASSWORD}
    )
    assert done.status_code == 302
    report.refresh_from_db()
    assert (report.status, report.text) == (Status.CORRECTED, "Right.")


# ---- the report as others read it ------------------------------------------------------------


def test_the_printable_report_shows_each_version(rad, order, radiologist):
    report = report_signed(order, radiologist, "Probably normal.", status=Status.PRELIMINARY)
    from ris.reporting import services as reporting
    from tests.factories import signature_of

    reporting.report_draft_save(
        report=report, sections=[{"title": "", "text": "Normal."}], actor=radiologist
    )
    reporting.report_sign(
        report=report, status=Status.FINAL, actor=radiologist, signature=signature_of(radiologist)
    )
    url = reverse("reporting:report", args=[report.pk])

    latest = rad.get(url).content.decode()
    first = rad.get(url, {"version": 1}).content.decode()

    assert "Normal." in latest and "Probably normal." not in latest
    assert "Probably normal." in first and "earlier version" in first


def test_the_report_pdf_is_a_pdf(rad, order, radiologist):
    report = report_signed(order, radiologist, "Normal chest.")

    response = rad.get(reverse("reporting:report_pdf", args=[report.pk]))

    assert response.status_code == 200
    assert response["Content-Type"] == "application/pdf"
    assert response.content.startswith(b"%PDF-")


@pytest.fixture
def referring(facility_a):
    return member(facility_a, Role.REFERRING_PHYSICIAN, username="gp", email="gp@example.org")


def test_a_referring_physician_reads_the_final_reports_of_their_patients_only(
    order, radiologist, referring, facility_a
):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    mine = report_signed(order, radiologist, "Normal.")
    other_order = exam_read(order_for(PatientFactory(facility=facility_a)))
    theirs = report_signed(other_order, radiologist, "Secret words.")
    client = client_for(referring)

    assert client.get(reverse("reporting:report", args=[mine.pk])).status_code == 200
    assert client.get(reverse("reporting:report", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("reporting:report_pdf", args=[theirs.pk])).status_code == 404
    assert client.get(reverse("reporting:worklist")).status_code == 403


def test_a_referring_physician_does_not_read_a_preliminary_report(order, radiologist, referring):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    report = report_signed(order, radiologist, status=Status.PRELIMINARY)

    assert (
        client_for(referring).get(reverse("reporting:report", args=[report.pk])).status_code == 404
    )


# ---- critical results ---------------------------------------------------------------------------


def test_a_critical_result_is_flagged_listed_and_acknowledged_by_the_physician(
    rad, order, radiologist, referring
):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    report = report_signed(order, radiologist, "Bleed.")

    rad.post(reverse("reporting:critical_flag", args=[report.pk]), {"finding": "Subdural bleed."})
    critical = CriticalResult.objects.get()
    listed = rad.get(reverse("reporting:critical_list")).context["rows"]
    assert listed == [critical]

    gp = client_for(referring)
    detail = gp.get(reverse("reporting:critical_detail", args=[critical.pk])).content.decode()
    assert "Subdural bleed." in detail and "I have read this critical result" in detail
    gp.post(reverse("reporting:critical_acknowledge", args=[critical.pk]), {"via": "app"})

    critical.refresh_from_db()
    assert critical.acknowledged_by == referring
    assert rad.get(reverse("reporting:critical_list")).context["rows"] == []


def test_a_critical_result_of_another_physician_is_not_found(
    order, radiologist, referring, facility_a
):
    report = report_signed(order, radiologist)
    from ris.reporting import services as reporting

    critical = reporting.critical_result_flag(report=report, finding="x", actor=radiologist)
    stranger = client_for(member(facility_a, Role.REFERRING_PHYSICIAN, username="gp2"))

    assert stranger.get(reverse("reporting:critical_detail", args=[critical.pk])).status_code == 404


# ---- results ----------------------------------------------------------------------------------


def test_results_list_a_referring_physicians_final_reports_only(
    order, radiologist, referring, facility_a
):
    Order.objects.filter(pk=order.pk).update(referring_physician=referring)
    mine = report_signed(order, radiologist, "Normal.")
    preliminary_order = exam_read(order_for(order.patient))
    Order.objects.filter(pk=preliminary_order.pk).update(referring_physician=referring)
    report_signed(preliminary_order, radiologist, status=Status.PRELIMINARY)
    other = report_signed(exam_read(order_for(PatientFactory(facility=facility_a))), radiologist)

    listed = list(client_for(referring).get(reverse("reporting:results")).context["page"])
    staff = list(client_for(radiologist).get(reverse("reporting:results")).context["page"])

    assert listed == [mine]
    assert set(staff) == {mine, other, preliminary_order.reports.get()}


def test_results_are_searched_by_name_mrn_and_accession(order, radiologist):
    report = report_signed(order, radiologist)
    client = client_for(radiologist)

    for query in ("doe jane", order.patient.mrn, order.accession_number.lower()):
        assert list(client.get(reverse("reporting:results"), {"q": query}).context["page"]) == [
            report
        ], query
    assert list(client.get(reverse("reporting:results"), {"q": "nobody"}).context["page"]) == []


def test_the_reading_page_offers_the_next_exam_of_the_worklist(rad, order, facility_a):
    stat = exam_read(order_for(PatientFactory(facility=facility_a), priority=Order.Priority.STAT))

    assert rad.get(exam_url(order)).context["next_exam"] == stat
    assert rad.get(exam_url(stat)).context["next_exam"] == order


# ---- macros -------------------------------------------------------------------------------------


def test_macros_are_offered_on_the_exam_mine_and_the_facilitys(rad, order, radiologist, facility_a):
    from ris.reporting import services as reporting

    other = member(facility_a, Role.RADIOLOGIST, username="rad2")
    mine = reporting.macro_save(
        facility_id=facility_a.pk, name="normal head", text="No acute findings.", actor=radiologist
    )
    shared = reporting.macro_save(
        facility_id=facility_a.pk,
        name="contrast",
        text="After contrast.",
        actor=other,
        personal=False,
    )
    reporting.macro_save(facility_id=facility_a.pk, name="theirs", text="x", actor=other)
    reporting.macro_save(
        facility_id=facility_a.pk, name="mr only", text="x", actor=radiologist, modality="MR"
    )
    report_written(order, radiologist)

    page = rad.get(exam_url(order))

    assert page.context["macros"] == [mine, shared]
    assert f'<template data-macro-text="{mine.pk}">No acute findings.</template>' in (
        page.content.decode()
    )


def test_a_macro_is_written_on_its_page_and_names_are_unique(rad, facility_a):
    url = reverse("reporting:macro_create")
    data = {
        "facility": facility_a.pk,
        "name": "Normal chest",
        "text": "Lungs clear.",
        "personal": "on",
        "is_active": "on",
    }

    assert rad.post(url, data).status_code == 302
    again = rad.post(url, data)

    assert again.status_code == 400
    assert "already" in again.content.decode()
    listed = rad.get(reverse("reporting:macro_list")).content.decode()
    assert "Normal chest" in listed
