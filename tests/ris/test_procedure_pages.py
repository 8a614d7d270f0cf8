"""A facility administrator's procedure catalogue pages: procedures with their duration,
preparation and the rooms that perform them, scoped to the administrator's facilities,
never deleted (deactivated), every change audited."""

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from accounts.roles import Role
from ris import scheduling, selectors, services
from ris.models import Procedure, RoomHours
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


def at(day: dt.date, hour: int) -> dt.datetime:
    return timezone.make_aware(dt.datetime.combine(day, dt.time(hour)))


def procedure_data(**fields) -> dict[str, object]:
    """A procedure page POST, as the browser sends it (unticked boxes left out)."""
    return {
        "code": "70551",
        "name": "MRI brain without contrast",
        "modality": "MR",
        "body_part": "HEAD",
        "duration_minutes": "45",
        "preparation": "Remove all metal objects.",
        "is_active": "on",
        **fields,
    }


def open_on_monday(room):
    RoomHours.objects.create(room=room, weekday=0, opens=dt.time(8), closes=dt.time(12))
    return room


@pytest.fixture
def mr_rooms(facility_a):
    """Two MR rooms open Monday mornings: a procedure linked to none is booked in both."""
    return (
        open_on_monday(RoomFactory(facility=facility_a, name="MR 1", modality="MR")),
        open_on_monday(RoomFactory(facility=facility_a, name="MR 2", modality="MR")),
    )


@pytest.fixture
def procedure(facility_a):
    return ProcedureFactory(
        facility=facility_a,
        code="70450",
        name="CT head without contrast",
        modality="CT",
        duration_minutes=20,
        preparation="Nothing to eat for 2 hours.",
    )


# ------------------------------------------------------------------ adding and editing


def test_an_admin_adds_a_procedure_done_in_one_room_and_only_that_room_is_offered(
    facility_admin, facility_a, mr_rooms
):
    _, mr2 = mr_rooms
    client = client_for(facility_admin)
    assert client.get(reverse("ris:procedure_create")).status_code == 200
    response = client.post(
        reverse("ris:procedure_create"),
        procedure_data(facility=facility_a.pk, rooms=[mr2.pk], uses_contrast="on"),
    )
    assert response.status_code == 302
    procedure = Procedure.objects.get(facility=facility_a, code="70551")
    assert (procedure.duration_minutes, procedure.uses_contrast, procedure.body_part) == (
        45,
        True,
        "HEAD",
    )
    assert scheduling.rooms_for(procedure) == [mr2]
    slots = scheduling.free_slots(procedure, MONDAY, MONDAY, limit=1000)
    assert slots
    assert {slot.room for slot in slots} == {mr2}

    listing = client.get(reverse("ris:procedure_list")).content.decode()
    assert "MRI brain without contrast" in listing
    assert "MR 2" in listing
    event = AuditEvent.objects.get(action=AuditEvent.Action.CREATE, object_type="procedure")
    assert event.object_id == str(procedure.pk)
    assert event.facility_id == facility_a.pk
    assert event.detail["rooms"] == {"added": ["MR 2"], "removed": []}
    assert event.detail["fields"]["duration_minutes"] == 45


def test_a_procedure_linked_to_no_room_is_listed_for_any_room_of_its_modality(
    facility_admin, mr_rooms, procedure
):
    listing = client_for(facility_admin).get(reverse("ris:procedure_list")).content.decode()
    assert "any CT room" in listing


def test_an_edit_changes_duration_and_preparation_and_the_letter_shows_the_new_one(
    facility_admin, facility_a, procedure
):
    room = open_on_monday(RoomFactory(facility=facility_a, name="CT 1", modality="CT"))
    order = order_for(PatientFactory(facility=facility_a), procedure=procedure)
    appointment = services.appointment_book(order=order, room=room, starts_at=at(MONDAY, 9))
    client = client_for(facility_admin)
    form = client.get(reverse("ris:procedure_edit", args=[procedure.pk]))
    assert form.status_code == 200
    assert "facility" not in form.context["form"].fields, "a procedure stays in its facility"
    response = client.post(
        reverse("ris:procedure_edit", args=[procedure.pk]),
        procedure_data(
            code="70450",
            name="CT head without contrast",
            modality="CT",
            body_part="",
            duration_minutes="25",
            preparation="Drink a litre of water an hour before.",
            rooms=[room.pk],
        ),
    )
    assert response.status_code == 302
    procedure.refresh_from_db()
    assert procedure.duration_minutes == 25
    assert list(procedure.rooms.all()) == [room]

    letter = client.get(reverse("ris:appointment_letter", args=[appointment.pk]))
    assert "Drink a litre of water an hour before." in letter.content.decode()
    assert "Nothing to eat" not in letter.content.decode()

    event = AuditEvent.objects.get(action=AuditEvent.Action.UPDATE, object_type="procedure")
    assert event.detail["changed"] == {
        "duration_minutes": [20, 25],
        "preparation": ["Nothing to eat for 2 hours.", "Drink a litre of water an hour before."],
    }
    assert event.detail["rooms"] == {"added": ["CT 1"], "removed": []}
    assert event.user == facility_admin


