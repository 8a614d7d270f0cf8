"""Billing operations: capturing charges from the events that earn them, and the billing
office's review (hold, release, void). Every write to a charge goes through here.

Capture runs inside the transaction of the event (the exam's status change, the report's
signature), so a charge exists exactly when its event committed; `capture_key` makes a
replay or a retry find the charge it made before.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts import audit
from accounts.models import User
from billing.models import Charge, FeeScheduleEntry, Payer
from ris.hl7 import outbox
from ris.models import Order, PatientInsurance, Report

Component = Charge.Component
Status = Charge.Status

MODIFIERS = {Component.GLOBAL: "", Component.TECHNICAL: "TC", Component.PROFESSIONAL: "26"}
PRICE_FIELDS = {
    Component.GLOBAL: "global_price",
    Component.TECHNICAL: "technical_price",
    Component.PROFESSIONAL: "professional_price",
}


class BillingError(Exception):
    """A request the billing office cannot make; the message is safe to show."""


# ---- pricing and payer ---------------------------------------------------------------------


def primary_insurance(order: Order, on: dt.date) -> PatientInsurance | None:
    """The patient's first-ranked insurance valid on the date of service."""
    return (
        PatientInsurance.objects.filter(patient_id=order.patient_id, payer__is_active=True)
        .filter(Q(valid_from__isnull=True) | Q(valid_from__lte=on))
        .filter(Q(valid_until__isnull=True) | Q(valid_until__gte=on))
        .select_related("payer")
        .order_by("rank", "id")
        .first()
    )


def fee_for(
    *, facility_id: int, payer: Payer | None, procedure_code: str, component: str, on: dt.date
) -> Decimal | None:
    """The price of the component on the date: the payer's schedule, else the facility's
    standard one; None when neither has the code then."""
    entries = FeeScheduleEntry.objects.filter(
        facility_id=facility_id, procedure_code=procedure_code, effective_from__lte=on
    ).filter(Q(effective_to__isnull=True) | Q(effective_to__gte=on))
    for candidate in ([payer] if payer else []) + [None]:
        entry = entries.filter(payer=candidate).order_by("-effective_from").first()
        if entry is not None:
            return getattr(entry, PRICE_FIELDS[component])
    return None


def _service_date(order: Order) -> dt.date:
    """The date the exam was performed: when it was completed, in the facility's zone."""
    done = (
        (
            order.status_changes.filter(to_status=Order.Status.COMPLETED)
            .order_by("changed_at")
            .values_list("changed_at", flat=True)
            .first()
        )
        or order.images_received_at
        or timezone.now()
    )
    return timezone.localtime(done).date()


def _person(user: User | None) -> tuple[str, str]:
    if user is None:
        return "", ""
    return (user.get_full_name() or user.get_username())[:200], user.npi


# ---- capture ---------------------------------------------------------------------------------


def _capture(
    order: Order,
    component: str,
    *,
    rendering: User | None = None,
    door: str,
) -> Charge:
    """The charge of one component of an exam: made once, found again on a replay."""
    key = f"{component}:order:{order.pk}"
    existing = Charge.objects.filter(facility_id=order.facility_id, capture_key=key).first()
    if existing is not None:
        return existing
    on = _service_date(order)
    insurance = primary_insurance(order, on)
    payer = insurance.payer if insurance else None
    price = fee_for(
        facility_id=order.facility_id,
        payer=payer,
        procedure_code=order.procedure.code,
        component=component,
        on=on,
    )
    referring_name, referring_npi = _person(order.referring_physician)
    rendering_name, rendering_npi = _person(rendering)
    charge = Charge(
        facility_id=order.facility_id,
        order=order,
        patient_id=order.patient_id,
        payer=payer,
        member_id=insurance.member_id if insurance else "",
        component=component,
        procedure_code=order.procedure.code,
        modifiers=MODIFIERS[component],
        unit_price=price,
        amount=price,
        diagnosis_codes=order.diagnosis_codes,
        referring_name=referring_name or order.referring_physician_name.replace("^", " ")[:200],
        referring_npi=referring_npi,
        rendering_name=rendering_name,
        rendering_npi=rendering_npi,
        place_of_service=order.facility.place_of_service,
        service_date=on,
        capture_key=key,
    )
    gaps = charge.missing
    charge.status = Status.PENDING if gaps else Status.READY
    charge.status_reason = ", ".join(gaps)
    try:
        with transaction.atomic():
            charge.save()
    except IntegrityError:  # captured meanwhile by another door: that one stands
        return Charge.objects.get(facility_id=order.facility_id, capture_key=key)
    audit.record(
        action=audit.Action.CREATE,
        obj=charge,
        door=door,
        actor="charge capture",
        detail={"component": component, "amount": str(price) if price is not None else None},
    )
    _post(charge)
    return charge


