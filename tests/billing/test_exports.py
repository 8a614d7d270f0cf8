"""Charge exports: CSV, XLSX and X12 837P; recorded, marking charges exported so they are
never billed twice, and downloaded again byte for byte."""

from __future__ import annotations

import csv
import hashlib
import io
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.roles import Role
from billing import exports, selectors
from billing.models import BillingProfile, Charge, ChargeExport
from tests.billing.test_x12 import validate
from tests.factories import (
    FeeFactory,
    PatientFactory,
    PatientInsuranceFactory,
    ProcedureFactory,
    client_for,
    exam_completed,
    member,
    order_for,
)

pytestmark = pytest.mark.django_db

Status = Charge.Status


@pytest.fixture(autouse=True)
def export_store(settings, tmp_path):
    settings.STORAGES = {
        **settings.STORAGES,
        "exports": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "exports")},
        },
    }


@pytest.fixture
def payer_charges(facility_a):
    """Three completed exams of insured patients (technical charges, ready) and one of a
    patient without insurance (pending)."""
    procedure = ProcedureFactory(facility=facility_a, code="70450")
    made = []
    payer = None
    for number in range(3):
        patient = PatientFactory(
            facility=facility_a,
            family_name="=HYPERLINK" if number == 0 else f"Doe{number}",
            address_street="1 Main St",
            address_city="Springfield",
            address_state="IL",
            address_postal_code="62701",
        )
        insurance = PatientInsuranceFactory(patient=patient, **({"payer": payer} if payer else {}))
        payer = insurance.payer
        made.append(
            exam_completed(order_for(patient, procedure=procedure, diagnosis_codes="R51.9"))
        )
    FeeFactory(facility=facility_a, payer=payer, procedure_code="70450")
    uninsured = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    exam_completed(uninsured)
    # The fee came after the captures: look the prices up again.
    from billing import services

    for charge in Charge.objects.all():
        if charge.payer_id:
            services.charge_reprice(charge=charge, user=member(facility_a, Role.BILLING))
    return payer


@pytest.fixture
def claims_set_up(facility_a, payer_charges) -> BillingProfile:
    """What an 837P needs beyond the charges: the facility's NPI and billing profile, the
    payer's id."""
    facility_a.npi = "1234567893"
    facility_a.save()
    payer_charges.payer_identifier = "ACME1"
    payer_charges.save()
    return BillingProfile.objects.create(
        facility=facility_a,
        tax_id="123456789",
        address_line1="1 Clinic Way",
        city="Springfield",
        state="IL",
        postal_code="627011234",
        sender_id="RADPACS",
        receiver_id="CLEARHOUSE",
        receiver_name="Clearing House",
        contact_phone="2175550100",
    )


def export(biller, facility_a, fmt="csv", **kwargs):
    return exports.export_charges(
        user=biller,
        facility_id=facility_a.pk,
        charges=selectors.charges(user=biller),
        fmt=fmt,
        filters={"status": "ready"},
        **kwargs,
    )


def read(export_row: ChargeExport) -> bytes:
    with exports.open_export(export_row) as data:
        return data.read()


def test_a_csv_export_bills_the_ready_charges_once(payer_charges, biller, facility_a):
    result = export(biller, facility_a)

    made = result.export
    assert (made.row_count, made.total) == (3, Decimal("975.00"))
    assert Charge.objects.filter(status=Status.EXPORTED, export=made).count() == 3
    assert Charge.objects.filter(status=Status.PENDING).count() == 1  # not billed
    rows = list(csv.DictReader(io.StringIO(read(made).decode())))
    assert list(rows[0]) == exports.COLUMNS
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal("975.00")
    assert {r["modifiers"] for r in rows} == {"TC"}
    assert any(r["patient_name"].startswith("'=HYPERLINK") for r in rows)  # no formulas
    with pytest.raises(exports.ExportError, match="nothing was exported"):
        export(biller, facility_a)
    event = AuditEvent.objects.get(object_type="chargeexport", action="export")
    assert event.detail["rows"] == 3 and event.detail["sha256"] == made.sha256
    exported_patients = set(Charge.objects.filter(export=made).values_list("patient_id", flat=True))
    assert set(event.patients.values_list("patient_id", flat=True)) == exported_patients


def test_a_report_export_marks_nothing(payer_charges, biller, facility_a):
    result = export(biller, facility_a, mark=False)

    assert result.export.row_count == 4
    assert not Charge.objects.filter(status=Status.EXPORTED).exists()


