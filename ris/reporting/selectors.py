"""Reads of reporting, scoped to what the asking user may see."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Case, F, Prefetch, Q, QuerySet, When
from django.utils import timezone

from accounts.models import User
from accounts.roles import Capability, Role, capabilities_of
from accounts.scoping import facility_ids_for, roles_by_facility
from pacs.models import Study
from ris.models import (
    REPORT_CLOSED,
    CriticalResult,
    Order,
    Report,
    ReportMacro,
    ReportTemplate,
)

# What the worklist's "report" filter offers, and the exams each means.
REPORT_STATES = {
    "unread": "Not started",
    "draft": "Draft",
    "preliminary": "Preliminary",
}
ON_WORKLIST = (
    Order.Status.ARRIVED,
    Order.Status.IN_PROGRESS,
    Order.Status.COMPLETED,
    Order.Status.REPORTED,
)


@dataclass(frozen=True)
class WorklistFilter:
    """The reading worklist's filters; empty means any. `radiologist`: "me", "none"
    (unclaimed) or a user id."""

    facility: int | None = None
    modality: str = ""
    priority: str = ""
    report: str = ""
    radiologist: str = ""
    received_from: dt.date | None = None
    received_to: dt.date | None = None


def reading_worklist(*, user: User, filters: WorklistFilter | None = None) -> QuerySet[Order]:
    """Exams whose images came in and whose report is not final: STAT first, then urgent,
    then routine, each the longest waiting (since the images came) first."""
    filters = filters or WorklistFilter()
    orders = (
        Order.objects.visible_to(user, Capability.READ_STUDIES)
        .filter(status__in=ON_WORKLIST, images_received_at__isnull=False)
        .exclude(
            reports__status__in=[
                Report.Status.FINAL,
                Report.Status.CORRECTED,
                Report.Status.ADDENDED,
            ]
        )
        .select_related("patient", "procedure", "facility", "reading_radiologist")
        .prefetch_related(
            Prefetch("reports", queryset=Report.objects.only("order_id", "status", "is_critical")),
            Prefetch(
                "studies",
                queryset=Study.objects.only("order_id", "study_instance_uid").order_by(
                    "-received_at"
                ),
            ),
        )
        .alias(
            priority_rank=Case(
                When(priority=Order.Priority.STAT, then=0),
                When(priority=Order.Priority.URGENT, then=1),
                default=2,
            )
        )
    )
    if filters.facility:
        orders = orders.filter(facility_id=filters.facility)
    if filters.modality:
        orders = orders.filter(procedure__modality=filters.modality)
    if filters.priority:
        orders = orders.filter(priority=filters.priority)
    if filters.report == "unread":
        orders = orders.filter(reports__isnull=True)
    elif filters.report in REPORT_STATES:
        orders = orders.filter(reports__status=filters.report)
    if filters.radiologist == "me":
        orders = orders.filter(reading_radiologist=user)
    elif filters.radiologist == "none":
        orders = orders.filter(reading_radiologist__isnull=True)
    elif filters.radiologist.isdigit():
        orders = orders.filter(reading_radiologist_id=int(filters.radiologist))
    zone = timezone.get_current_timezone()
    if filters.received_from:
        start = dt.datetime.combine(filters.received_from, dt.time.min, zone)
        orders = orders.filter(images_received_at__gte=start)
    if filters.received_to:
        end = dt.datetime.combine(filters.received_to + dt.timedelta(days=1), dt.time.min, zone)
        orders = orders.filter(images_received_at__lt=end)
    return orders.order_by("priority_rank", "images_received_at", "id")


def radiologists(*, user: User) -> QuerySet[User]:
    """Who reads at the user's facilities (to assign exams to, to filter by)."""
    facilities = facility_ids_for(user, Capability.READ_STUDIES)
    return (
        User.objects.filter(
            is_active=True,
            memberships__facility_id__in=facilities,
            memberships__role=Role.RADIOLOGIST,
        )
        .distinct()
        .order_by("last_name", "first_name", "username")
    )


def readable_order(*, user: User, pk: int) -> Order | None:
    """An exam the user reads (any status: a final one opens read-only)."""
    return (
        Order.objects.visible_to(user, Capability.READ_STUDIES)
        .select_related("patient", "procedure", "facility", "reading_radiologist")
        .filter(pk=pk)
        .first()
    )


def report_of(order: Order) -> Report | None:
    return (
        Report.objects.filter(order=order)
        .select_related("signed_by", "author", "template")
        .prefetch_related("versions__signed_by", "addenda__signed_by", "critical_results")
        .first()
    )


def prior_exams(*, user: User, order: Order) -> list[Order]:
    """The patient's other exams the user may see, newest first, with their studies and
    reports: what the radiologist compares with."""
    return list(
        Order.objects.visible_to(user, Capability.READ_STUDIES)
        .filter(patient_id=order.patient_id)
        .exclude(pk=order.pk)
        .exclude(status=Order.Status.CANCELLED)
        .select_related("procedure")
        .prefetch_related(
            Prefetch("reports", queryset=Report.objects.only("id", "order_id", "status")),
            Prefetch(
                "studies",
                queryset=Study.objects.only(
                    "order_id", "study_instance_uid", "study_date", "study_description"
                ),
            ),
        )
        .order_by("-created_at")[:50]
    )