def _post(charge: Charge) -> None:
    """Post a charge ready to bill to the HIS (DFT^P03) where a partner takes charges;
    once: `posted_at` records it."""
    if charge.status != Status.READY or charge.posted_at is not None:
        return
    if outbox.charge_post_enqueue(charge=charge):
        charge.posted_at = timezone.now()
        charge.save(update_fields=["posted_at", "updated_at"])


def charges_on_exam_status(*, order: Order, status: str, door: str) -> list[Charge]:
    """Called by `order_status_set` in its transaction: the technical charge when an exam
    is completed (where the facility splits its bills); a cancelled exam's charges void."""
    if status == Order.Status.COMPLETED and not order.facility.bills_globally:
        return [_capture(order, Component.TECHNICAL, door=door)]
    if status == Order.Status.CANCELLED:
        return charges_void_for_order(order=order, reason="exam cancelled", door=door)
    return []


def charges_on_report(*, report: Report, door: str) -> list[Charge]:
    """Called when a report is signed: its first final earns the professional charge (or
    the global one), rendered by the radiologist who signed it. A later correction keeps
    the charge; one already exported is flagged for the billing office to review."""
    order = report.order
    if report.status == Report.Status.FINAL:
        component = Component.GLOBAL if order.facility.bills_globally else Component.PROFESSIONAL
        return [_capture(order, component, rendering=report.signed_by, door=door)]
    if report.status == Report.Status.CORRECTED:
        flagged = []
        for charge in Charge.objects.filter(
            order=order, status=Status.EXPORTED, adjusts__isnull=True
        ).exclude(component=Component.TECHNICAL):
            charge.status_reason = (
                "Report corrected after this charge was billed: check whether the claim "
                "needs a replacement (frequency 7)."
            )
            charge.save(update_fields=["status_reason", "updated_at"])
            flagged.append(charge)
        return flagged
    return []


def charges_void_for_order(*, order: Order, reason: str, door: str) -> list[Charge]:
    """Void what an exam earned: charges not billed yet are voided; billed ones get a
    reversal line (negative amount) for the next export. Nothing is deleted."""
    changed = []
    for charge in Charge.objects.select_for_update().filter(order=order, adjusts__isnull=True):
        if charge.status == Status.VOID:
            continue
        if charge.status != Status.EXPORTED:
            _status_set(charge, Status.VOID, reason=reason, user=None, door=door)
        else:
            changed.append(_reverse(charge, reason=reason, door=door))
        changed.append(charge)
    return changed


def _reverse(charge: Charge, *, reason: str, door: str) -> Charge:
    key = f"reversal:{charge.capture_key}"
    reversal, created = Charge.objects.get_or_create(
        facility_id=charge.facility_id,
        capture_key=key,
        defaults={
            "order_id": charge.order_id,
            "patient_id": charge.patient_id,
            "payer_id": charge.payer_id,
            "member_id": charge.member_id,
            "component": charge.component,
            "procedure_code": charge.procedure_code,
            "modifiers": charge.modifiers,
            "units": -charge.units,
            "unit_price": charge.unit_price,
            "amount": -charge.amount if charge.amount is not None else None,
            "diagnosis_codes": charge.diagnosis_codes,
            "referring_name": charge.referring_name,
            "referring_npi": charge.referring_npi,
            "rendering_name": charge.rendering_name,
            "rendering_npi": charge.rendering_npi,
            "place_of_service": charge.place_of_service,
            "service_date": charge.service_date,
            "status": Status.READY,
            "status_reason": f"reverses charge {charge.pk}: {reason}"[:500],
            "adjusts": charge,
        },
    )
    if created:
        audit.record(
            action=audit.Action.CREATE,
            obj=reversal,
            door=door,
            actor="charge capture",
            detail={"reverses": charge.pk, "reason": reason},
        )
        if charge.posted_at is not None:
            _post(reversal)
    return reversal


# ---- the billing office's review ----------------------------------------------------------------

# What the office may do from each status.
ACTIONS = {
    "hold": ({Status.PENDING, Status.READY}, Status.HELD),
    "release": ({Status.PENDING, Status.HELD}, Status.READY),
    "void": ({Status.PENDING, Status.READY, Status.HELD}, Status.VOID),
}


