"""The front desk's schedule pages: day and week calendars, booking from suggested slots,
moving, cancelling and walk-ins, each scoped to the user's facilities and audited."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.roles import Role
from ris import schedule_grid, services
from ris.models import Appointment, Order, RoomClosure, RoomHours
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
WEDNESDAY = MONDAY + dt.timedelta(days=2)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)))


@pytest.fixture
def ct(facility_a):
    """A 30-minute CT head; CT 1 open weekdays 08:00-17:00, CT 2 09:00-17:00."""
    procedure = ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=30)
    rooms = []
    for name, opens in (("CT 1", 8), ("CT 2", 9)):
        room = RoomFactory(facility=facility_a, name=name, modality="CT")
        for weekday in range(5):
            RoomHours.objects.create(
                room=room, weekday=weekday, opens=dt.time(opens), closes=dt.time(17)
            )
        rooms.append(room)
    return procedure, rooms


@pytest.fixture
def technologist(facility_a):
    return member(facility_a, Role.TECHNOLOGIST, username="tech")


def requested(procedure, family_name: str = "Waiting") -> Order:
    patient = PatientFactory(facility=procedure.facility, family_name=family_name)
    return order_for(patient, procedure=procedure)


def booked(procedure, room, starts_at, family_name: str = "Booked") -> Appointment:
    order = requested(procedure, family_name)
    return services.appointment_book(order=order, room=room, starts_at=starts_at)


def day_url(day: dt.date, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"day": day.isoformat(), **params}.items())
    return f"{reverse('ris:schedule_day')}?{query}"


def laid_out(response) -> list[tuple[str, str, schedule_grid.Cell]]:
    """Replay the browser's table layout: (column title, start time, cell) for every cell.
    Every row must be covered exactly once in every column, or the grid is broken."""
    grid, headers = response.context["grid"], response.context["headers"]
    busy = [0] * len(headers)
    placed = []
    for r, row in enumerate(grid.rows):
        free = [c for c in range(len(headers)) if busy[c] <= r]
        assert len(free) == len(row.cells), f"row {r} does not fill its free columns"
        for c, cell in zip(free, row.cells, strict=True):
            busy[c] = r + cell.rowspan
            minute = grid.first_minute + r * schedule_grid.ROW_MINUTES
            placed.append((headers[c]["title"], f"{minute // 60:02d}:{minute % 60:02d}", cell))
    assert busy == [len(grid.rows)] * len(headers), "a column runs past the last row"
    return placed


def blocks(response) -> dict[str, tuple[str, str, int]]:
    """Accession number -> (column, start time, rows spanned) of each appointment block."""
    return {
        cell.appointment.order.accession_number: (column, start, cell.rowspan)
        for column, start, cell in laid_out(response)
        if cell.appointment
    }


# ------------------------------------------------------------------------- day view


def test_the_day_view_draws_each_appointment_in_its_rooms_column_at_its_time(clerk, ct):
    procedure, (ct1, ct2) = ct
    first = booked(procedure, ct1, at(MONDAY, 9), "Early")
    second = booked(procedure, ct2, at(MONDAY, 10, 15), "Later")
    response = client_for(clerk).get(day_url(MONDAY))
    assert response.status_code == 200
    assert [h["title"] for h in response.context["headers"]] == ["CT 1", "CT 2"]
    assert blocks(response) == {
        first.order.accession_number: ("CT 1", "09:00", 6),  # 30 minutes of 5-minute rows
        second.order.accession_number: ("CT 2", "10:15", 6),
    }
    grid = response.context["grid"]
    assert (grid.first_minute, grid.last_minute) == (8 * 60, 17 * 60), "opening to closing"
    page = response.content.decode()
    for text in (
        "09:00\u201309:30",
        "Early, Alex",
        procedure.name,
        first.order.accession_number,
        f'<details id="appt-{first.pk}" class="appt appt-scheduled',
        reverse("ris:order_detail", args=[first.order.pk]),
        reverse("ris:check_in", args=[first.pk]),
        reverse("ris:appointment_move", args=[first.pk]),
        reverse("ris:appointment_cancel", args=[first.pk]),
        reverse("ris:appointment_letter", args=[first.pk]),
    ):
        assert text in page, text


def test_opening_hours_closed_time_and_closures_are_drawn_apart(clerk, ct):
    _, (ct1, _) = ct
    RoomClosure.objects.create(
        room=ct1, starts_at=at(MONDAY, 12), ends_at=at(MONDAY, 13), reason="Tube replacement"
    )
    cells = laid_out(client_for(clerk).get(day_url(MONDAY)))
    kinds = {(column, start): cell.kind for column, start, cell in cells}
    assert kinds[("CT 2", "08:00")] == "closed", "CT 2 opens at nine"
    assert kinds[("CT 2", "09:00")] == "open"
    assert kinds[("CT 1", "12:00")] == "closure"
    closure = next(cell for _, start, cell in cells if cell.kind == "closure")
    assert closure.rowspan == 12 and closure.closure.reason == "Tube replacement"


def test_a_closure_over_an_existing_booking_keeps_the_booking_visible_and_flagged(clerk, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 12, 15))
    RoomClosure.objects.create(room=ct1, starts_at=at(MONDAY, 12), ends_at=at(MONDAY, 13))
    cells = laid_out(client_for(clerk).get(day_url(MONDAY)))
    ct1_cells = [(start, cell.kind) for column, start, cell in cells if column == "CT 1"]
    assert ("12:00", "closure") in ct1_cells and ("12:45", "closure") in ct1_cells
    block = next(cell for _, _, cell in cells if cell.appointment == appointment)
    assert block.in_closure


def test_a_walk_in_outside_opening_hours_widens_the_day(clerk, ct):
    procedure, (ct1, _) = ct
    order = requested(procedure)
    appointment = services.walk_in(order=order, room=ct1, now=at(MONDAY, 18, 40))
    response = client_for(clerk).get(day_url(MONDAY))
    assert response.context["grid"].last_minute == 20 * 60
    assert blocks(response)[order.accession_number] == ("CT 1", "18:40", 6)
    assert appointment.is_walk_in and "walk-in" in response.content.decode()


def test_a_day_without_opening_hours_shows_seven_to_seven(clerk, ct):
    sunday = MONDAY + dt.timedelta(days=6)
    grid = client_for(clerk).get(day_url(sunday)).context["grid"]
    assert (grid.first_minute, grid.last_minute) == (7 * 60, 19 * 60)


def test_the_day_view_links_to_the_days_around_it_and_the_other_views(clerk, ct):
    page = client_for(clerk).get(day_url(MONDAY)).content.decode()
    for day in (MONDAY - dt.timedelta(days=1), MONDAY + dt.timedelta(days=1), TODAY):
        assert f"?day={day.isoformat()}" in page
    assert reverse("ris:schedule_week") in page
    assert f"{reverse('ris:schedule')}?day={MONDAY.isoformat()}" in page


def test_a_day_that_is_not_a_date_shows_today_with_a_message(clerk, ct):
    response = client_for(clerk).get(reverse("ris:schedule_day"), {"day": "someday"})
    assert response.status_code == 200
    assert response.context["day"] == TODAY
    assert "is not a date" in response.content.decode()


def test_the_day_view_shows_only_the_users_facilities(clerk, outsider, ct, facility_a, facility_b):
    procedure, (ct1, _) = ct
    booked(procedure, ct1, at(MONDAY, 9), "Private")
    theirs = RoomFactory(facility=facility_b, name="South CT")
    response = client_for(outsider).get(day_url(MONDAY))
    page = response.content.decode()
    assert [h["title"] for h in response.context["headers"]] == [theirs.name]
    assert "Private" not in page and "CT 1" not in page
    assert client_for(outsider).get(day_url(MONDAY, facility=facility_a.pk)).status_code == 404
    assert "South CT" not in client_for(clerk).get(day_url(MONDAY)).content.decode()


def test_the_day_view_is_audited_with_the_appointments_it_showed(clerk, ct):
    procedure, (ct1, ct2) = ct
    shown = [booked(procedure, ct1, at(MONDAY, 9)), booked(procedure, ct2, at(MONDAY, 9))]
    client_for(clerk).get(day_url(MONDAY))
    event = AuditEvent.objects.get(action="list", object_type="appointment")
    assert sorted(event.detail["ids"]) == sorted(a.pk for a in shown)
    assert event.detail["query"]["view"] == "day"


def test_the_day_view_query_count_does_not_grow_with_appointments(
    clerk, ct, django_assert_max_num_queries
):
    procedure, rooms = ct
    rooms.append(RoomFactory(facility=procedure.facility, name="CT 3", modality="CT"))
    booked(procedure, rooms[0], at(MONDAY, 9))
    client = client_for(clerk)
    client.get(day_url(MONDAY))  # session and caches warm
    with CaptureQueriesContext(connection) as one:
        client.get(day_url(MONDAY))
    for room in rooms:
        for n in range(12):
            now = at(MONDAY, 7) + dt.timedelta(minutes=30 * n)
            services.walk_in(order=requested(procedure), room=room, now=now)
    with django_assert_max_num_queries(len(one)):
        response = client.get(day_url(MONDAY))
    assert len(blocks(response)) == 37
    assert len(one) <= 14, "session, user, roles, facilities, rooms, hours, closures, audit"


# ------------------------------------------------------------------------ week view


def test_the_week_view_shows_one_room_monday_to_sunday(clerk, ct):
    procedure, (ct1, ct2) = ct
    monday = booked(procedure, ct1, at(MONDAY, 9))
    wednesday = booked(procedure, ct1, at(WEDNESDAY, 14))
    elsewhere = booked(procedure, ct2, at(MONDAY, 9))
    response = client_for(clerk).get(
        reverse("ris:schedule_week"), {"room": ct1.pk, "week": WEDNESDAY.isoformat()}
    )
    assert response.status_code == 200
    headers = response.context["headers"]
    assert [h["title"] for h in headers] == ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    assert headers[0]["url"] == day_url(MONDAY, facility=ct1.facility_id)
    placed = blocks(response)
    assert placed[monday.order.accession_number] == ("Mon", "09:00", 6)
    assert placed[wednesday.order.accession_number] == ("Wed", "14:00", 6)
    assert elsewhere.order.accession_number not in placed
    kinds = {(col, start): cell.kind for col, start, cell in laid_out(response)}
    assert kinds[("Sat", "08:00")] == "closed", "CT 1 is closed at weekends"


def test_the_week_view_of_another_facilitys_room_is_a_404(outsider, ct):
    _, (ct1, _) = ct
    url = reverse("ris:schedule_week")
    assert client_for(outsider).get(url, {"room": ct1.pk}).status_code == 404
    assert client_for(outsider).get(url, {"room": "x"}).status_code == 404
    assert client_for(outsider).get(url).status_code == 200, "no rooms: an empty page"


# -------------------------------------------------------------------------- booking


def test_booking_a_suggested_slot_schedules_the_exam_and_shows_that_day(clerk, ct):
    procedure, (ct1, _) = ct
    order = requested(procedure, "Newbooking")
    client = client_for(clerk)
    url = reverse("ris:order_book", args=[order.pk])
    page = client.get(url, {"first": MONDAY.isoformat(), "last": MONDAY.isoformat()})
    assert page.status_code == 200
    slot = f"{ct1.pk}@{at(MONDAY, 8).isoformat()}"
    assert f'value="{slot}"' in page.content.decode()
    assert AuditEvent.objects.filter(action="view", object_type="order").exists()

    response = client.post(url, {"slot": slot}, follow=True)
    assert response.redirect_chain[0][0] == (
        day_url(MONDAY, facility=order.facility_id) + f"#appt-{order.appointments.get().pk}"
    )
    assert f"Booked Newbooking, Alex in CT 1 on {MONDAY:%a %d %b %Y} at 08:00." in (
        response.content.decode()
    )
    appointment = Appointment.objects.get(order=order)
    assert (appointment.room, appointment.starts_at) == (ct1, at(MONDAY, 8))
    order.refresh_from_db()
    assert order.status == Order.Status.SCHEDULED


def test_a_clerk_can_type_the_room_day_and_time(clerk, ct):
    procedure, (_, ct2) = ct
    order = requested(procedure)
    response = client_for(clerk).post(
        reverse("ris:order_book", args=[order.pk]),
        {"room": ct2.pk, "day": MONDAY.isoformat(), "time": "11:20"},
    )
    assert response.status_code == 302
    assert Appointment.objects.get(order=order).starts_at == at(MONDAY, 11, 20)


def test_booking_an_occupied_or_closed_slot_shows_why_and_books_nothing(clerk, ct):
    procedure, (ct1, _) = ct
    taken = booked(procedure, ct1, at(MONDAY, 9))
    order = requested(procedure)
    client = client_for(clerk)
    url = reverse("ris:order_book", args=[order.pk])
    occupied = client.post(url, {"slot": f"{ct1.pk}@{at(MONDAY, 9, 15).isoformat()}"})
    assert occupied.status_code == 400
    assert f"CT 1 is booked {MONDAY.isoformat()} 09:00 to 09:30" in occupied.content.decode()
    assert taken.order.accession_number in occupied.content.decode()
    closed = client.post(url, {"room": ct1.pk, "day": MONDAY.isoformat(), "time": "18:00"})
    assert closed.status_code == 400
    assert "CT 1 is not open" in closed.content.decode()
    assert not Appointment.objects.filter(order=order).exists()
    order.refresh_from_db()
    assert order.status == Order.Status.REQUESTED


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"room": "ROOM", "day": "next monday", "time": "09:00"}, "Enter a valid date"),
        ({"room": "ROOM", "day": "MONDAY", "time": "25:99"}, "Enter a valid time"),
        ({"room": "999999", "day": "MONDAY", "time": "09:00"}, "Choose one of the rooms offered"),
        ({"room": "FOREIGN", "day": "MONDAY", "time": "09:00"}, "Choose one of the rooms offered"),
        ({"room": "ROOM", "day": "MONDAY"}, "Choose a time"),
        ({"slot": "garbage"}, "That suggestion is not valid any more"),
        ({}, "Choose a room and a day and a time."),
        ({"slot": "FOREIGN@2030-01-07T09:00:00+00:00"}, "That suggestion is not valid any more"),
    ],
)
def test_bad_booking_input_gets_a_clear_message(clerk, ct, facility_b, data, message):
    procedure, (ct1, _) = ct
    foreign = RoomFactory(facility=facility_b, modality="CT")
    order = requested(procedure)
    values = {"ROOM": str(ct1.pk), "FOREIGN": str(foreign.pk), "MONDAY": MONDAY.isoformat()}
    for key, value in values.items():
        data = {k: v.replace(key, value) for k, v in data.items()}
    response = client_for(clerk).post(reverse("ris:order_book", args=[order.pk]), data)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Appointment.objects.filter(order=order).exists()


def test_the_suggestions_refresh_as_a_fragment_for_the_range_and_room(clerk, ct):
    procedure, (ct1, ct2) = ct
    order = requested(procedure, "Fragment")
    client = client_for(clerk)
    url = reverse("ris:order_book", args=[order.pk])
    query = {"first": MONDAY.isoformat(), "last": MONDAY.isoformat(), "partial": "1"}
    fragment = client.get(url, {**query, "room": ct2.pk}).content.decode()
    assert "<html" not in fragment and "Fragment" not in fragment, "slots only"
    assert f'value="{ct2.pk}@{at(MONDAY, 9).isoformat()}"' in fragment
    assert f'value="{ct1.pk}@' not in fragment
    assert not AuditEvent.objects.filter(action="view").exists(), "no patient data in it"
    backwards = client.get(url, {**query, "last": (MONDAY - dt.timedelta(days=1)).isoformat()})
    assert "The end of the range is before its start." in backwards.content.decode()


def test_suggestions_are_spread_over_the_days_of_the_range(clerk, ct):
    procedure, _ = ct
    order = requested(procedure)
    friday = MONDAY + dt.timedelta(days=4)
    response = client_for(clerk).get(
        reverse("ris:order_book", args=[order.pk]),
        {"first": MONDAY.isoformat(), "last": friday.isoformat()},
    )
    suggestions = response.context["suggestions"]
    assert [day for day, _ in suggestions] == [MONDAY + dt.timedelta(days=n) for n in range(5)]
    assert sum(len(slots) for _, slots in suggestions) <= 60
    monday = [timezone.localtime(slot.starts_at).hour for slot in suggestions[0][1]]
    assert min(monday) == 8 and max(monday) >= 15, "morning to afternoon, not one hour"


def test_an_order_already_booked_is_not_offered_for_booking(clerk, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9))
    client = client_for(clerk)
    url = reverse("ris:order_book", args=[appointment.order.pk])
    assert "move its appointment instead" in client.get(url).content.decode()
    response = client.post(url, {"room": ct1.pk, "day": MONDAY.isoformat(), "time": "13:00"})
    assert response.status_code == 400
    assert Appointment.objects.filter(order=appointment.order).count() == 1


# ------------------------------------------------------------- move, cancel, walk-in


def test_moving_an_appointment_from_the_page_keeps_the_old_one_linked(clerk, ct):
    procedure, (ct1, ct2) = ct
    first = booked(procedure, ct1, at(MONDAY, 9), "Mover")
    client = client_for(clerk)
    url = reverse("ris:appointment_move", args=[first.pk])
    wednesday = {"first": WEDNESDAY.isoformat(), "last": WEDNESDAY.isoformat(), "room": ct2.pk}
    page = client.get(url, wednesday)
    target = f"{ct2.pk}@{at(WEDNESDAY, 11).isoformat()}"
    assert f'value="{target}"' in page.content.decode()
    response = client.post(url, {"slot": target, "reason": "patient asked"}, follow=True)
    assert response.redirect_chain[0][0].split("#")[0] == day_url(
        WEDNESDAY, facility=ct2.facility_id
    )
    assert f"Moved Mover, Alex in CT 2 on {WEDNESDAY:%a %d %b %Y} at 11:00." in (
        response.content.decode()
    )
    first.refresh_from_db()
    assert first.is_cancelled and first.cancel_reason.endswith(": patient asked")
    moved = first.moved_to
    assert (moved.room, moved.starts_at) == (ct2, at(WEDNESDAY, 11))

    order_page = client.get(reverse("ris:order_detail", args=[first.order.pk])).content.decode()
    assert "<del>" in order_page and "patient asked" in order_page
    assert f'href="#appointment-{moved.pk}"' in order_page
    assert client.post(url, {"slot": target}).status_code == 400, "a cancelled one stays put"


def test_cancelling_needs_a_reason_and_sends_the_exam_back_to_be_booked(clerk, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9), "Canceller")
    client = client_for(clerk)
    url = reverse("ris:appointment_cancel", args=[appointment.pk])
    assert 'name="reason"' in client.get(url).content.decode()
    refused = client.post(url, {"reason": "  "})
    assert refused.status_code == 400
    assert "Give a reason for the cancellation." in refused.content.decode()
    appointment.refresh_from_db()
    assert not appointment.is_cancelled

    response = client.post(url, {"reason": "patient has a cold"}, follow=True)
    assert response.redirect_chain[0][0].split("#")[0] == day_url(
        MONDAY, facility=appointment.facility_id
    )
    assert "the exam is to be rebooked" in response.content.decode()
    appointment.refresh_from_db()
    assert appointment.is_cancelled and appointment.cancel_reason == "patient has a cold"
    assert appointment.order.status == Order.Status.REQUESTED


def test_cancelling_the_exam_too_closes_the_order(clerk, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9))
    client_for(clerk).post(
        reverse("ris:appointment_cancel", args=[appointment.pk]),
        {"reason": "no longer needed", "cancel_exam": "on"},
    )
    appointment.order.refresh_from_db()
    assert appointment.order.status == Order.Status.CANCELLED


def test_a_walk_in_goes_into_the_first_free_room_now(clerk, ct, monkeypatch):
    procedure, (ct1, _) = ct
    ten = at(TODAY, 10)
    monkeypatch.setattr(timezone, "now", lambda: ten)
    services.walk_in(order=requested(procedure), room=ct1)  # CT 1 busy until 10:30
    order = requested(procedure, "Walker")
    response = client_for(clerk).post(reverse("ris:order_walk_in", args=[order.pk]), follow=True)
    assert response.redirect_chain[0][0].split("#")[0] == day_url(TODAY, facility=order.facility_id)
    assert f"Walk-in: Walker, Alex in CT 2 on {TODAY:%a %d %b %Y} at 10:00" in (
        response.content.decode()
    )
    order.refresh_from_db()
    assert order.status == Order.Status.ARRIVED
    assert Appointment.objects.get(order=order).is_walk_in


def test_a_walk_in_into_a_chosen_room_and_its_refusals(clerk, ct, facility_b, monkeypatch):
    procedure, (ct1, _) = ct
    monkeypatch.setattr(timezone, "now", lambda: at(TODAY, 10))
    client = client_for(clerk)
    order = requested(procedure)
    url = reverse("ris:order_walk_in", args=[order.pk])
    foreign = RoomFactory(facility=facility_b, modality="CT")
    refused = client.post(url, {"room": foreign.pk}, follow=True)
    assert "Choose one of the rooms offered" in refused.content.decode()
    assert not Appointment.objects.filter(order=order).exists()
    client.post(url, {"room": ct1.pk})
    assert Appointment.objects.get(order=order).room == ct1
    again = client.post(url, follow=True)
    assert "cannot be a walk-in" in again.content.decode(), "the service's reason, no 500"


def test_the_order_page_offers_booking_walk_in_and_appointment_actions(clerk, ct, technologist):
    procedure, (ct1, _) = ct
    order = requested(procedure)
    url = reverse("ris:order_detail", args=[order.pk])
    page = client_for(clerk).get(url).content.decode()
    assert reverse("ris:order_book", args=[order.pk]) in page
    assert reverse("ris:order_walk_in", args=[order.pk]) in page
    assert reverse("ris:order_book", args=[order.pk]) not in (
        client_for(technologist).get(url).content.decode()
    )
    appointment = services.appointment_book(order=order, room=ct1, starts_at=at(MONDAY, 9))
    page = client_for(clerk).get(url).content.decode()
    assert reverse("ris:order_book", args=[order.pk]) not in page
    for name in ("ris:appointment_move", "ris:appointment_cancel", "ris:appointment_letter"):
        assert reverse(name, args=[appointment.pk]) in page


def test_check_in_from_the_day_view_returns_to_it(clerk, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9))
    client = client_for(clerk)
    url = reverse("ris:check_in", args=[appointment.pk])
    back = day_url(MONDAY)
    assert client.post(url, {"next": back}).url == back
    other = booked(procedure, ct1, at(MONDAY, 10))
    away = client.post(reverse("ris:check_in", args=[other.pk]), {"next": "https://evil.example/"})
    assert away.url == f"{reverse('ris:schedule')}?day={MONDAY.isoformat()}"


def test_the_schedule_menu_entry_opens_the_day_view_and_the_list_links_to_it(clerk):
    client = client_for(clerk)
    items = client.get(reverse("home")).context["nav_items"]
    assert reverse("ris:schedule_day") in [item["url"] for item in items]
    assert reverse("ris:schedule_day") in client.get(reverse("ris:schedule")).content.decode()


# --------------------------------------------------------------------- permissions


def test_only_edit_schedule_may_book_move_cancel_or_walk_in(technologist, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9))
    order = requested(procedure)
    client = client_for(technologist)
    assert client.get(day_url(MONDAY)).status_code == 200, "may see the schedule"
    for url, data in (
        (reverse("ris:order_book", args=[order.pk]), {"slot": f"{ct1.pk}@x"}),
        (reverse("ris:order_walk_in", args=[order.pk]), {}),
        (reverse("ris:appointment_move", args=[appointment.pk]), {}),
        (reverse("ris:appointment_cancel", args=[appointment.pk]), {"reason": "x"}),
    ):
        assert client.post(url, data).status_code == 403, url
    assert client.get(reverse("ris:order_book", args=[order.pk])).status_code == 403
    page = client.get(day_url(MONDAY)).content.decode()
    assert reverse("ris:appointment_move", args=[appointment.pk]) not in page
    appointment.refresh_from_db()
    assert not appointment.is_cancelled


def test_another_facilitys_order_or_appointment_is_a_404(outsider, ct):
    procedure, (ct1, _) = ct
    appointment = booked(procedure, ct1, at(MONDAY, 9))
    order = requested(procedure)
    client = client_for(outsider)
    for url in (
        reverse("ris:order_book", args=[order.pk]),
        reverse("ris:appointment_move", args=[appointment.pk]),
        reverse("ris:appointment_cancel", args=[appointment.pk]),
    ):
        assert client.get(url).status_code == 404, url
        assert client.post(url, {"reason": "x"}).status_code == 404, url
    assert client.post(reverse("ris:order_walk_in", args=[order.pk])).status_code == 404
    appointment.refresh_from_db()
    assert not appointment.is_cancelled


# ------------------------------------------------------------------- the grid itself


def test_the_grid_covers_every_row_once_around_closures_and_appointments(ct):
    procedure, (ct1, _) = ct
    order = requested(procedure)
    appointment = Appointment(
        order=order, room=ct1, starts_at=at(MONDAY, 9, 2), ends_at=at(MONDAY, 9, 32)
    )
    closure = RoomClosure(room=ct1, starts_at=at(MONDAY, 8, 30), ends_at=at(MONDAY, 10))
    column = schedule_grid.ColumnSpec(
        day=MONDAY,
        hours=[(dt.time(8), dt.time(12)), (dt.time(13), dt.time(17))],
        closures=[closure],
        appointments=[appointment],
    )
    grid = schedule_grid.grid([column])
    runs = []
    for r, row in enumerate(grid.rows):
        for cell in row.cells:
            minute = grid.first_minute + r * 5
            runs.append((f"{minute // 60:02d}:{minute % 60:02d}", cell.kind, cell.rowspan))
    assert sum(rowspan for _, _, rowspan in runs) == len(grid.rows) == 9 * 12
    assert runs[:5] == [
        ("08:00", "open", 3),
        ("08:15", "open", 3),
        ("08:30", "closure", 6),
        ("09:00", "appointment", 7),  # 09:02-09:32, rounded out to whole rows
        ("09:35", "closure", 5),
    ]
    assert ("12:00", "closed", 3) in runs and ("13:00", "open", 3) in runs
    assert grid.rows[0].cells[0].line == "hour" and grid.rows[3].cells[0].line == "quarter"
