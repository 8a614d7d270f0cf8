import pytest

from pacs.dicom import synthetic
from tests.storage_fixtures import ImageStore, stored_files

__all__ = ["ImageStore", "small_ct", "stored_files"]


@pytest.fixture(autouse=True)
def _every_archive_test_has_an_image_store(image_store: ImageStore) -> ImageStore:
    """Each test of the archive stores images in its own folder, and again in S3."""
    return image_store


@pytest.fixture
def study_spec() -> synthetic.StudySpec:
    return synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="MRN42", patient_name="Doe^Jane"),
        accession_number="NORTH0000001",
    )


def small_ct(spec: synthetic.StudySpec, number: int = 1, series_uid: str = "1.2.3.4") -> bytes:
    return synthetic.ct_instance(
        spec, series_uid=series_uid, series_number=1, instance_number=number, rows=32, columns=32
    )
