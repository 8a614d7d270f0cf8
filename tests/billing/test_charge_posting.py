"""Charges posted to the HIS as HL7 DFT^P03 where a partner does the billing: each ready
charge once, a voided or reversed one as a credit; delivered over MLLP like every
outbound message."""

from __future__ import annotations

import pytest

from billing import services
from billing.models import Charge
from ris.hl7 import outbox, parse
from ris.hl7.models import OutboundMessage
from tests.factories import (
    FeeFactory,
    PatientFactory,
    PatientInsuranceFactory,
    ProcedureFactory,
    exam_completed,
    order_for,
)
from tests.hl7.test_outbox import Peer, acknowledge, partner_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def peer():
    listener = Peer(acknowledge())
    yield listener
    listener.close()


@pytest.fixture
def order(facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Müller")
    insurance = PatientInsuranceFactory(patient=patient)
    FeeFactory(facility=facility_a, payer=insurance.payer, procedure_code="70450")
    procedure = ProcedureFactory(facility=facility_a, code="70450", name="CT head")
    return order_for(patient, procedure=procedure, diagnosis_codes="R51.9,S06.0X0A")


def dft_messages() -> list[OutboundMessage]:
    return list(OutboundMessage.objects.filter(message_type="DFT^P03").order_by("id"))


def ft1(row: OutboundMessage) -> parse.Segment:
    segment = parse.parse(row.text.encode()).segment("FT1")
    assert segment is not None
    return segment


def test_a_ready_charge_is_posted_once_as_dft_p03(facility_a, order, peer):
    partner_for(facility_a, peer.port, posts_charges=True)

    exam_completed(order)
    charge = Charge.objects.get()
    services.charges_on_exam_status(order=order, status="completed", door="page")  # replay

    (row,) = dft_messages()
    segment = ft1(row)
    assert segment.value(2) == str(charge.pk)
    assert segment.value(6) == "CG"
    assert (segment.value(7, 1), segment.value(7, 3)) == ("70450", "C4")
    assert segment.value(11) == "325.00"
    assert segment.value(19) == "R51.9"  # the first repetition; the second follows
    assert "S06.0X0A^^I10" in row.text
    assert segment.value(26) == "TC"
    assert segment.value(23) == order.accession_number
    charge.refresh_from_db()
    assert charge.posted_at is not None
    outbox.deliver(row.pk)
    assert peer.received[0].header.message_type == "DFT^P03"


def test_a_voided_posted_charge_is_credited(facility_a, order, peer, biller):
    partner_for(facility_a, peer.port, posts_charges=True)
    exam_completed(order)
    charge = Charge.objects.get()

    services.charge_review(charge=charge, action="void", reason="Wrong code", user=biller)

    _, credit = dft_messages()
    assert ft1(credit).value(6) == "CD"
    assert ft1(credit).value(2) == str(charge.pk)


def test_nothing_is_posted_without_a_partner_that_takes_charges(facility_a, order, peer):
    partner_for(facility_a, peer.port)  # results and status only

    exam_completed(order)

    assert dft_messages() == []
    assert Charge.objects.get().posted_at is None


def test_a_charge_needing_review_is_posted_when_released(facility_a, peer, biller):
    partner_for(facility_a, peer.port, posts_charges=True)
    patient = PatientFactory(facility=facility_a)
    order = order_for(patient, procedure=ProcedureFactory(facility=facility_a, code="70450"))
    exam_completed(order)  # no diagnosis, no insurance, no price: pending, not posted
    assert dft_messages() == []

    insurance = PatientInsuranceFactory(patient=patient)
    FeeFactory(facility=facility_a, payer=insurance.payer, procedure_code="70450")
    from ris.services import order_change

    order_change(order=order, diagnosis_codes="R51.9", actor=biller)
    charge = services.charge_reprice(charge=Charge.objects.get(), user=biller)

    assert charge.status == Charge.Status.READY
    assert len(dft_messages()) == 1
