"""Move, cancel and walk in: what the front desk does to appointments after booking."""

import datetime as dt

import pytest
from django.utils import timezone

from ris import services
from ris.models import Appointment, Order, RoomClosure, RoomHours
from tests.factories import PatientFactory, ProcedureFactory, RoomFactory, order_for

pytestmark = pytest.mark.django_db

MONDAY = dt.date(2026, 11, 30)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)))


@pytest.fixture
def ct(facility_a):
    procedure = ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=30)
    rooms = [RoomFactory(facility=facility_a, name=f"CT {n}", modality="CT") for n in (1, 2)]
    for room in rooms:
        RoomHours.objects.create(room=room, weekday=0, opens=dt.time(8), closes=dt.time(17))
    return procedure, rooms


def booked(procedure, room, starts_at):
    order = order_for(PatientFactory(facility=procedure.facility), procedure=procedure)
    return services.appointment_book(order=order, room=room, starts_at=starts_at)


def test_moving_an_exam_keeps_the_old_appointment_cancelled_and_linked(ct):
    procedure, (room1, room2) = ct
    first = booked(procedure, room1, at(MONDAY, 9))
    moved = services.appointment_move(
        appointment=first, room=room2, starts_at=at(MONDAY, 11), reason="patient asked"
    )
    first.refresh_from_db()
    assert first.is_cancelled and first.cancelled_at is not None
    assert first.cancel_reason == "moved to CT 2 2026-11-30 11:00: patient asked"
    assert moved.moved_from == first and moved.room == room2
    assert moved.order.status == Order.Status.SCHEDULED
    assert Appointment.objects.filter(order=first.order, is_cancelled=False).count() == 1


def test_moving_by_a_few_minutes_in_the_same_room_does_not_clash_with_itself(ct):
    procedure, (room1, _) = ct
    first = booked(procedure, room1, at(MONDAY, 9))
    moved = services.appointment_move(appointment=first, room=room1, starts_at=at(MONDAY, 9, 10))
    assert timezone.localtime(moved.starts_at).time() == dt.time(9, 10)


def test_moving_onto_a_booked_slot_is_refused_and_changes_nothing(ct):
    procedure, (room1, room2) = ct
    first = booked(procedure, room1, at(MONDAY, 9))
    other = booked(procedure, room2, at(MONDAY, 10))
    clash = rf"CT 2 is booked 2026-11-30 10:00 to 10:30 \({other.order.accession_number}\)"
    with pytest.raises(services.RisError, match=clash):
        services.appointment_move(appointment=first, room=room2, starts_at=at(MONDAY, 10, 15))
    first.refresh_from_db()
    assert not first.is_cancelled, "the failed move rolled back"


def test_a_no_show_is_rebooked_by_moving_it(ct):
    procedure, (room1, _) = ct
    first = booked(procedure, room1, at(MONDAY, 9))
    services.order_status_set(order=first.order, status=Order.Status.NO_SHOW)
    services.appointment_move(appointment=first, room=room1, starts_at=at(MONDAY, 14))
    first.order.refresh_from_db()
    assert first.order.status == Order.Status.SCHEDULED
    assert first.order.status_changes.last().reason == "rebooked"


def test_cancelling_an_appointment_sends_the_exam_back_to_be_booked(ct):
    procedure, (room1, _) = ct
    appointment = booked(procedure, room1, at(MONDAY, 9))
    services.appointment_cancel(appointment=appointment, reason="patient has a cold")
    appointment.refresh_from_db()
    appointment.order.refresh_from_db()
    assert appointment.is_cancelled and appointment.cancel_reason == "patient has a cold"
    assert appointment.order.status == Order.Status.REQUESTED
    # The slot is free again.
    booked(procedure, room1, at(MONDAY, 9))


def test_cancelling_the_exam_with_its_appointment(ct):
    procedure, (room1, _) = ct
    appointment = booked(procedure, room1, at(MONDAY, 9))
    services.appointment_cancel(appointment=appointment, reason="not indicated", cancel_exam=True)
    appointment.order.refresh_from_db()
    assert appointment.order.status == Order.Status.CANCELLED
    assert appointment.order.status_changes.last().reason == "not indicated"


