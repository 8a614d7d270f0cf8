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


def test_new_prices_end_the_current_ones_the_day_before(biller, facility_a):
    from decimal import Decimal

    from billing import services
    from billing.models import FeeScheduleEntry

    FeeFactory(facility=facility_a, procedure_code="70450", effective_from=dt.date(2026, 1, 1))

    services.fee_set(
        facility_id=facility_a.pk,
        payer=None,
        procedure_code="70450",
        global_price=Decimal("450"),
        professional_price=Decimal("100"),
        technical_price=Decimal("350"),
        effective_from=dt.date(2026, 7, 1),
        user=biller,
    )

    old, new = FeeScheduleEntry.objects.order_by("effective_from")
    assert old.effective_to == dt.date(2026, 6, 30)
    assert (new.effective_from, new.effective_to, new.global_price) == (
        dt.date(2026, 7, 1),
        None,
        Decimal("450.00"),
    )
    assert services.fee_for(
        facility_id=facility_a.pk,
        payer=None,
        procedure_code="70450",
        component="global",
        on=dt.date(2026, 6, 30),
    ) == Decimal("420.00")
    with pytest.raises(services.BillingError, match="after the latest"):
        services.fee_set(
            facility_id=facility_a.pk,
            payer=None,
            procedure_code="70450",
            global_price=Decimal("1"),
            professional_price=Decimal("1"),
            technical_price=Decimal("1"),
            effective_from=dt.date(2026, 3, 1),
            user=biller,
        )


def test_the_billing_office_sets_prices_on_the_fee_page(biller, facility_a):
    response = client_for(biller).post(
        reverse("billing:fee_create"),
        {
            "facility": facility_a.pk,
            "procedure_code": "71250",
            "global_price": "300",
            "professional_price": "80",
            "technical_price": "220",
            "effective_from": "2026-12-01",
        },
    )

    assert response.status_code == 302
    from billing.models import FeeScheduleEntry

    assert FeeScheduleEntry.objects.get().procedure_code == "71250"
    admin_page = client_for(biller).get(reverse("billing:fee_list")).content.decode()
    assert "New prices from a date" in admin_page
