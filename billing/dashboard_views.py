"""The billing dashboard page (issue 9): revenue and volume tables and server-drawn SVG
charts per month, modality, procedure, payer and status; the same tables as CSV. The
numbers come from `billing.dashboard`; this module checks the door, reads the filters and
lays the charts out (no script: the CSP forbids inline ones, app.css styles the SVG)."""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.permissions import capability_required
from accounts.roles import Capability
from accounts.spreadsheet import safe_cell
from billing import dashboard as numbers
from billing.dashboard import Dashboard, DashboardFilter, Group, money

TEMPLATE = "billing/dashboard.html"

# ---- the filters -----------------------------------------------------------------------------


class DashboardForm(forms.Form):
    """?from=&to= (service dates; the last 12 full months and this one when left out) and
    facility. "from" is a Python keyword, so the date fields are added in `__init__`."""

    facility = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)

    def __init__(
        self, data: QueryDict, *, facilities: list[tuple[int, str]], today: dt.date
    ) -> None:
        data = data.copy()
        date = forms.DateInput(attrs={"type": "date"})
        if not data.get("to"):
            data["to"] = today.isoformat()
        if not data.get("from"):
            try:
                end = forms.DateField().clean(data["to"])
                data["from"] = numbers.month_start(end, numbers.DEFAULT_MONTHS - 1).isoformat()
            except (forms.ValidationError, ValueError):
                pass  # "to" answers for itself; "from" stays empty and is required
        super().__init__(data)
        self.fields["from"] = forms.DateField(label="Service from", widget=date)
        self.fields["to"] = forms.DateField(label="Service to", widget=date)
        self.fields["facility"].choices = [("", "All"), *facilities]
        self.order_fields(["from", "to", "facility"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("from"), data.get("to")
        if start and end:
            if start > end:
                raise forms.ValidationError("The first day comes after the last.")
            if numbers.month_span(start, end) > numbers.LONGEST_MONTHS:
                raise forms.ValidationError(
                    f"Choose at most {numbers.LONGEST_MONTHS} months at a time."
                )
        return data

    def filters(self) -> DashboardFilter:
        data = self.cleaned_data
        return DashboardFilter(start=data["from"], end=data["to"], facility=data["facility"])


# ---- the page and the CSV --------------------------------------------------------------------


@require_GET
@capability_required(Capability.VIEW_BILLING)
def dashboard(request: HttpRequest) -> HttpResponse:
    facilities = numbers.facilities(user=request.user)
    form = DashboardForm(
        request.GET,
        facilities=[(f.pk, f.name) for f in facilities],
        today=timezone.localdate(),
    )
    context: dict[str, Any] = {"form": form, "many_facilities": len(facilities) > 1}
    if not form.is_valid():
        return render(request, TEMPLATE, context, status=400)
    as_csv = request.GET.get("format") == "csv"
    result = numbers.dashboard(user=request.user, filters=form.filters())
    audit.record_request(
        request,
        action=audit.Action.EXPORT if as_csv else audit.Action.VIEW,
        object_type="billing_dashboard",
        detail={"query": result.filters.as_query(), "format": "csv" if as_csv else "html"},
    )
    if as_csv:
        return _csv_response(result)
    csv_query = request.GET.copy()
    csv_query["format"] = "csv"
    context |= {
        "result": result,
        "tables": _tables(result),
        "month_chart": _month_chart(result.by_month),
        "charts": _charts(result),
        "csv_query": csv_query.urlencode(),
        "billed": money(result.billed),
        "still_to_bill": money(result.still_to_bill),
        "top_procedures": numbers.TOP_PROCEDURES,
    }
    return render(request, TEMPLATE, context)


CSV_COLUMNS = ["grouping", "group", "revenue", "exams", "charges", "no_price", "reversals"]


def _groupings(result: Dashboard) -> list[tuple[str, list[Group]]]:
    return [
        ("overall", [result.overall]),
        ("month", result.by_month),
        ("modality", result.by_modality),
        ("procedure", result.by_procedure),
        ("payer", result.by_payer),
        ("status", result.by_status),
    ]


def _csv_response(result: Dashboard) -> HttpResponse:
    filters = result.filters
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"billing-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for grouping, groups in _groupings(result):
        for g in groups:
            writer.writerow(
                [
                    grouping,
                    safe_cell(g.label),
                    g.revenue,
                    g.exams,
                    g.charges,
                    g.no_price,
                    g.reversals,
                ]
            )
    return response


def _tables(result: Dashboard) -> list[dict[str, Any]]:
    captions = {
        "overall": ("Overall", "Group"),
        "month": ("By month of service", "Month"),
        "modality": ("By modality", "Modality"),
        "procedure": (f"By procedure (top {numbers.TOP_PROCEDURES} by revenue)", "Procedure"),
        "payer": ("By payer", "Payer"),
        "status": ("By status", "Status"),
    }
    return [
        {"id": grouping, "caption": captions[grouping][0], "key_label": captions[grouping][1]}
        | {"rows": groups}
        for grouping, groups in _groupings(result)
    ]


# ---- charts: inline SVG laid out here, styled by app.css --------------------------------------


def _volume_text(group: Group) -> str:
    text = f"{group.exams} exam{'' if group.exams == 1 else 's'}"
    if group.no_price:
        text += f", {group.no_price} without price"
    return text


@dataclass(frozen=True)
class MonthMark:
    label: str
    short_label: str  # shown under the axis, or "" where months are too many to name all
    label_x: float
    x: float
    width: float
    y: float
    height: float
    point: tuple[float, float]
    negative: bool
    text: str


@dataclass(frozen=True)
class MonthChart:
    title: str
    desc: str
    months: list[MonthMark]
    points: str
    top_text: str
    bottom_text: str
    zero_y: float
    most_exams: int


M_LEFT, M_RIGHT, M_TOP, M_BOTTOM = 80, 650, 20, 200


def _month_chart(months: list[Group]) -> MonthChart:
    """Revenue per month as bars (left scale; below the zero line when reversals outweigh),
    exams per month as a line (right scale)."""
    slot = (M_RIGHT - M_LEFT) / max(len(months), 1)
    height = M_BOTTOM - M_TOP
    high = max((g.revenue for g in months), default=Decimal(0))
    low = min((g.revenue for g in months), default=Decimal(0))
    high, low = max(high, Decimal(0)), min(low, Decimal(0))
    span = float(high - low) or 1.0
    zero_y = M_TOP + height * float(high) / span
    most = max((g.exams for g in months), default=0) or 1
    every = math.ceil(len(months) / 12) or 1  # name at most 12 months under the axis
    marks = []
    for i, group in enumerate(months):
        x = M_LEFT + i * slot
        bar = height * float(group.revenue) / span
        month = dt.date.fromisoformat(f"{group.key}-01")
        marks.append(
            MonthMark(
                label=group.label,
                short_label=month.strftime("%b %y") if i % every == 0 else "",
                label_x=round(x + slot / 2, 1),
                x=round(x + slot * 0.15, 1),
                width=round(slot * 0.7, 1),
                y=round(min(zero_y, zero_y - bar), 1),
                height=round(abs(bar), 1),
                point=(round(x + slot / 2, 1), round(M_BOTTOM - height * group.exams / most, 1)),
                negative=group.revenue < 0,
                text=f"{group.label}: revenue {group.revenue_text}, {_volume_text(group)}",
            )
        )
    total = sum((g.revenue for g in months), Decimal(0))
    return MonthChart(
        title="Revenue and exams per month of service",
        desc=(
            f"Bars: revenue per month, {money(total)} in all over {len(months)} months, at "
            f"most {money(high)} a month. Line: exams per month, at most "
            f"{max((g.exams for g in months), default=0)}. "
            + "; ".join(m.text for m in marks)
            + ". The table by month below carries every value."
        ),
        months=marks,
        points=" ".join(f"{m.point[0]},{m.point[1]}" for m in marks),
        top_text=money(high),
        bottom_text=money(low),
        zero_y=round(zero_y, 1),
        most_exams=most,
    )


CHART_WIDTH = 720
LABEL_WIDTH = 190
VALUE_WIDTH = 210
ROW_HEIGHT = 26
BAR_HEIGHT = 16
TOP = 12


@dataclass(frozen=True)
class Bar:
    label: str
    short_label: str
    y: float
    text_y: float
    x: float
    width: float
    value_x: float
    negative: bool
    text: str


@dataclass(frozen=True)
class BarChart:
    id: str
    title: str
    desc: str
    height: int
    bars: list[Bar]
    zero_x: float
    plot_bottom: int


def _short(label: str) -> str:
    return label if len(label) <= 26 else label[:25] + "…"


def _bar_chart(chart_id: str, title: str, what: str, groups: list[Group]) -> BarChart:
    """Horizontal bars of revenue, one per group, on one scale from the zero line (a group
    whose reversals outweigh its charges draws left of it)."""
    plot = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    high = max([Decimal(0), *(g.revenue for g in groups)])
    low = min([Decimal(0), *(g.revenue for g in groups)])
    span = float(high - low) or 1.0
    zero_x = LABEL_WIDTH + plot * float(-low) / span
    bars = []
    for i, group in enumerate(groups):
        width = plot * float(group.revenue) / span
        y = TOP + i * ROW_HEIGHT
        bars.append(
            Bar(
                label=group.label,
                short_label=_short(group.label),
                y=y,
                text_y=y + BAR_HEIGHT - 3,
                x=round(min(zero_x, zero_x + width), 1),
                width=round(abs(width), 1),
                value_x=round(max(zero_x, zero_x + width) + 6, 1),
                negative=group.revenue < 0,
                text=f"{group.revenue_text} · {_volume_text(group)}",
            )
        )
    bottom = TOP + len(groups) * ROW_HEIGHT
    desc = "; ".join(f"{g.label}: revenue {g.revenue_text}, {_volume_text(g)}" for g in groups)
    return BarChart(
        id=chart_id,
        title=title,
        desc=f"Revenue per {what}. {desc or 'No charges.'}",
        height=max(bottom, TOP + ROW_HEIGHT) + 12,
        bars=bars,
        zero_x=round(zero_x, 1),
        plot_bottom=max(bottom, TOP + ROW_HEIGHT),
    )


def _charts(result: Dashboard) -> list[BarChart]:
    return [
        _bar_chart("bdash-modality", "Revenue per modality", "modality", result.by_modality),
        _bar_chart(
            "bdash-procedure",
            f"Revenue per procedure, top {numbers.TOP_PROCEDURES}",
            "procedure",
            result.by_procedure,
        ),
        _bar_chart("bdash-payer", "Revenue per payer", "payer", result.by_payer),
        _bar_chart(
            "bdash-status", "Billed and still to bill, per status", "status", result.by_status
        ),
    ]