def test_a_cancellation_needs_a_reason_and_happens_once(ct):
    procedure, (room1, _) = ct
    appointment = booked(procedure, room1, at(MONDAY, 9))
    with pytest.raises(services.RisError, match="Give a reason"):
        services.appointment_cancel(appointment=appointment, reason="  ")
    services.appointment_cancel(appointment=appointment, reason="moved away")
    with pytest.raises(services.RisError, match="already cancelled"):
        services.appointment_cancel(appointment=appointment, reason="again")


def test_an_arrived_patient_s_appointment_is_not_cancelled_alone(ct):
    procedure, (room1, _) = ct
    appointment = booked(procedure, room1, at(MONDAY, 9))
    services.order_status_set(order=appointment.order, status=Order.Status.ARRIVED)
    with pytest.raises(services.RisError, match="The exam is arrived: cancel the exam"):
        services.appointment_cancel(appointment=appointment, reason="left")
    services.appointment_cancel(appointment=appointment, reason="left", cancel_exam=True)


def test_a_walk_in_gets_the_first_free_room_now_and_arrives(ct, facility_a):
    procedure, (room1, room2) = ct
    now = at(MONDAY, 18, 2)  # after hours: walk-ins do not wait for opening hours
    busy = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    services.walk_in(order=busy, room=room1, now=now)
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    appointment = services.walk_in(order=order, now=now)
    order.refresh_from_db()
    assert appointment.room == room2 and appointment.is_walk_in
    assert appointment.starts_at == at(MONDAY, 18, 5)
    assert order.status == Order.Status.ARRIVED
    assert [(c.from_status, c.to_status, c.reason) for c in order.status_changes.all()] == [
        ("requested", "arrived", "walk-in")
    ]


def test_a_walk_in_waits_for_the_room_to_be_free_and_avoids_closures(facility_a):
    procedure = ProcedureFactory(facility=facility_a, modality="DX", duration_minutes=10)
    room = RoomFactory(facility=facility_a, name="X-ray", modality="DX")
    first = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    taken = services.walk_in(order=first, now=at(MONDAY, 9))
    RoomClosure.objects.create(
        room=room, starts_at=at(MONDAY, 9, 10), ends_at=at(MONDAY, 9, 25), reason="cleaning"
    )
    second = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    following = services.walk_in(order=second, now=at(MONDAY, 9, 1))
    assert (taken.starts_at, following.starts_at) == (at(MONDAY, 9), at(MONDAY, 9, 25))
    third = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    late = services.walk_in(order=third, now=at(MONDAY, 23, 55))
    assert late.starts_at == at(MONDAY, 23, 55), "a walk-in runs past midnight"
    RoomClosure.objects.create(
        room=room, starts_at=at(MONDAY, 23), ends_at=at(MONDAY, 23) + dt.timedelta(days=2)
    )
    fourth = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    with pytest.raises(services.RisError, match="No free time in the next 24 hours in X-ray"):
        services.walk_in(order=fourth, now=at(MONDAY, 23, 56))


def test_a_booked_exam_is_not_a_walk_in(ct):
    procedure, (room1, _) = ct
    appointment = booked(procedure, room1, at(MONDAY, 9))
    with pytest.raises(services.RisError, match="check the patient in on its appointment"):
        services.walk_in(order=appointment.order)


def test_a_room_that_cannot_perform_the_procedure_is_refused(ct, facility_a):
    procedure, (room1, _) = ct
    mr = RoomFactory(facility=facility_a, name="MR 1", modality="MR", ae_title="MR1")
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    with pytest.raises(services.RisError, match="MR 1 does not perform"):
        services.appointment_book(order=order, room=mr, starts_at=at(MONDAY, 9))
    with pytest.raises(services.RisError, match="MR 1 does not perform"):
        services.walk_in(order=order, room=mr)
    first = services.appointment_book(order=order, room=room1, starts_at=at(MONDAY, 9))
    with pytest.raises(services.RisError, match="MR 1 does not perform"):
        services.appointment_move(appointment=first, room=mr, starts_at=at(MONDAY, 10))


def test_a_booked_exam_is_moved_not_booked_twice(ct):
    procedure, (room1, room2) = ct
    first = booked(procedure, room1, at(MONDAY, 9))
    with pytest.raises(services.RisError, match=r"already booked \(CT 1 2026-11-30 09:00\): move"):
        services.appointment_book(order=first.order, room=room2, starts_at=at(MONDAY, 10))
