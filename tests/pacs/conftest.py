from pathlib import Path

import pytest

from pacs.dicom import synthetic


@pytest.fixture(autouse=True)
def image_store(tmp_path: Path, settings) -> Path:
    """Each test stores images in its own empty folder."""
    root = tmp_path / "images"
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(root)},
        },
    }
    return root


def stored_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


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
