"""Share links for a second opinion: one final report and its images, without an account,
until the link expires or is revoked; every use audited."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.roles import Role
from ris.models import Order, Report, ReportShare
from ris.reporting import shares
from ris.services import RisError
from tests.factories import (
    PatientFactory,
    archived_study,
    client_for,
    exam_read,
    member,
    order_for,
    report_signed,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def studies(facility_a, settings, tmp_path):
    """Two patients' exams with images, the first reported final."""
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    made = []
    for mrn in ("S1", "S2"):
        patient = PatientFactory(facility=facility_a, mrn=mrn)
        order = order_for(patient)
        study = archived_study(facility_a, mrn, accession=order.accession_number)
        made.append((exam_read(order), study))
    return made


@pytest.fixture
def shared(studies, radiologist):
    order, _ = studies[0]
    report = report_signed(order, radiologist, "Pulmonary embolism, right lower lobe.")
    share, token = shares.share_create(
        report=report, actor=radiologist, recipient="Dr Second, second opinion", days=7
    )
    return share, token


def qido_series(client: Client, study_uid: str):
    return client.get(
        reverse("dicomweb:study-series", args=[study_uid]), HTTP_ACCEPT="application/dicom+json"
    )


def test_a_link_opens_the_report_and_its_images_without_an_account(shared, studies):
    share, token = shared
    visitor = Client()

    page = visitor.get(reverse("share", args=[token]))

    assert page.status_code == 200
    assert "Pulmonary embolism, right lower lobe." in page.content.decode()
    assert reverse("share_viewer", args=[token]) in page.content.decode()
    assert visitor.get(reverse("share_viewer", args=[token])).status_code == 200
    shared_study = studies[0][1]
    assert qido_series(visitor, shared_study.study_instance_uid).status_code == 200
    event = AuditEvent.objects.filter(object_type="report", action="view").get()
    assert event.user is None and event.actor.startswith(f"share link {share.pk}")
    share.refresh_from_db()
    assert share.uses == 1


def test_a_link_reaches_no_other_study(shared, studies):
    _, token = shared
    visitor = Client()
    visitor.get(reverse("share", args=[token]))

    other = studies[1][1]
    series = qido_series(visitor, other.study_instance_uid)
    assert series.status_code == 204 or series.json() == []  # no match: nothing of it
    everything = visitor.get(reverse("dicomweb:studies"), HTTP_ACCEPT="application/dicom+json")
    uids = [row["0020000D"]["Value"][0] for row in everything.json()]
    assert uids == [studies[0][1].study_instance_uid]
    retrieve = visitor.get(reverse("dicomweb:study-metadata", args=[other.study_instance_uid]))
    assert retrieve.status_code == 404


def test_without_opening_the_link_dicomweb_asks_for_credentials(shared, studies):
    assert qido_series(Client(), studies[0][1].study_instance_uid).status_code == 401
    _, token = shared
    assert Client().get(reverse("share_viewer", args=[token])).status_code == 404


def test_a_revoked_link_stops_at_once(shared, studies, radiologist):
    share, token = shared
    visitor = Client()
    visitor.get(reverse("share", args=[token]))

    client_for(radiologist).post(reverse("reporting:share_revoke", args=[share.pk]))

    assert visitor.get(reverse("share", args=[token])).status_code == 404
    assert qido_series(visitor, studies[0][1].study_instance_uid).status_code == 401


def test_an_expired_or_unknown_link_is_refused(shared):
    share, token = shared
    ReportShare.objects.filter(pk=share.pk).update(expires_at=timezone.now() - dt.timedelta(1))

    expired = Client().get(reverse("share", args=[token]))
    unknown = Client().get(reverse("share", args=["x" * 43]))

    assert expired.status_code == 404 and "expired" in expired.content.decode()
    assert unknown.status_code == 404 and "not valid" in unknown.content.decode()


def test_only_the_token_hash_is_kept(shared):
    share, token = shared

    assert share.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in str(ReportShare.objects.values().get())


def test_only_final_reports_are_shared_and_only_by_who_may_read_them(
    studies, radiologist, facility_a
):
    order, _ = studies[0]
    preliminary = report_signed(order, radiologist, status=Report.Status.PRELIMINARY)
    with pytest.raises(RisError, match="Only a final report"):
        shares.share_create(report=preliminary, actor=radiologist, recipient="x", days=7)
    stranger = member(facility_a, Role.REFERRING_PHYSICIAN, username="gp2")
    final = report_signed(studies[1][0], radiologist)
    with pytest.raises(RisError, match="cannot read"):
        shares.share_create(report=final, actor=stranger, recipient="x", days=7)
    with pytest.raises(RisError, match="1 to 30"):
        shares.share_create(report=final, actor=radiologist, recipient="x", days=31)


def test_a_referring_physician_shares_their_patients_report_from_its_page(
    studies, radiologist, facility_a
):
    gp = member(facility_a, Role.REFERRING_PHYSICIAN, username="gp")
    order, _ = studies[0]
    Order.objects.filter(pk=order.pk).update(referring_physician=gp)
    report = report_signed(order, radiologist)

    made = client_for(gp).post(
        reverse("reporting:share_create", args=[report.pk]),
        {"recipient": "Dr Second", "days": 3},
    )

    assert made.status_code == 200
    link = made.context["link"]
    assert link.startswith("http://testserver/share/")
    assert Client().get(link.removeprefix("http://testserver")).status_code == 200


def test_a_link_shows_the_pixels_and_the_reads_are_audited_as_the_link(shared, studies):
    share, token = shared
    visitor = Client()
    visitor.get(reverse("share", args=[token]))
    study = studies[0][1]

    thumbnail = visitor.get(
        reverse("dicomweb:study-thumbnail", args=[study.study_instance_uid]),
        HTTP_ACCEPT="image/jpeg",
    )

    assert thumbnail.status_code == 200
    assert thumbnail["Content-Type"] == "image/jpeg"
    event = AuditEvent.objects.filter(object_type="study", door="dicomweb").last()
    assert event.user is None and event.actor.startswith(f"share link {share.pk}")
