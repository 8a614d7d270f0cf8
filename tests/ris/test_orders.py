import contextlib
import datetime as dt
import re
import threading
import zlib

import pytest
from django.db import IntegrityError, connection, connections, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.models import AuditEvent
from ris import services
from ris.models import Appointment, Order, Patient
from tests.factories import (
    FacilityFactory,
    PatientFactory,
    ProcedureFactory,
    RoomFactory,
    appointment_for,
    archived_study,
    client_for,
    exam_completed,
    order_for,
)

pytestmark = pytest.mark.django_db


def test_accession_numbers_are_generated_once_in_sequence_per_facility(facility_a, facility_b):
    first = order_for(PatientFactory(facility=facility_a))
    second = order_for(PatientFactory(facility=facility_a))
    other = order_for(PatientFactory(facility=facility_b))
    assert (first.accession_number, second.accession_number) == ("NORTH0000001", "NORTH0000002")
    assert other.accession_number == "SOUTH0000001"
    assert len(first.accession_number) <= 16  # DICOM SH


def test_the_database_refuses_a_duplicate_accession_number_in_a_facility(facility_a):
    order = order_for(PatientFactory(facility=facility_a))
    with pytest.raises(IntegrityError):
        Order.objects.create(
            facility=facility_a,
            patient=order.patient,
            procedure=order.procedure,
            accession_number=order.accession_number,
        )


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_concurrent_orders_never_share_an_accession_number():
    facility = FacilityFactory(code="CONC")
    procedure = ProcedureFactory(facility=facility)
    patients = [PatientFactory(facility=facility) for _ in range(8)]
    numbers: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(patients))

    def place(patient: Patient) -> None:
        try:
            barrier.wait()
            numbers.append(
                services.order_create(patient=patient, procedure=procedure).accession_number
            )
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=place, args=(p,)) for p in patients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert sorted(numbers) == [f"CONC{n:07d}" for n in range(1, 9)]


def test_an_order_needs_a_procedure_of_the_patients_facility(facility_a, facility_b):
    patient = PatientFactory(facility=facility_a)
    with pytest.raises(services.RisError, match="catalogue"):
        services.order_create(patient=patient, procedure=ProcedureFactory(facility=facility_b))


def test_a_patient_mrn_is_unique_per_issuer_in_a_facility(facility_a, facility_b):
    services.patient_create(facility=facility_a, mrn="123", family_name="One")
    with pytest.raises(services.RisError, match="already registered"):
        services.patient_create(facility=facility_a, mrn="123", family_name="Two")
    services.patient_create(facility=facility_a, mrn="123", family_name="Three", mrn_issuer="HIS")
    services.patient_create(facility=facility_b, mrn="123", family_name="Four")
    assert Patient.objects.filter(mrn="123").count() == 3


def test_patient_names_keep_the_dicom_components(facility_a):
    patient = PatientFactory(
        facility=facility_a,
        family_name="Müller",
        given_name="Jürgen",
        middle_name="K",
        name_suffix="Jr",
    )
    assert patient.dicom_name == "Müller^Jürgen^K^^Jr"
    assert PatientFactory(facility=facility_a, family_name="Doe", given_name="").dicom_name == "Doe"


def test_booking_an_order_schedules_it_for_the_procedure_duration(facility_a):
    order = order_for(PatientFactory(facility=facility_a))
    appointment = appointment_for(order, RoomFactory(facility=facility_a))
    order.refresh_from_db()
    assert order.status == Order.Status.SCHEDULED
    assert (appointment.ends_at - appointment.starts_at).total_seconds() == 20 * 60


def test_a_room_of_another_facility_cannot_be_booked(facility_a, facility_b):
    order = order_for(PatientFactory(facility=facility_a))
    with pytest.raises(services.RisError, match="room"):
        appointment_for(order, RoomFactory(facility=facility_b))


