import json
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import get_script_prefix, reverse, set_script_prefix

from accounts.models import AuditEvent, Membership
from accounts.roles import Role
from pacs.dicom import synthetic
from pacs.models import Study
from tests.factories import PatientFactory, archived_study, client_for, member, order_for

pytestmark = [
    pytest.mark.django_db,
    # The viewer never reads image files: one image store (disk) is enough here.
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]

CONFIG_KEYS = {
    "studyInstanceUID",
    "dicomWebRoot",
    "annotationsUrl",
    "annotationsBase",
    "csrfToken",
    "patient",
    "study",
    "priors",
    "user",
    "backUrl",
    "canAnnotate",
}


def viewer_url(study: Study) -> str:
    return reverse("viewer:study", args=[study.study_instance_uid])


def config_of(response) -> dict:
    """The JSON the page hands to the JavaScript, read as the JavaScript reads it."""
    found = re.search(
        r'<script id="viewer-config" type="application/json">(.*?)</script>',
        response.content.decode(),
        re.DOTALL,
    )
    assert found, "no viewer-config script in the page"
    return json.loads(found.group(1))


def test_the_page_hands_the_viewer_everything_it_needs_to_start(radiologist, facility_a):
    study = archived_study(facility_a, accession="ACC1", study_date="20240302", slices=2)
    response = client_for(radiologist).get(viewer_url(study))
    assert response.status_code == 200
    assert response.context["study"] == study
    config = config_of(response)
    assert set(config) == CONFIG_KEYS
    assert config["studyInstanceUID"] == study.study_instance_uid
    assert config["dicomWebRoot"] == "http://testserver/dicom-web"
    assert config["annotationsUrl"] == reverse(
        "viewer:study_annotations", args=[study.study_instance_uid]
    )
    assert config["annotationsBase"] == "/viewer/api/annotations/"
    assert config["csrfToken"]
    assert config["patient"] == {
        "name": "Synthetic^Patient",
        "id": "P1",
        "birthDate": "19700101",
        "sex": "O",
    }
    assert config["study"] == {
        "date": "20240302",
        "time": "101500",
        "description": "CT CHEST",
        "accessionNumber": "ACC1",
        "modalities": "CT",
    }
    assert config["priors"] == []
    assert config["user"] == "rad"
    assert config["backUrl"] == reverse("pacs:study_list")
    assert config["canAnnotate"] is True


def test_the_annotation_urls_in_the_config_reach_the_api(radiologist, facility_a):
    study = archived_study(facility_a)
    client = client_for(radiologist)
    config = config_of(client.get(viewer_url(study)))
    assert client.get(config["annotationsUrl"]).json() == {"annotations": []}
    unknown = config["annotationsBase"] + "0b5e8a52-0f5c-4a8e-9d4c-0d7a7f1c2b3a/"
    assert client.delete(unknown).status_code == 404


def test_priors_are_the_patients_other_studies_newest_first(radiologist, facility_a, facility_b):
    PatientFactory(facility=facility_a, mrn="P1")
    PatientFactory(facility=facility_b, mrn="P1")  # another facility's patient, same MRN
    oldest = archived_study(facility_a, "P1", study_date="20200101", description="CT OLD")
    current = archived_study(facility_a, "P1", study_date="20240101")
    newest = archived_study(facility_a, "P1", study_date="20250101", description="CT NEW")
    archived_study(facility_a, "P2", study_date="20230101")  # another patient
    archived_study(facility_b, "P1", study_date="20230101")  # another facility
    assert current.patient is not None

    priors = config_of(client_for(radiologist).get(viewer_url(current)))["priors"]

    assert [prior["studyInstanceUID"] for prior in priors] == [
        newest.study_instance_uid,
        oldest.study_instance_uid,
    ]
    assert priors[0] == {
        "studyInstanceUID": newest.study_instance_uid,
        "studyDate": "20250101",
        "studyDescription": "CT NEW",
        "modalities": "CT",
        "numberOfInstances": 1,
        "url": viewer_url(newest),
    }


def test_priors_of_an_unmatched_study_share_its_patient_id_and_issuer(radiologist, facility_a):
    current = archived_study(facility_a, "STRAY", issuer="HOSP", study_date="20240101")
    same = archived_study(facility_a, "STRAY", issuer="HOSP", study_date="20230101")
    archived_study(facility_a, "STRAY", issuer="OTHER", study_date="20220101")
    assert current.patient is None

    priors = config_of(client_for(radiologist).get(viewer_url(current)))["priors"]

    assert [prior["studyInstanceUID"] for prior in priors] == [same.study_instance_uid]


def test_a_study_without_patient_id_has_no_priors(radiologist, facility_a):
    current = archived_study(facility_a, "")
    archived_study(facility_a, "")
    assert config_of(client_for(radiologist).get(viewer_url(current)))["priors"] == []


def test_a_referring_physicians_priors_are_only_the_studies_they_referred(clerk, facility_a):
    doctor = member(facility_a, Role.REFERRING_PHYSICIAN)
    colleague = member(facility_a, Role.REFERRING_PHYSICIAN)
    patient = PatientFactory(facility=facility_a, mrn="M1")
    mine = order_for(patient, referring_physician=doctor)
    also_mine = order_for(patient, referring_physician=doctor)
    theirs = order_for(patient, referring_physician=colleague)
    current, earlier, _ = (
        archived_study(facility_a, "M1", accession=order.accession_number, study_date=date)
        for order, date in ((mine, "20240101"), (also_mine, "20230101"), (theirs, "20220101"))
    )

    priors = config_of(client_for(doctor).get(viewer_url(current)))["priors"]

    assert [prior["studyInstanceUID"] for prior in priors] == [earlier.study_instance_uid]
    assert len(config_of(client_for(clerk).get(viewer_url(current)))["priors"]) == 2


