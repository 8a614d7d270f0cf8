"""The HL7 interfaces' rows: the partners we talk to, every message received (stored raw
before it is acknowledged) and every message we send (the outbox, delivered by workers).
Together they are the message log admins search and replay from."""

from __future__ import annotations

from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models

from accounts.models import Facility
from accounts.scoping import FacilityScopedQuerySet


class Partner(models.Model):
    """A system of the hospital we exchange HL7 with (the HIS, an order placer): how it
    names itself in MSH-3/MSH-4 of what it sends, and where our messages to it go."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="hl7_partners")
    name = models.CharField(max_length=100)
    application = models.CharField(
        max_length=180, help_text="Its MSH-3 (sending application); our MSH-5 to it."
    )
    application_facility = models.CharField(
        max_length=180, blank=True, help_text="Its MSH-4 (sending facility); our MSH-6 to it."
    )
    host = models.CharField(
        max_length=255, blank=True, help_text="Where our messages go (MLLP); blank: none."
    )
    port = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(65535)],
    )
    sends_results = models.BooleanField(default=True, help_text="ORU^R01 for reports.")
    sends_order_status = models.BooleanField(
        default=True, help_text="ORM^O01 status updates: arrived, completed, cancelled."
    )
    posts_charges = models.BooleanField(
        default=False,
        help_text="DFT^P03 for each charge ready to bill (where the HIS does the billing).",
    )
    announces_orders = models.BooleanField(
        default=False,
        help_text="Orders made at our front desk go to it for a placer number (ORM SN).",
    )
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(
                fields=["application", "application_facility"], name="hl7_partner_unique_sender"
            )
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def can_receive(self) -> bool:
        return bool(self.is_active and self.host and self.port)


class InboundMessage(models.Model):
    """One message as it arrived, committed before its ACK went back.

    `raw` is the bytes between the MLLP frame marks; everything else is read from it, so
    a message can always be processed again (replay) from its row alone.
    """

    class Status(models.TextChoices):
        RECEIVED = "received", "Waiting to be processed"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed (kept for replay)"
        REJECTED = "rejected", "Rejected on receipt"
        DUPLICATE = "duplicate", "Duplicate (applied once)"
        IGNORED = "ignored", "Nothing to do"

    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    peer = models.CharField(max_length=64, blank=True, help_text="Address the message came from.")
    raw = models.BinaryField()
    text = models.TextField(blank=True, help_text="Decoded with MSH-18.")
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    partner = models.ForeignKey(
        Partner, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sending_application = models.CharField(max_length=180, blank=True)
    sending_facility = models.CharField(max_length=180, blank=True)
    control_id = models.CharField(max_length=199, blank=True)
    message_type = models.CharField(max_length=16, blank=True, help_text='e.g. "ADT^A01".')
    version = models.CharField(max_length=8, blank=True)
    patient_key = models.CharField(
        max_length=200,
        blank=True,
        help_text="The patient's identifier (ID^issuer): one patient's messages apply in order.",
    )
    patient_name = models.CharField(max_length=200, blank=True)
    order_number = models.CharField(
        max_length=100, blank=True, help_text="Placer order number (ORC-2) of order messages."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.RECEIVED)
    ack_code = models.CharField(max_length=2, blank=True)
    ack = models.TextField(blank=True, help_text="The acknowledgement sent back.")
    outcome = models.CharField(max_length=500, blank=True, help_text="What applying it did.")
    error = models.TextField(blank=True)
    error_location = models.CharField(max_length=32, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    processed_at = models.DateTimeField(null=True, blank=True)
    duplicate_of = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # Set on the first copy of a message only (not on rejected ones or duplicates): the
    # unique index finds a resend on insert, concurrent copies included.
    copy_key = models.BinaryField(
        max_length=32, null=True, help_text="SHA-256 of sender, control id and content but MSH-7."
    )

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["control_id"], name="hl7_in_control_id"),
            models.Index(fields=["patient_key", "status", "id"], name="hl7_in_patient_queue"),
            models.Index(fields=["status", "id"], name="hl7_in_status"),
            models.Index(fields=["order_number"], name="hl7_in_order_number"),
        ]
        constraints = [models.UniqueConstraint(fields=["copy_key"], name="hl7_in_copy_key")]

    def __str__(self) -> str:
        return f"{self.message_type or 'message'} {self.control_id}".strip()


class OutboundMessage(models.Model):
    """A message for a partner: written in the business transaction that caused it,
    delivered over MLLP by a worker with retries, its ACK kept."""

    class Status(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        SENT = "sent", "Acknowledged"
        FAILED = "failed", "Failed, will retry"
        DEAD = "dead", "Gave up (dead letter)"

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="outbox")
    message_type = models.CharField(max_length=16)
    control_id = models.CharField(max_length=20, unique=True)
    text = models.TextField()
    reason = models.CharField(max_length=100, blank=True, help_text="What caused it.")
    order = models.ForeignKey(
        "ris.Order", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    ack_code = models.CharField(max_length=2, blank=True)
    ack = models.TextField(blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"], name="hl7_out_due")]

    def __str__(self) -> str:
        return f"{self.message_type} {self.control_id}"