def test_the_worklist_and_the_order_open_its_images_in_the_viewer(
    radiologist, facility_a, tmp_path, settings
):
    settings.STORAGES = {
        **settings.STORAGES,
        "images": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path)},
        },
    }
    patient = PatientFactory(facility=facility_a)
    order = order_for(patient)
    study = archived_study(facility_a, patient.mrn, accession=order.accession_number)
    assert study.order == order
    exam_completed(order)
    viewer = reverse("viewer:study", args=[study.study_instance_uid])
    client = client_for(radiologist)
    assert viewer in client.get(reverse("reporting:worklist")).content.decode()
    assert viewer in client.get(reverse("ris:order_detail", args=[order.pk])).content.decode()


def test_patient_search_finds_by_name_mrn_and_birth_date(clerk, facility_a):
    maria = PatientFactory(facility=facility_a, family_name="Garcia", given_name="Maria", mrn="555")
    PatientFactory(facility=facility_a, family_name="Smith", given_name="John")
    client = client_for(clerk)
    for query in ("garcia", "Garcia Mar", "555", maria.birth_date.isoformat()):
        page = client.get(reverse("ris:patient_list"), {"q": query}).context["page"]
        assert maria in list(page), query
    assert list(client.get(reverse("ris:patient_list"), {"q": "garcia"}).context["page"]) == [maria]


def test_patient_list_query_count_does_not_grow_with_rows(
    clerk, facility_a, django_assert_max_num_queries
):
    for _ in range(30):
        PatientFactory(facility=facility_a)
    client = client_for(clerk)
    with django_assert_max_num_queries(14):
        assert client.get(reverse("ris:patient_list")).status_code == 200


def test_the_front_desk_checks_a_patient_in_with_one_click(clerk, facility_a, facility_b):
    order = order_for(PatientFactory(facility=facility_a, family_name="Arrives"))
    appointment = appointment_for(order)
    client = client_for(clerk)
    day = timezone.localtime(appointment.starts_at).date().isoformat()
    page = client.get(reverse("ris:schedule"), {"day": day}).content.decode()
    check_in = reverse("ris:check_in", args=[appointment.pk])
    assert check_in in page
    response = client.post(check_in, follow=True)
    assert response.redirect_chain[-1][0].endswith(f"?day={day}")
    order.refresh_from_db()
    assert order.status == Order.Status.ARRIVED
    assert "Arrives, Alex checked in." in response.content.decode()
    assert check_in not in response.content.decode(), "no second check-in button"
    client.post(check_in)  # a double click checks in once
    assert order.status_changes.filter(to_status=Order.Status.ARRIVED).count() == 1

    elsewhere = appointment_for(order_for(PatientFactory(facility=facility_b)))
    assert client.post(reverse("ris:check_in", args=[elsewhere.pk])).status_code == 404
    assert client.get(check_in).status_code == 405


def test_a_room_cannot_be_booked_twice_for_overlapping_times(facility_a):
    room = RoomFactory(facility=facility_a, name="CT 1")
    first = order_for(PatientFactory(facility=facility_a))
    second = order_for(PatientFactory(facility=facility_a))
    nine = timezone.make_aware(dt.datetime(2026, 12, 1, 9, 0))
    services.appointment_book(order=first, room=room, starts_at=nine)  # 20 minutes
    with pytest.raises(services.RisError) as refused:
        services.appointment_book(
            order=second, room=room, starts_at=nine + dt.timedelta(minutes=10)
        )
    assert str(refused.value) == (
        f"CT 1 is booked 2026-12-01 09:00 to 09:20 ({first.accession_number})."
    )
    second.refresh_from_db()
    assert second.status == Order.Status.REQUESTED
    services.appointment_book(order=second, room=room, starts_at=nine + dt.timedelta(minutes=20))


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks need PostgreSQL")
def test_two_clerks_booking_the_same_slot_at_once_get_one_booking():
    facility = FacilityFactory(code="RACE")
    room = RoomFactory(facility=facility)
    orders = [order_for(PatientFactory(facility=facility)) for _ in range(6)]
    starts = timezone.make_aware(dt.datetime(2026, 12, 1, 9, 0))
    booked: list[int] = []
    refused: list[str] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(orders))

    def book(order: Order) -> None:
        try:
            barrier.wait()
            booked.append(services.appointment_book(order=order, room=room, starts_at=starts).pk)
        except services.RisError as error:
            refused.append(str(error))
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=book, args=(order,)) for order in orders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(booked) == 1 and len(refused) == 5
    assert Appointment.objects.filter(room=room, is_cancelled=False).count() == 1