@transaction.atomic
def charge_review(*, charge: Charge, action: str, reason: str, user: User) -> Charge:
    """Hold, release or void a charge, with the reason (kept, and in the audit trail).
    Releasing a charge with missing data is refused: it would go out to be rejected."""
    if action not in ACTIONS:
        raise BillingError("Hold, release or void.")
    allowed, target = ACTIONS[action]
    locked = Charge.objects.select_for_update().get(pk=charge.pk)
    if locked.status not in allowed:
        raise BillingError(
            f"A charge that is {locked.get_status_display().lower()} cannot be {action}ed."
            if action != "void"
            else f"A charge that is {locked.get_status_display().lower()} cannot be voided"
            + (
                ": an exported charge is reversed by cancelling the exam."
                if locked.status == Status.EXPORTED
                else "."
            )
        )
    reason = " ".join(reason.split())[:500]
    if action in ("hold", "void") and not reason:
        raise BillingError(f"Say why the charge is {'held' if action == 'hold' else 'voided'}.")
    if action == "release" and locked.missing:
        raise BillingError(f"Not released: {', '.join(locked.missing)}.")
    _status_set(locked, target, reason=reason, user=user, door=audit.Door.PAGE)
    _post(locked)
    return locked


def _status_set(charge: Charge, status: str, *, reason: str, user: User | None, door: str) -> None:
    before = charge.status
    if status == Status.VOID and charge.posted_at is not None:
        outbox.charge_post_enqueue(charge=charge, credit=True)  # the HIS has it: take it back
    charge.status = status
    charge.status_reason = reason
    charge.save(update_fields=["status", "status_reason", "updated_at"])
    audit.record(
        action=audit.Action.UPDATE,
        obj=charge,
        user=user,
        actor="" if user else "charge capture",
        door=door,
        detail={"status": [before, status], "reason": reason},
    )


@transaction.atomic
def charge_reprice(*, charge: Charge, user: User) -> Charge:
    """Look the price, payer and diagnosis up again (after the fee schedule, the
    patient's insurance or the order was fixed): for charges not billed yet."""
    locked = Charge.objects.select_for_update().select_related("order__procedure").get(pk=charge.pk)
    if locked.status in (Status.EXPORTED, Status.VOID):
        raise BillingError("Only a charge not billed yet is looked up again.")
    insurance = primary_insurance(locked.order, locked.service_date)
    locked.payer = insurance.payer if insurance else None
    locked.member_id = insurance.member_id if insurance else ""
    price = fee_for(
        facility_id=locked.facility_id,
        payer=locked.payer,
        procedure_code=locked.procedure_code,
        component=locked.component,
        on=locked.service_date,
    )
    locked.unit_price = price
    locked.amount = price * locked.units if price is not None else None
    locked.diagnosis_codes = locked.order.diagnosis_codes
    if locked.status == Status.PENDING and not locked.missing:
        locked.status, locked.status_reason = Status.READY, ""
    elif locked.status == Status.PENDING:
        locked.status_reason = ", ".join(locked.missing)
    locked.save()
    audit.record(
        action=audit.Action.UPDATE,
        obj=locked,
        user=user,
        door=audit.Door.PAGE,
        detail={"repriced": str(locked.amount)},
    )
    _post(locked)
    return locked


# ---- the fee schedule ------------------------------------------------------------------------


@transaction.atomic
def fee_set(
    *,
    facility_id: int,
    payer: Payer | None,
    procedure_code: str,
    global_price: Decimal,
    professional_price: Decimal,
    technical_price: Decimal,
    effective_from: dt.date,
    user: User,
) -> FeeScheduleEntry:
    """New prices for a code from a date. The price in force then ends the day before,
    so history is kept and every date has one price; a change dated before the current
    price's start is refused (past prices are not rewritten)."""
    code = procedure_code.strip().upper()
    if not code or len(code) > 16:
        raise BillingError("Give the procedure code (CPT/HCPCS), at most 16 characters.")
    if payer is not None and payer.facility_id != facility_id:
        raise BillingError("That payer belongs to another facility.")
    if min(global_price, professional_price, technical_price) < 0:
        raise BillingError("Prices are not negative.")
    entries = FeeScheduleEntry.objects.select_for_update().filter(
        facility_id=facility_id, payer=payer, procedure_code=code
    )
    if entries.filter(effective_from__gte=effective_from).exists():
        raise BillingError(
            f"{code} already has a price from {effective_from:%Y-%m-%d} or later: "
            "a change takes effect after the latest one."
        )
    current = entries.filter(
        Q(effective_to__isnull=True) | Q(effective_to__gte=effective_from)
    ).first()
    if current is not None:
        current.effective_to = effective_from - dt.timedelta(days=1)
        current.save(update_fields=["effective_to"])
    entry = FeeScheduleEntry.objects.create(
        facility_id=facility_id,
        payer=payer,
        procedure_code=code,
        global_price=global_price,
        professional_price=professional_price,
        technical_price=technical_price,
        effective_from=effective_from,
    )
    audit.record(
        action=audit.Action.CREATE,
        obj=entry,
        user=user,
        door=audit.Door.PAGE,
        detail={
            "code": code,
            "payer": payer.pk if payer else None,
            "prices": [str(global_price), str(professional_price), str(technical_price)],
            "from": effective_from.isoformat(),
            "ends": current.pk if current else None,
        },
    )
    return entry
