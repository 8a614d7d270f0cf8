"""Charge capture (technical at completion, professional or global at the final report),
its idempotency, adjustments, and the billing office's review."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from accounts.roles import Role
from billing import services
from billing.models import Charge
from ris.models import Order, Report
from ris.reporting import services as reporting
from ris.services import order_status_set
from tests.factories import (
    FeeFactory,
    PatientFactory,
    PatientInsuranceFactory,
    ProcedureFactory,
    client_for,
    exam_completed,
    exam_read,
    member,
    order_for,
    report_signed,
    signature_of,
)

pytestmark = pytest.mark.django_db

Status = Charge.Status
Component = Charge.Component


@pytest.fixture
def radiologist(facility_a):
    return member(
        facility_a,
        Role.RADIOLOGIST,
        username="rad",
        npi="1234567893",
        first_name="Ann",
        last_name="Reader",
    )


@pytest.fixture
def insured(facility_a):
    patient = PatientFactory(facility=facility_a)
    insurance = PatientInsuranceFactory(patient=patient, member_id="MEM1")
    FeeFactory(
        facility=facility_a,
        payer=insurance.payer,
        procedure_code="70450",
        technical_price="300.00",
        professional_price="90.00",
        global_price="390.00",
    )
    FeeFactory(facility=facility_a, payer=None, procedure_code="70450")
    return patient


@pytest.fixture
def order(insured, facility_a) -> Order:
    procedure = ProcedureFactory(facility=facility_a, code="70450")
    return order_for(insured, procedure=procedure, diagnosis_codes="R51.9")


def charges(order: Order) -> list[Charge]:
    return list(Charge.objects.filter(order=order).order_by("id"))


def test_completing_an_exam_captures_its_technical_charge(order, insured):
    exam_completed(order)

    (charge,) = charges(order)
    assert (charge.component, charge.procedure_code, charge.modifiers) == (
        Component.TECHNICAL,
        "70450",
        "TC",
    )
    assert charge.amount == Decimal("300.00")  # the payer's schedule, not the standard one
    assert (charge.payer, charge.member_id) == (insured.insurance.get().payer, "MEM1")
    assert charge.diagnosis_codes == "R51.9"
    assert charge.status == Status.READY
    assert charge.service_date == dt.date.today()
    assert charge.place_of_service == "22"


def test_a_final_report_captures_the_professional_charge_rendered_by_its_signer(order, radiologist):
    report_signed(exam_read(order), radiologist)

    technical, professional = charges(order)
    assert technical.component == Component.TECHNICAL
    assert (professional.component, professional.modifiers) == (Component.PROFESSIONAL, "26")
    assert professional.amount == Decimal("90.00")
    assert (professional.rendering_name, professional.rendering_npi) == (
        "Ann Reader",
        "1234567893",
    )
    assert professional.status == Status.READY


def test_a_facility_billing_globally_gets_one_global_charge_at_the_final_report(
    order, radiologist, facility_a
):
    facility_a.bills_globally = True
    facility_a.save()

    exam_read(order)
    assert charges(order) == []
    report_signed(order, radiologist)

    (charge,) = charges(order)
    assert (charge.component, charge.modifiers, charge.amount) == (
        Component.GLOBAL,
        "",
        Decimal("390.00"),
    )


def test_replays_never_make_a_second_charge(order, radiologist):
    report = report_signed(exam_read(order), radiologist)

    order_status_set(order=order, status=Order.Status.FINAL)  # the same status again
    services.charges_on_exam_status(order=order, status=Order.Status.COMPLETED, door="hl7")
    report.refresh_from_db()
    services.charges_on_report(report=report, door="page")

    assert len(charges(order)) == 2


def test_missing_data_is_flagged_and_holds_the_charge_for_review(facility_a, radiologist):
    uninsured = PatientFactory(facility=facility_a)
    no_price = ProcedureFactory(facility=facility_a, code="99999")
    order = order_for(uninsured, procedure=no_price)
    radiologist.npi = ""
    radiologist.save()

    report_signed(exam_read(order), radiologist)

    technical, professional = charges(order)
    assert technical.status == Status.PENDING
    assert technical.missing == ["no diagnosis", "no insurance", "no price"]
    assert professional.missing == ["no diagnosis", "no insurance", "no price", "no rendering NPI"]
    assert professional.status_reason == "no diagnosis, no insurance, no price, no rendering NPI"


def test_a_cancelled_exam_voids_what_was_not_billed_and_reverses_what_was(order, facility_a):
    exam_completed(order)
    (charge,) = charges(order)
    Charge.objects.filter(pk=charge.pk).update(status=Status.EXPORTED)

    services.charges_void_for_order(order=order, reason="billed in error", door="page")
    services.charges_void_for_order(order=order, reason="again", door="page")

    original, reversal = charges(order)
    assert original.status == Status.EXPORTED  # billed stays billed
    assert reversal.adjusts == original
    assert reversal.amount == -original.amount and reversal.units == -1
    assert reversal.status == Status.READY


def test_a_report_corrected_after_billing_flags_the_professional_charge(order, radiologist):
    report = report_signed(exam_read(order), radiologist)
    Charge.objects.filter(component=Component.PROFESSIONAL).update(status=Status.EXPORTED)

    reporting.report_correct(
        report=report,
        sections=[{"title": "", "text": "Corrected."}],
        actor=radiologist,
        signature=signature_of(radiologist),
        reason="typo",
    )

    professional = Charge.objects.get(component=Component.PROFESSIONAL)
    assert "replacement (frequency 7)" in professional.status_reason
    assert Report.objects.get().status == Report.Status.CORRECTED


# ---- review -------------------------------------------------------------------------------------


def test_the_office_holds_releases_and_voids_with_reasons_audited(order, biller):
    exam_completed(order)
    (charge,) = charges(order)

    with pytest.raises(services.BillingError, match="Say why"):
        services.charge_review(charge=charge, action="hold", reason=" ", user=biller)
    services.charge_review(charge=charge, action="hold", reason="Check the code", user=biller)
    services.charge_review(charge=charge, action="release", reason="", user=biller)
    services.charge_review(charge=charge, action="void", reason="Duplicate", user=biller)

    charge.refresh_from_db()
    assert (charge.status, charge.status_reason) == (Status.VOID, "Duplicate")
    steps = [
        e.detail["status"]
        for e in AuditEvent.objects.filter(object_type="charge", action="update").order_by("pk")
    ]
    assert steps == [["ready", "held"], ["held", "ready"], ["ready", "void"]]


def test_a_charge_with_missing_data_is_not_released_until_looked_up_again(facility_a, biller):
    patient = PatientFactory(facility=facility_a)
    procedure = ProcedureFactory(facility=facility_a, code="70450")
    order = order_for(patient, procedure=procedure, diagnosis_codes="R51.9")
    exam_completed(order)
    (charge,) = charges(order)
    with pytest.raises(services.BillingError, match="no insurance, no price"):
        services.charge_review(charge=charge, action="release", reason="", user=biller)

    insurance = PatientInsuranceFactory(patient=patient)
    FeeFactory(facility=facility_a, payer=insurance.payer, procedure_code="70450")
    charge = services.charge_reprice(charge=charge, user=biller)

    assert (charge.status, charge.amount, charge.payer) == (
        Status.READY,
        Decimal("325.00"),
        insurance.payer,
    )


def test_the_review_page_filters_totals_and_acts(order, biller, facility_a):
    exam_completed(order)
    other = order_for(
        PatientFactory(facility=facility_a),
        procedure=ProcedureFactory(facility=facility_a, modality="MR"),
    )
    exam_completed(other)
    client = client_for(biller)

    page = client.get(reverse("billing:charge_list"))
    assert page.status_code == 200
    assert page.context["totals"].count == 2
    assert page.context["totals"].amount == Decimal("300.00")  # the MR has no price
    pending = client.get(reverse("billing:charge_list"), {"missing": "on"})
    assert [c.order for c in pending.context["page"]] == [other]
    ct = client.get(reverse("billing:charge_list"), {"modality": "CT", "status": "ready"})
    assert [c.order for c in ct.context["page"]] == [order]
    bad = client.get(
        reverse("billing:charge_list"), {"date_from": "2026-02-01", "date_to": "2026-01-01"}
    )
    assert bad.status_code == 400

    (charge,) = charges(order)
    client.post(
        reverse("billing:charge_action", args=[charge.pk]), {"action": "hold", "reason": "Check"}
    )
    charge.refresh_from_db()
    assert charge.status == Status.HELD


def test_charges_are_for_the_billing_office_of_their_facility_only(
    order, clerk, facility_b, facility_a
):
    exam_completed(order)
    (charge,) = charges(order)
    far = client_for(member(facility_b, Role.BILLING, username="farbiller"))
    admin = client_for(member(facility_a, Role.ADMIN, username="boss"))

    assert client_for(clerk).get(reverse("billing:charge_list")).status_code == 403
    assert list(far.get(reverse("billing:charge_list")).context["page"]) == []
    assert (
        far.post(
            reverse("billing:charge_action", args=[charge.pk]), {"action": "void", "reason": "x"}
        ).status_code
        == 404
    )
    assert admin.get(reverse("billing:charge_list")).status_code == 200  # reads, no edits
    assert (
        admin.post(
            reverse("billing:charge_action", args=[charge.pk]), {"action": "void", "reason": "x"}
        ).status_code
        == 403
    )
