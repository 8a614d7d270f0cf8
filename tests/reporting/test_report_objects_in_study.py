"""A signed report stored in its study as a DICOM object, when the facility wants it."""

from __future__ import annotations

import io

import pydicom
import pytest

from pacs import storage
from pacs.models import Instance
from ris.models import Order, Report
from ris.reporting import delivery
from ris.reporting import services as reporting
from tests.factories import (
    PatientFactory,
    archived_study,
    exam_read,
    order_for,
    report_signed,
    signature_of,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def study_order(facility_a, settings, tmp_path) -> Order:
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    patient = PatientFactory(facility=facility_a, family_name="Müller", given_name="Zoë")
    order = order_for(patient)
    archived_study(facility_a, patient.mrn, accession=order.accession_number)
    return exam_read(order)


def report_instances(order: Order) -> list[pydicom.Dataset]:
    rows = Instance.objects.filter(series__study__order=order, series__modality__in=["SR", "DOC"])
    return [
        pydicom.dcmread(io.BytesIO(storage.read(row.storage_key)))
        for row in rows.order_by("instance_number")
    ]


def text_values(dataset: pydicom.Dataset) -> list[str]:
    found = []
    for item in dataset.get("ContentSequence", []):
        if "TextValue" in item:
            found.append(item.TextValue)
        found.extend(text_values(item))
    return found


@pytest.mark.parametrize(("kind", "modality"), [("sr", "SR"), ("pdf", "DOC")])
def test_each_signed_version_goes_into_the_study(
    study_order, radiologist, kind, modality, django_capture_on_commit_callbacks
):
    study_order.facility.report_dicom_object = kind
    study_order.facility.save()

    with django_capture_on_commit_callbacks(execute=True):
        report = report_signed(study_order, radiologist, "No acute findings.")
    with django_capture_on_commit_callbacks(execute=True):
        reporting.addendum_save(report=report, text="Stable.", actor=radiologist)
        reporting.addendum_sign(
            report=report, actor=radiologist, signature=signature_of(radiologist)
        )

    first, second = report_instances(study_order)
    study = study_order.studies.get()
    assert [first.Modality, second.Modality] == [modality, modality]
    assert first.StudyInstanceUID == second.StudyInstanceUID == study.study_instance_uid
    assert (first.InstanceNumber, second.InstanceNumber) == (1, 2)
    assert first.SOPInstanceUID != second.SOPInstanceUID
    if kind == "pdf":
        assert first.EncapsulatedDocument.startswith(b"%PDF-")
    else:
        assert first.VerificationFlag == "VERIFIED"
        assert any("Stable." in text for text in text_values(second))


def test_storing_a_version_again_adds_nothing(study_order, radiologist):
    study_order.facility.report_dicom_object = "sr"
    study_order.facility.save()
    report_signed(study_order, radiologist)
    version = Report.objects.get().versions.get()

    delivery.report_object_store(version.pk)
    delivery.report_object_store(version.pk)

    assert len(report_instances(study_order)) == 1


def test_nothing_goes_into_the_study_unless_the_facility_asks(
    study_order, radiologist, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        report_signed(study_order, radiologist)

    assert report_instances(study_order) == []
