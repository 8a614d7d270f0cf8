"""Synthetic but realistic CT instances: demo data, tests and benchmarks.

A series is an axial stack with proper geometry (Image Position/Orientation, Slice
Location, Pixel Spacing), HU rescale and a phantom (a body ellipse with lungs and a
spine) so window presets and measurements in the viewer mean something.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    CTImageStorage,
    ExplicitVRLittleEndian,
    generate_uid,
)

from pacs.dicom.vocabulary import UID_ROOT


def new_uid() -> str:
    return generate_uid(prefix=UID_ROOT)


@dataclass
class PatientSpec:
    patient_id: str = "SYN0001"
    patient_name: str = "Synthetic^Patient"
    birth_date: str = "19700101"
    sex: str = "O"
    issuer: str = ""


@dataclass
class StudySpec:
    patient: PatientSpec = field(default_factory=PatientSpec)
    study_uid: str = field(default_factory=new_uid)
    frame_of_reference_uid: str = field(default_factory=new_uid)
    accession_number: str = ""
    study_date: str = field(default_factory=lambda: dt.date.today().strftime("%Y%m%d"))
    study_time: str = "101500"
    description: str = "CT CHEST"
    referring_physician: str = ""


def phantom(rows: int, columns: int, z: float) -> np.ndarray:
    """A chest-like slice in HU: air outside, soft tissue body, two lungs, a spine."""
    y, x = np.mgrid[0:rows, 0:columns]
    cy, cx = rows / 2, columns / 2
    image = np.full((rows, columns), -1000, dtype=np.int16)
    body = ((x - cx) / (0.42 * columns)) ** 2 + ((y - cy) / (0.32 * rows)) ** 2 <= 1
    image[body] = 40
    wobble = 0.04 * np.sin(z / 25.0)
    for side in (-1, 1):
        lung = ((x - cx - side * 0.18 * columns) / ((0.13 + wobble) * columns)) ** 2 + (
            (y - cy + 0.02 * rows) / (0.2 * rows)
        ) ** 2 <= 1
        image[lung] = -850
    spine = ((x - cx) / (0.05 * columns)) ** 2 + ((y - cy - 0.2 * rows) / (0.05 * rows)) ** 2 <= 1
    image[spine] = 700
    return image


def ct_instance(
    study: StudySpec,
    *,
    series_uid: str,
    series_number: int,
    instance_number: int,
    rows: int = 512,
    columns: int = 512,
    slice_thickness: float = 1.25,
    pixel_spacing: float = 0.7,
    series_description: str = "Axial 1.25mm",
) -> bytes:
    """One CT Image Storage instance as Part 10 bytes (explicit VR little endian)."""
    z = -instance_number * slice_thickness
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    sop_uid = new_uid()
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = study.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = study.frame_of_reference_uid
    ds.PatientID = study.patient.patient_id
    if study.patient.issuer:
        ds.IssuerOfPatientID = study.patient.issuer
    ds.PatientName = study.patient.patient_name
    ds.PatientBirthDate = study.patient.birth_date
    ds.PatientSex = study.patient.sex
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = study.study_time
    ds.AccessionNumber = study.accession_number
    ds.StudyID = "1"
    ds.StudyDescription = study.description
    ds.ReferringPhysicianName = study.referring_physician
    ds.Modality = "CT"
    ds.Manufacturer = "RadPACS Synthetic"
    ds.BodyPartExamined = "CHEST"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.ImagePositionPatient = [-columns * pixel_spacing / 2, -rows * pixel_spacing / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceThickness = slice_thickness
    ds.SliceLocation = z
    ds.PixelSpacing = [pixel_spacing, pixel_spacing]
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = [40, -600]
    ds.WindowWidth = [400, 1500]
    ds.KVP = 120
    pixels = (phantom(rows, columns, z).astype(np.int32) + 1024).clip(0, 4095).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def ct_series(
    study: StudySpec, *, slices: int, series_number: int = 1, rows: int = 512, columns: int = 512
) -> Iterator[bytes]:
    series_uid = new_uid()
    for number in range(1, slices + 1):
        yield ct_instance(
            study,
            series_uid=series_uid,
            series_number=series_number,
            instance_number=number,
            rows=rows,
            columns=columns,
        )
