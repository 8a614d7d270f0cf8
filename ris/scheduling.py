"""When rooms are open and free: opening hours minus breaks, closures and bookings.

Times are the facility's local time (settings.TIME_ZONE) for opening hours, aware
datetimes everywhere else. A room without opening hours takes bookings at any time
(walk-in rooms, and rooms not set up yet); it is not offered by the slot search.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.utils import timezone

from ris.models import Appointment, Procedure, Room, RoomClosure, RoomHours, overlapping

Interval = tuple[dt.datetime, dt.datetime]
SLOT_STEP = dt.timedelta(minutes=5)
# How far ahead a walk-in may be put: past that the patient is better booked.
WALK_IN_HORIZON = dt.timedelta(hours=24)


@dataclass(frozen=True)
class Slot:
    room: Room
    starts_at: dt.datetime
    ends_at: dt.datetime


def rooms_for(procedure: Procedure) -> list[Room]:
    """The active rooms that can perform the procedure: those linked to it, else every
    room of its modality at its facility."""
    linked = list(procedure.rooms.filter(is_active=True))
    if linked:
        return linked
    return list(
        Room.objects.filter(
            facility_id=procedure.facility_id, modality=procedure.modality, is_active=True
        )
    )


def opening(rooms: Iterable[Room], first: dt.date, last: dt.date) -> dict[int, list[Interval]]:
    """Each room's open intervals from `first` to `last` (inclusive), closures removed."""
    rooms = list(rooms)
    by_weekday: dict[tuple[int, int], list[RoomHours]] = defaultdict(list)
    for hours in RoomHours.objects.filter(room__in=rooms):
        by_weekday[(hours.room_id, hours.weekday)].append(hours)
    start, end = _local(first, dt.time.min), _local(last + dt.timedelta(days=1), dt.time.min)
    closed: dict[int, list[Interval]] = defaultdict(list)
    for closure in RoomClosure.objects.filter(room__in=rooms, starts_at__lt=end, ends_at__gt=start):
        closed[closure.room_id].append((closure.starts_at, closure.ends_at))
    result: dict[int, list[Interval]] = {}
    for room in rooms:
        intervals: list[Interval] = []
        day = first
        while day <= last:
            for hours in by_weekday.get((room.pk, day.weekday()), []):
                intervals.append((_local(day, hours.opens), _local(day, hours.closes)))
            day += dt.timedelta(days=1)
        result[room.pk] = _subtract(sorted(intervals), closed[room.pk])
    return result


def has_hours(room: Room) -> bool:
    return RoomHours.objects.filter(room=room).exists()


def fits_opening(room: Room, starts_at: dt.datetime, ends_at: dt.datetime) -> bool:
    """Whether [starts_at, ends_at) lies inside one open interval of the room."""
    day = timezone.localtime(starts_at).date()
    intervals = opening([room], day, day)[room.pk]
    return any(start <= starts_at and ends_at <= end for start, end in intervals)


def closure_during(room: Room, starts_at: dt.datetime, ends_at: dt.datetime) -> bool:
    return RoomClosure.objects.filter(
        room=room, starts_at__lt=ends_at, ends_at__gt=starts_at
    ).exists()


def earliest_free(
    room: Room, duration: dt.timedelta, *, not_before: dt.datetime
) -> dt.datetime | None:
    """The first start from `not_before` (to the next SLOT_STEP) within a day when the room
    is neither booked nor closed, opening hours aside: for walk-ins, at any hour."""
    start = _aligned(not_before)
    until = start + WALK_IN_HORIZON
    holes = list(
        Appointment.objects.filter(
            overlapping(start, until), room=room, is_cancelled=False
        ).values_list("starts_at", "ends_at")
    )
    holes += list(
        RoomClosure.objects.filter(room=room, starts_at__lt=until, ends_at__gt=start).values_list(
            "starts_at", "ends_at"
        )
    )
    for gap_start, gap_end in _subtract([(start, until)], holes):
        slot = _aligned(gap_start)
        if slot + duration <= gap_end:
            return slot
    return None


def free_slots(
    procedure: Procedure,
    first: dt.date,
    last: dt.date,
    *,
    limit: int = 50,
    not_before: dt.datetime | None = None,
    room_ids: Iterable[int] | None = None,
) -> list[Slot]:
    """Start times, every SLOT_STEP, where the procedure fits in a room that can do it
    (of `room_ids`, when given): open, not closed, not booked. Earliest first, then by
    room name."""
    rooms = rooms_for(procedure)
    if room_ids is not None:
        wanted = set(room_ids)
        rooms = [room for room in rooms if room.pk in wanted]
    duration = dt.timedelta(minutes=procedure.duration_minutes)
    not_before = not_before or timezone.now()
    slots: list[Slot] = []
    # Day by day, so a search over weeks stops reading bookings once it has enough.
    day = max(first, timezone.localtime(not_before).date())
    while day <= last and len(slots) < limit:
        slots += _day_slots(rooms, day, duration, not_before, limit - len(slots))
        day += dt.timedelta(days=1)
    return slots


def _day_slots(
    rooms: list[Room], day: dt.date, duration: dt.timedelta, not_before: dt.datetime, limit: int
) -> list[Slot]:
    open_by_room = opening(rooms, day, day)
    start, end = _local(day, dt.time.min), _local(day + dt.timedelta(days=1), dt.time.min)
    busy: dict[int, list[Interval]] = defaultdict(list)
    open_rooms = [room for room in rooms if open_by_room[room.pk]]
    for room_id, starts_at, ends_at in Appointment.objects.filter(
        overlapping(start, end), room__in=open_rooms, is_cancelled=False
    ).values_list("room_id", "starts_at", "ends_at"):
        busy[room_id].append((starts_at, ends_at))

    def room_slots(room: Room) -> Iterator[tuple[dt.datetime, str, Slot]]:
        for gap_start, gap_end in _subtract(open_by_room[room.pk], busy[room.pk]):
            slot = _aligned(max(gap_start, not_before))
            while slot + duration <= gap_end:
                yield slot, room.name, Slot(room, slot, slot + duration)
                slot += SLOT_STEP

    # Each room's slots come in time order: merging them lazily makes only `limit` slots.
    merged = heapq.merge(*(room_slots(room) for room in open_rooms), key=lambda item: item[:2])
    return [slot for _, _, slot in itertools.islice(merged, limit)]


def _local(day: dt.date, time: dt.time) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, time))


def _aligned(moment: dt.datetime) -> dt.datetime:
    """Up to the next SLOT_STEP boundary of the hour (09:02 -> 09:05)."""
    local = timezone.localtime(moment).replace(second=0, microsecond=0)
    if local < moment:
        local += dt.timedelta(minutes=1)
    step = int(SLOT_STEP.total_seconds() // 60)
    return local + dt.timedelta(minutes=(-local.minute) % step)


def _subtract(intervals: list[Interval], holes: list[Interval]) -> list[Interval]:
    """`intervals` (sorted, disjoint) minus the union of `holes`."""
    holes = sorted(holes)
    result: list[Interval] = []
    for start, end in intervals:
        cursor = start
        for hole_start, hole_end in holes:
            if hole_end <= cursor or hole_start >= end:
                continue
            if hole_start > cursor:
                result.append((cursor, hole_start))
            cursor = max(cursor, hole_end)
            if cursor >= end:
                break
        if cursor < end:
            result.append((cursor, end))
    return result
