from django.db import models
from django.db.models import F, Q

from accounts.models import Facility
from accounts.scoping import FacilityScopedQuerySet


class Payer(models.Model):
    """An insurer or other payer a facility bills (X12 837P Loop 2010BB)."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="payers")
    name = models.CharField(max_length=200)
    payer_identifier = models.CharField(
        max_length=80, blank=True, help_text="Payer ID used in claims (NM109)."
    )
    is_active = models.BooleanField(default=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "name"], name="payer_unique_name"),
        ]

    def __str__(self) -> str:
        return self.name


class FeeScheduleEntry(models.Model):
    """The price of a procedure code for a payer over a date range.

    Global is the whole service; professional (modifier 26) and technical
    (modifier TC) are its two halves when billed apart. Prices are never edited
    in place for past dates: a new entry with a later effective date keeps history.
    """

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="fees")
    payer = models.ForeignKey(
        Payer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="fees",
        help_text="Empty: the facility's standard (self-pay) schedule.",
    )
    procedure_code = models.CharField(max_length=16)
    global_price = models.DecimalField(max_digits=10, decimal_places=2)
    professional_price = models.DecimalField(max_digits=10, decimal_places=2)
    technical_price = models.DecimalField(max_digits=10, decimal_places=2)
    effective_from = models.DateField()
    effective_to = models.DateField(null=True, blank=True, help_text="Empty: open-ended.")

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["procedure_code", "-effective_from"]
        verbose_name_plural = "fee schedule entries"
        constraints = [
            models.CheckConstraint(
                condition=Q(effective_to__isnull=True) | Q(effective_to__gt=F("effective_from")),
                name="fee_effective_range_valid",
            ),
            models.CheckConstraint(
                condition=Q(global_price__gte=0)
                & Q(professional_price__gte=0)
                & Q(technical_price__gte=0),
                name="fee_prices_not_negative",
            ),
        ]
        indexes = [models.Index(fields=["facility", "procedure_code", "effective_from"])]

    def __str__(self) -> str:
        return f"{self.procedure_code} from {self.effective_from}"
