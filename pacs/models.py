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