def test_an_unknown_study_is_not_found(radiologist):
    response = client_for(radiologist).get(reverse("viewer:study", args=["1.2.3.4"]))
    assert response.status_code == 404


def test_a_study_of_another_facility_is_refused_with_a_reason(outsider, facility_a):
    study = archived_study(facility_a)
    response = client_for(outsider).get(viewer_url(study))
    assert response.status_code == 403
    assert b"another facility" in response.content
    assert not AuditEvent.objects.filter(object_type="study", action="view").exists()


def test_a_referring_physician_opens_only_the_studies_they_referred(facility_a):
    doctor = member(facility_a, Role.REFERRING_PHYSICIAN)
    colleague = member(facility_a, Role.REFERRING_PHYSICIAN)
    mine = order_for(PatientFactory(facility=facility_a, mrn="M1"), referring_physician=doctor)
    theirs = order_for(PatientFactory(facility=facility_a, mrn="T1"), referring_physician=colleague)
    my_study = archived_study(facility_a, "M1", accession=mine.accession_number)
    their_study = archived_study(facility_a, "T1", accession=theirs.accession_number)
    client = client_for(doctor)
    assert client.get(viewer_url(my_study)).status_code == 200
    refused = client.get(viewer_url(their_study))
    assert refused.status_code == 403
    assert b"referral that is not yours" in refused.content


def test_a_role_without_images_cannot_open_the_viewer(biller, facility_a):
    study = archived_study(facility_a)
    assert client_for(biller).get(viewer_url(study)).status_code == 403


def test_an_anonymous_visitor_is_sent_to_log_in(client, facility_a):
    study = archived_study(facility_a)
    response = client.get(viewer_url(study))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))


def test_opening_a_study_is_audited(radiologist, facility_a):
    patient = PatientFactory(facility=facility_a, mrn="P1")
    prior = archived_study(facility_a, "P1", study_date="20200101")
    study = archived_study(facility_a, "P1")
    client_for(radiologist).get(viewer_url(study), REMOTE_ADDR="10.1.2.3")
    event = AuditEvent.objects.get(object_type="study", action=AuditEvent.Action.VIEW)
    assert (event.user, event.door, event.object_id) == (radiologist, "page", str(study.pk))
    assert (event.patient_id, event.facility_id) == (patient.pk, facility_a.pk)
    assert event.remote_addr == "10.1.2.3"
    assert event.detail == {"priors": [prior.pk]}


def test_the_viewer_page_relaxes_only_inline_styles_wasm_and_own_framing_in_its_csp(
    radiologist, facility_a
):
    study = archived_study(facility_a, "P1")
    policy = client_for(radiologist).get(viewer_url(study)).headers["Content-Security-Policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["style-src"] == "'self' 'unsafe-inline'"
    assert directives["script-src"] == "'self' 'wasm-unsafe-eval'"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'self'"  # the reading page frames it


def test_when_two_facilities_of_the_user_hold_the_uid_the_latest_received_opens(
    facility_a, facility_b
):
    reader = member(facility_a, Role.RADIOLOGIST)
    Membership.objects.create(user=reader, facility=facility_b, role=Role.RADIOLOGIST)
    uid = synthetic.new_uid()
    archived_study(facility_a, study_uid=uid)
    latest = archived_study(facility_b, study_uid=uid)
    response = client_for(reader).get(reverse("viewer:study", args=[uid]))
    assert response.context["study"] == latest


@pytest.fixture
def behind_a_path_prefix(settings):
    """A proxy serving RadPACS under /radpacs: Django's WSGI handler sets the script
    prefix from SCRIPT_NAME for each request; the test client does not, so we do."""
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "pacs.example.org"]
    previous = get_script_prefix()
    set_script_prefix("/radpacs/")
    yield "/radpacs"
    set_script_prefix(previous)


def test_behind_a_path_prefix_every_url_keeps_the_prefix(
    radiologist, facility_a, behind_a_path_prefix
):
    archived_study(facility_a, "P1", study_date="20200101")
    study = archived_study(facility_a, "P1")

    response = client_for(radiologist).get(
        f"/viewer/studies/{study.study_instance_uid}/",
        SCRIPT_NAME=behind_a_path_prefix,
        HTTP_HOST="pacs.example.org",
        secure=True,
    )

    config = config_of(response)
    assert config["dicomWebRoot"] == "https://pacs.example.org/radpacs/dicom-web"
    assert config["annotationsUrl"].startswith("/radpacs/viewer/api/studies/")
    assert config["annotationsBase"] == "/radpacs/viewer/api/annotations/"
    assert config["backUrl"] == "/radpacs/pacs/studies/"
    assert config["priors"][0]["url"].startswith("/radpacs/viewer/studies/")


def test_the_page_needs_as_many_queries_for_many_priors_as_for_one(radiologist, facility_a):
    study = archived_study(facility_a, "P1", study_date="20240101")
    archived_study(facility_a, "P1", study_date="20200101")
    client = client_for(radiologist)
    with CaptureQueriesContext(connection) as one_prior:
        client.get(viewer_url(study))
    for year in ("2021", "2022", "2023"):
        archived_study(facility_a, "P1", study_date=f"{year}0101")
    with CaptureQueriesContext(connection) as four_priors:
        assert len(config_of(client.get(viewer_url(study)))["priors"]) == 4
    assert len(four_priors) == len(one_prior)


def test_the_study_list_opens_each_study_in_the_viewer(clerk, facility_a):
    study = archived_study(facility_a)
    response = client_for(clerk).get(reverse("pacs:study_list"))
    assert f'href="{viewer_url(study)}"' in response.content.decode()
