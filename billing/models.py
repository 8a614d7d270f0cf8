from django.conf import settings
from django.db import models
from django.db.models import F, Q

from accounts.models import Facility
from accounts.scoping import FacilityScopedQuerySet


class Payer(models.Model):
    """An insurer or other payer a facility bills (X12 837P Loop 2010BB)."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="payers", db_index=False
    )
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

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="fees", db_index=False
    )
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


class Charge(models.Model):
    """One billable line: a component of an exam's procedure, for a payer, captured from
    the event that earned it: the technical component (TC) when the exam is completed,
    the professional one (26) when its report is final, or one global charge at the
    final report where the facility bills globally.

    `capture_key` makes capture idempotent: a replayed event finds its charge. A charge
    is never deleted: it is voided with a reason, and one already exported is reversed
    by an adjustment line (`adjusts`, a negative amount)."""

    class Component(models.TextChoices):
        GLOBAL = "global", "Global"
        TECHNICAL = "technical", "Technical (TC)"
        PROFESSIONAL = "professional", "Professional (26)"

    class Status(models.TextChoices):
        PENDING = "pending", "Needs review"
        READY = "ready", "Ready to bill"
        HELD = "held", "Held"
        EXPORTED = "exported", "Exported"
        VOID = "void", "Void"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="charges", db_index=False
    )
    order = models.ForeignKey("ris.Order", on_delete=models.PROTECT, related_name="charges")
    patient = models.ForeignKey("ris.Patient", on_delete=models.PROTECT, related_name="charges")
    payer = models.ForeignKey(
        Payer,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="charges",
        help_text="Empty: self-pay (no insurance on the date of service).",
    )
    member_id = models.CharField(max_length=64, blank=True)
    component = models.CharField(max_length=12, choices=Component.choices)
    procedure_code = models.CharField(max_length=16)
    modifiers = models.CharField(max_length=20, blank=True, help_text="e.g. 26, TC.")
    units = models.DecimalField(max_digits=6, decimal_places=2, default=1)
    unit_price = models.DecimalField(max_digits=10, decimal_places=2, null=True, blank=True)
    amount = models.DecimalField(max_digits=12, decimal_places=2, null=True, blank=True)
    diagnosis_codes = models.CharField(max_length=200, blank=True)
    referring_name = models.CharField(max_length=200, blank=True)
    referring_npi = models.CharField(max_length=10, blank=True)
    rendering_name = models.CharField(max_length=200, blank=True)
    rendering_npi = models.CharField(max_length=10, blank=True)
    place_of_service = models.CharField(max_length=2, blank=True)
    service_date = models.DateField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    status_reason = models.CharField(max_length=500, blank=True)
    capture_key = models.CharField(max_length=100)
    adjusts = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="adjustments"
    )
    export = models.ForeignKey(
        "ChargeExport", on_delete=models.PROTECT, null=True, blank=True, related_name="charges"
    )
    posted_at = models.DateTimeField(
        null=True, blank=True, help_text="When it was posted to the HIS (HL7 DFT^P03)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-service_date", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "capture_key"], name="charge_captured_once"
            ),
        ]
        indexes = [
            models.Index(fields=["facility", "status", "service_date"]),
            models.Index(fields=["facility", "service_date"]),
        ]

    def __str__(self) -> str:
        return (
            f"{self.procedure_code}{'-' + self.modifiers if self.modifiers else ''} {self.amount}"
        )

    @property
    def missing(self) -> list[str]:
        """What keeps it from being billed, in the billing office's words."""
        gaps = []
        if not self.diagnosis_codes:
            gaps.append("no diagnosis")
        if self.payer_id is None:
            gaps.append("no insurance")
        if self.amount is None:
            gaps.append("no price")
        if self.component != self.Component.TECHNICAL and not self.rendering_npi:
            gaps.append("no rendering NPI")
        return gaps


class ChargeExport(models.Model):
    """One export the billing office made: who, when, what it asked for, how many rows,
    and the file itself (its SHA-256 too), so a re-download gives the same bytes."""

    class Format(models.TextChoices):
        CSV = "csv", "CSV"
        XLSX = "xlsx", "Excel (XLSX)"
        X12_837P = "837p", "X12 837P claims"

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    format = models.CharField(max_length=4, choices=Format.choices)
    filters = models.JSONField(default=dict)
    payer = models.ForeignKey(
        Payer, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    row_count = models.PositiveIntegerField(default=0)
    total = models.DecimalField(max_digits=14, decimal_places=2, default=0)
    sha256 = models.CharField(max_length=64, blank=True)
    storage_key = models.CharField(max_length=200, blank=True)
    size = models.PositiveBigIntegerField(default=0)
    marks_exported = models.BooleanField(
        default=True, help_text="Its charges were marked exported (not billed twice)."
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.get_format_display()} export {self.pk}"


class BillingProfile(models.Model):
    """What a facility's claims say about it (X12 837P loops 1000A/1000B/2010AA): its tax
    id and address as billing provider, and its clearinghouse exchange ids."""

    facility = models.OneToOneField(Facility, on_delete=models.CASCADE, related_name="billing")
    tax_id = models.CharField("employer identification number", max_length=10, blank=True)
    taxonomy = models.CharField(max_length=10, blank=True, help_text="e.g. 261QR0200X.")
    address_line1 = models.CharField(max_length=55, blank=True)
    address_line2 = models.CharField(max_length=55, blank=True)
    city = models.CharField(max_length=30, blank=True)
    state = models.CharField(max_length=2, blank=True)
    postal_code = models.CharField(max_length=15, blank=True)
    contact_name = models.CharField(max_length=60, blank=True)
    contact_phone = models.CharField(max_length=20, blank=True)
    sender_id = models.CharField(
        "X12 sender id", max_length=15, blank=True, help_text="ISA06/GS02, from the clearinghouse."
    )
    receiver_id = models.CharField("X12 receiver id", max_length=15, blank=True)
    receiver_name = models.CharField(max_length=60, blank=True)
    interchange_counter = models.PositiveIntegerField(default=0, editable=False)

    def __str__(self) -> str:
        return f"billing profile of {self.facility}"