def test_saving_unchanged_writes_no_audit_row(facility_admin, procedure):
    services.procedure_save(
        procedure=procedure,
        facility=procedure.facility,
        code=procedure.code,
        name=procedure.name,
        modality=procedure.modality,
        body_part=procedure.body_part,
        duration_minutes=procedure.duration_minutes,
        uses_contrast=procedure.uses_contrast,
        preparation=procedure.preparation,
        is_active=True,
        rooms=[],
        actor=facility_admin,
    )
    assert not AuditEvent.objects.filter(object_type="procedure").exists()


def test_a_deactivated_procedure_is_no_longer_offered_for_new_orders(
    facility_admin, clerk, facility_a, procedure
):
    patient = PatientFactory(facility=facility_a)
    new_order = reverse("ris:order_create", args=[patient.pk])
    assert (
        procedure in client_for(clerk).get(new_order).context["form"].fields["procedure"].queryset
    )
    other = ProcedureFactory(facility=facility_a, code="ZZZ", name="Zebra study")

    response = client_for(facility_admin).post(
        reverse("ris:procedure_edit", args=[procedure.pk]),
        procedure_data(code="70450", name="CT head without contrast", modality="CT", is_active=""),
    )
    assert response.status_code == 302
    assert Procedure.objects.filter(pk=procedure.pk, is_active=False).exists(), "not deleted"
    offered = client_for(clerk).get(new_order).context["form"].fields["procedure"].queryset
    assert list(offered) == [other]
    event = AuditEvent.objects.get(action=AuditEvent.Action.UPDATE, object_type="procedure")
    assert event.detail["changed"]["is_active"] == [True, False]

    rows = client_for(facility_admin).get(reverse("ris:procedure_list")).context["procedures"]
    assert [p.code for p in rows] == ["ZZZ", "70450"], "the inactive one last"
    page = client_for(facility_admin).get(reverse("ris:procedure_edit", args=[procedure.pk]))
    html = page.content.decode()
    assert "never deleted" in html
    assert "Delete" not in html


# -------------------------------------------------------------------- refused input


def test_a_code_already_in_the_catalogue_is_a_form_error(facility_admin, facility_a, procedure):
    client = client_for(facility_admin)
    created = client.post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, code="70450")
    )
    assert created.status_code == 400
    assert created.context["form"].errors["code"] == [
        "Code 70450 is already in the catalogue of North Imaging."
    ]
    mine = ProcedureFactory(facility=facility_a, code="71045")
    edited = client.post(
        reverse("ris:procedure_edit", args=[mine.pk]), procedure_data(code="70450")
    )
    assert edited.status_code == 400
    assert "Code 70450 is already in the catalogue" in edited.content.decode()
    assert Procedure.objects.filter(facility=facility_a, code="70450").count() == 1


def test_the_same_code_in_another_facilitys_catalogue_is_fine(
    facility_admin, facility_a, facility_b
):
    ProcedureFactory(facility=facility_b, code="70551")
    response = client_for(facility_admin).post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk)
    )
    assert response.status_code == 302


@pytest.mark.parametrize("minutes", ["0", "2000", "-5"])
def test_a_duration_out_of_one_minute_to_a_day_is_a_form_error(
    facility_admin, facility_a, procedure, minutes
):
    client = client_for(facility_admin)
    created = client.post(
        reverse("ris:procedure_create"),
        procedure_data(facility=facility_a.pk, duration_minutes=minutes),
    )
    assert created.status_code == 400
    message = "A procedure lasts 1 to 1440 minutes (24 hours)."
    assert created.context["form"].errors["duration_minutes"] == [message]
    edited = client.post(
        reverse("ris:procedure_edit", args=[procedure.pk]),
        procedure_data(code="70450", modality="CT", duration_minutes=minutes),
    )
    assert edited.status_code == 400
    assert message in edited.content.decode()
    procedure.refresh_from_db()
    assert procedure.duration_minutes == 20
    assert not Procedure.objects.filter(code="70551").exists()


def test_the_service_refuses_a_duration_out_of_range_too(procedure):
    with pytest.raises(services.RisError, match="1 to 1440 minutes"):
        services.procedure_save(
            facility=procedure.facility,
            code="X1",
            name="Too long",
            modality="CT",
            duration_minutes=1441,
        )


