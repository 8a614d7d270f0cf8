from django.contrib.auth.models import AbstractUser
from django.core.validators import RegexValidator
from django.db import models

from accounts.roles import Role


class Facility(models.Model):
    """A clinic or site: the tenant of the cloud service. All patient data hangs off one."""

    name = models.CharField(max_length=200)
    code = models.SlugField(
        max_length=8,
        unique=True,
        help_text="Short code; prefixes accession numbers (letters and digits).",
        validators=[RegexValidator(r"^[A-Za-z0-9]+$", "Letters and digits only.")],
    )
    mrn_issuer = models.CharField(
        "issuer of patient ID",
        max_length=64,
        help_text="DICOM Issuer of Patient ID (0010,0021) / HL7 assigning authority of MRNs.",
    )
    timezone = models.CharField(max_length=64, default="UTC")
    npi = models.CharField("billing NPI", max_length=10, blank=True)
    bills_globally = models.BooleanField(
        default=False,
        help_text="One global charge per exam when its report is final, instead of the "
        "technical (TC) charge at completion and the professional (26) one at the report.",
    )
    place_of_service = models.CharField(
        max_length=2,
        default="22",
        help_text="CMS place of service code on claims (22: "
        "on-campus outpatient hospital, 11: office).",
    )
    report_dicom_object = models.CharField(
        "signed reports into the study as",
        max_length=4,
        blank=True,
        choices=[
            ("", "nothing (reports stay in the RIS)"),
            ("sr", "DICOM Basic Text SR"),
            ("pdf", "DICOM Encapsulated PDF"),
        ],
        help_text="Each signed version is stored in its study, for PACS viewers and archives.",
    )
    accession_counter = models.PositiveBigIntegerField(default=0, editable=False)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "facilities"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class User(AbstractUser):
    """A person who logs in. Roles come from memberships, one facility at a time."""

    npi = models.CharField(
        "NPI", max_length=10, blank=True, help_text="National Provider Identifier."
    )
    title = models.CharField(max_length=50, blank=True, help_text="e.g. MD, RT(R)")
    facilities = models.ManyToManyField(
        Facility, through="Membership", related_name="users", blank=True
    )

    def __str__(self) -> str:
        full = self.get_full_name()
        return f"{full} ({self.username})" if full else self.username


class Membership(models.Model):
    """A user's role at a facility. A user may hold several roles and facilities."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="memberships", db_index=False
    )
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="memberships")
    role = models.CharField(max_length=32, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["user", "facility", "role"], name="membership_unique_role"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} — {self.get_role_display()} at {self.facility}"


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionError("Audit events are append-only.")

    def delete(self):
        raise PermissionError("Audit events are append-only.")


class AuditEvent(models.Model):
    """Append-only record of who read or changed which patient data, when, from where.

    Rows are only ever inserted (accounts.audit). The app refuses update and delete,
    and on PostgreSQL a trigger refuses them too.
    """

    class Action(models.TextChoices):
        VIEW = "view", "View"
        LIST = "list", "List / search"
        CREATE = "create", "Create"
        UPDATE = "update", "Update"
        DELETE = "delete", "Delete"
        EXPORT = "export", "Export"
        LOGIN = "login", "Login"
        LOGIN_FAILED = "login_failed", "Failed login"
        LOGOUT = "logout", "Logout"

    class Door(models.TextChoices):
        PAGE = "page", "Web page"
        API = "api", "REST API"
        ADMIN = "admin", "Admin site"
        DICOMWEB = "dicomweb", "DICOMweb"
        DIMSE = "dimse", "DICOM DIMSE"
        HL7 = "hl7", "HL7"
        SYSTEM = "system", "System"

    at = models.DateTimeField(auto_now_add=True, db_index=True)
    user = models.ForeignKey(
        User, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    actor = models.CharField(
        max_length=150, help_text="Username, AE title or HL7 sender at the time of the event."
    )
    # db_index=False: an index or unique constraint of Meta starts with it.
    facility = models.ForeignKey(
        Facility, on_delete=models.PROTECT, null=True, blank=True, related_name="+", db_index=False
    )
    action = models.CharField(max_length=16, choices=Action.choices)
    door = models.CharField(max_length=16, choices=Door.choices)
    object_type = models.CharField(max_length=32, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    patient_id = models.BigIntegerField(null=True, blank=True, db_index=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)
    path = models.CharField(max_length=500, blank=True)
    detail = models.JSONField(default=dict, blank=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["actor", "-at"]),
            models.Index(fields=["facility", "-at"]),
        ]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None and not self._state.adding:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")


class AuditEventPatient(models.Model):
    """A patient whose data one audit event touched (many for a list or search).

    Answers "who saw this patient's data" for list pages too, with an index
    rather than a scan of JSON details.
    """

    # db_index=False: an index or unique constraint of Meta starts with it.
    event = models.ForeignKey(
        AuditEvent, on_delete=models.PROTECT, related_name="patients", db_index=False
    )
    patient_id = models.BigIntegerField(db_index=True)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["event", "patient_id"], name="audit_patient_once"),
        ]

    def __str__(self) -> str:
        return f"event {self.event_id} patient {self.patient_id}"


class Notification(models.Model):
    """A message to one user inside the application (a critical result to acknowledge,
    a report ready), shown in the navigation until read."""

    # db_index=False: an index or unique constraint of Meta starts with it.
    user = models.ForeignKey(
        User, on_delete=models.CASCADE, related_name="notifications", db_index=False
    )
    facility = models.ForeignKey(Facility, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=32)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    url = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["user", "read_at"])]

    def __str__(self) -> str:
        return f"{self.kind} for {self.user_id}: {self.title}"
