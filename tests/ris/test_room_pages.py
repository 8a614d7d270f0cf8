"""A facility administrator's room pages: rooms with their weekly hours (split days),
the procedures they perform and their closures, scoped to the administrator's facilities,
every change audited."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent, Membership
from accounts.roles import Role
from ris import scheduling, selectors, services
from ris.models import Appointment, Room, RoomClosure, RoomHours
from tests.factories import (
    PatientFactory,
    ProcedureFactory,
    RoomFactory,
    client_for,
    member,
    order_for,
)

pytestmark = pytest.mark.django_db

TODAY = timezone.localdate()
MONDAY = TODAY + dt.timedelta(days=7 - TODAY.weekday())  # next week's: always ahead
MON_TO_FRI = range(5)
SATURDAY = 5


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)))


def dashed(text: str) -> str:
    """Text as the pages write it, en dashes in time and day ranges."""
    return text.replace("-", "\N{EN DASH}")


def local_input(moment: dt.datetime) -> str:
    """As a datetime-local input sends it."""
    return timezone.localtime(moment).strftime("%Y-%m-%dT%H:%M")


def room_data(hours: list[tuple[int, str, str]], **fields) -> dict[str, object]:
    """A room page POST: its fields and the hours formset (with one blank row, as sent)."""
    rows = [*hours, ("", "", "")]
    data: dict[str, object] = {
        "name": "CT 3",
        "modality": "CT",
        "ae_title": "NORTH_CT3",
        "is_active": "on",
        "hours-TOTAL_FORMS": str(len(rows)),
        "hours-INITIAL_FORMS": "0",
        "hours-MIN_NUM_FORMS": "0",
        "hours-MAX_NUM_FORMS": "1000",
        **fields,
    }
    for index, (weekday, opens, closes) in enumerate(rows):
        data |= {
            f"hours-{index}-weekday": str(weekday),
            f"hours-{index}-opens": opens,
            f"hours-{index}-closes": closes,
        }
    return data


SPLIT_WEEK = [
    *((day, "07:00", "12:30") for day in MON_TO_FRI),
    *((day, "13:00", "19:00") for day in MON_TO_FRI),
    (SATURDAY, "08:00", "12:00"),
]


@pytest.fixture
def procedure(facility_a):
    return ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=30)


@pytest.fixture
def room(facility_a, procedure):
    """CT 1, doing the CT head, open weekdays 08:00-17:00."""
    room = RoomFactory(facility=facility_a, name="CT 1", modality="CT", ae_title="NORTH_CT1")
    room.procedures.add(procedure)
    for weekday in MON_TO_FRI:
        RoomHours.objects.create(room=room, weekday=weekday, opens=dt.time(8), closes=dt.time(17))
    return room


def booked(procedure, room, starts_at, family_name="Booked"):
    patient = PatientFactory(facility=procedure.facility, family_name=family_name)
    order = order_for(patient, procedure=procedure)
    return services.appointment_book(order=order, room=room, starts_at=starts_at)


# ------------------------------------------------------------------ rooms and hours


def test_an_admin_adds_a_room_with_a_split_day_and_free_slots_follow_its_hours(
    facility_admin, facility_a, procedure
):
    client = client_for(facility_admin)
    response = client.post(
        reverse("ris:room_create"),
        room_data(SPLIT_WEEK, facility=facility_a.pk, procedures=[procedure.pk]),
    )
    room = Room.objects.get(ae_title="NORTH_CT3")
    assert response.status_code == 302
    assert response.url == reverse("ris:room_edit", args=[room.pk])
    assert list(room.procedures.all()) == [procedure]
    assert room.hours.count() == 11

    slots = scheduling.free_slots(procedure, MONDAY, MONDAY, limit=1000)
    starts = [timezone.localtime(slot.starts_at).time() for slot in slots]
    assert {slot.room for slot in slots} == {room}
    assert starts[0] == dt.time(7, 0)
    assert dt.time(12, 0) in starts, "the last start that ends by the break"
    assert not [t for t in starts if dt.time(12, 0) < t < dt.time(13, 0)], "the break"
    assert dt.time(13, 0) in starts
    assert starts[-1] == dt.time(18, 30)

    listing = client.get(reverse("ris:room_list")).content.decode()
    assert dashed("Mon-Fri 07:00-12:30, 13:00-19:00; Sat 08:00-12:00") in listing
    assert "NORTH_CT3" in listing
    assert AuditEvent.objects.filter(
        action=AuditEvent.Action.CREATE, object_type="room", object_id=str(room.pk)
    ).exists()
    hours_audit = AuditEvent.objects.get(action=AuditEvent.Action.UPDATE, object_type="room")
    assert "Sat 08:00-12:00" in hours_audit.detail["hours"]["new"]


def test_an_admin_changes_a_rooms_hours_and_the_old_rows_are_replaced(
    facility_admin, room, procedure
):
    client = client_for(facility_admin)
    form = client.get(reverse("ris:room_edit", args=[room.pk]))
    assert form.status_code == 200
    assert form.context["hours"].initial[0] == {
        "weekday": 0,
        "opens": dt.time(8),
        "closes": dt.time(17),
    }
    response = client.post(
        reverse("ris:room_edit", args=[room.pk]),
        room_data(
            [(2, "09:00", "11:00")], name="CT 1", ae_title="NORTH_CT1", procedures=[procedure.pk]
        ),
    )
    assert response.status_code == 302
    assert list(room.hours.values_list("weekday", "opens", "closes")) == [
        (2, dt.time(9), dt.time(11))
    ]
    event = AuditEvent.objects.get(object_type="room", action=AuditEvent.Action.UPDATE)
    assert event.detail["hours"]["new"] == ["Wed 09:00-11:00"]


def test_overlapping_hour_rows_are_refused_with_the_message_beside_the_row(facility_admin, room):
    response = client_for(facility_admin).post(
        reverse("ris:room_edit", args=[room.pk]),
        room_data(
            [(0, "08:00", "12:00"), (0, "11:00", "15:00"), (1, "09:00", "08:00")],
            name="CT 1",
            ae_title="NORTH_CT1",
        ),
    )
    assert response.status_code == 400
    rows = response.context["hours"].forms
    assert rows[0].errors == {}
    assert rows[1].non_field_errors() == [
        dashed("Overlaps Monday 08:00-12:00") + "; a break is the gap between two rows."
    ]
    assert "Closes at 08:00, not after it opens (09:00)" in rows[2].non_field_errors()[0]
    assert dashed("Overlaps Monday 08:00-12:00") in response.content.decode()
    assert room.hours.count() == 5, "nothing changed"


def test_the_hours_service_refuses_overlaps_too(room):
    rows = [
        {"weekday": 0, "opens": dt.time(8), "closes": dt.time(17)},
        {"weekday": 0, "opens": dt.time(10), "closes": dt.time(11)},
        {"weekday": 0, "opens": dt.time(12), "closes": dt.time(13)},
    ]
    assert services.room_hours_problems(rows).keys() == {1, 2}
    with pytest.raises(services.RisError, match="Row 2: Overlaps Monday 08:00"):
        services.room_hours_set(room=room, rows=rows)


def test_an_ae_title_in_use_is_a_form_error_not_a_500(facility_admin, facility_a, facility_b):
    RoomFactory(facility=facility_b, ae_title="SOUTH_CT")
    mine = RoomFactory(facility=facility_a, ae_title="NORTH_MR")
    client = client_for(facility_admin)
    created = client.post(
        reverse("ris:room_create"), room_data([], facility=facility_a.pk, ae_title="SOUTH_CT")
    )
    assert created.status_code == 400
    assert created.context["form"].errors["ae_title"] == [
        "Another room already uses this AE title; each needs its own."
    ]
    edited = client.post(
        reverse("ris:room_edit", args=[mine.pk]),
        room_data([], name=mine.name, ae_title="SOUTH_CT"),
    )
    assert edited.status_code == 400
    assert "Another room already uses this AE title" in edited.content.decode()
    bad = client.post(
        reverse("ris:room_create"), room_data([], facility=facility_a.pk, ae_title="CT\\1")
    )
    assert bad.status_code == 400
    assert "without backslash" in bad.context["form"].errors["ae_title"][0]
    assert Room.objects.filter(facility=facility_a).count() == 1


def test_a_room_name_taken_in_the_facility_is_a_form_error(facility_admin, facility_a, room):
    response = client_for(facility_admin).post(
        reverse("ris:room_create"), room_data([], facility=facility_a.pk, name="CT 1")
    )
    assert response.status_code == 400
    assert response.context["form"].errors["name"] == [
        "North Imaging already has a room named CT 1."
    ]


def test_the_procedures_offered_are_the_facilitys_active_ones(
    facility_admin, facility_a, facility_b, room, procedure
):
    retired = ProcedureFactory(facility=facility_a, name="Retired", is_active=False)
    ProcedureFactory(facility=facility_b, name="Theirs")
    choices = client_for(facility_admin).get(reverse("ris:room_edit", args=[room.pk]))
    offered = list(choices.context["form"].fields["procedures"].queryset)
    assert offered == [procedure]
    room.procedures.add(retired)
    assert set(selectors.room_procedure_choices(facilities=[facility_a], room=room)) == {
        procedure,
        retired,
    }


def test_the_hours_summary_groups_days_with_the_same_hours():
    morning = [(dt.time(8), dt.time(12))]
    assert selectors.hours_summary({0: morning, 1: morning, 3: morning}) == (
        dashed("Mon, Tue, Thu 08:00-12:00")
    )
    assert selectors.hours_summary({}).startswith("No opening hours")


# ------------------------------------------------------------------------ closures


def test_a_closure_over_a_booked_exam_is_saved_with_a_warning_listing_it(
    facility_admin, room, procedure
):
    appointment = booked(procedure, room, at(MONDAY, 9), family_name="Okafor")
    client = client_for(facility_admin)
    response = client.post(
        reverse("ris:room_closure_add", args=[room.pk]),
        {
            "starts_at": local_input(at(MONDAY, 8)),
            "ends_at": local_input(at(MONDAY, 12)),
            "reason": "Tube replacement",
        },
        follow=True,
    )
    closure = RoomClosure.objects.get(room=room)
    assert (closure.starts_at, closure.ends_at) == (at(MONDAY, 8), at(MONDAY, 12))
    assert closure.reason == "Tube replacement"
    page = response.content.decode()
    assert "Closure saved, but 1 appointment(s) fall in it" in page
    assert "1 appointment booked during this closure" in page
    assert "Okafor" in page
    assert appointment.order.accession_number in page
    assert timezone.localtime(appointment.starts_at).strftime("%Y-%m-%d 09:00") in page
    assert "the front desk can move it" in page, "an admin alone may not move exams"
    Appointment.objects.get(pk=appointment.pk, is_cancelled=False)  # left as it was
    event = AuditEvent.objects.get(object_type="roomclosure", action=AuditEvent.Action.CREATE)
    assert event.detail["affected"] == [appointment.order.accession_number]
    assert event.facility_id == room.facility_id
    listed = AuditEvent.objects.get(action=AuditEvent.Action.LIST, object_type="appointment")
    assert listed.detail["ids"] == [appointment.pk]


def test_the_warning_links_to_moving_the_exam_for_an_admin_who_also_books(
    facility_admin, room, procedure
):
    Membership.objects.create(user=facility_admin, facility=room.facility, role=Role.FRONT_DESK)
    appointment = booked(procedure, room, at(MONDAY, 9))
    services.room_closure_add(room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 10))
    page = client_for(facility_admin).get(reverse("ris:room_edit", args=[room.pk]))
    assert reverse("ris:appointment_move", args=[appointment.pk]) in page.content.decode()


def test_a_closure_clear_of_bookings_says_so_and_a_cancelled_one_is_not_listed(
    facility_admin, room, procedure
):
    appointment = booked(procedure, room, at(MONDAY, 9))
    services.appointment_cancel(appointment=appointment, reason="patient called")
    _, affected = services.room_closure_add(
        room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 17)
    )
    assert affected == []
    assert not scheduling.free_slots(procedure, MONDAY, MONDAY)


def test_a_closure_ending_before_it_starts_is_refused(facility_admin, room):
    response = client_for(facility_admin).post(
        reverse("ris:room_closure_add", args=[room.pk]),
        {"starts_at": local_input(at(MONDAY, 12)), "ends_at": local_input(at(MONDAY, 8))},
    )
    assert response.status_code == 400
    assert response.context["closure_form"].errors["ends_at"] == [
        "The closure ends after it starts."
    ]
    assert not RoomClosure.objects.exists()


def test_a_closure_is_removed_and_the_room_opens_again(facility_admin, room, procedure):
    closure, _ = services.room_closure_add(
        room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 17), reason="Holiday"
    )
    assert not scheduling.free_slots(procedure, MONDAY, MONDAY)
    client = client_for(facility_admin)
    assert "Holiday" in client.get(reverse("ris:room_edit", args=[room.pk])).content.decode()
    response = client.post(reverse("ris:room_closure_remove", args=[room.pk, closure.pk]))
    assert response.status_code == 302
    assert not RoomClosure.objects.exists()
    assert scheduling.free_slots(procedure, MONDAY, MONDAY)
    assert AuditEvent.objects.filter(
        object_type="roomclosure", object_id=str(closure.pk), action=AuditEvent.Action.DELETE
    ).exists()


def test_past_closures_are_not_among_the_coming_ones(facility_admin, room):
    RoomClosure.objects.create(
        room=room,
        starts_at=at(TODAY, 0) - dt.timedelta(days=30),
        ends_at=at(TODAY, 0) - dt.timedelta(days=29),
        reason="Last month's service",
    )
    RoomClosure.objects.create(
        room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9), reason="Next service"
    )
    response = client_for(facility_admin).get(reverse("ris:room_edit", args=[room.pk]))
    assert [c.reason for c, _ in response.context["closures"]] == ["Next service"]
    assert [c.reason for c in response.context["past_closures"]] == ["Last month's service"]
    listing = client_for(facility_admin).get(reverse("ris:room_list")).content.decode()
    assert "Next service" in listing
    assert "Last month" not in listing


# ---------------------------------------------------------------------- permissions


def test_a_clerk_may_not_set_up_rooms(clerk, room):
    client = client_for(clerk)
    for url in (
        reverse("ris:room_list"),
        reverse("ris:room_create"),
        reverse("ris:room_edit", args=[room.pk]),
    ):
        assert client.get(url).status_code == 403, url
    closure = RoomClosure.objects.create(room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9))
    for url in (
        reverse("ris:room_edit", args=[room.pk]),
        reverse("ris:room_closure_add", args=[room.pk]),
        reverse("ris:room_closure_remove", args=[room.pk, closure.pk]),
    ):
        assert client.post(url, {}).status_code == 403, url
    assert RoomClosure.objects.filter(pk=closure.pk).exists()


def test_another_facilitys_admin_gets_404_and_never_sees_the_room(facility_b, facility_a, room):
    outsider_admin = member(facility_b, Role.ADMIN, username="southadmin")
    closure = RoomClosure.objects.create(room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9))
    client = client_for(outsider_admin)
    assert client.get(reverse("ris:room_edit", args=[room.pk])).status_code == 404
    assert client.post(reverse("ris:room_edit", args=[room.pk]), {}).status_code == 404
    assert (
        client.post(
            reverse("ris:room_closure_add", args=[room.pk]),
            {"starts_at": local_input(at(MONDAY, 8)), "ends_at": local_input(at(MONDAY, 9))},
        ).status_code
        == 404
    )
    assert (
        client.post(reverse("ris:room_closure_remove", args=[room.pk, closure.pk])).status_code
        == 404
    )
    assert "CT 1" not in client.get(reverse("ris:room_list")).content.decode()
    create = client.post(reverse("ris:room_create"), room_data([], facility=facility_a.pk))
    assert create.status_code == 400
    assert "facility" in create.context["form"].errors
    assert RoomClosure.objects.filter(pk=closure.pk).exists()
    assert not Room.objects.filter(ae_title="NORTH_CT3").exists()


def test_the_menu_shows_rooms_to_admins_only(facility_admin, clerk):
    def menu(user):
        response = client_for(user).get(reverse("home"))
        return [item["label"] for item in response.context["nav_items"]]

    assert "Rooms" in menu(facility_admin)
    assert "Rooms" not in menu(clerk)


def test_the_room_list_reads_a_constant_number_of_queries(facility_admin, facility_a):
    client = client_for(facility_admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("ris:room_list")).status_code == 200
        return len(captured)

    RoomFactory(facility=facility_a)
    one = queries()
    for _ in range(3):
        room = RoomFactory(facility=facility_a)
        RoomHours.objects.create(room=room, weekday=0, opens=dt.time(8), closes=dt.time(12))
        RoomClosure.objects.create(room=room, starts_at=at(MONDAY, 8), ends_at=at(MONDAY, 9))
    assert queries() == one
