"""Reporting turnaround: how long exams wait, from the order to the images to the report.

Three intervals per exam, grouped by modality, by radiologist, by day and overall:

- order → images: `Order.images_received_at - Order.created_at`;
- images → preliminary: `Report.preliminary_at - images_received_at`. The services set
  `preliminary_at` at the first release, so a report signed final straight away counts
  here too: it reads "images to the first signed words";
- images → final: `Report.final_at - images_received_at`, the first final (a later
  correction or addendum does not move it).

Credit (the per-radiologist grouping): images → final belongs to whoever signed the
first final version (the `ReportVersion` of a closed status with the lowest number), not
`Report.signed_by`, which every correction or addendum overwrites; images → preliminary
to the signer of the first version. Order → images is not the radiologists' doing and is
not shown per radiologist. A waiting exam (images in, no final yet) counts for the
radiologist who claimed it (`Order.reading_radiologist`), or for "Not claimed".

Counted: exams whose images came in between `start` and `end` (dates in the current
time zone, both included), cancelled ones left out, of the facilities where the user
may see the numbers. An interval that is negative (clock skew, images before the order)
or longer than a year (an order reused, a date typed wrong) is left out of the numbers
and counted as excluded, so it neither skews them nor disappears unnoticed.

The database scopes, filters, joins and finds the signers in one streamed query; the
percentiles are computed here, because the ORM has no `percentile_cont` and the same
code then answers the same on SQLite and PostgreSQL. That is fine up to ~100k exams (a
year of a busy site; the page allows at most a year); past that, `percentile_cont(...)
WITHIN GROUP` in raw SQL guarded by `connection.vendor` is the next step.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from django.db.models import BigIntegerField, F, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import Facility, User
from accounts.roles import Capability
from accounts.scoping import facility_ids_for
from pacs.dicom.vocabulary import Modality
from ris.models import REPORT_CLOSED, Order, ReportVersion

# Who may see the numbers, and of which facilities: radiologists (READ_STUDIES) where
# they read, facility administrators (MANAGE_FACILITY) where they run the department.
# VIEW_AUDIT is not a door of its own: only administrators hold it, and these numbers
# are about operations, not about who saw which patient.
VIEWING_CAPABILITIES = (Capability.READ_STUDIES, Capability.MANAGE_FACILITY)

ORDER_TO_IMAGES = "order_to_images"
IMAGES_TO_PRELIMINARY = "images_to_preliminary"
IMAGES_TO_FINAL = "images_to_final"
INTERVALS: dict[str, str] = {
    ORDER_TO_IMAGES: "Order → images",
    IMAGES_TO_PRELIMINARY: "Images → preliminary",
    IMAGES_TO_FINAL: "Images → final",
}

LONGEST_INTERVAL = dt.timedelta(days=365)
DEFAULT_DAYS = 30
LONGEST_RANGE_DAYS = 366
NOT_CLAIMED = "Not claimed"


def facility_ids(user: User) -> set[int]:
    """Facilities whose turnaround the user may see (empty: the page is not theirs)."""
    ids: set[int] = set()
    for capability in VIEWING_CAPABILITIES:
        ids |= facility_ids_for(user, capability)
    return ids


def facilities(*, user: User) -> list[Facility]:
    return list(Facility.objects.filter(pk__in=facility_ids(user)).order_by("name"))


def duration_text(minutes: float | None) -> str:
    """A duration as people say it: "45 min", "1 h 25 min", "3 d 4 h"."""
    if minutes is None:
        return "—"
    whole = round(minutes)
    if whole == 0:
        return "< 1 min" if minutes > 0 else "0 min"
    if whole < 60:
        return f"{whole} min"
    if whole < 24 * 60:
        hours, rest = divmod(whole, 60)
        return f"{hours} h {rest} min" if rest else f"{hours} h"
    days, hours = divmod(round(minutes / 60), 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def percentile(ordered: Sequence[float], fraction: float) -> float:
    """Linear interpolation between the closest ranks of sorted values: what
    PostgreSQL's `percentile_cont` and numpy's default give, so the numbers can be
    checked against either."""
    rank = fraction * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass(frozen=True)
class TurnaroundFilter:
    """Exams whose images came in from `start` to `end` (local dates, both included)."""

    start: dt.date
    end: dt.date
    facility: int | None = None
    modality: str = ""

    @classmethod
    def last_days(cls, days: int = DEFAULT_DAYS, **kwargs: Any) -> TurnaroundFilter:
        today = timezone.localdate()
        return cls(start=today - dt.timedelta(days=days - 1), end=today, **kwargs)

    def as_query(self) -> dict[str, Any]:
        """The filters as recorded in the audit trail."""
        return {
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "facility": self.facility,
            "modality": self.modality,
        }


@dataclass(frozen=True)
class IntervalStats:
    """One interval of one group, in minutes; `excluded` were negative or absurd."""

    count: int = 0
    excluded: int = 0
    median: float | None = None
    p90: float | None = None
    mean: float | None = None

    @property
    def median_text(self) -> str:
        return duration_text(self.median)

    @property
    def p90_text(self) -> str:
        return duration_text(self.p90)

    @property
    def mean_text(self) -> str:
        return duration_text(self.mean)


@dataclass(frozen=True)
class GroupStats:
    """A row of a table: a modality, a radiologist, a day, or everything."""

    key: str
    label: str
    exams: int
    intervals: dict[str, IntervalStats]
    waiting: int
    oldest_waiting: float | None  # minutes since the images of the oldest waiting exam

    @property
    def oldest_waiting_text(self) -> str:
        return duration_text(self.oldest_waiting) if self.waiting else "—"

    @property
    def excluded(self) -> int:
        return sum(stats.excluded for stats in self.intervals.values())

    @property
    def final(self) -> IntervalStats:
        return self.intervals[IMAGES_TO_FINAL]


@dataclass(frozen=True)
class Turnaround:
    filters: TurnaroundFilter
    computed_at: dt.datetime
    overall: GroupStats
    by_modality: list[GroupStats]
    by_radiologist: list[GroupStats]
    by_day: list[GroupStats]


@dataclass
class _Group:
    """What a group collects while the exams stream past."""

    exams: int = 0
    minutes: dict[str, list[float]] = field(default_factory=lambda: {n: [] for n in INTERVALS})
    excluded: dict[str, int] = field(default_factory=lambda: dict.fromkeys(INTERVALS, 0))
    waiting: int = 0
    oldest: dt.datetime | None = None

    def add(self, name: str, interval: dt.timedelta | None) -> None:
        if interval is None:
            return
        if interval < dt.timedelta(0) or interval > LONGEST_INTERVAL:
            self.excluded[name] += 1
        else:
            self.minutes[name].append(interval.total_seconds() / 60)

    def wait(self, since: dt.datetime) -> None:
        self.waiting += 1
        if self.oldest is None or since < self.oldest:
            self.oldest = since

    def stats(self, key: str, label: str, now: dt.datetime) -> GroupStats:
        intervals = {}
        for name, values in self.minutes.items():
            values.sort()
            intervals[name] = IntervalStats(
                count=len(values),
                excluded=self.excluded[name],
                median=percentile(values, 0.5) if values else None,
                p90=percentile(values, 0.9) if values else None,
                mean=statistics.fmean(values) if values else None,
            )
        oldest = None
        if self.oldest is not None:
            oldest = max((now - self.oldest).total_seconds() / 60, 0.0)
        return GroupStats(
            key=key,
            label=label,
            exams=self.exams,
            intervals=intervals,
            waiting=self.waiting,
            oldest_waiting=oldest,
        )


class _Exam(NamedTuple):
    modality: str
    created_at: dt.datetime
    images_at: dt.datetime
    preliminary_at: dt.datetime | None
    final_at: dt.datetime | None
    first_release_by: int | None
    first_final_by: int | None
    reader: int | None


def _exams(user: User, filters: TurnaroundFilter) -> Iterator[_Exam]:
    """The timestamps and signers of the exams counted, one row per exam (one report
    per order), streamed."""
    zone = timezone.get_current_timezone()
    start = dt.datetime.combine(filters.start, dt.time.min, zone)
    end = dt.datetime.combine(filters.end + dt.timedelta(days=1), dt.time.min, zone)
    versions = ReportVersion.objects.filter(report_id=OuterRef("reports__id")).order_by("number")
    orders = Order.objects.filter(
        facility_id__in=facility_ids(user),
        images_received_at__gte=start,
        images_received_at__lt=end,
    ).exclude(status=Order.Status.CANCELLED)
    if filters.facility:
        orders = orders.filter(facility_id=filters.facility)
    if filters.modality:
        orders = orders.filter(procedure__modality=filters.modality)
    # Report.signed_by stands in only for a report without versions (none are made
    # that way today): it is the *last* signer.
    rows = (
        orders.annotate(
            first_release_by=Coalesce(
                Subquery(versions.values("signed_by")[:1]),
                F("reports__signed_by"),
                output_field=BigIntegerField(),
            ),
            first_final_by=Coalesce(
                Subquery(versions.filter(status__in=REPORT_CLOSED).values("signed_by")[:1]),
                F("reports__signed_by"),
                output_field=BigIntegerField(),
            ),
        )
        .order_by()
        .values_list(
            "procedure__modality",
            "created_at",
            "images_received_at",
            "reports__preliminary_at",
            "reports__final_at",
            "first_release_by",
            "first_final_by",
            "reading_radiologist_id",
        )
    )
    for row in rows.iterator(chunk_size=2000):
        yield _Exam(*row)


def _days(filters: TurnaroundFilter) -> list[dt.date]:
    count = (filters.end - filters.start).days + 1
    return [filters.start + dt.timedelta(days=i) for i in range(count)]


def _modality_label(code: str) -> str:
    return f"{code} · {Modality(code).label}" if code in Modality.values else code


def _user_name(user: User) -> str:
    return user.get_full_name() or user.get_username()


def turnaround(
    *, user: User, filters: TurnaroundFilter, now: dt.datetime | None = None
) -> Turnaround:
    """The turnaround of the exams `filters` selects, of the facilities the user may see."""
    now = now or timezone.now()
    overall = _Group()
    modalities: dict[str, _Group] = defaultdict(_Group)
    readers: dict[int | None, _Group] = defaultdict(_Group)
    days: dict[dt.date, _Group] = {day: _Group() for day in _days(filters)}
    for exam in _exams(user, filters):
        to_images = exam.images_at - exam.created_at
        to_preliminary = exam.preliminary_at - exam.images_at if exam.preliminary_at else None
        to_final = exam.final_at - exam.images_at if exam.final_at else None
        day = timezone.localtime(exam.images_at).date()
        for group in (overall, modalities[exam.modality], days.setdefault(day, _Group())):
            group.exams += 1
            group.add(ORDER_TO_IMAGES, to_images)
            group.add(IMAGES_TO_PRELIMINARY, to_preliminary)
            group.add(IMAGES_TO_FINAL, to_final)
            if exam.final_at is None:
                group.wait(exam.images_at)
        touched: set[int | None] = set()
        if to_preliminary is not None:
            readers[exam.first_release_by].add(IMAGES_TO_PRELIMINARY, to_preliminary)
            touched.add(exam.first_release_by)
        if to_final is not None:
            readers[exam.first_final_by].add(IMAGES_TO_FINAL, to_final)
            touched.add(exam.first_final_by)
        else:
            readers[exam.reader].wait(exam.images_at)
            touched.add(exam.reader)
        for key in touched:
            readers[key].exams += 1

    names = {u.pk: _user_name(u) for u in User.objects.filter(pk__in=[k for k in readers if k])}
    by_radiologist = sorted(
        (
            group.stats(str(pk or ""), names.get(pk, NOT_CLAIMED) if pk else NOT_CLAIMED, now)
            for pk, group in readers.items()
        ),
        key=lambda g: (g.key == "", g.label.lower(), g.key),
    )
    return Turnaround(
        filters=filters,
        computed_at=now,
        overall=overall.stats("all", "All exams", now),
        by_modality=[
            modalities[code].stats(code, _modality_label(code), now) for code in sorted(modalities)
        ],
        by_radiologist=by_radiologist,
        by_day=[days[day].stats(day.isoformat(), day.isoformat(), now) for day in sorted(days)],
    )
