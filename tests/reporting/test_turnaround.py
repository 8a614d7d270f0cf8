"""Turnaround metrics: order → images → preliminary → final, per modality, radiologist
and day; who sees them; the page, its charts and its CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, User
from accounts.roles import Role
from ris.models import Order, Report
from ris.reporting import services as reporting
from ris.reporting import turnaround
from ris.reporting.turnaround import (
    IMAGES_TO_PRELIMINARY,
    ORDER_TO_IMAGES,
    TurnaroundFilter,
)
from ris.reporting.turnaround_views import CSV_COLUMNS
from tests.factories import (
    PatientFactory,
    ProcedureFactory,
    client_for,
    exam_read,
    member,
    order_for,
    report_signed,
    report_written,
    signature_of,
)

pytestmark = pytest.mark.django_db

# Noon yesterday (local): inside the default 30 days, far from midnight.
YESTERDAY = timezone.localdate() - dt.timedelta(days=1)
IMAGES_AT = dt.datetime.combine(YESTERDAY, dt.time(12), timezone.get_current_timezone())
NOW = IMAGES_AT + dt.timedelta(hours=6)
URL = reverse("reporting:turnaround")


def minutes(n: float) -> dt.timedelta:
    return dt.timedelta(minutes=n)


def exam(
    facility,
    *,
    modality: str = "CT",
    signer=None,
    ordered_before: float = 60,
    preliminary_after: float | None = None,
    final_after: float | None = None,
    images_at: dt.datetime = IMAGES_AT,
) -> Order:
    """An exam with known timestamps: signed final by `signer` when given, otherwise
    images in and nothing signed."""
    patient = PatientFactory(facility=facility)
    order = order_for(patient, procedure=ProcedureFactory(facility=facility, modality=modality))
    if signer is not None:
        report_signed(order, signer)
    else:
        exam_read(order)
    Order.objects.filter(pk=order.pk).update(
        created_at=images_at - minutes(ordered_before), images_received_at=images_at
    )
    if final_after is not None:
        Report.objects.filter(order=order).update(
            preliminary_at=images_at + minutes(preliminary_after or final_after),
            final_at=images_at + minutes(final_after),
        )
    return order


def last_30_days(**kwargs) -> TurnaroundFilter:
    return TurnaroundFilter.last_days(**kwargs)


@pytest.fixture
def rad2(facility_a):
    return member(facility_a, Role.RADIOLOGIST, username="rad2", first_name="Ann", last_name="Lee")


@pytest.fixture
def finals(facility_a, radiologist, rad2):
    """CT finals after 10, 20, 30 (rad), 40, 100 (rad2) minutes; MR after 60, 120 (rad)."""
    exam(facility_a, signer=radiologist, final_after=10, preliminary_after=5)
    exam(facility_a, signer=radiologist, final_after=20, preliminary_after=5)
    exam(facility_a, signer=radiologist, final_after=30, preliminary_after=15)
    exam(facility_a, signer=rad2, final_after=40, preliminary_after=15)
    exam(facility_a, signer=rad2, final_after=100, preliminary_after=25)
    exam(facility_a, modality="MR", signer=radiologist, final_after=60, ordered_before=30)
    exam(facility_a, modality="MR", signer=radiologist, final_after=120, ordered_before=90)


def by_key(groups):
    return {g.key: g for g in groups}


# ---- the numbers --------------------------------------------------------------------------


def test_the_median_p90_and_mean_of_each_modality_are_exact(radiologist, finals):
    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    ct, mr = by_key(result.by_modality)["CT"], by_key(result.by_modality)["MR"]
    assert ct.label == "CT · Computed tomography"
    assert (ct.exams, ct.final.count) == (5, 5)
    assert ct.final.median == 30
    assert ct.final.p90 == pytest.approx(76)  # 40 + 0.6 * (100 - 40)
    assert ct.final.mean == 40
    assert ct.intervals[IMAGES_TO_PRELIMINARY].median == 15
    assert ct.intervals[ORDER_TO_IMAGES].median == 60
    assert (mr.final.median, mr.final.p90, mr.final.mean) == (90, pytest.approx(114), 90)
    assert mr.intervals[ORDER_TO_IMAGES].median == 60
    assert mr.intervals[ORDER_TO_IMAGES].p90 == pytest.approx(84)
    assert result.overall.exams == 7
    assert result.overall.final.median == 40
    assert (result.overall.waiting, result.overall.excluded) == (0, 0)


def test_each_radiologist_gets_the_finals_they_signed(radiologist, rad2, finals):
    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    rows = by_key(result.by_radiologist)
    assert [g.label for g in result.by_radiologist] == ["Ann Lee", radiologist.get_full_name()]
    mine, hers = rows[str(radiologist.pk)], rows[str(rad2.pk)]
    assert (mine.final.count, mine.final.median, mine.final.mean) == (5, 30, 48)
    assert mine.final.p90 == pytest.approx(96)  # of 10, 20, 30, 60, 120
    assert (hers.final.count, hers.final.median, hers.final.p90) == (2, 70, pytest.approx(94))
    assert hers.intervals[ORDER_TO_IMAGES].count == 0  # not the radiologists' doing


def test_the_numbers_take_three_queries_however_many_exams(
    radiologist, finals, django_assert_num_queries
):
    user = User.objects.get(pk=radiologist.pk)  # its roles not read yet

    with django_assert_num_queries(3):  # the user's roles, the exams, the signers' names
        turnaround.turnaround(user=user, filters=last_30_days(), now=NOW)


def test_the_turnaround_to_final_stays_with_who_signed_the_first_final(
    facility_a, radiologist, rad2
):
    order = exam(facility_a, signer=radiologist, final_after=45)
    report = Report.objects.get(order=order)
    reporting.report_correct(
        report=report,
        sections=[{"title": "", "text": "Corrected words."}],
        actor=rad2,
        signature=signature_of(rad2),
        reason="Wrong side.",
    )
    assert Report.objects.get(pk=report.pk).signed_by == rad2  # the trap

    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    rows = by_key(result.by_radiologist)
    assert set(rows) == {str(radiologist.pk)}
    assert rows[str(radiologist.pk)].final.median == 45
    assert result.overall.final.median == 45  # the correction does not move final_at


def test_negative_and_absurd_intervals_are_counted_as_excluded_not_averaged(
    facility_a, radiologist
):
    exam(facility_a, signer=radiologist, final_after=30)
    exam(facility_a, signer=radiologist, final_after=50, ordered_before=-20)  # images first
    exam(facility_a, signer=radiologist, final_after=-5)  # final before the images
    exam(facility_a, signer=radiologist, final_after=20, ordered_before=400 * 24 * 60)

    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    order_to_images = result.overall.intervals[ORDER_TO_IMAGES]
    assert (order_to_images.count, order_to_images.excluded) == (2, 2)
    assert order_to_images.median == 60
    final = result.overall.final
    assert (final.count, final.excluded, final.median) == (3, 1, 30)
    assert by_key(result.by_radiologist)[str(radiologist.pk)].final.excluded == 1
    assert result.overall.excluded == 4  # and the preliminary before the images


def test_exams_without_a_final_are_waiting_with_the_age_of_the_oldest(facility_a, radiologist):
    exam(facility_a, signer=radiologist, final_after=30)
    exam(facility_a, images_at=IMAGES_AT - dt.timedelta(hours=3))  # nobody claimed it
    claimed = exam(facility_a, images_at=IMAGES_AT - dt.timedelta(hours=1))
    report_written(claimed, radiologist)  # a draft: claimed, not final
    preliminary = exam(facility_a, images_at=IMAGES_AT)
    report_signed(preliminary, radiologist, status=Report.Status.PRELIMINARY)
    Report.objects.filter(order=preliminary).update(preliminary_at=IMAGES_AT + minutes(20))

    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    assert (result.overall.exams, result.overall.waiting) == (4, 3)
    assert result.overall.oldest_waiting == 9 * 60
    assert result.overall.oldest_waiting_text == "9 h"
    rows = by_key(result.by_radiologist)
    assert rows[""].label == "Not claimed"
    assert (rows[""].waiting, rows[""].oldest_waiting) == (1, 9 * 60)
    mine = rows[str(radiologist.pk)]
    assert (mine.waiting, mine.oldest_waiting) == (2, 7 * 60)
    assert mine.intervals[IMAGES_TO_PRELIMINARY].count == 2  # the final and the preliminary
    assert result.by_radiologist[-1].key == ""  # "Not claimed" comes last


def test_exams_are_counted_by_the_day_their_images_came_in(facility_a, radiologist):
    exam(facility_a, signer=radiologist, final_after=30)
    exam(facility_a, signer=radiologist, final_after=90)
    exam(facility_a, signer=radiologist, final_after=10, images_at=IMAGES_AT - dt.timedelta(2))
    exam(facility_a, signer=radiologist, final_after=10, images_at=IMAGES_AT - dt.timedelta(40))

    result = turnaround.turnaround(user=radiologist, filters=last_30_days(), now=NOW)

    days = by_key(result.by_day)
    assert len(result.by_day) == 30
    assert (days[YESTERDAY.isoformat()].exams, days[YESTERDAY.isoformat()].final.median) == (2, 60)
    assert days[(YESTERDAY - dt.timedelta(2)).isoformat()].exams == 1
    assert result.overall.exams == 3  # the one of 40 days ago is outside


def test_filters_narrow_to_a_modality_and_a_facility(facility_a, radiologist, finals):
    result = turnaround.turnaround(
        user=radiologist, filters=last_30_days(modality="MR", facility=facility_a.pk), now=NOW
    )

    assert [g.key for g in result.by_modality] == ["MR"]
    assert result.overall.exams == 2


def test_a_radiologist_of_another_facility_sees_nothing_of_ours(facility_b, finals):
    outsider = member(facility_b, Role.RADIOLOGIST, username="rad_b")

    result = turnaround.turnaround(user=outsider, filters=last_30_days(), now=NOW)

    assert result.overall.exams == 0
    assert result.by_modality == [] and result.by_radiologist == []
    response = client_for(outsider).get(URL)
    assert response.status_code == 200
    assert response.context["metrics"].overall.exams == 0
    assert "CT · Computed tomography" not in response.content.decode()


@pytest.mark.parametrize(
    ("minutes_", "text"),
    [
        (None, "—"),
        (0, "0 min"),
        (0.3, "< 1 min"),
        (45, "45 min"),
        (60, "1 h"),
        (85, "1 h 25 min"),
        (3 * 1440 + 4 * 60 + 10, "3 d 4 h"),
        (2 * 1440, "2 d"),
    ],
)
def test_durations_read_as_people_say_them(minutes_, text):
    assert turnaround.duration_text(minutes_) == text


# ---- the page -----------------------------------------------------------------------------


def test_the_page_shows_tables_and_one_bar_per_group_and_is_audited(radiologist, finals):
    response = client_for(radiologist).get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    modality_svg = page.split('id="tat-modality-title"')[1].split("</svg>")[0]
    radiologist_svg = page.split('id="tat-radiologist-title"')[1].split("</svg>")[0]
    assert modality_svg.count('<g class="tat-row">') == 2
    assert radiologist_svg.count('<g class="tat-row">') == 2
    assert '<desc id="tat-modality-desc">' in page
    assert "CT · Computed tomography: median 30 min, 90th percentile 1 h 16 min" in page
    assert page.count('<rect class="tat-volume"') == 30 + 1  # a bar a day, and the legend
    assert "1 h 30 min" in page  # MR's median in its table
    assert " style=" not in page.split("<main")[1]
    event = AuditEvent.objects.filter(object_type="turnaround").get()
    assert event.action == AuditEvent.Action.VIEW
    assert event.detail["query"]["from"] == (YESTERDAY - dt.timedelta(28)).isoformat()


def test_the_csv_carries_the_same_table(radiologist, finals):
    response = client_for(radiologist).get(URL, {"format": "csv", "modality": "CT"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0]) == CSV_COLUMNS
    assert CSV_COLUMNS[:3] == ["grouping", "group", "exams"]
    ct = next(r for r in rows if r["grouping"] == "modality")
    assert ct["group"] == "CT · Computed tomography"
    assert ct["images_to_final_count"] == "5"
    assert (ct["images_to_final_median_min"], ct["images_to_final_p90_min"]) == ("30.0", "76.0")
    assert ct["images_to_final_excluded"] == "0"
    assert [r["grouping"] for r in rows].count("day") == 30
    assert AuditEvent.objects.get(object_type="turnaround").action == AuditEvent.Action.EXPORT


def test_a_facility_administrator_sees_the_page(facility_admin, finals):
    response = client_for(facility_admin).get(URL)

    assert response.status_code == 200
    assert response.context["metrics"].overall.exams == 7


def test_the_front_desk_is_refused(clerk):
    assert client_for(clerk).get(URL).status_code == 403


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2026-13-45"},
        {"from": "yesterday"},
        {"from": "2026-03-10", "to": "2026-03-01"},
        {"from": "2024-01-01", "to": "2026-01-01"},
        {"modality": "XX"},
        {"facility": "abc"},
    ],
)
def test_bad_filters_answer_400_with_the_errors(radiologist, query):
    response = client_for(radiologist).get(URL, query)

    assert response.status_code == 400
    assert 'class="error tat-errors"' in response.content.decode()
    assert not AuditEvent.objects.filter(object_type="turnaround").exists()


def test_a_facility_the_user_does_not_read_at_is_a_bad_filter(radiologist, facility_b):
    assert client_for(radiologist).get(URL, {"facility": facility_b.pk}).status_code == 400
