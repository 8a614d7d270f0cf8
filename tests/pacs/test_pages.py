import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.roles import Role
from pacs import storage
from pacs.dicom import synthetic
from pacs.models import Instance, Study
from pacs.services import ingest, study_refresh
from tests.factories import PatientFactory, client_for, member, order_for
from tests.pacs.conftest import small_ct

pytestmark = pytest.mark.django_db


def upload(client, data: bytes, facility: str = "NORTH"):
    return client.post(
        reverse("pacs:upload"),
        {"facility": facility, "file": SimpleUploadedFile("x.dcm", data)},
    )


def test_a_technologist_uploads_a_file_and_gets_its_outcome(facility_a, study_spec):
    tech = member(facility_a, Role.TECHNOLOGIST)
    client = client_for(tech)
    assert client.get(reverse("pacs:upload")).status_code == 200
    data = small_ct(study_spec)
    first = upload(client, data)
    assert first.status_code == 201 and first.json()["outcome"] == "stored"
    again = upload(client, data)
    assert again.status_code == 200 and again.json()["outcome"] == "already_stored"
    event = AuditEvent.objects.get(object_type="study", action="create")
    assert (event.door, event.user) == ("page", tech)


def test_a_bad_upload_is_a_400_with_the_reason(facility_a):
    client = client_for(member(facility_a, Role.TECHNOLOGIST))
    response = upload(client, b"hello")
    assert response.status_code == 400
    assert "not a DICOM" in response.json()["error"]
    assert client.post(reverse("pacs:upload"), {"facility": "NORTH"}).status_code == 400


def test_nobody_uploads_into_another_facility(facility_a, facility_b, study_spec):
    client = client_for(member(facility_b, Role.TECHNOLOGIST))
    response = upload(client, small_ct(study_spec), facility="NORTH")
    assert response.status_code == 400
    assert not Instance.objects.exists()


def test_a_radiologist_cannot_upload(radiologist):
    assert client_for(radiologist).get(reverse("pacs:upload")).status_code == 403


def test_the_study_list_shows_unmatched_studies_for_reconciliation(clerk, facility_a):
    patient = PatientFactory(facility=facility_a, mrn="KNOWN")
    known = synthetic.StudySpec(patient=synthetic.PatientSpec(patient_id="KNOWN"))
    stranger = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="NOBODY", patient_name="Mystery^Person")
    )
    for spec in (known, stranger):
        ingest(small_ct(spec, 1, synthetic.new_uid()), facility=facility_a, door="dimse")
    for study in Study.objects.all():
        study_refresh(study.pk)
    client = client_for(clerk)
    everything = client.get(reverse("pacs:study_list")).context["page"]
    assert len(everything) == 2
    unmatched = list(client.get(reverse("pacs:study_list"), {"unmatched": "1"}).context["page"])
    assert [s.dicom_patient_id for s in unmatched] == ["NOBODY"]
    assert Study.objects.get(dicom_patient_id="KNOWN").patient == patient


def test_a_referring_physician_sees_only_the_studies_they_referred(facility_a, clerk):
    doctor = member(facility_a, Role.REFERRING_PHYSICIAN)
    colleague = member(facility_a, Role.REFERRING_PHYSICIAN)
    mine = order_for(PatientFactory(facility=facility_a, mrn="M1"), referring_physician=doctor)
    theirs = order_for(PatientFactory(facility=facility_a, mrn="T1"), referring_physician=colleague)
    for order in (mine, theirs):
        spec = synthetic.StudySpec(
            patient=synthetic.PatientSpec(patient_id=order.patient.mrn),
            accession_number=order.accession_number,
        )
        ingest(small_ct(spec, 1, synthetic.new_uid()), facility=facility_a, door="dimse")
    for study in Study.objects.all():
        study_refresh(study.pk)
    shown = list(client_for(doctor).get(reverse("pacs:study_list")).context["page"])
    assert [s.order for s in shown] == [mine]
    assert len(client_for(clerk).get(reverse("pacs:study_list")).context["page"]) == 2


def _staged_files() -> list:
    folder = storage._staging_root() / storage.STAGING_FOLDER
    return list(folder.iterdir()) if folder.is_dir() else []


def test_a_large_upload_is_staged_on_disk_and_stored_byte_for_byte(facility_a, study_spec):
    client = client_for(member(facility_a, Role.TECHNOLOGIST))
    data = synthetic.ct_instance(
        study_spec, series_uid="1.2.3.4", series_number=1, instance_number=1, rows=900, columns=900
    )
    assert len(data) > storage.STAGE_ABOVE_BYTES
    response = upload(client, data)
    assert response.status_code == 201, response.json()
    assert storage.read(Instance.objects.get().storage_key) == data
    assert _staged_files() == []
    garbage = upload(client, b"\x00" * (2 * storage.STAGE_ABOVE_BYTES))
    assert garbage.status_code == 400 and "not a DICOM" in garbage.json()["error"]
    assert _staged_files() == []
