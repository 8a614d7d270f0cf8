"""Read queries of the RIS, always scoped to the facilities of the asking user."""

from __future__ import annotations

import datetime as dt

from django.db.models import Case, Prefetch, Q, QuerySet, When
from django.utils import timezone

from accounts.models import User
from accounts.roles import Capability
from pacs.models import Study
from ris.models import Appointment, Order, Patient


def patient_search(*, user: User, query: str = "") -> QuerySet[Patient]:
    """Patients matching a name fragment, MRN or birth date (YYYY-MM-DD)."""
    patients = Patient.objects.visible_to(user, Capability.VIEW_PATIENTS)
    query = query.strip()
    if not query:
        return patients
    try:
        birth_date = dt.date.fromisoformat(query)
    except ValueError:
        birth_date = None
    if birth_date:
        return patients.filter(birth_date=birth_date)
    terms = Q()
    for word in query.replace(",", " ").split():
        terms &= (
            Q(family_name__istartswith=word) | Q(given_name__istartswith=word) | Q(mrn__iexact=word)
        )
    return patients.filter(terms)


def order_list(*, user: User, status: str = "") -> QuerySet[Order]:
    orders = Order.objects.visible_to(user, Capability.VIEW_ORDERS).select_related(
        "patient", "procedure", "facility"
    )
    return orders.filter(status=status) if status else orders


def reading_list(*, user: User) -> QuerySet[Order]:
    """Exams done at the modality and not yet final, STAT first, longest waiting first."""
    return (
        Order.objects.visible_to(user, Capability.READ_STUDIES)
        .filter(status__in=[Order.Status.COMPLETED, Order.Status.REPORTED])
        .select_related("patient", "procedure", "facility")
        .prefetch_related(
            Prefetch(
                "studies",
                queryset=Study.objects.only("order_id", "study_instance_uid").order_by(
                    "-received_at"
                ),
            )
        )
        .alias(
            priority_rank=Case(
                When(priority=Order.Priority.STAT, then=0),
                When(priority=Order.Priority.URGENT, then=1),
                default=2,
            )
        )
        .order_by("priority_rank", "updated_at")
    )


def desk_appointments(*, user: User) -> QuerySet[Appointment]:
    """Appointments the user may act on at the desk (check in, move, cancel)."""
    return Appointment.objects.visible_to(user, Capability.EDIT_ORDERS).select_related(
        "order__patient", "room"
    )


def schedule_appointments(*, user: User) -> QuerySet[Appointment]:
    """Appointments of the facilities whose schedule the user may see."""
    return Appointment.objects.visible_to(user, Capability.VIEW_SCHEDULE).select_related(
        "room", "facility", "order__patient", "order__procedure"
    )


def day_schedule(*, user: User, day: dt.date | None = None) -> QuerySet[Appointment]:
    day = day or timezone.localdate()
    start = timezone.make_aware(dt.datetime.combine(day, dt.time.min))
    return (
        Appointment.objects.visible_to(user, Capability.VIEW_SCHEDULE)
        .filter(
            starts_at__gte=start, starts_at__lt=start + dt.timedelta(days=1), is_cancelled=False
        )
        .select_related("room", "order__patient", "order__procedure", "facility")
        .order_by("room__name", "starts_at")
    )