def test_a_room_of_another_facility_is_refused(facility_admin, facility_a, facility_b):
    """Among two facilities the admin runs, a room of one for a procedure of the other;
    a room of a facility the admin does not run is not even a choice."""
    member_b = facility_admin.memberships.create(facility=facility_b, role=Role.ADMIN)
    south = RoomFactory(facility=facility_b, name="South MR", modality="MR")
    client = client_for(facility_admin)
    form = client.get(reverse("ris:procedure_create")).context["form"]
    assert "South Clinic · South MR (MR)" in [label for _, label in form.fields["rooms"].choices]
    response = client.post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, rooms=[south.pk])
    )
    assert response.status_code == 400
    assert response.context["form"].errors["rooms"] == ["Not a room of North Imaging: South MR."]

    member_b.delete()
    response = client.post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, rooms=[south.pk])
    )
    assert response.status_code == 400
    assert "rooms" in response.context["form"].errors
    assert not Procedure.objects.filter(code="70551").exists()
    with pytest.raises(services.RisError, match="Not a room of North Imaging"):
        services.procedure_save(
            facility=facility_a,
            code="X",
            name="X",
            modality="MR",
            duration_minutes=5,
            rooms=[south],
        )


def test_a_code_taken_by_a_concurrent_save_is_a_message_not_a_500(
    facility_admin, facility_a, procedure, monkeypatch
):
    """The checks ran before the other save committed: the constraint has the last word."""
    monkeypatch.setattr(selectors, "procedure_code_taken", lambda **kwargs: False)
    response = client_for(facility_admin).post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, code="70450")
    )
    assert response.status_code == 400
    assert response.context["form"].non_field_errors() == [
        "Code 70450 was added to the catalogue meanwhile."
    ]
    assert Procedure.objects.filter(code="70450").count() == 1


# ---------------------------------------------------------------------- permissions


def test_a_clerk_may_not_manage_the_catalogue(clerk, procedure):
    client = client_for(clerk)
    for url in (
        reverse("ris:procedure_list"),
        reverse("ris:procedure_create"),
        reverse("ris:procedure_edit", args=[procedure.pk]),
    ):
        assert client.get(url).status_code == 403, url
        assert client.post(url, procedure_data()).status_code in (403, 405), url
    procedure.refresh_from_db()
    assert procedure.name == "CT head without contrast"


def test_another_facilitys_admin_gets_404_and_never_sees_the_procedure(
    facility_b, facility_a, procedure
):
    outsider_admin = member(facility_b, Role.ADMIN, username="southadmin")
    client = client_for(outsider_admin)
    url = reverse("ris:procedure_edit", args=[procedure.pk])
    assert client.get(url).status_code == 404
    assert client.post(url, procedure_data(code="70450", modality="CT")).status_code == 404
    listing = client.get(reverse("ris:procedure_list"))
    assert listing.context["procedures"] == []
    assert "CT head without contrast" not in listing.content.decode()
    create = client.post(reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk))
    assert create.status_code == 400
    assert "facility" in create.context["form"].errors
    assert not Procedure.objects.filter(code="70551").exists()
    procedure.refresh_from_db()
    assert procedure.duration_minutes == 20


def test_the_menu_shows_procedures_to_admins_only(facility_admin, clerk):
    def menu(user):
        response = client_for(user).get(reverse("home"))
        return [item["label"] for item in response.context["nav_items"]]

    assert "Procedures" in menu(facility_admin)
    assert "Procedures" not in menu(clerk)


# ------------------------------------------------------------------------- the list


def test_the_list_filters_by_modality_and_by_code_or_name(facility_admin, facility_a, procedure):
    ProcedureFactory(facility=facility_a, code="70551", name="MRI brain", modality="MR")
    ProcedureFactory(facility=facility_a, code="71045", name="Chest X-ray", modality="CR")
    client = client_for(facility_admin)

    def codes(**query) -> list[str]:
        response = client.get(reverse("ris:procedure_list"), query)
        assert response.status_code == 200
        return [p.code for p in response.context["procedures"]]

    assert codes() == ["71045", "70450", "70551"], "by modality, then name"
    assert codes(modality="MR") == ["70551"]
    assert codes(q="head") == ["70450"]
    assert codes(q="7104") == ["71045"]
    assert codes(modality="CT", q="brain") == []
    assert codes(modality="NOPE") == ["71045", "70450", "70551"], "an unknown filter is ignored"


def test_the_list_reads_a_constant_number_of_queries(facility_admin, facility_a):
    client = client_for(facility_admin)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("ris:procedure_list")).status_code == 200
        return len(captured)

    ProcedureFactory(facility=facility_a)
    one = queries()
    for index in range(3):
        procedure = ProcedureFactory(facility=facility_a, is_active=index != 1)
        procedure.rooms.add(RoomFactory(facility=facility_a), RoomFactory(facility=facility_a))
    assert queries() == one


def test_a_code_typed_in_lower_case_is_saved_upper_case_and_still_clashes(
    facility_admin, facility_a
):
    client = client_for(facility_admin)
    response = client.post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, code=" g0202 ")
    )
    assert response.status_code == 302
    assert Procedure.objects.filter(facility=facility_a, code="G0202").count() == 1
    again = client.post(
        reverse("ris:procedure_create"), procedure_data(facility=facility_a.pk, code="G0202")
    )
    assert again.status_code == 400
    assert "Code G0202 is already in the catalogue" in again.content.decode()
