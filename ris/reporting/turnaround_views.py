"""The turnaround metrics page (issue 8): tables and server-drawn SVG charts of
order → images → preliminary → final, per modality, radiologist and day; and the same
table as CSV. The numbers come from `turnaround`; this module checks the door, reads
the filters and lays the charts out."""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET

from accounts import audit
from accounts.spreadsheet import safe_cell
from pacs.dicom.vocabulary import Modality
from ris.reporting import turnaround
from ris.reporting.turnaround import (
    INTERVALS,
    GroupStats,
    Turnaround,
    TurnaroundFilter,
    duration_text,
)

# ---- the filters -----------------------------------------------------------------------------


class TurnaroundForm(forms.Form):
    """?from=&to= (dates the images came in; the last 30 days when left out), facility,
    modality. The fields are named "from" and "to" in the address, so they are added in
    `__init__` ("from" is a Python keyword)."""

    facility = forms.TypedChoiceField(required=False, coerce=int, empty_value=None)
    modality = forms.ChoiceField(required=False, choices=[("", "Any"), *Modality.choices])

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
            except forms.ValidationError:
                end = today
            data["from"] = (end - dt.timedelta(days=turnaround.DEFAULT_DAYS - 1)).isoformat()
        super().__init__(data)
        self.fields["from"] = forms.DateField(label="Images from", widget=date)
        self.fields["to"] = forms.DateField(label="Images to", widget=date)
        self.fields["facility"].choices = [("", "All"), *facilities]
        self.order_fields(["from", "to", "facility", "modality"])

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        start, end = data.get("from"), data.get("to")
        if start and end:
            if start > end:
                raise forms.ValidationError("The first day comes after the last.")
            if (end - start).days + 1 > turnaround.LONGEST_RANGE_DAYS:
                raise forms.ValidationError(
                    f"Choose at most {turnaround.LONGEST_RANGE_DAYS} days at a time."
                )
        return data

    def filters(self) -> TurnaroundFilter:
        data = self.cleaned_data
        return TurnaroundFilter(
            start=data["from"],
            end=data["to"],
            facility=data["facility"],
            modality=data["modality"],
        )


# ---- the page and the CSV --------------------------------------------------------------------


@require_GET
def turnaround_page(request: HttpRequest) -> HttpResponse:
    facilities = turnaround.facilities(user=request.user)
    if not facilities:
        raise PermissionDenied("Your role does not show turnaround metrics.")
    form = TurnaroundForm(
        request.GET,
        facilities=[(f.pk, f.name) for f in facilities],
        today=timezone.localdate(),
    )
    context: dict[str, Any] = {"form": form, "many_facilities": len(facilities) > 1}
    if not form.is_valid():
        return render(request, "reporting/turnaround.html", context, status=400)
    as_csv = request.GET.get("format") == "csv"
    metrics = turnaround.turnaround(user=request.user, filters=form.filters())
    audit.record_request(
        request,
        action=audit.Action.EXPORT if as_csv else audit.Action.VIEW,
        object_type="turnaround",
        detail={"query": metrics.filters.as_query(), "format": "csv" if as_csv else "html"},
    )
    if as_csv:
        return _csv_response(metrics)
    csv_query = request.GET.copy()
    csv_query["format"] = "csv"
    context |= _charts(metrics) | {
        "metrics": metrics,
        "tables": _tables(metrics),
        "csv_query": csv_query.urlencode(),
    }
    return render(request, "reporting/turnaround.html", context)


CSV_STATS = ("count", "median_min", "p90_min", "mean_min", "excluded")
CSV_COLUMNS = [
    "grouping",
    "group",
    "exams",
    *[f"{name}_{stat}" for name in INTERVALS for stat in CSV_STATS],
    "waiting",
    "oldest_waiting_min",
]