def test_an_xlsx_export_opens_with_the_columns_and_the_total(payer_charges, biller, facility_a):
    from openpyxl import load_workbook

    made = export(biller, facility_a, fmt="xlsx").export

    sheet = load_workbook(io.BytesIO(read(made)), read_only=True)["Charges"]
    rows = list(sheet.iter_rows(values_only=True))
    assert list(rows[0]) == exports.COLUMNS
    assert len(rows) == 4
    assert sum(row[exports.COLUMNS.index("amount")] for row in rows[1:]) == 975.0


def test_a_past_export_downloads_byte_for_byte(payer_charges, biller, facility_a):
    made = export(biller, facility_a).export
    client = client_for(biller)

    response = client.get(reverse("billing:export_download", args=[made.pk]))

    body = b"".join(response.streaming_content)
    assert hashlib.sha256(body).hexdigest() == made.sha256
    assert body == read(made)
    assert "charges-" in response["Content-Disposition"]


def test_claims_go_out_as_an_837p_batch_per_payer(payer_charges, biller, facility_a, claims_set_up):
    result = export(biller, facility_a, fmt="837p", payer=payer_charges)

    text = read(result.export).decode("ascii")
    segments = validate(text)
    assert [s[0] for s in segments].count("CLM") == 3
    assert result.export.row_count == 3 and result.problems == ()
    assert any(s[0] == "NM1" and s[1] == "PR" and s[-1] == "ACME1" for s in segments)
    assert Charge.objects.filter(status=Status.EXPORTED).count() == 3


def test_an_837p_needs_the_billing_profile_and_a_payer(payer_charges, biller, facility_a):
    with pytest.raises(exports.ExportError, match="billing profile"):
        export(biller, facility_a, fmt="837p", payer=payer_charges)
    BillingProfile.objects.create(facility=facility_a, sender_id="A", receiver_id="B")
    with pytest.raises(exports.ExportError, match="Billing profile or payer: "):
        export(biller, facility_a, fmt="837p", payer=payer_charges)
    with pytest.raises(exports.ExportError, match="payer"):
        export(biller, facility_a, fmt="837p")
    assert not ChargeExport.objects.exists()
    assert not Charge.objects.filter(status=Status.EXPORTED).exists()


def test_a_claim_that_cannot_be_made_stays_ready_and_is_named(
    payer_charges, biller, facility_a, claims_set_up
):
    broken = Charge.objects.filter(status=Status.READY).order_by("id").first()
    broken.patient.birth_date = None
    broken.patient.save()

    result = export(biller, facility_a, fmt="837p", payer=payer_charges)

    assert result.export.row_count == 2
    assert len(result.problems) == 1 and broken.order.accession_number in result.problems[0]
    broken.refresh_from_db()
    assert broken.status == Status.READY


def test_exports_are_made_by_the_billing_office_from_the_review_page(
    payer_charges, biller, facility_a, facility_b
):
    client = client_for(biller)
    response = client.post(
        reverse("billing:export_create") + "?status=ready",
        {"format": "csv", "facility": facility_a.pk, "mark": "on"},
    )
    assert response.status_code == 302
    made = ChargeExport.objects.get()
    assert made.filters == {"status": "ready"}
    listed = client.get(reverse("billing:export_list")).content.decode()
    assert reverse("billing:export_download", args=[made.pk]) in listed

    admin = client_for(member(facility_a, Role.ADMIN, username="boss"))
    far = client_for(member(facility_b, Role.BILLING, username="far"))
    assert admin.post(reverse("billing:export_create"), {"format": "csv"}).status_code == 403
    assert far.get(reverse("billing:export_download", args=[made.pk])).status_code == 404


def test_a_large_837p_is_written_in_interchanges_of_bounded_size(
    payer_charges, biller, facility_a, monkeypatch, claims_set_up
):
    from billing import x12

    monkeypatch.setattr(x12, "MAX_CLAIMS_PER_TRANSACTION", 2)

    result = export(biller, facility_a, fmt="837p", payer=payer_charges)

    text = read(result.export).decode("ascii")
    interchanges = ["ISA" + part for part in text.split("ISA")[1:]]
    assert len(interchanges) == 2
    numbers = [validate(part)[0][13] for part in interchanges]
    assert numbers == ["000000001", "000000002"]
    assert sum(part.count("CLM*") for part in interchanges) == 3
    assert BillingProfile.objects.get().interchange_counter == 2
