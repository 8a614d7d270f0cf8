import datetime as dt

from django.conf import settings
from django.db import models
from django.db.models import F, Q

from accounts.models import Facility
from accounts.scoping import FacilityScopedQuerySet
from pacs.dicom.vocabulary import Modality, validate_ae_title


class Patient(models.Model):
    """A patient registered at a facility, identified by MRN and its issuer.

    Names keep the five DICOM PN components (PS3.5 6.2) so they round-trip to
    DICOM (0010,0010) and HL7 XPN without loss.
    """

    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        OTHER = "O", "Other"
        UNKNOWN = "U", "Unknown"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="patients", db_index=False
    )
    mrn = models.CharField("MRN", max_length=64)
    mrn_issuer = models.CharField(
        "issuer of MRN", max_length=64, help_text="DICOM Issuer of Patient ID (0010,0021)."
    )
    family_name = models.CharField(max_length=64)
    given_name = models.CharField(max_length=64, blank=True)
    middle_name = models.CharField(max_length=64, blank=True)
    name_prefix = models.CharField(max_length=64, blank=True)
    name_suffix = models.CharField(max_length=64, blank=True)
    birth_date = models.DateField(null=True, blank=True)
    sex = models.CharField(max_length=1, choices=Sex.choices, default=Sex.UNKNOWN)
    # Home address and phones, as HL7 PID-11 (XAD), PID-13 and PID-14 carry them.
    address_street = models.CharField("street", max_length=120, blank=True)
    address_other = models.CharField(
        "apartment, suite, building", max_length=120, blank=True, help_text="HL7 XAD-2."
    )
    address_city = models.CharField("city", max_length=64, blank=True)
    address_state = models.CharField("state or province", max_length=64, blank=True)
    address_postal_code = models.CharField("postal code", max_length=16, blank=True)
    address_country = models.CharField(
        "country", max_length=64, blank=True, help_text="ISO 3166 code or name."
    )
    home_phone = models.CharField(max_length=40, blank=True)
    mobile_phone = models.CharField(max_length=40, blank=True)
    email = models.EmailField(blank=True)
    merged_into = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="merged_patients",
        help_text="The record that absorbed this one (HL7 A40): edit and order there.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["family_name", "given_name", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "mrn_issuer", "mrn"], name="patient_unique_mrn_per_issuer"
            ),
            models.CheckConstraint(
                condition=~Q(merged_into=F("id")), name="patient_not_merged_into_itself"
            ),
        ]
        indexes = [
            models.Index(fields=["facility", "family_name", "given_name"]),
            models.Index(fields=["facility", "birth_date"]),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} (MRN {self.mrn})"

    @property
    def display_name(self) -> str:
        given = " ".join(p for p in (self.given_name, self.middle_name) if p)
        return f"{self.family_name}, {given}" if given else self.family_name

    @property
    def dicom_name(self) -> str:
        """Patient's Name as a DICOM PN value: Family^Given^Middle^Prefix^Suffix."""
        parts = [
            self.family_name,
            self.given_name,
            self.middle_name,
            self.name_prefix,
            self.name_suffix,
        ]
        return "^".join(parts).rstrip("^")

    @property
    def is_merged(self) -> bool:
        return self.merged_into_id is not None

    @property
    def address_lines(self) -> list[str]:
        """The address as printed on a letter, empty parts left out."""
        town = " ".join(p for p in (self.address_postal_code, self.address_city) if p)
        town = ", ".join(p for p in (town, self.address_state) if p)
        parts = (self.address_street, self.address_other, town, self.address_country)
        return [p for p in parts if p]


