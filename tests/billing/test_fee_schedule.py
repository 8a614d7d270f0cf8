import datetime as dt

import pytest
from django.db import IntegrityError
from django.urls import reverse

from tests.factories import FeeFactory, PayerFactory, client_for

pytestmark = pytest.mark.django_db


def test_a_fee_cannot_end_before_it_starts(facility_a):
    with pytest.raises(IntegrityError):
        FeeFactory(
            facility=facility_a,
            effective_from=dt.date(2026, 6, 1),
            effective_to=dt.date(2026, 5, 1),
        )


def test_a_fee_cannot_be_negative(facility_a):
    with pytest.raises(IntegrityError):
        FeeFactory(facility=facility_a, technical_price="-1.00")


def test_the_billing_office_sees_its_fee_schedule_with_history(biller, facility_a):
    payer = PayerFactory(facility=facility_a, name="Medicare")
    FeeFactory(facility=facility_a, payer=payer, effective_to=dt.date(2026, 12, 31))
    FeeFactory(
        facility=facility_a, payer=payer, effective_from=dt.date(2027, 1, 1), global_price="450.00"
    )
    response = client_for(biller).get(reverse("billing:fee_list"), {"code": "704"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "420.00" in body and "450.00" in body and "Medicare" in body


def test_a_clerk_cannot_see_the_fee_schedule(clerk):
    assert client_for(clerk).get(reverse("billing:fee_list")).status_code == 403
