"""Demo images for `make run`: studies for demo orders, ingested like any other.

CT orders get a generated 120-slice chest CT with real geometry; other orders get
real sample images from pydicom and pydicom-data (a 1024x1024 MR and an enhanced
multi-frame MR, a chest CR, a 120-frame colour ultrasound cine), in the transfer
syntax they come in (JPEG 2000, JPEG baseline, uncompressed), re-labelled with the
order's patient, accession number and fresh UIDs.
"""

from __future__ import annotations

import io

import pydicom
from pydicom.data import get_testdata_file

from accounts import audit
from pacs import services
from pacs.dicom import synthetic
from ris.models import Order

# File names as pydicom.data.get_testdata_file knows them (pydicom-data provides most).
SAMPLES_BY_MODALITY = {
    "MR": ["MR2_J2KR.dcm", "emri_small_jpeg_2k_lossless.dcm"],
    "US": ["color3d_jpeg_baseline.dcm", "US1_J2KR.dcm"],
    "DX": ["RG1_J2KR.dcm"],
    "MG": ["RG3_J2KR.dcm"],
}
CT_SLICES = 120


def _spec_for(order: Order) -> synthetic.StudySpec:
    patient = order.patient
    return synthetic.StudySpec(
        patient=synthetic.PatientSpec(
            patient_id=patient.mrn,
            patient_name=patient.dicom_name,
            birth_date=patient.birth_date.strftime("%Y%m%d") if patient.birth_date else "",
            sex=patient.sex,
            issuer=patient.mrn_issuer,
        ),
        accession_number=order.accession_number,
        study_date=order.created_at.strftime("%Y%m%d"),
        description=order.procedure.name.upper()[:64],
        referring_physician=order.referring_physician_name,
    )


def _relabelled(name: str, spec: synthetic.StudySpec, series_uid: str, number: int) -> bytes:
    """A bundled sample with the order's identity; pixel data untouched (still compressed)."""
    dataset = pydicom.dcmread(get_testdata_file(name))
    sop_uid = synthetic.new_uid()
    dataset.SOPInstanceUID = sop_uid
    dataset.file_meta.MediaStorageSOPInstanceUID = sop_uid
    dataset.StudyInstanceUID = spec.study_uid
    dataset.SeriesInstanceUID = series_uid
    dataset.SeriesNumber = number
    dataset.PatientID = spec.patient.patient_id
    dataset.IssuerOfPatientID = spec.patient.issuer
    dataset.PatientName = spec.patient.patient_name
    dataset.PatientBirthDate = spec.patient.birth_date
    dataset.PatientSex = spec.patient.sex
    dataset.AccessionNumber = spec.accession_number
    dataset.StudyDate = spec.study_date
    dataset.StudyDescription = spec.description
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def images_for(order: Order) -> list[bytes]:
    spec = _spec_for(order)
    modality = order.procedure.modality
    if modality == "CT":
        return list(synthetic.ct_series(spec, slices=CT_SLICES))
    samples = SAMPLES_BY_MODALITY.get(modality, ["CT_small.dcm"])
    return [
        _relabelled(name, spec, synthetic.new_uid(), number)
        for number, name in enumerate(samples, start=1)
    ]


def load_demo_images(orders: list[Order]) -> int:
    """Ingest demo studies for `orders` through the archive's one door; returns instances."""
    count = 0
    for order in orders:
        for data in images_for(order):
            services.ingest(data, facility=order.facility, door=audit.Door.SYSTEM, actor="demo")
            count += 1
    return count