@pytest.mark.skipif(connection.vendor != "postgresql", reason="exclusion constraint")
def test_the_database_itself_refuses_an_overlapping_appointment(facility_a):
    order = order_for(PatientFactory(facility=facility_a))
    booked = appointment_for(order)
    with pytest.raises(IntegrityError, match="appointment_no_double_booking"), transaction.atomic():
        Appointment.objects.create(
            facility=facility_a,
            order=order,
            room=booked.room,
            starts_at=booked.starts_at + dt.timedelta(minutes=5),
            ends_at=booked.ends_at + dt.timedelta(minutes=5),
        )
    Appointment.objects.filter(pk=booked.pk).update(is_cancelled=True)
    Appointment.objects.create(
        facility=facility_a,
        order=order,
        room=booked.room,
        starts_at=booked.starts_at,
        ends_at=booked.ends_at,
    )


def test_the_appointment_letter_says_when_where_and_how_to_prepare(clerk, facility_a, biller):
    procedure = ProcedureFactory(
        facility=facility_a,
        name="CT abdomen with contrast",
        preparation="Nothing to eat for 4 hours before.",
        uses_contrast=True,
    )
    order = order_for(
        PatientFactory(facility=facility_a, family_name="Letter"), procedure=procedure
    )
    room = RoomFactory(facility=facility_a, name="CT 1")
    starts = timezone.make_aware(dt.datetime(2026, 12, 1, 9, 30))
    appointment = services.appointment_book(order=order, room=room, starts_at=starts)
    url = reverse("ris:appointment_letter", args=[appointment.pk])
    page = client_for(clerk).get(url).content.decode()
    for text in (
        "CT abdomen with contrast",
        "Tuesday 1 December 2026, 09:30",
        "CT 1",
        order.accession_number,
        "Nothing to eat for 4 hours before.",
        "contrast agent",
    ):
        assert text in page, text
    assert AuditEvent.objects.filter(object_type="appointment", action="view").count() == 1
    assert client_for(biller).get(url).status_code == 403


def test_the_appointment_letter_comes_as_a_pdf_too(clerk, facility_a, outsider):
    procedure = ProcedureFactory(facility=facility_a, name="MR knee")
    patient = PatientFactory(facility=facility_a, family_name="Ōtake", given_name="Hana")
    order = order_for(patient, procedure=procedure)
    room = RoomFactory(facility=facility_a, name="MR 1", modality=procedure.modality)
    starts = timezone.make_aware(dt.datetime(2026, 12, 1, 9, 30))
    appointment = services.appointment_book(order=order, room=room, starts_at=starts)
    url = reverse("ris:appointment_letter_pdf", args=[appointment.pk])
    assert (
        url
        in client_for(clerk)
        .get(reverse("ris:appointment_letter", args=[appointment.pk]))
        .content.decode()
    )
    response = client_for(clerk).get(url)
    assert response.status_code == 200 and response["Content-Type"] == "application/pdf"
    document = response.content
    assert document.startswith(b"%PDF-") and document.rstrip().endswith(b"%%EOF")
    objects = pdf_objects(document)
    assert len(re.findall(rb"/Type\s*/Page\b", objects)) == 1, "one A4 page"
    assert f"Appointment {order.accession_number}".encode() in objects, "the title"
    assert b"+DejaVu-Sans" in objects, "a font with the glyphs of every name"
    event = AuditEvent.objects.filter(object_type="appointment", action="view").latest("pk")
    assert event.detail == {"pdf": True}
    assert client_for(outsider).get(url).status_code == 404


def pdf_objects(document: bytes) -> bytes:
    """The PDF's objects with their compressed streams inflated, to search in."""
    parts = [document]
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", document, re.S):
        with contextlib.suppress(zlib.error):
            parts.append(zlib.decompressobj().decompress(stream))
    return b"\n".join(parts)
