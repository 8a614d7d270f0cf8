"""Billing dashboard (issue 9): revenue and volume by month, modality, procedure, payer and
status, of the charges whose service date falls in a range.

- Revenue: the sum of the amounts of the charges not void. Reversal lines (`adjusts`,
  negative amounts) are included, so a billed exam cancelled later nets to zero in the
  month it was performed (a reversal keeps the service date of what it reverses).
- A charge "stands" when it is not void, not a reversal line and not reversed by a
  reversal line that is not void. Charges = lines standing; exams = distinct orders with
  a line standing, so a billed exam that was cancelled is no longer an exam.
- No price: standing lines without an amount. Their revenue is unknown: they are counted,
  never added as 0.
- By status: the lines not void, per status: exported is billed, ready, pending and held
  are still to bill (a reversal line waits as "ready" with a negative amount: a credit).

Everything is summed by the database (`values().annotate()`), one query per grouping:
six queries however many charges, scoped by `selectors.charges` to the user's billing
facilities.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.db.models import Count, Exists, Min, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import TruncMonth

from accounts.models import Facility, User
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from billing import selectors
from billing.models import Charge
from pacs.dicom.vocabulary import Modality

Status = Charge.Status

DEFAULT_MONTHS = 13  # the last 12 full months and the current one
LONGEST_MONTHS = 36
TOP_PROCEDURES = 15
SELF_PAY = "Self-pay"
ZERO = Decimal("0.00")
CENT = Decimal("0.01")

# The status table, in the order a claim moves; void is counted apart, never as revenue.
STATUS_ORDER = (Status.EXPORTED, Status.READY, Status.PENDING, Status.HELD)
STILL_TO_BILL = frozenset({Status.READY, Status.PENDING, Status.HELD})


def facilities(*, user: User) -> list[Facility]:
    """The facilities whose billing the user may see (empty: the page is not theirs)."""
    ids = facility_ids_for(user, Capability.VIEW_BILLING)
    return list(Facility.objects.filter(pk__in=ids).order_by("name"))


def month_start(day: dt.date, back: int = 0) -> dt.date:
    """The first day of the month `back` months before `day`'s (after it when negative)."""
    index = day.year * 12 + day.month - 1 - back
    return dt.date(index // 12, index % 12 + 1, 1)


def month_span(start: dt.date, end: dt.date) -> int:
    """How many calendar months a range touches, both ends included."""
    return (end.year - start.year) * 12 + end.month - start.month + 1


def money(amount: Decimal) -> str:
    """An amount as the office reads it: 12,345.60 (no currency: the site names none)."""
    return f"{amount:,.2f}"


@dataclass(frozen=True)
class DashboardFilter:
    """Charges whose service date is from `start` to `end` (both included)."""

    start: dt.date
    end: dt.date
    facility: int | None = None

    @property
    def months(self) -> list[dt.date]:
        return [month_start(self.start, -i) for i in range(month_span(self.start, self.end))]

    def as_query(self) -> dict[str, Any]:
        """The filters as recorded in the audit trail."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "facility": self.facility,
        }


@dataclass(frozen=True)
class Group:
    """A row of a table: a month, a modality, a procedure, a payer, a status or all."""

    key: str
    label: str
    revenue: Decimal = ZERO
    exams: int = 0
    charges: int = 0
    no_price: int = 0
    reversals: int = 0

    @property
    def revenue_text(self) -> str:
        return money(self.revenue)


@dataclass(frozen=True)
class Dashboard:
    filters: DashboardFilter
    overall: Group
    voided: int  # void lines in the range: not revenue, shown so they are not missed
    by_month: list[Group]
    by_modality: list[Group]
    by_procedure: list[Group]
    by_payer: list[Group]
    by_status: list[Group]

    @property
    def still_to_bill(self) -> Decimal:
        return sum((g.revenue for g in self.by_status if g.key in STILL_TO_BILL), ZERO)

    @property
    def billed(self) -> Decimal:
        return sum((g.revenue for g in self.by_status if g.key == Status.EXPORTED), ZERO)


# ---- the queries ---------------------------------------------------------------------------


def _charges(user: User, filters: DashboardFilter) -> QuerySet[Charge]:
    """The user's charges of the range, each knowing whether a live reversal undoes it."""
    live_reversals = Charge.objects.filter(adjusts=OuterRef("pk")).exclude(status=Status.VOID)
    rows = selectors.charges(
        user=user,
        filters=selectors.ChargeFilter(
            date_from=filters.start, date_to=filters.end, facility=filters.facility
        ),
    )
    return rows.alias(reversed=Exists(live_reversals)).order_by()


def _metrics() -> dict[str, Any]:
    """The numbers of a group, void lines left out of each (the overall query sees them)."""
    live = ~Q(status=Status.VOID)
    standing = live & Q(adjusts__isnull=True, reversed=False)
    return {
        "revenue": Sum("amount", filter=live),
        "exams": Count("order_id", distinct=True, filter=standing),
        "charges": Count("id", filter=standing),
        "no_price": Count("id", filter=standing & Q(amount__isnull=True)),
        "reversals": Count("id", filter=live & Q(adjusts__isnull=False)),
    }


def _group(key: str, label: str, row: dict[str, Any]) -> Group:
    return Group(
        key=key,
        label=label,
        # SQLite sums decimals without their places; the CSV shows them as stored.
        revenue=(row["revenue"] or ZERO).quantize(CENT),
        exams=row["exams"],
        charges=row["charges"],
        no_price=row["no_price"],
        reversals=row["reversals"],
    )


def _by_revenue(groups: list[Group]) -> list[Group]:
    return sorted(groups, key=lambda g: (-g.revenue, g.label.lower(), g.key))


def _modality_label(code: str) -> str:
    return f"{code} · {Modality(code).label}" if code in Modality.values else code or "—"


def _fold(groups: list[Group], key: str, label: str) -> Group:
    """Groups added up. Exact for exams too where no exam is in two of them (procedures:
    an order has one)."""
    return Group(
        key=key,
        label=label,
        revenue=sum((g.revenue for g in groups), ZERO),
        exams=sum(g.exams for g in groups),
        charges=sum(g.charges for g in groups),
        no_price=sum(g.no_price for g in groups),
        reversals=sum(g.reversals for g in groups),
    )


def _top(groups: list[Group], count: int) -> list[Group]:
    """The `count` groups of most revenue, then the rest as one "other" row."""
    ranked = _by_revenue(groups)
    rest = ranked[count:]
    if not rest:
        return ranked
    noun = "procedure" if len(rest) == 1 else "procedures"
    return [*ranked[:count], _fold(rest, "other", f"Other ({len(rest)} {noun})")]


def _payer_groups(rows: list[dict[str, Any]]) -> list[Group]:
    """Self-pay is its own row; a payer name that two facilities share names its facility."""
    names = [row["payer__name"] for row in rows if row["payer_id"] is not None]
    groups = []
    for row in rows:
        if row["payer_id"] is None:
            groups.append(_group("self", SELF_PAY, row))
            continue
        label = row["payer__name"]
        if names.count(label) > 1:
            label = f"{label} ({row['payer__facility__name']})"
        groups.append(_group(str(row["payer_id"]), label, row))
    return _by_revenue(groups)


def dashboard(*, user: User, filters: DashboardFilter) -> Dashboard:
    """Revenue and volume of the charges `filters` selects, of the user's billing
    facilities."""
    rows = _charges(user, filters)
    metrics = _metrics()
    totals = rows.aggregate(**metrics, voided=Count("id", filter=Q(status=Status.VOID)))
    live = rows.exclude(status=Status.VOID)

    months = {
        row["month"]: row
        for row in live.annotate(month=TruncMonth("service_date"))
        .values("month")
        .annotate(**metrics)
    }
    by_month = [
        _group(m.strftime("%Y-%m"), m.strftime("%Y-%m"), months[m])
        if m in months
        else Group(key=m.strftime("%Y-%m"), label=m.strftime("%Y-%m"))
        for m in filters.months
    ]
    by_modality = _by_revenue(
        [
            _group(
                row["order__procedure__modality"],
                _modality_label(row["order__procedure__modality"]),
                row,
            )
            for row in live.values("order__procedure__modality").annotate(**metrics)
        ]
    )
    procedures = [
        _group(row["procedure_code"], f"{row['procedure_code']} · {row['name']}", row)
        for row in live.values("procedure_code").annotate(
            name=Min("order__procedure__name"), **metrics
        )
    ]
    by_payer = _payer_groups(
        list(live.values("payer_id", "payer__name", "payer__facility__name").annotate(**metrics))
    )
    statuses = {row["status"]: row for row in live.values("status").annotate(**metrics)}
    labels = dict(Status.choices)
    by_status = [
        _group(s, labels[s], statuses[s]) if s in statuses else Group(key=s, label=labels[s])
        for s in STATUS_ORDER
    ]
    return Dashboard(
        filters=filters,
        overall=_group("all", "All charges", totals),
        voided=totals["voided"],
        by_month=by_month,
        by_modality=by_modality,
        by_procedure=_top(procedures, TOP_PROCEDURES),
        by_payer=by_payer,
        by_status=by_status,
    )