class PatientIdentifier(models.Model):
    """Another identifier of a patient: an HL7 PID-3 repetition, a DICOM Other Patient ID
    (0010,1002). The facility is stored on the row so the database can refuse one
    identifier given to two patients of the facility."""

    class Type(models.TextChoices):
        """HL7 table 0203, the codes a radiology registry meets."""

        MR = "MR", "Medical record number"
        PI = "PI", "Patient internal identifier"
        PT = "PT", "Patient external identifier"
        AN = "AN", "Account number"
        SS = "SS", "Social Security number"
        NI = "NI", "National identifier"
        HC = "HC", "Health card number"
        MC = "MC", "Medicare number"
        MA = "MA", "Medicaid number"
        DL = "DL", "Driver's license number"
        PPN = "PPN", "Passport number"
        U = "U", "Unspecified"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="identifiers")
    value = models.CharField(max_length=64, help_text="HL7 CX-1, DICOM (0010,1000).")
    issuer = models.CharField(
        "issuer", max_length=64, blank=True, help_text="Assigning authority (HL7 CX-4)."
    )
    type_code = models.CharField(
        "type", max_length=5, choices=Type.choices, default=Type.MR, help_text="HL7 CX-5."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        # patient_id, not patient: ordering by the relation joins the patient table and
        # sorts by name in every query of a patient's identifiers (contacts, insurance).
        ordering = ["patient_id", "type_code", "issuer", "value"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "issuer", "value"], name="patient_identifier_unique"
            ),
        ]
        indexes = [models.Index(fields=["facility", "value"])]

    def __str__(self) -> str:
        return f"{self.type_code} {self.value} ({self.issuer})" if self.issuer else self.value


class PatientContact(models.Model):
    """Next of kin or emergency contact (HL7 NK1)."""

    class Role(models.TextChoices):
        """HL7 table 0131 (NK1-7)."""

        NEXT_OF_KIN = "N", "Next of kin"
        EMERGENCY = "C", "Emergency contact"
        OTHER = "O", "Other"

    class Relationship(models.TextChoices):
        """HL7 table 0063 (NK1-3)."""

        SPOUSE = "SPO", "Spouse"
        PARTNER = "DOM", "Life partner"
        PARENT = "PAR", "Parent"
        CHILD = "CHD", "Child"
        SIBLING = "SIB", "Sibling"
        GUARDIAN = "GRD", "Guardian"
        FRIEND = "FND", "Friend"
        OTHER = "OTH", "Other"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="contacts")
    role = models.CharField(max_length=1, choices=Role.choices, default=Role.EMERGENCY)
    family_name = models.CharField(max_length=64)
    given_name = models.CharField(max_length=64, blank=True)
    relationship = models.CharField(
        max_length=3, choices=Relationship.choices, default=Relationship.OTHER
    )
    phone = models.CharField(max_length=40, blank=True)
    email = models.EmailField(blank=True)

    class Meta:
        ordering = ["patient_id", "id"]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.get_relationship_display()})"

    @property
    def display_name(self) -> str:
        return f"{self.family_name}, {self.given_name}" if self.given_name else self.family_name


