"""The schedule over the REST API: order, free slots, book, move, cancel, walk in."""

import datetime as dt

import pytest
from django.core.management import call_command
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import AuditEvent
from accounts.roles import Role
from ris.models import Appointment, Order, RoomClosure, RoomHours
from tests.factories import PatientFactory, ProcedureFactory, RoomFactory, member, order_for

pytestmark = pytest.mark.django_db

NEXT_MONDAY = timezone.localdate() + dt.timedelta(days=7 - timezone.localdate().weekday())


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour, minute)))


@pytest.fixture
def ct(facility_a):
    procedure = ProcedureFactory(facility=facility_a, modality="CT", duration_minutes=30)
    room = RoomFactory(facility=facility_a, name="CT 1", modality="CT")
    RoomHours.objects.create(room=room, weekday=0, opens=dt.time(8), closes=dt.time(10))
    return procedure, room


def test_a_clerk_creates_an_order_and_gets_its_accession_number(clerk, facility_a, ct):
    procedure, _ = ct
    patient = PatientFactory(facility=facility_a)
    response = api_for(clerk).post(
        "/api/v1/orders/",
        {
            "patient": patient.pk,
            "procedure": procedure.pk,
            "priority": "urgent",
            "diagnosis_codes": "r51.9; s06.0x0a",
            "placer_order_number": "HIS-1",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["accession_number"].startswith("NORTH") and body["status"] == "requested"
    assert body["diagnosis_codes"] == "R51.9, S06.0X0A"
    assert body["study_instance_uid"]
    again = api_for(clerk).post(
        "/api/v1/orders/",
        {"patient": patient.pk, "procedure": procedure.pk, "placer_order_number": "HIS-1"},
        format="json",
    )
    assert again.status_code == 400
    assert "HIS-1 is already used" in again.json()["detail"]


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"diagnosis_codes": "headache"}, "Not an ICD-10 code: HEADACHE"),
        ({"priority": "whenever"}, "priority"),
        ({"procedure": 999999}, "procedure"),
    ],
)
def test_bad_orders_are_400s_that_say_why(clerk, facility_a, ct, payload, field):
    patient = PatientFactory(facility=facility_a)
    body = {"patient": patient.pk, "procedure": ct[0].pk, **payload}
    response = api_for(clerk).post("/api/v1/orders/", body, format="json")
    assert response.status_code == 400
    assert field in str(response.json())


def test_orders_of_another_facility_cannot_be_made_or_seen(outsider, facility_a, ct):
    patient = PatientFactory(facility=facility_a)
    response = api_for(outsider).post(
        "/api/v1/orders/", {"patient": patient.pk, "procedure": ct[0].pk}, format="json"
    )
    assert response.status_code == 400 and "patient" in response.json()
    technologist = member(facility_a, Role.TECHNOLOGIST)
    response = api_for(technologist).post(
        "/api/v1/orders/", {"patient": patient.pk, "procedure": ct[0].pk}, format="json"
    )
    assert response.status_code == 403


