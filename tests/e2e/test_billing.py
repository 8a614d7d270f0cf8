"""The billing office in a real browser: reviews the charges an exam earned, holds one
with a reason, releases it, exports the ready ones as CSV and downloads the file again."""

import csv
import io

import pytest
from django.urls import reverse
from playwright.sync_api import expect

from billing.models import Charge, ChargeExport
from tests.e2e.conftest import screenshot
from tests.e2e.test_layout import has_horizontal_overflow, log_in
from tests.factories import (
    FeeFactory,
    PatientFactory,
    PatientInsuranceFactory,
    ProcedureFactory,
    exam_completed,
    order_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def charged(facility_a, tmp_path, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "exports")},
        },
    }
    procedure = ProcedureFactory(facility=facility_a, code="70450", name="CT head")
    orders = []
    for family in ("Alpha", "Beta"):
        patient = PatientFactory(facility=facility_a, family_name=family)
        insurance = PatientInsuranceFactory(patient=patient)
        FeeFactory(facility=facility_a, payer=insurance.payer, procedure_code="70450")
        orders.append(
            exam_completed(order_for(patient, procedure=procedure, diagnosis_codes="R51.9"))
        )
    return orders


def test_the_billing_office_reviews_and_exports_charges(page_factory, live_server, biller, charged):
    page = page_factory(1280, 900)
    log_in(page, live_server.url, biller.username)
    page.get_by_role("link", name="Charges").first.click()

    expect(page.locator(".charge-totals")).to_contain_text("2 charges, 650.00 billable")
    first = Charge.objects.get(order=charged[0])
    row = page.locator(f"#charge-{first.pk}")
    row.get_by_label(f"Reason for charge {first.pk}").fill("Check the code")
    row.get_by_role("button", name="Hold").click()
    expect(page.locator(f"#charge-{first.pk}")).to_contain_text("Held")
    expect(page.locator(f"#charge-{first.pk}")).to_contain_text("Check the code")

    page.locator(f"#charge-{first.pk}").get_by_role("button", name="Release").click()
    expect(page.locator(f"#charge-{first.pk}")).to_contain_text("Ready to bill")

    page.get_by_text("Export these charges").click()
    page.get_by_label("Format").select_option("csv")
    page.get_by_role("button", name="Export", exact=True).click()
    expect(page.locator(".messages")).to_contain_text("2 charges")
    assert ChargeExport.objects.get().row_count == 2
    assert set(Charge.objects.values_list("status", flat=True)) == {"exported"}

    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download").click()
    body = download_info.value.path().read_text()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert sorted(r["patient_name"].split(",")[0] for r in rows) == ["Alpha", "Beta"]
    assert sum(float(r["amount"]) for r in rows) == 650.0
    assert not has_horizontal_overflow(page)
    screenshot(page, "billing-exports")
    assert page.url.endswith(reverse("billing:export_list"))
