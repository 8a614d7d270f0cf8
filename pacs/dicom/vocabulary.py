"""DICOM vocabulary shared by the RIS and the archive: modalities and AE titles."""

from django.core.exceptions import ValidationError
from django.db import models

# UIDs we make (orders' Study Instance UIDs, test data): pydicom's root + a RadPACS branch.
UID_ROOT = "1.2.826.0.1.3680043.10.1482."


class Modality(models.TextChoices):
    """Modality (0008,0060) defined terms used for scheduling and routing (PS3.3 C.7.3.1.1.1)."""

    CT = "CT", "Computed tomography"
    MR = "MR", "Magnetic resonance"
    CR = "CR", "Computed radiography"
    DX = "DX", "Digital radiography"
    MG = "MG", "Mammography"
    US = "US", "Ultrasound"
    NM = "NM", "Nuclear medicine"
    PT = "PT", "PET"
    XA = "XA", "X-ray angiography"
    RF = "RF", "Radio fluoroscopy"
    BMD = "BMD", "Bone densitometry"
    OT = "OT", "Other"


def validate_ae_title(value: str) -> None:
    """An AE title is 1-16 characters of the default repertoire, no backslash (PS3.5 6.2, AE)."""
    if not value or not value.strip():
        raise ValidationError("An AE title cannot be empty or only spaces.")
    if len(value) > 16:
        raise ValidationError("An AE title has at most 16 characters.")
    if "\\" in value or any(ord(ch) < 0x20 or ord(ch) > 0x7E for ch in value):
        raise ValidationError("An AE title holds printable ASCII characters without backslash.")
    if value != value.strip():
        raise ValidationError("An AE title has no leading or trailing spaces.")