class PatientInsurance(models.Model):
    """A patient's coverage with a payer (HL7 IN1), primary first: what a claim bills."""

    class Relationship(models.TextChoices):
        """The patient's relationship to the subscriber (HL7 IN1-17, table 0063)."""

        SELF = "SEL", "Self"
        SPOUSE = "SPO", "Spouse"
        CHILD = "CHD", "Child"
        OTHER = "OTH", "Other"

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="insurance")
    payer = models.ForeignKey("billing.Payer", on_delete=models.PROTECT, related_name="+")
    member_id = models.CharField("member ID", max_length=64, help_text="HL7 IN1-36.")
    group_number = models.CharField(max_length=64, blank=True, help_text="HL7 IN1-8.")
    subscriber_name = models.CharField(
        max_length=200, blank=True, help_text="The insured, when not the patient (IN1-16)."
    )
    relationship_to_subscriber = models.CharField(
        max_length=3, choices=Relationship.choices, default=Relationship.SELF
    )
    rank = models.PositiveSmallIntegerField(
        default=1, help_text="1 primary, 2 secondary, … (HL7 IN1-22)."
    )
    valid_from = models.DateField(null=True, blank=True, help_text="HL7 IN1-12.")
    valid_until = models.DateField(null=True, blank=True, help_text="HL7 IN1-13.")

    class Meta:
        ordering = ["patient_id", "rank", "id"]
        verbose_name_plural = "insurance"
        constraints = [
            models.CheckConstraint(condition=Q(rank__gte=1), name="patient_insurance_rank"),
            models.CheckConstraint(
                condition=Q(valid_until__isnull=True)
                | Q(valid_from__isnull=True)
                | Q(valid_until__gte=F("valid_from")),
                name="patient_insurance_valid_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.rank}. {self.payer} {self.member_id}"


class PatientMerge(models.Model):
    """One merge of a duplicate record into the surviving one (HL7 A40), kept for good:
    who merged what, why, and what moved."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    surviving = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="merges_absorbed")
    merged = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="merges_into")
    merged_at = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(
        max_length=100, blank=True, help_text="Who, when not a user: an HL7 sender."
    )
    door = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=200, blank=True)
    summary = models.JSONField(default=dict, blank=True, help_text="What moved: counts by kind.")

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-merged_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(surviving=F("merged")), name="patient_merge_not_itself"
            ),
        ]

    def __str__(self) -> str:
        return f"patient {self.merged_id} merged into {self.surviving_id}"


# No procedure is booked for longer; queries for a day's appointments rely on it.
LONGEST_APPOINTMENT = dt.timedelta(hours=24)


class Procedure(models.Model):
    """An orderable imaging procedure in a facility's catalogue (CPT/HCPCS code)."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="procedures", db_index=False
    )
    code = models.CharField(max_length=16, help_text="CPT/HCPCS or local code.")
    name = models.CharField(max_length=200)
    modality = models.CharField(max_length=4, choices=Modality.choices)
    body_part = models.CharField(max_length=64, blank=True)
    duration_minutes = models.PositiveSmallIntegerField(default=30)
    uses_contrast = models.BooleanField(default=False)
    preparation = models.TextField(blank=True, help_text="Instructions printed for the patient.")
    is_active = models.BooleanField(default=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["modality", "name"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "code"], name="procedure_unique_code"),
            models.CheckConstraint(
                condition=Q(duration_minutes__gt=0), name="procedure_duration_positive"
            ),
            models.CheckConstraint(
                condition=Q(duration_minutes__lte=LONGEST_APPOINTMENT.total_seconds() // 60),
                name="procedure_duration_at_most_a_day",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class Room(models.Model):
    """A scan room with its modality: a schedulable resource and a DICOM AE title."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="rooms", db_index=False
    )
    name = models.CharField(max_length=100)
    modality = models.CharField(max_length=4, choices=Modality.choices)
    ae_title = models.CharField(
        "AE title",
        max_length=16,
        unique=True,
        validators=[validate_ae_title],
        help_text="Station AE title the modality uses for worklist queries and sending images.",
    )
    procedures = models.ManyToManyField(Procedure, related_name="rooms", blank=True)
    is_active = models.BooleanField(default=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["facility", "name"], name="room_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.modality}, {self.ae_title})"


class RoomHours(models.Model):
    """When a room takes appointments on a weekday (facility local time). Several rows for
    one weekday make a split day: the gaps between them are the breaks."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="hours")
    weekday = models.PositiveSmallIntegerField(help_text="0 = Monday … 6 = Sunday.")
    opens = models.TimeField()
    closes = models.TimeField()

    class Meta:
        ordering = ["room", "weekday", "opens"]
        verbose_name_plural = "room hours"
        constraints = [
            models.CheckConstraint(condition=Q(weekday__lte=6), name="room_hours_weekday"),
            models.CheckConstraint(condition=Q(closes__gt=F("opens")), name="room_hours_order"),
        ]

    def __str__(self) -> str:
        return f"{self.room.name} day {self.weekday} {self.opens:%H:%M}-{self.closes:%H:%M}"


class RoomClosure(models.Model):
    """A room out of service for a while: holiday, maintenance, a broken tube."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="closures")
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["room", "starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="room_closure_ends_after_start"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.room.name} closed {self.starts_at:%Y-%m-%d %H:%M} ({self.reason})"


class Order(models.Model):
    """An imaging request for one procedure, identified by its accession number."""

    class Status(models.TextChoices):
        REQUESTED = "requested", "Requested"
        SCHEDULED = "scheduled", "Scheduled"
        ARRIVED = "arrived", "Arrived"
        IN_PROGRESS = "in_progress", "In progress"
        COMPLETED = "completed", "Completed"
        REPORTED = "reported", "Reported"
        FINAL = "final", "Final"
        CANCELLED = "cancelled", "Cancelled"
        NO_SHOW = "no_show", "No-show"

    class Priority(models.TextChoices):
        STAT = "stat", "STAT"
        URGENT = "urgent", "Urgent"
        ROUTINE = "routine", "Routine"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="orders")
    procedure = models.ForeignKey(Procedure, on_delete=models.PROTECT, related_name="orders")
    accession_number = models.CharField(max_length=16, help_text="DICOM (0008,0050).")
    placer_order_number = models.CharField(
        max_length=64, blank=True, help_text="The HIS's order number (HL7 ORC-2)."
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    priority = models.CharField(max_length=8, choices=Priority.choices, default=Priority.ROUTINE)
    referring_physician = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="referred_orders",
    )
    referring_physician_name = models.CharField(
        max_length=200, blank=True, help_text="As DICOM PN, when not a user of ours."
    )
    reason = models.TextField(blank=True)
    diagnosis_codes = models.CharField(
        max_length=200, blank=True, help_text="ICD-10 codes, comma separated."
    )
    study_instance_uid = models.CharField(
        max_length=64,
        blank=True,
        help_text="Given to the modality in the worklist, so its images carry it (0020,000D).",
    )
    images_received_at = models.DateTimeField(
        null=True, blank=True, help_text="When the archive first received a study for it."
    )
    # Who reads it: claimed from the reading worklist (or assigned), so that two
    # radiologists do not read the same exam.
    reading_radiologist = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="exams_to_read",
    )
    reading_claimed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "accession_number"], name="order_unique_accession"
            ),
            models.UniqueConstraint(
                fields=["facility", "placer_order_number"],
                condition=~Q(placer_order_number=""),
                name="order_unique_placer_number",
            ),
        ]
        indexes = [models.Index(fields=["facility", "status"])]

    def __str__(self) -> str:
        return f"{self.accession_number} {self.procedure.name}"


S = Order.Status

# The exam lifecycle (IHE Scheduled Workflow): which status may follow which. Walk-ins
# arrive without an appointment; a discontinued procedure step goes back to arrived; a
# cancelled appointment puts the order back to requested.
EXAM_TRANSITIONS: dict[str, frozenset[str]] = {
    S.REQUESTED: frozenset({S.SCHEDULED, S.ARRIVED, S.CANCELLED}),
    S.SCHEDULED: frozenset({S.REQUESTED, S.ARRIVED, S.NO_SHOW, S.CANCELLED}),
    S.ARRIVED: frozenset({S.SCHEDULED, S.IN_PROGRESS, S.CANCELLED}),
    S.IN_PROGRESS: frozenset({S.ARRIVED, S.COMPLETED, S.CANCELLED}),
    S.COMPLETED: frozenset({S.REPORTED, S.FINAL}),
    S.REPORTED: frozenset({S.FINAL}),
    S.FINAL: frozenset(),
    S.CANCELLED: frozenset(),
    S.NO_SHOW: frozenset({S.SCHEDULED, S.CANCELLED}),
}


class OrderStatusChange(models.Model):
    """One step of an exam's lifecycle: from which status to which, who, when and how."""

    order = models.ForeignKey(Order, on_delete=models.CASCADE, related_name="status_changes")
    from_status = models.CharField(max_length=16, choices=Order.Status.choices)
    to_status = models.CharField(max_length=16, choices=Order.Status.choices)
    changed_at = models.DateTimeField(auto_now_add=True)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(
        max_length=100, blank=True, help_text="Who, when not a user: an AE title, an HL7 sender."
    )
    door = models.CharField(max_length=16, blank=True)
    reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["changed_at", "id"]

    def __str__(self) -> str:
        return f"{self.order} {self.from_status} -> {self.to_status}"


def overlapping(start: dt.datetime, end: dt.datetime) -> Q:
    """Appointments overlapping [start, end). The lower bound on the start (no exam lasts
    longer than a day) lets the (room, starts_at) index find them without reading every
    earlier booking of the room."""
    return Q(starts_at__lt=end, ends_at__gt=start, starts_at__gt=start - LONGEST_APPOINTMENT)


class Appointment(models.Model):
    """An order booked on a room for a time slot."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="appointments")
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="appointments")
    # db_index=False: an index or unique constraint of Meta starts with it.
    room = models.ForeignKey(
        Room, on_delete=models.PROTECT, related_name="appointments", db_index=False
    )
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    is_cancelled = models.BooleanField(default=False)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    is_walk_in = models.BooleanField(
        default=False, help_text="Booked when the patient turned up without an appointment."
    )
    moved_from = models.OneToOneField(
        "self",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="moved_to",
        help_text="The appointment this one replaced when the exam was moved.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["starts_at"]
        constraints = [
            models.CheckConstraint(
                condition=Q(ends_at__gt=F("starts_at")), name="appointment_ends_after_start"
            ),
        ]
        indexes = [models.Index(fields=["room", "starts_at"])]

    def __str__(self) -> str:
        return f"{self.room.name} {self.starts_at:%Y-%m-%d %H:%M}"

    @property
    def patient_id(self) -> int:
        return self.order.patient_id


class PerformedProcedureStep(models.Model):
    """A Modality Performed Procedure Step (PS3.4 F.7) a modality reported over DICOM:
    kept whole, so what was performed is never lost even when it cannot move the exam."""

    class Status(models.TextChoices):
        IN_PROGRESS = "IN PROGRESS", "In progress"
        COMPLETED = "COMPLETED", "Completed"
        DISCONTINUED = "DISCONTINUED", "Discontinued"

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    order = models.ForeignKey(
        Order, on_delete=models.SET_NULL, null=True, blank=True, related_name="performed_steps"
    )
    sop_instance_uid = models.CharField("SOP Instance UID", max_length=64, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices)
    station_ae_title = models.CharField("station AE title", max_length=16)
    attributes = models.JSONField(help_text="The step's attributes as last set, DICOM JSON.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"MPPS {self.sop_instance_uid} {self.status}"

    @property
    def patient_id(self) -> int | None:
        return self.order.patient_id if self.order else None


class Visit(models.Model):
    """A patient's visit (encounter) as the HIS announced it over HL7 ADT (PV1): admitted
    (A01) or registered (A04), discharged (A03), cancelled (A11). Kept for the record
    and the exam's context; orders do not depend on it."""

    class PatientClass(models.TextChoices):
        """HL7 table 0004 (PV1-2)."""

        EMERGENCY = "E", "Emergency"
        INPATIENT = "I", "Inpatient"
        OUTPATIENT = "O", "Outpatient"
        PREADMIT = "P", "Preadmit"
        RECURRING = "R", "Recurring patient"
        OBSTETRICS = "B", "Obstetrics"
        COMMERCIAL = "C", "Commercial account"
        NOT_APPLICABLE = "N", "Not applicable"
        UNKNOWN = "U", "Unknown"

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    # db_index=False: an index or unique constraint of Meta starts with it.
    patient = models.ForeignKey(
        Patient, on_delete=models.PROTECT, related_name="visits", db_index=False
    )
    visit_number = models.CharField(
        max_length=64, blank=True, help_text="HL7 PV1-19 (CX-1); blank when not sent."
    )
    patient_class = models.CharField(
        max_length=1, choices=PatientClass.choices, default=PatientClass.UNKNOWN
    )
    location = models.CharField(
        max_length=200, blank=True, help_text="Assigned location (PV1-3), as text."
    )
    attending_doctor = models.CharField(
        max_length=200, blank=True, help_text="PV1-7: name, and the HIS's id in brackets."
    )
    admitted_at = models.DateTimeField(null=True, blank=True, help_text="PV1-44.")
    discharged_at = models.DateTimeField(null=True, blank=True, help_text="PV1-45 or A03.")
    is_cancelled = models.BooleanField(default=False, help_text="Admit cancelled (A11).")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-admitted_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["facility", "visit_number"],
                condition=~Q(visit_number=""),
                name="visit_unique_number",
            ),
        ]
        indexes = [models.Index(fields=["patient", "admitted_at"])]

    def __str__(self) -> str:
        return f"visit {self.visit_number}" if self.visit_number else f"visit {self.pk}"


class ReportTemplate(models.Model):
    """A report's starting text: titled sections, with pick-lists ([[Label: a | b]]) and
    fields ([[Label]]) to fill in. Offered for its procedures, else for its modality;
    written here or imported from an IHE MRRT file (the RSNA RadReport library's format),
    whose original is kept."""

    class Source(models.TextChoices):
        WRITTEN = "written", "Written here"
        MRRT = "mrrt", "Imported (IHE MRRT)"

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=200)
    modality = models.CharField(
        max_length=16, blank=True, choices=Modality.choices, help_text="Blank: any modality."
    )
    procedures = models.ManyToManyField(Procedure, blank=True, related_name="report_templates")
    sections = models.JSONField(default=list, help_text='[{"title": ..., "text": ...}, ...]')
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.WRITTEN)
    source_identifier = models.CharField(
        max_length=200, blank=True, help_text="The MRRT template's dcterms.identifier."
    )
    source_html = models.TextField(blank=True, help_text="The MRRT file as imported.")
    is_active = models.BooleanField(default=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class ReportMacro(models.Model):
    """Words a radiologist inserts by name ("normal chest"): the facility's, or their own
    (`owner`). For one modality, or any."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="report_macros",
        help_text="Blank: every radiologist of the facility.",
    )
    name = models.CharField(max_length=100)
    modality = models.CharField(
        max_length=16, blank=True, choices=Modality.choices, help_text="Blank: any modality."
    )
    text = models.TextField()
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["name", "id"]

    def __str__(self) -> str:
        return self.name


class Report(models.Model):
    """A radiologist's report of an order.

    Written as sections (a template's, or one untitled section of free text; `text` is
    them joined, what goes out as HL7 and PDF). Released as preliminary or final, signed
    with the password asked again; each release is kept as a `ReportVersion`. After
    final the text never changes: an addendum is added, or a corrected report replaces
    it, each signed and sent (HL7 OBR-25 C)."""

    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PRELIMINARY = "preliminary", "Preliminary"
        FINAL = "final", "Final"
        CORRECTED = "corrected", "Corrected"
        ADDENDED = "addended", "Final, with addendum"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    # db_index=False: an index or unique constraint of Meta starts with it.
    order = models.ForeignKey(
        Order, on_delete=models.PROTECT, related_name="reports", db_index=False
    )
    template = models.ForeignKey(
        ReportTemplate, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sections = models.JSONField(default=list, help_text='[{"title": ..., "text": ...}, ...]')
    text = models.TextField(blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.DRAFT)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    preliminary_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)
    is_critical = models.BooleanField(default=False)
    # Bumped by every save: an autosave from a stale page (another tab) is refused.
    revision = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # One report per order: the next words about it are versions or addenda.
            models.UniqueConstraint(fields=["order"], name="report_one_per_order"),
        ]
        indexes = [models.Index(fields=["facility", "status"])]

    def __str__(self) -> str:
        return f"report {self.pk} ({self.status})"

    @property
    def patient_id(self) -> int:
        return self.order.patient_id

    @property
    def is_released(self) -> bool:
        return self.status != self.Status.DRAFT

    @property
    def is_closed(self) -> bool:
        """Final (or after): its text is immutable, changes are addenda or corrections."""
        return self.status in REPORT_CLOSED


R = Report.Status

# A report is released preliminary or final; a final one is corrected or addended.
REPORT_TRANSITIONS: dict[str, frozenset[str]] = {
    R.DRAFT: frozenset({R.PRELIMINARY, R.FINAL}),
    R.PRELIMINARY: frozenset({R.PRELIMINARY, R.FINAL}),
    R.FINAL: frozenset({R.CORRECTED, R.ADDENDED}),
    R.CORRECTED: frozenset({R.CORRECTED, R.ADDENDED}),
    R.ADDENDED: frozenset({R.CORRECTED, R.ADDENDED}),
}
REPORT_CLOSED = frozenset({R.FINAL, R.CORRECTED, R.ADDENDED})


class ReportVersion(models.Model):
    """One signed release of a report, as it was sent: never changed afterwards."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    report = models.ForeignKey(
        Report, on_delete=models.CASCADE, related_name="versions", db_index=False
    )
    number = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=Report.Status.choices)
    sections = models.JSONField(default=list)
    text = models.TextField(help_text="The whole report as released, addenda included.")
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    signed_at = models.DateTimeField()
    is_critical = models.BooleanField(default=False)

    class Meta:
        ordering = ["report", "number"]
        constraints = [
            models.UniqueConstraint(fields=["report", "number"], name="report_version_unique")
        ]

    def __str__(self) -> str:
        return f"report {self.report_id} v{self.number} ({self.status})"


