"""The billing dashboard: revenue and volume per month, modality, procedure, payer and
status; who sees it; the page, its charts and its CSV."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, Facility, Membership, User
from accounts.roles import Capability, Role
from accounts.scoping import facility_ids_for
from billing import dashboard
from billing.dashboard import DashboardFilter
from billing.dashboard_views import CSV_COLUMNS
from billing.models import Charge, Payer
from ris.models import Order, Procedure
from tests.factories import (
    FacilityFactory,
    PatientFactory,
    PayerFactory,
    ProcedureFactory,
    client_for,
    member,
    order_for,
)

pytestmark = pytest.mark.django_db

Status = Charge.Status
URL = reverse("billing:dashboard")
FIRST_HALF_2025 = DashboardFilter(start=dt.date(2025, 1, 1), end=dt.date(2025, 6, 30))
JAN, FEB, MAR = dt.date(2025, 1, 15), dt.date(2025, 2, 10), dt.date(2025, 3, 3)
_keys = itertools.count()


def procedure(facility: Facility, code: str = "70450", modality: str = "CT") -> Procedure:
    found = Procedure.objects.filter(facility=facility, code=code).first()
    return found or ProcedureFactory(
        facility=facility, code=code, modality=modality, name=f"Exam {code}"
    )


def exam(facility: Facility, code: str = "70450", modality: str = "CT") -> Order:
    return order_for(
        PatientFactory(facility=facility), procedure=procedure(facility, code, modality)
    )


def charge(
    order: Order,
    amount: str | None = "100.00",
    *,
    on: dt.date = JAN,
    status: str = Status.READY,
    payer: Payer | None = None,
    adjusts: Charge | None = None,
    component: str = Charge.Component.GLOBAL,
) -> Charge:
    return Charge.objects.create(
        facility=order.facility,
        order=order,
        patient=order.patient,
        payer=payer,
        component=component,
        procedure_code=order.procedure.code,
        amount=Decimal(amount) if amount is not None else None,
        units=-1 if adjusts else 1,
        service_date=on,
        status=status,
        capture_key=f"test:{next(_keys)}",
        adjusts=adjusts,
    )


def reversal_of(original: Charge, status: str = Status.READY) -> Charge:
    return charge(
        original.order,
        str(-original.amount),
        on=original.service_date,
        status=status,
        payer=original.payer,
        adjusts=original,
    )


def numbers(user: User, filters: DashboardFilter = FIRST_HALF_2025) -> dashboard.Dashboard:
    return dashboard.dashboard(user=user, filters=filters)


def by_key(groups):
    return {g.key: g for g in groups}


# ---- the numbers --------------------------------------------------------------------------


def test_revenue_per_month_is_the_sum_of_the_charges_not_void(biller, facility_a):
    ct = exam(facility_a)
    charge(ct, "100.00", component=Charge.Component.TECHNICAL)
    charge(ct, "250.50", component=Charge.Component.PROFESSIONAL)
    charge(exam(facility_a), "80.25", on=FEB)
    charge(exam(facility_a), "999.00", on=FEB, status=Status.VOID)
    charge(exam(facility_a), "500.00", on=dt.date(2024, 12, 31))  # before the range

    result = numbers(biller)

    months = [(g.key, g.revenue, g.exams, g.charges) for g in result.by_month]
    assert months == [
        ("2025-01", Decimal("350.50"), 1, 2),
        ("2025-02", Decimal("80.25"), 1, 1),
        ("2025-03", Decimal("0.00"), 0, 0),
        ("2025-04", Decimal("0.00"), 0, 0),
        ("2025-05", Decimal("0.00"), 0, 0),
        ("2025-06", Decimal("0.00"), 0, 0),
    ]
    overall = result.overall
    assert (overall.revenue, overall.exams, overall.charges) == (Decimal("430.75"), 2, 3)
    assert result.voided == 1


def test_a_reversal_subtracts_and_its_cancelled_exam_is_no_longer_counted(biller, facility_a):
    billed = charge(exam(facility_a), "300.00", status=Status.EXPORTED)
    reversal_of(billed)
    kept = charge(exam(facility_a), "120.00", status=Status.EXPORTED)
    reversal_of(kept, status=Status.VOID)  # the office voided the reversal: it stands

    result = numbers(biller)

    january = result.by_month[0]
    assert january.revenue == Decimal("120.00")
    assert (january.exams, january.charges, january.reversals) == (1, 1, 1)
    statuses = by_key(result.by_status)
    assert statuses[Status.EXPORTED].revenue == Decimal("420.00")
    assert statuses[Status.READY].revenue == Decimal("-300.00")  # a credit still to send
    assert result.still_to_bill == Decimal("-300.00")
    assert result.billed == Decimal("420.00")


def test_charges_without_a_price_are_counted_apart_not_added_as_zero(biller, facility_a):
    charge(exam(facility_a), "200.00")
    charge(exam(facility_a, "71250"), None)
    charge(exam(facility_a, "71250"), None, status=Status.VOID)

    result = numbers(biller)

    assert result.overall.revenue == Decimal("200.00")
    assert (result.overall.exams, result.overall.charges) == (2, 2)
    assert result.overall.no_price == 1
    unpriced = by_key(result.by_procedure)["71250"]
    assert (unpriced.revenue, unpriced.no_price, unpriced.exams) == (Decimal("0.00"), 1, 1)


def test_procedures_past_the_top_15_are_one_other_row(biller, facility_a):
    for n in range(1, 18):  # 17 procedures earning 100, 200, ... 1700
        charge(exam(facility_a, f"7{n:04d}"), f"{n * 100}.00")

    rows = numbers(biller).by_procedure

    assert len(rows) == 16
    assert [r.key for r in rows[:3]] == ["70017", "70016", "70015"]
    assert rows[0].label == "70017 · Exam 70017"
    other = rows[-1]
    assert (other.key, other.label) == ("other", "Other (2 procedures)")
    assert (other.revenue, other.exams, other.charges) == (Decimal("300.00"), 2, 2)


def test_modalities_and_payers_and_self_pay_get_rows_of_their_own(biller, facility_a):
    acme = PayerFactory(facility=facility_a, name="Acme Health")
    charge(exam(facility_a), "400.00", payer=acme)
    charge(exam(facility_a, "70551", "MR"), "900.00", payer=acme)
    charge(exam(facility_a, "76700", "US"), "150.00")
    charge(exam(facility_a, "76700", "US"), "50.00", on=FEB)

    result = numbers(biller)

    payers = [(g.key, g.label, g.revenue, g.exams) for g in result.by_payer]
    assert payers == [
        (str(acme.pk), "Acme Health", Decimal("1300.00"), 2),
        ("self", "Self-pay", Decimal("200.00"), 2),
    ]
    modalities = [(g.label, g.revenue, g.exams) for g in result.by_modality]
    assert modalities == [
        ("MR · Magnetic resonance", Decimal("900.00"), 1),
        ("CT · Computed tomography", Decimal("400.00"), 1),
        ("US · Ultrasound", Decimal("200.00"), 2),
    ]


def test_the_status_table_says_what_is_billed_and_what_is_still_to_bill(biller, facility_a):
    charge(exam(facility_a), "500.00", status=Status.EXPORTED)
    charge(exam(facility_a), "200.00", status=Status.READY)
    charge(exam(facility_a), "30.00", status=Status.PENDING)
    charge(exam(facility_a), "7.00", status=Status.HELD)

    result = numbers(biller)

    rows = [(g.label, g.revenue, g.charges) for g in result.by_status]
    assert rows == [
        ("Exported", Decimal("500.00"), 1),
        ("Ready to bill", Decimal("200.00"), 1),
        ("Needs review", Decimal("30.00"), 1),
        ("Held", Decimal("7.00"), 1),
    ]
    assert result.still_to_bill == Decimal("237.00")


def test_the_numbers_take_six_queries_however_many_charges(
    biller, facility_a, django_assert_num_queries
):
    for n in range(12):
        charge(exam(facility_a, f"7{n % 5:04d}"), "10.00", on=JAN + dt.timedelta(days=n * 9))
    facility_ids_for(biller, Capability.VIEW_BILLING)  # the roles, read once per user

    with django_assert_num_queries(6):  # overall, month, modality, procedure, payer, status
        result = numbers(biller)

    assert result.overall.charges == 12


def test_a_biller_of_another_facility_sees_none_of_its_charges(facility_a, facility_b):
    charge(exam(facility_a), "100.00", payer=PayerFactory(facility=facility_a))
    theirs = member(facility_b, Role.BILLING, username="south-biller")

    result = numbers(theirs)

    assert result.overall.revenue == Decimal("0.00")
    assert (result.by_modality, result.by_procedure, result.by_payer) == ([], [], [])
    page = client_for(theirs).get(URL, {"from": "2025-01-01", "to": "2025-06-30"})
    assert page.status_code == 200
    assert "Exam 70450" not in page.content.decode()


def test_billers_and_facility_admins_see_the_page_and_a_clerk_is_refused(
    biller, clerk, facility_admin
):
    assert client_for(biller).get(URL).status_code == 200
    assert client_for(facility_admin).get(URL).status_code == 200
    assert client_for(clerk).get(URL).status_code == 403
    assert not AuditEvent.objects.filter(object_type="billing_dashboard", user=clerk).exists()


# ---- the page -----------------------------------------------------------------------------


def test_the_page_draws_one_bar_a_month_of_the_last_13_and_is_audited(biller, facility_a):
    today = timezone.localdate()
    charge(exam(facility_a), "1234.50", on=today)

    response = client_for(biller).get(URL)

    assert response.status_code == 200
    page = response.content.decode()
    month_svg = page.split('id="bdash-month-title"')[1].split("</svg>")[0]
    assert month_svg.count('<rect class="bdash-month-bar') == 13
    assert '<desc id="bdash-month-desc">' in page
    assert f"{today:%Y-%m}: revenue 1,234.50, 1 exam" in month_svg
    assert '<title id="bdash-payer-title">Revenue per payer</title>' in page
    assert '<th scope="row">Self-pay</th>' in page
    assert " style=" not in page.split("<main")[1]
    assert "<script" not in page.split("<main")[1]
    event = AuditEvent.objects.filter(object_type="billing_dashboard").get()
    assert event.action == AuditEvent.Action.VIEW
    assert event.user == biller
    start = dashboard.month_start(today, 12)
    assert event.detail["query"] == {
        "from": start.isoformat(),
        "to": today.isoformat(),
        "facility": None,
    }


def test_36_months_are_allowed_and_each_gets_its_bar(biller):
    response = client_for(biller).get(URL, {"from": "2023-01-01", "to": "2025-12-31"})

    assert response.status_code == 200
    month_svg = response.content.decode().split('id="bdash-month-title"')[1].split("</svg>")[0]
    assert month_svg.count('<rect class="bdash-month-bar') == 36


def test_the_csv_carries_the_same_tables_and_no_formulas(biller, facility_a):
    sly = PayerFactory(facility=facility_a, name='=HYPERLINK("http://x","y")')
    minus = PayerFactory(facility=facility_a, name="-Minus Mutual")
    charge(exam(facility_a), "100.00", payer=sly)
    charge(exam(facility_a, "70551", "MR"), "40.00", payer=minus, on=FEB)
    charge(exam(facility_a), None, on=FEB)

    response = client_for(biller).get(
        URL, {"from": "2025-01-01", "to": "2025-03-31", "format": "csv"}
    )

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert 'filename="billing-2025-01-01-2025-03-31.csv"' in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert list(rows[0]) == CSV_COLUMNS
    table = {(r["grouping"], r["group"]): r for r in rows}
    assert table["overall", "All charges"]["revenue"] == "140.00"
    assert table["overall", "All charges"]["no_price"] == "1"
    assert [r["group"] for r in rows if r["grouping"] == "month"] == [
        "2025-01",
        "2025-02",
        "2025-03",
    ]
    assert table["month", "2025-02"]["revenue"] == "40.00"
    assert table["month", "2025-02"]["exams"] == "2"
    assert table["payer", '\'=HYPERLINK("http://x","y")']["revenue"] == "100.00"
    assert table["payer", "'-Minus Mutual"]["revenue"] == "40.00"
    assert table["payer", "Self-pay"]["no_price"] == "1"
    assert table["status", "Ready to bill"]["charges"] == "3"
    event = AuditEvent.objects.filter(object_type="billing_dashboard").get()
    assert event.action == AuditEvent.Action.EXPORT


def test_the_facility_filter_keeps_to_one_facility(facility_a):
    second = FacilityFactory(name="East Annex", code="EAST")
    member_of_both = member(second, Role.BILLING, username="both")
    Membership.objects.create(user=member_of_both, facility=facility_a, role=Role.BILLING)
    charge(exam(facility_a), "100.00")
    charge(exam(second), "7.00")

    everything = client_for(member_of_both).get(URL, {"from": "2025-01-01", "to": "2025-06-30"})
    east = client_for(member_of_both).get(
        URL, {"from": "2025-01-01", "to": "2025-06-30", "facility": second.pk, "format": "csv"}
    )

    assert 'name="facility"' in everything.content.decode()
    rows = list(csv.DictReader(io.StringIO(east.content.decode())))
    assert rows[0]["revenue"] == "7.00"


@pytest.mark.parametrize(
    "query",
    [
        {"from": "yesterday"},
        {"to": "2025-13-01"},
        {"from": "2025-03-10", "to": "2025-03-01"},
        {"from": "2023-01-01", "to": "2026-01-01"},  # 37 months
        {"to": "0001-01-05"},  # no month twelve before it
        {"facility": "abc"},
    ],
)
def test_bad_filters_answer_400_with_the_errors(biller, query):
    response = client_for(biller).get(URL, query)

    assert response.status_code == 400
    assert 'class="error bdash-errors"' in response.content.decode()
    assert not AuditEvent.objects.filter(object_type="billing_dashboard").exists()


def test_a_facility_that_is_not_theirs_is_a_bad_filter(biller, facility_b):
    charge(exam(facility_b), "100.00")

    response = client_for(biller).get(URL, {"facility": facility_b.pk, "format": "csv"})

    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")