def test_free_slots_then_book_then_move_then_cancel(clerk, facility_a, ct):
    procedure, room = ct
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    api = api_for(clerk)
    slots = api.get(
        f"/api/v1/procedures/{procedure.pk}/free-slots/",
        {"from": NEXT_MONDAY.isoformat(), "to": NEXT_MONDAY.isoformat(), "limit": 3},
    ).json()
    assert [s["starts_at"][11:16] for s in slots] == ["08:00", "08:05", "08:10"]
    assert slots[0]["room_name"] == "CT 1"

    booked = api.post(
        "/api/v1/appointments/",
        {"order": order.pk, "room": room.pk, "starts_at": slots[0]["starts_at"]},
        format="json",
    )
    assert booked.status_code == 201, booked.json()
    assert booked.json()["status"] == "scheduled"
    listed = api.get("/api/v1/appointments/", {"day": NEXT_MONDAY.isoformat()}).json()
    assert [a["accession_number"] for a in listed["results"]] == [order.accession_number]

    moved = api.post(
        f"/api/v1/appointments/{booked.json()['id']}/move/",
        {"room": room.pk, "starts_at": at(NEXT_MONDAY, 9).isoformat(), "reason": "asked"},
        format="json",
    )
    assert moved.status_code == 201, moved.json()
    assert moved.json()["moved_from"] == booked.json()["id"]
    history = api.get("/api/v1/appointments/", {"order": order.pk, "cancelled": "true"}).json()
    assert history["results"][0]["cancel_reason"].startswith("moved to CT 1")

    no_reason = api.post(f"/api/v1/appointments/{moved.json()['id']}/cancel/", {}, format="json")
    assert no_reason.status_code == 400 and "reason" in no_reason.json()
    cancelled = api.post(
        f"/api/v1/appointments/{moved.json()['id']}/cancel/",
        {"reason": "feels better", "cancel_exam": True},
        format="json",
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert AuditEvent.objects.filter(object_type="appointment", door="api").exists()


def test_booking_a_taken_or_closed_slot_is_a_400_naming_the_clash(clerk, facility_a, ct):
    procedure, room = ct
    first = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    second = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    api = api_for(clerk)
    start = at(NEXT_MONDAY, 8).isoformat()
    api.post("/api/v1/appointments/", {"order": first.pk, "room": room.pk, "starts_at": start})
    clash = api.post(
        "/api/v1/appointments/",
        {"order": second.pk, "room": room.pk, "starts_at": at(NEXT_MONDAY, 8, 15).isoformat()},
        format="json",
    )
    assert clash.status_code == 400
    assert (
        f"CT 1 is booked {NEXT_MONDAY} 08:00 to 08:30 ({first.accession_number})"
        in (clash.json()["detail"])
    )
    RoomClosure.objects.create(
        room=room, starts_at=at(NEXT_MONDAY, 9), ends_at=at(NEXT_MONDAY, 10), reason="service"
    )
    closed = api.post(
        "/api/v1/appointments/",
        {"order": second.pk, "room": room.pk, "starts_at": at(NEXT_MONDAY, 9).isoformat()},
        format="json",
    )
    assert closed.status_code == 400 and "not open" in closed.json()["detail"]
    assert Appointment.objects.filter(order=second).count() == 0


def test_a_walk_in_over_the_api(clerk, facility_a, ct):
    procedure, _ = ct
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    response = api_for(clerk).post(
        "/api/v1/appointments/walk-in/", {"order": order.pk}, format="json"
    )
    assert response.status_code == 201, response.json()
    assert response.json()["is_walk_in"] and response.json()["status"] == "arrived"


def test_scheduling_is_scoped_and_needs_the_schedule_capability(outsider, facility_a, ct):
    procedure, room = ct
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    appointment = Appointment.objects.create(
        facility=facility_a,
        order=order,
        room=room,
        starts_at=at(NEXT_MONDAY, 8),
        ends_at=at(NEXT_MONDAY, 8, 30),
    )
    outside = api_for(outsider)
    assert outside.get("/api/v1/appointments/").json()["results"] == []
    assert outside.get(f"/api/v1/appointments/{appointment.pk}/").status_code == 404
    cancel = outside.post(f"/api/v1/appointments/{appointment.pk}/cancel/", {"reason": "x"})
    assert cancel.status_code == 404
    assert outside.get(f"/api/v1/procedures/{procedure.pk}/free-slots/").status_code == 404
    booking = outside.post(
        "/api/v1/appointments/",
        {"order": order.pk, "room": room.pk, "starts_at": at(NEXT_MONDAY, 9).isoformat()},
        format="json",
    )
    assert booking.status_code == 400 and "order" in booking.json()
    technologist = member(facility_a, Role.TECHNOLOGIST)
    tech = api_for(technologist)
    assert tech.get(f"/api/v1/appointments/{appointment.pk}/").status_code == 200
    assert (
        tech.post(f"/api/v1/appointments/{appointment.pk}/cancel/", {"reason": "x"}).status_code
        == 403
    )
    order.refresh_from_db()
    assert order.status == Order.Status.REQUESTED


@pytest.mark.parametrize(
    "query",
    [
        {"from": "tomorrow"},
        {"from": "2026-12-10", "to": "2026-12-01"},
        {"from": "2026-01-01", "to": "2026-12-31"},
        {"limit": "0"},
        {"room": "CT1"},
    ],
)
def test_bad_free_slot_queries_are_400s(clerk, ct, query):
    response = api_for(clerk).get(f"/api/v1/procedures/{ct[0].pk}/free-slots/", query)
    assert response.status_code == 400


def test_rooms_show_their_hours_and_coming_closures(clerk, ct):
    _, room = ct
    RoomClosure.objects.create(
        room=room, starts_at=at(NEXT_MONDAY, 9), ends_at=at(NEXT_MONDAY, 10), reason="service"
    )
    body = api_for(clerk).get(f"/api/v1/rooms/{room.pk}/").json()
    assert body["hours"] == [{"weekday": 0, "opens": "08:00:00", "closes": "10:00:00"}]
    assert [c["reason"] for c in body["closures"]] == ["service"]


def test_the_schedule_api_is_in_the_openapi_schema(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--file", str(out), "--validate", "--fail-on-warn")
    schema = out.read_text()
    for path in (
        "/api/v1/appointments/walk-in/",
        "/api/v1/appointments/{id}/move/",
        "/api/v1/procedures/{id}/free-slots/",
    ):
        assert path in schema
