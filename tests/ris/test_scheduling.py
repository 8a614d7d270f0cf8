"""Free slots: opening hours minus breaks, closures and bookings; booking respects them."""

import datetime as dt

import pytest
from django.utils import timezone

from ris import scheduling, services
from ris.models import RoomClosure, RoomHours
from tests.factories import PatientFactory, ProcedureFactory, RoomFactory, order_for

pytestmark = pytest.mark.django_db

MONDAY = dt.date(2026, 11, 30)
PAST = timezone.make_aware(dt.datetime(2026, 1, 1))


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)))


@pytest.fixture
def ct(facility_a):
    """A 30-minute CT head; two CT rooms open Monday 08:00-10:00 with a break 09:00-09:30
    in room 1, and an MR room that cannot do it."""
    procedure = ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=30)
    room1 = RoomFactory(facility=facility_a, name="CT 1", modality="CT")
    room2 = RoomFactory(facility=facility_a, name="CT 2", modality="CT")
    RoomFactory(facility=facility_a, name="MR 1", modality="MR", ae_title="MR1")
    RoomHours.objects.create(room=room1, weekday=0, opens=dt.time(8), closes=dt.time(9))
    RoomHours.objects.create(room=room1, weekday=0, opens=dt.time(9, 30), closes=dt.time(10))
    RoomHours.objects.create(room=room2, weekday=0, opens=dt.time(8), closes=dt.time(10))
    return {"procedure": procedure, "room1": room1, "room2": room2}


def starts(slots) -> list[tuple[str, str]]:
    return [(slot.room.name, f"{timezone.localtime(slot.starts_at):%H:%M}") for slot in slots]


def test_free_slots_follow_opening_hours_breaks_and_bookings(ct, facility_a):
    order = order_for(PatientFactory(facility=facility_a), procedure=ct["procedure"])
    services.appointment_book(order=order, room=ct["room2"], starts_at=at(MONDAY, 8, 30))
    slots = scheduling.free_slots(ct["procedure"], MONDAY, MONDAY, not_before=PAST, limit=100)
    room1 = [s for room, s in starts(slots) if room == "CT 1"]
    room2 = [s for room, s in starts(slots) if room == "CT 2"]
    # Room 1: 08:00-09:00 then 09:30-10:00, every 5 minutes, 30 minutes each.
    assert room1 == ["08:00", "08:05", "08:10", "08:15", "08:20", "08:25", "08:30", "09:30"]
    # Room 2: open 08:00-10:00, booked 08:30-09:00.
    assert room2 == ["08:00", "09:00", "09:05", "09:10", "09:15", "09:20", "09:25", "09:30"]
    assert starts(slots)[:3] == [("CT 1", "08:00"), ("CT 2", "08:00"), ("CT 1", "08:05")]
    assert (
        scheduling.free_slots(
            ct["procedure"],
            MONDAY + dt.timedelta(days=1),
            MONDAY + dt.timedelta(days=1),
            not_before=PAST,
        )
        == []
    ), "closed on Tuesdays"


def test_a_closure_removes_its_slots(ct):
    RoomClosure.objects.create(
        room=ct["room2"], starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9, 45), reason="service"
    )
    slots = scheduling.free_slots(ct["procedure"], MONDAY, MONDAY, not_before=PAST, limit=100)
    assert [s for room, s in starts(slots) if room == "CT 2"] == []


def test_no_slot_starts_in_the_past(ct):
    slots = scheduling.free_slots(
        ct["procedure"], MONDAY, MONDAY, not_before=at(MONDAY, 9, 22), limit=100
    )
    assert starts(slots) == [("CT 2", "09:25"), ("CT 1", "09:30"), ("CT 2", "09:30")]


def test_booking_outside_opening_hours_or_in_a_closure_is_refused(ct, facility_a):
    order = order_for(PatientFactory(facility=facility_a), procedure=ct["procedure"])
    with pytest.raises(services.RisError, match=r"CT 1 is not open .* at 2026-11-30 08:45 for 30"):
        services.appointment_book(order=order, room=ct["room1"], starts_at=at(MONDAY, 8, 45))
    RoomClosure.objects.create(
        room=ct["room2"], starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9), reason="service"
    )
    with pytest.raises(services.RisError, match="CT 2 is not open"):
        services.appointment_book(order=order, room=ct["room2"], starts_at=at(MONDAY, 8))
    booked = services.appointment_book(order=order, room=ct["room2"], starts_at=at(MONDAY, 9))
    assert booked.ends_at == at(MONDAY, 9, 30)


def test_rooms_linked_to_a_procedure_are_the_only_ones_offered(ct):
    ct["procedure"].rooms.add(ct["room1"])
    slots = scheduling.free_slots(ct["procedure"], MONDAY, MONDAY, not_before=PAST, limit=100)
    assert {room for room, _ in starts(slots)} == {"CT 1"}


def test_a_room_without_hours_takes_walk_ins_at_any_time(facility_a):
    procedure = ProcedureFactory(facility=facility_a)
    room = RoomFactory(facility=facility_a, modality=procedure.modality)
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    services.appointment_book(order=order, room=room, starts_at=at(MONDAY, 23, 50))
    assert scheduling.free_slots(procedure, MONDAY, MONDAY, not_before=PAST) == []


def test_a_booking_from_the_evening_before_still_blocks_the_morning(facility_a):
    procedure = ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=60)
    room = RoomFactory(facility=facility_a, name="CT night", modality="CT")
    RoomHours.objects.create(room=room, weekday=6, opens=dt.time(23), closes=dt.time(23, 59))
    RoomHours.objects.create(room=room, weekday=0, opens=dt.time(0), closes=dt.time(2))
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    sunday = MONDAY - dt.timedelta(days=1)
    services.walk_in(order=order, room=room, now=at(sunday, 23, 30))  # until 00:30 Monday
    slots = scheduling.free_slots(procedure, MONDAY, MONDAY, not_before=PAST, limit=100)
    assert starts(slots)[0] == ("CT night", "00:30")


def test_no_procedure_lasts_longer_than_a_day(facility_a):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        ProcedureFactory(facility=facility_a, duration_minutes=24 * 60 + 5)
