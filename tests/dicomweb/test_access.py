"""Who gets what from /dicom-web/: CORS, sessions, referring physicians."""

import io

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from pydicom import dcmread

from accounts.models import AuditEvent
from accounts.roles import Role
from pacs import services
from pacs.models import Study
from tests.dicomweb.conftest import token_for
from tests.factories import PatientFactory, client_for, member, order_for

pytestmark = pytest.mark.django_db


def test_cors_answers_only_the_configured_origins(archive, reader, settings):
    settings.DICOMWEB_CORS_ORIGINS = ["https://viewer.example"]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(reader)}")
    preflight = client.options(
        "/dicom-web/studies",
        HTTP_ORIGIN="https://viewer.example",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="GET",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization",
    )
    assert preflight.status_code == 204
    assert preflight["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "Authorization" in preflight["Access-Control-Allow-Headers"]
    allowed = client.get("/dicom-web/studies", HTTP_ORIGIN="https://viewer.example")
    assert allowed["Access-Control-Allow-Origin"] == "https://viewer.example"
    assert "Warning" in allowed["Access-Control-Expose-Headers"]
    other = client.get("/dicom-web/studies", HTTP_ORIGIN="https://evil.example")
    assert other.status_code == 200
    assert "Access-Control-Allow-Origin" not in other


def test_the_viewers_session_works_for_reads_and_needs_csrf_for_stow(archive, reader):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(reader)
    assert browser.get("/dicom-web/studies").status_code == 200
    refused = browser.post(
        "/dicom-web/studies", data=b"", content_type='multipart/related; type="application/dicom"'
    )
    assert refused.status_code == 403
    assert "CSRF" in refused.content.decode()


def test_a_referring_physician_sees_only_the_studies_of_orders_they_referred(archive, facility_a):
    doctor = member(facility_a, Role.REFERRING_PHYSICIAN, username="drwho")
    study = Study.objects.get(study_instance_uid=archive.first.study_uid)
    patient = PatientFactory(facility=facility_a, mrn="P1")
    study.order = order_for(patient, referring_physician=doctor)
    study.patient = patient
    study.save()
    client = client_for(doctor)
    found = client.get("/dicom-web/studies").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [archive.first.study_uid]
    series = client.get("/dicom-web/series").json()
    assert {s["0020000D"]["Value"][0] for s in series} == {archive.first.study_uid}
    hidden = client.get(f"/dicom-web/studies/{archive.second.study_uid}/metadata")
    assert hidden.status_code == 404
    assert client.get(f"/dicom-web/studies/{archive.first.study_uid}/metadata").status_code == 200
    referred, other = _frame_url(archive.sent["first"][0]), _frame_url(archive.sent["second"][0])
    assert client.get(referred).status_code == 200
    assert client.get(other).status_code == 404


def _frame_url(data: bytes, resource: str = "frames/1") -> str:
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    return (
        f"/dicom-web/studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}"
        f"/instances/{sent.SOPInstanceUID}/{resource}"
    )


def test_a_viewers_frame_or_picture_request_reads_the_database_twice(archive, reader):
    """The token with its user's roles, then the instance: once the audit window is open."""
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(reader)}")
    for resource in ("frames/1", "rendered"):
        assert client.get(_frame_url(archive.sent["first"][0], resource)).status_code == 200
        for data in archive.sent["first"][1:]:
            with CaptureQueriesContext(connection) as queries:
                assert client.get(_frame_url(data, resource)).status_code == 200
            assert len(queries) == 2, [q["sql"] for q in queries]


def test_an_instance_stored_at_two_facilities_is_each_readers_own(
    archive, reader, facility_a, facility_b
):
    data = archive.sent["first"][0]
    services.ingest(data, facility=facility_b, door="dimse")
    south = member(facility_b, Role.RADIOLOGIST, username="south")
    for user in (reader, south):
        client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(user)}")
        assert client.get(_frame_url(data)).status_code == 200
    events = AuditEvent.objects.filter(door="dicomweb", action="view").order_by("at")
    studies = Study.objects.filter(study_instance_uid=archive.first.study_uid)
    assert [(e.user, e.facility_id) for e in events] == [
        (reader, facility_a.pk),
        (south, facility_b.pk),
    ]
    assert {e.object_id for e in events} == {str(study.pk) for study in studies}
