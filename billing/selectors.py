"""Read queries of billing, scoped to the billing office's facilities."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from django.db.models import Count, Q, QuerySet, Sum

from accounts.models import User
from accounts.roles import Capability
from billing.models import Charge, FeeScheduleEntry, Payer


def fee_schedule(*, user: User, code: str = "") -> QuerySet[FeeScheduleEntry]:
    fees = FeeScheduleEntry.objects.visible_to(user, Capability.VIEW_BILLING).select_related(
        "payer", "facility"
    )
    return fees.filter(procedure_code__istartswith=code) if code else fees


@dataclass(frozen=True)
class ChargeFilter:
    """The charge review's filters; empty means any. `payer` "self" is self-pay."""

    date_from: dt.date | None = None
    date_to: dt.date | None = None
    facility: int | None = None
    payer: str = ""
    status: str = ""
    modality: str = ""
    missing: bool = False


def charges(*, user: User, filters: ChargeFilter | None = None) -> QuerySet[Charge]:
    """Charges of the user's billing facilities, by date of service, newest first."""
    filters = filters or ChargeFilter()
    rows = Charge.objects.visible_to(user, Capability.VIEW_BILLING).select_related(
        "patient", "payer", "order__procedure", "facility"
    )
    if filters.date_from:
        rows = rows.filter(service_date__gte=filters.date_from)
    if filters.date_to:
        rows = rows.filter(service_date__lte=filters.date_to)
    if filters.facility:
        rows = rows.filter(facility_id=filters.facility)
    if filters.payer == "self":
        rows = rows.filter(payer__isnull=True)
    elif filters.payer.isdigit():
        rows = rows.filter(payer_id=int(filters.payer))
    if filters.status:
        rows = rows.filter(status=filters.status)
    if filters.modality:
        rows = rows.filter(order__procedure__modality=filters.modality)
    if filters.missing:
        rows = rows.filter(
            Q(diagnosis_codes="")
            | Q(payer__isnull=True)
            | Q(amount__isnull=True)
            | (~Q(component=Charge.Component.TECHNICAL) & Q(rendering_npi=""))
        ).exclude(status=Charge.Status.VOID)
    return rows.order_by("-service_date", "-id")


@dataclass(frozen=True)
class Totals:
    count: int
    amount: Decimal
    by_status: dict[str, tuple[int, Decimal]]


def totals(rows: QuerySet[Charge]) -> Totals:
    """Count and amount of the filtered charges, in all and per status (void ones are
    counted but not added to the amount)."""
    per_status = {
        row["status"]: (row["n"], row["total"] or Decimal("0"))
        for row in rows.order_by().values("status").annotate(n=Count("id"), total=Sum("amount"))
    }
    billable = sum(
        (amount for status, (_, amount) in per_status.items() if status != Charge.Status.VOID),
        Decimal("0"),
    )
    return Totals(
        count=sum(n for n, _ in per_status.values()), amount=billable, by_status=per_status
    )


def payers(*, user: User) -> QuerySet[Payer]:
    return Payer.objects.visible_to(user, Capability.VIEW_BILLING).order_by("name")