def templates_for(order: Order) -> list[ReportTemplate]:
    """Active templates of the exam's facility: those of its procedure first, then of its
    modality, then the general ones."""
    procedure = order.procedure
    templates = (
        ReportTemplate.objects.filter(facility_id=order.facility_id, is_active=True)
        .filter(Q(procedures=procedure) | Q(modality=procedure.modality) | Q(modality=""))
        .distinct()
    )
    ranked = sorted(
        templates.prefetch_related("procedures"),
        key=lambda t: (
            0 if procedure in t.procedures.all() else 1 if t.modality == procedure.modality else 2,
            t.name.lower(),
        ),
    )
    # Templates made for other procedures are not offered for this one.
    return [t for t in ranked if not t.procedures.all() or procedure in t.procedures.all()]


def report_templates(*, user: User) -> QuerySet[ReportTemplate]:
    """Templates of the facilities where the user reads."""
    return (
        ReportTemplate.objects.visible_to(user, Capability.READ_STUDIES)
        .select_related("facility")
        .prefetch_related("procedures")
    )


def critical_results(*, user: User, open_only: bool = True) -> QuerySet[CriticalResult]:
    """Critical results the user may see: all of the facilities where they read, plus
    the ones sent to them as referring physician. Open (unacknowledged) ones by default,
    oldest first: the longest waiting is the most worrying."""
    reading = facility_ids_for(user, Capability.READ_STUDIES)
    rows = CriticalResult.objects.filter(
        Q(facility_id__in=reading) | Q(recipient=user, facility_id__in=roles_by_facility(user))
    ).select_related(
        "report__order__patient",
        "report__order__procedure",
        "flagged_by",
        "recipient",
        "acknowledged_by",
        "facility",
    )
    if open_only:
        return rows.filter(acknowledged_at__isnull=True).order_by("flagged_at", "id")
    return rows.order_by(F("acknowledged_at").desc(nulls_first=True), "-flagged_at")


def reports_visible_to(user: User) -> QuerySet[Report]:
    """Released reports the user may read: every one of the facilities where they are
    staff with VIEW_REPORTS; where they are only a referring physician, the final
    reports of the orders referred to them (the same rule as for their images)."""
    staff, referred = set(), set()
    for facility_id, roles in roles_by_facility(user).items():
        if Capability.VIEW_REPORTS not in capabilities_of(roles):
            continue
        if Capability.VIEW_REPORTS in capabilities_of(roles - {Role.REFERRING_PHYSICIAN}):
            staff.add(facility_id)
        else:
            referred.add(facility_id)
    return Report.objects.filter(
        Q(facility_id__in=staff, status__in=[s for s in Report.Status if s != Report.Status.DRAFT])
        | Q(
            facility_id__in=referred,
            order__referring_physician=user,
            status__in=REPORT_CLOSED,
        )
    )


def viewable_report(*, user: User, pk: int) -> Report | None:
    return (
        reports_visible_to(user)
        .select_related("order__patient", "order__procedure", "order__facility", "signed_by")
        .filter(pk=pk)
        .first()
    )


def results(*, user: User, query: str = "") -> QuerySet[Report]:
    """Released reports the user may read, newest signature first, with what the list
    shows; `query` finds a patient name, an MRN or an accession number."""
    reports = (
        reports_visible_to(user)
        .select_related("order__patient", "order__procedure", "order__facility", "signed_by")
        .prefetch_related(
            Prefetch(
                "order__studies",
                queryset=Study.objects.only("order_id", "study_instance_uid").order_by(
                    "-received_at"
                ),
            )
        )
    )
    query = query.strip()
    if query:
        words = Q()
        for word in query.split():
            words &= Q(order__patient__family_name__icontains=word) | Q(
                order__patient__given_name__icontains=word
            )
        reports = reports.filter(
            words | Q(order__patient__mrn=query) | Q(order__accession_number=query.upper())
        )
    return reports.order_by("-signed_at", "-id")


def next_exam(*, user: User, after: Order) -> Order | None:
    """The next exam to read after `after`: the first of the worklist that is the user's
    or nobody's (what "next" means to a radiologist working down the list)."""
    return (
        reading_worklist(user=user)
        .exclude(pk=after.pk)
        .filter(Q(reading_radiologist__isnull=True) | Q(reading_radiologist=user))
        .first()
    )


def macros_for(*, user: User, order: Order) -> list[ReportMacro]:
    """The macros offered on an exam: the user's own and the facility's, of its modality
    or of any; one's own first."""
    return list(
        ReportMacro.objects.filter(facility_id=order.facility_id, is_active=True)
        .filter(Q(owner=user) | Q(owner__isnull=True))
        .filter(Q(modality=order.procedure.modality) | Q(modality=""))
        .order_by(F("owner").asc(nulls_last=True), "name")
    )


def macros(*, user: User) -> QuerySet[ReportMacro]:
    """Macros the user keeps or uses: theirs and their facilities' shared ones."""
    return (
        ReportMacro.objects.visible_to(user, Capability.READ_STUDIES)
        .filter(Q(owner=user) | Q(owner__isnull=True))
        .select_related("facility", "owner")
    )