class ReportAddendum(models.Model):
    """Words added to a final report, written as a draft then signed; signed ones are
    part of the report from then on."""

    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="addenda")
    text = models.TextField(blank=True)
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    signed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    signed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["report", "created_at", "id"]
        constraints = [
            # One draft addendum at a time per report (signed ones are many).
            models.UniqueConstraint(
                fields=["report"], condition=Q(signed_at=None), name="report_one_draft_addendum"
            )
        ]

    def __str__(self) -> str:
        return f"addendum {self.pk} to report {self.report_id}"


class CriticalResult(models.Model):
    """A finding the referring physician must hear of now (ACR practice parameter on
    communication): who flagged it, who was told, and when they acknowledged it."""

    class Channel(models.TextChoices):
        APP = "app", "In the application"
        PHONE = "phone", "By telephone (read back)"
        IN_PERSON = "in_person", "In person"

    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, related_name="+", db_index=False
    )
    report = models.ForeignKey(Report, on_delete=models.PROTECT, related_name="critical_results")
    finding = models.TextField()
    flagged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    flagged_at = models.DateTimeField(auto_now_add=True)
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="critical_results_received",
    )
    recipient_name = models.CharField(max_length=200, blank=True)
    notified_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    acknowledged_via = models.CharField(max_length=12, choices=Channel.choices, blank=True)
    acknowledgement_note = models.CharField(
        max_length=500, blank=True, help_text="e.g. who took the call and read it back."
    )

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-flagged_at", "-id"]
        indexes = [models.Index(fields=["facility", "acknowledged_at"])]

    def __str__(self) -> str:
        return f"critical result {self.pk} of report {self.report_id}"

    @property
    def patient_id(self) -> int:
        return self.report.order.patient_id


class ReportShare(models.Model):
    """A link that lets someone without an account (a second opinion) read one final
    report and its images until it expires or is revoked. Only the token's SHA-256 is
    kept: the link is shown once, to the person who made it. Every use is audited."""

    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    report = models.ForeignKey(Report, on_delete=models.CASCADE, related_name="shares")
    token_hash = models.CharField(max_length=64, unique=True)
    recipient = models.CharField(max_length=200, help_text="Who it is for, and why.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    uses = models.PositiveIntegerField(default=0)
    last_used_at = models.DateTimeField(null=True, blank=True)

    objects = FacilityScopedQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"share {self.pk} of report {self.report_id}"

    @property
    def patient_id(self) -> int:
        return self.report.order.patient_id

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and self.expires_at > timezone.now()
