"""The exam lifecycle: allowed steps only, each recorded with who, when and how."""

import pytest
from django.urls import reverse

from accounts.models import AuditEvent
from ris import services
from ris.models import EXAM_TRANSITIONS, Order, OrderStatusChange
from tests.factories import PatientFactory, RoomFactory, client_for, exam_completed, order_for

pytestmark = pytest.mark.django_db

S = Order.Status


@pytest.fixture
def order(facility_a) -> Order:
    return order_for(PatientFactory(facility=facility_a))


def test_an_exam_walks_from_request_to_final_and_each_step_is_kept(order, clerk):
    services.order_status_set(order=order, status=S.ARRIVED, actor=clerk)
    services.order_status_set(
        order=order, status=S.IN_PROGRESS, actor_name="CT_ROOM1", door="dimse"
    )
    for status in (S.COMPLETED, S.REPORTED, S.FINAL):
        services.order_status_set(order=order, status=status)
    order.refresh_from_db()
    assert order.status == S.FINAL
    steps = list(order.status_changes.values_list("from_status", "to_status", "actor", "door"))
    assert steps == [
        (S.REQUESTED, S.ARRIVED, "", "page"),
        (S.ARRIVED, S.IN_PROGRESS, "CT_ROOM1", "dimse"),
        (S.IN_PROGRESS, S.COMPLETED, "", "page"),
        (S.COMPLETED, S.REPORTED, "", "page"),
        (S.REPORTED, S.FINAL, "", "page"),
    ]
    assert order.status_changes.first().user == clerk
    assert all(change.changed_at for change in order.status_changes.all())


def test_an_illegal_step_is_refused_with_what_is_allowed_and_changes_nothing(order):
    with pytest.raises(services.RisError) as refused:
        services.order_status_set(order=order, status=S.COMPLETED)
    assert str(refused.value) == (
        "An exam that is requested cannot become completed "
        "(it can become: arrived, cancelled, scheduled)."
    )
    order.refresh_from_db()
    assert order.status == S.REQUESTED
    assert not OrderStatusChange.objects.exists()


def test_a_final_or_cancelled_exam_is_closed(order):
    services.order_status_set(order=order, status=S.CANCELLED, reason="patient declined")
    with pytest.raises(services.RisError, match="it can become: nothing: it is closed"):
        services.order_status_set(order=order, status=S.SCHEDULED)
    assert OrderStatusChange.objects.get().reason == "patient declined"


def test_setting_the_current_status_again_is_a_no_op(order):
    services.order_status_set(order=order, status=S.REQUESTED)
    assert not OrderStatusChange.objects.exists()


def test_booking_schedules_the_exam_through_the_lifecycle(order, facility_a):
    room = RoomFactory(facility=facility_a, modality=order.procedure.modality)
    services.appointment_book(order=order, room=room, starts_at=order.created_at)
    assert order.status_changes.get().to_status == S.SCHEDULED
    exam_completed(order)
    with pytest.raises(services.RisError, match="cannot be booked"):
        services.appointment_book(order=order, room=room, starts_at=order.created_at)


def test_the_order_page_shows_the_history(order, clerk):
    services.order_status_set(order=order, status=S.ARRIVED, actor=clerk)
    services.order_status_set(
        order=order, status=S.IN_PROGRESS, actor_name="CT_ROOM1", door="dimse"
    )
    page = client_for(clerk).get(reverse("ris:order_detail", args=[order.pk])).content.decode()
    assert f"Requested → Arrived, by {clerk.get_full_name()}" in page
    assert "Arrived → In progress, by CT_ROOM1 (dimse)" in page


def test_each_step_is_in_the_audit_trail(order):
    services.order_status_set(order=order, status=S.ARRIVED, actor_name="HIS", door="hl7")
    event = AuditEvent.objects.get(object_type="order", action=AuditEvent.Action.UPDATE)
    assert (event.actor, event.door, event.detail) == (
        "HIS",
        "hl7",
        {"status": [S.REQUESTED, S.ARRIVED]},
    )


def test_every_status_has_its_next_steps_and_they_are_statuses():
    assert set(EXAM_TRANSITIONS) == set(S.values)
    assert all(set(steps) <= set(S.values) for steps in EXAM_TRANSITIONS.values())