def _minutes(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _csv_row(grouping: str, group: GroupStats) -> list[Any]:
    row: list[Any] = [grouping, safe_cell(group.label), group.exams]
    for name in INTERVALS:
        stats = group.intervals[name]
        row += [
            stats.count,
            _minutes(stats.median),
            _minutes(stats.p90),
            _minutes(stats.mean),
            stats.excluded,
        ]
    return [*row, group.waiting, _minutes(group.oldest_waiting)]


def _csv_response(metrics: Turnaround) -> HttpResponse:
    filters = metrics.filters
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"turnaround-{filters.start.isoformat()}-{filters.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    writer.writerow(_csv_row("overall", metrics.overall))
    for grouping, groups in (
        ("modality", metrics.by_modality),
        ("radiologist", metrics.by_radiologist),
        ("day", metrics.by_day),
    ):
        for group in groups:
            writer.writerow(_csv_row(grouping, group))
    return response


def _tables(metrics: Turnaround) -> list[dict[str, Any]]:
    """The page's tables: the cells of each row in the order of its columns (a template
    cannot look a dict up by a variable key)."""
    every = list(INTERVALS)
    signed = every[1:]  # order → images is not the radiologists' doing

    def table(caption: str, key_label: str, groups: list[GroupStats], names: list[str]) -> Any:
        return {
            "caption": caption,
            "key_label": key_label,
            "intervals": [INTERVALS[n] for n in names],
            "rows": [{"group": g, "cells": [g.intervals[n] for n in names]} for g in groups],
        }

    return [
        table("Overall", "Group", [metrics.overall], every),
        table("By modality", "Modality", metrics.by_modality, every),
        table("By radiologist", "Radiologist", metrics.by_radiologist, signed),
        table("By day the images came in", "Day", metrics.by_day, every),
    ]


# ---- charts: inline SVG laid out here, styled by app.css --------------------------------------


def _charts(metrics: Turnaround) -> dict[str, Any]:
    return {
        "charts": [
            _bar_chart(
                "tat-modality",
                "Images → final per modality",
                "modality",
                metrics.by_modality,
                short=lambda g: g.key,
            ),
            _bar_chart(
                "tat-radiologist",
                "Images → final per radiologist (who signed the first final)",
                "radiologist",
                [g for g in metrics.by_radiologist if g.key],
                short=lambda g: g.label if len(g.label) <= 22 else g.label[:21] + "…",
            ),
        ],
        "day_chart": _day_chart(metrics.by_day),
    }


CHART_WIDTH = 720
LABEL_WIDTH = 170
VALUE_WIDTH = 220
ROW_HEIGHT = 28
BAR_HEIGHT = 16
TOP = 30


@dataclass(frozen=True)
class Bar:
    label: str
    short_label: str
    y: float
    text_y: float
    median_width: float
    p90_width: float
    value_x: float
    text: str


@dataclass(frozen=True)
class Tick:
    x: float
    text: str


@dataclass(frozen=True)
class BarChart:
    id: str
    title: str
    desc: str
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    plot_left: int
    plot_bottom: int


def _bar_chart(
    chart_id: str,
    title: str,
    what: str,
    groups: list[GroupStats],
    short: Callable[[GroupStats], str],
) -> BarChart:
    """Horizontal bars, one per group with a final: the median (dark) over the 90th
    percentile (light), on one scale. `short` names a bar in the room the chart has."""
    shown = [g for g in groups if g.final.count]
    plot = CHART_WIDTH - LABEL_WIDTH - VALUE_WIDTH
    longest = max((g.final.p90 or 0.0 for g in shown), default=0.0) or 1.0
    bars = []
    for i, group in enumerate(shown):
        stats = group.final
        median_w = plot * (stats.median or 0.0) / longest
        p90_w = plot * (stats.p90 or 0.0) / longest
        y = TOP + i * ROW_HEIGHT
        bars.append(
            Bar(
                label=group.label,
                short_label=short(group),
                y=y,
                text_y=y + BAR_HEIGHT - 3,
                median_width=round(median_w, 1),
                p90_width=round(p90_w, 1),
                value_x=round(LABEL_WIDTH + p90_w + 6, 1),
                text=f"{stats.median_text} · p90 {stats.p90_text} (n={stats.count})",
            )
        )
    bottom = TOP + len(shown) * ROW_HEIGHT
    ticks = [
        Tick(x=round(LABEL_WIDTH + plot * i / 4, 1), text=duration_text(longest * i / 4))
        for i in range(5)
    ]
    missing = [g.label for g in groups if not g.final.count]
    desc = "; ".join(
        f"{g.label}: median {g.final.median_text}, 90th percentile {g.final.p90_text}, "
        f"{g.final.count} exams"
        for g in shown
    )
    if missing:
        desc += f". No final report yet: {', '.join(missing)}"
    return BarChart(
        id=chart_id,
        title=title,
        desc=f"Median and 90th percentile per {what}. {desc or 'No final reports.'}",
        height=bottom + 24,
        bars=bars,
        ticks=ticks,
        plot_left=LABEL_WIDTH,
        plot_bottom=bottom,
    )


DAY_LEFT, DAY_RIGHT, DAY_TOP, DAY_BOTTOM = 50, 670, 20, 200


@dataclass(frozen=True)
class DayMark:
    label: str
    x: float
    width: float
    y: float
    height: float
    point: tuple[float, float] | None
    text: str


@dataclass(frozen=True)
class DayChart:
    title: str
    desc: str
    days: list[DayMark]
    points: str
    most_exams: int
    longest_text: str
    first: str
    last: str


def _day_chart(days: list[GroupStats]) -> DayChart:
    """Volume per day as bars (left scale), the median images → final as a line (right
    scale)."""
    slot = (DAY_RIGHT - DAY_LEFT) / max(len(days), 1)
    height = DAY_BOTTOM - DAY_TOP
    most = max((d.exams for d in days), default=0) or 1
    longest = max((d.final.median or 0.0 for d in days), default=0.0) or 1.0
    marks = []
    for i, day in enumerate(days):
        x = DAY_LEFT + i * slot
        bar = height * day.exams / most
        median = day.final.median
        point = None
        if median is not None:
            point = (round(x + slot / 2, 1), round(DAY_BOTTOM - height * median / longest, 1))
        marks.append(
            DayMark(
                label=day.label,
                x=round(x + slot * 0.15, 1),
                width=round(slot * 0.7, 1),
                y=round(DAY_BOTTOM - bar, 1),
                height=round(bar, 1),
                point=point,
                text=f"{day.label}: {day.exams} exams, median images → final "
                f"{day.final.median_text}",
            )
        )
    has_finals = any(m.point for m in marks)
    return DayChart(
        title="Exams and median images → final per day",
        desc=(
            f"Bars: exams whose images came in each day, {sum(d.exams for d in days)} in "
            f"all, at most {max((d.exams for d in days), default=0)} a day. Line: the "
            "median images → final of those exams"
            + (f", at most {duration_text(longest)}. " if has_finals else ": none final. ")
            + "The table by day below carries every value."
        ),
        days=marks,
        points=" ".join(f"{m.point[0]},{m.point[1]}" for m in marks if m.point),
        most_exams=most,
        longest_text=duration_text(longest),
        first=days[0].label if days else "",
        last=days[-1].label if days else "",
    )
