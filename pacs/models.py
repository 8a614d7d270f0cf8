from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.models import Facility
from accounts.scoping import FacilityScopedQuerySet
from pacs.dicom.vocabulary import validate_ae_title


class DicomNode(models.Model):
    """A DICOM peer we talk to: a modality, a workstation or another archive.

    C-MOVE destinations are resolved here (AE title -> host, port); when the
    calling-AE allow-list is on, only active nodes may open an association.
    """

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="dicom_nodes")
    ae_title = models.CharField(
        "AE title", max_length=16, unique=True, validators=[validate_ae_title]
    )
    host = models.CharField(max_length=255)
    port = models.PositiveIntegerField(
        validators=[MinValueValidator(1), MaxValueValidator(65535)], default=104
    )
    description = models.CharField(max_length=200, blank=True)
    may_store = models.BooleanField(default=True, help_text="May send us images (C-STORE).")
    may_query = models.BooleanField(default=True, help_text="May query and retrieve.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["ae_title"]
        verbose_name = "DICOM node"

    def __str__(self) -> str:
        return f"{self.ae_title} @ {self.host}:{self.port}"


class Study(models.Model):
    """A DICOM study received by the archive, with the patient and order it was matched to.

    Patient-level attributes are kept as received so an unmatched study can still be
    listed, searched and reconciled by a human.
    """

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="studies", db_index=False
    )
    patient = models.ForeignKey(
        "ris.Patient", on_delete=models.PROTECT, null=True, blank=True, related_name="studies"
    )
    order = models.ForeignKey(
        "ris.Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="studies"
    )
    study_instance_uid = models.CharField(max_length=64)
    # Patient module, as received (0010,xxxx).
    dicom_patient_id = models.CharField("Patient ID", max_length=64, blank=True)
    issuer_of_patient_id = models.CharField(max_length=64, blank=True)
    patient_name = models.CharField(max_length=324, blank=True)
    patient_birth_date = models.CharField(max_length=8, blank=True)
    patient_sex = models.CharField(max_length=16, blank=True)
    # General study module (0008/0020,xxxx).
    study_date = models.CharField(max_length=8, blank=True, help_text="YYYYMMDD")
    study_time = models.CharField(max_length=16, blank=True)
    accession_number = models.CharField(max_length=16, blank=True)
    study_id = models.CharField(max_length=16, blank=True)
    study_description = models.CharField(max_length=64, blank=True)
    referring_physician_name = models.CharField(max_length=324, blank=True)
    modalities_in_study = models.CharField(max_length=64, blank=True, help_text="e.g. CT\\SR")
    number_of_series = models.PositiveIntegerField(default=0)
    number_of_instances = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    needs_refresh = models.BooleanField(
        default=False, help_text="Instances arrived since counts and links were last computed."
    )

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "studies"
        ordering = ["-study_date", "-received_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "study_instance_uid"], name="study_unique_uid"
            ),
        ]
        indexes = [
            models.Index(fields=["facility", "dicom_patient_id"]),
            models.Index(fields=["facility", "accession_number"]),
            models.Index(fields=["facility", "study_date"]),
            models.Index(fields=["facility", "patient_name"]),
        ]

    def __str__(self) -> str:
        return f"{self.study_date} {self.study_description or self.study_instance_uid}"


class Series(models.Model):
    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    study = models.ForeignKey(Study, on_delete=models.CASCADE, related_name="series")
    series_instance_uid = models.CharField(max_length=64)
    modality = models.CharField(max_length=16, blank=True)
    series_number = models.IntegerField(null=True, blank=True)
    series_description = models.CharField(max_length=64, blank=True)
    body_part_examined = models.CharField(max_length=16, blank=True)
    series_date = models.CharField(max_length=8, blank=True)
    number_of_instances = models.PositiveIntegerField(default=0)
    thumbnail_key = models.CharField(max_length=128, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "series"
        ordering = ["series_number", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "series_instance_uid"], name="series_unique_uid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.modality} {self.series_number} {self.series_description}"

    @property
    def patient_id(self) -> int | None:
        return self.study.patient_id


class Instance(models.Model):
    """One stored SOP instance: where its bytes are and the tags the index needs.

    `metadata_json` is the instance's DICOM JSON (PS3.18 F.2) without bulk data values,
    built once at ingest, so /metadata is a concatenation of rows, never a file read.
    """

    # No index of its own: the unique (facility, sop_instance_uid) index leads with it,
    # and every C-STORE would pay for a second one.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    series = models.ForeignKey(Series, on_delete=models.CASCADE, related_name="instances")
    sop_instance_uid = models.CharField(max_length=64)
    sop_class_uid = models.CharField(max_length=64)
    transfer_syntax_uid = models.CharField(max_length=64)
    instance_number = models.IntegerField(null=True, blank=True)
    rows = models.PositiveIntegerField(null=True, blank=True)
    columns = models.PositiveIntegerField(null=True, blank=True)
    number_of_frames = models.PositiveIntegerField(default=1)
    storage_key = models.CharField(max_length=128, help_text="Content address (SHA-256).")
    size = models.PositiveBigIntegerField()
    sha256 = models.CharField(max_length=64)
    metadata_json = models.TextField()
    received_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["instance_number", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "sop_instance_uid"], name="instance_unique_uid"
            ),
        ]
        indexes = [models.Index(fields=["storage_key"])]

    def __str__(self) -> str:
        return self.sop_instance_uid


class Annotation(models.Model):
    """A measurement or annotation a user drew in the viewer, kept so it is there again
    when they reopen the study.

    `uid` is the annotation UID the viewer chose, so saving again updates the same row.
    `data` is the Cornerstone3D tool's own payload: opaque here, returned as it came.
    """

    uid = models.UUIDField("annotation UID", unique=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="annotations"
    )
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    # db_index=False: an index or unique constraint of Meta starts with it.
    study = models.ForeignKey(
        Study, on_delete=models.CASCADE, related_name="annotations", db_index=False
    )
    series_instance_uid = models.CharField(max_length=64)
    sop_instance_uid = models.CharField(max_length=64)
    frame_number = models.PositiveIntegerField(
        null=True, blank=True, help_text="1-based frame of a multi-frame instance."
    )
    tool_name = models.CharField(max_length=64)
    data = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(frame_number__isnull=True) | models.Q(frame_number__gte=1),
                name="annotation_frame_from_1",
            ),
        ]
        indexes = [models.Index(fields=["study", "user"])]

    def __str__(self) -> str:
        return f"{self.tool_name} on {self.sop_instance_uid}"

    @property
    def patient_id(self) -> int | None:
        """The study's RIS patient, so audit rows about an annotation name the patient."""
        return self.study.patient_id
