"""Factories for the shared data model; tests build personas from these."""

import datetime as dt

import factory
from django.test import Client
from django.utils import timezone

from accounts.models import Facility, Membership, User
from accounts.services import Signature
from billing.models import FeeScheduleEntry, Payer
from pacs.dicom import synthetic
from pacs.models import DicomNode, Study
from pacs.services import ingest, study_refresh
from ris import services
from ris.models import (
    Appointment,
    Order,
    Patient,
    PatientContact,
    PatientIdentifier,
    PatientInsurance,
    Procedure,
    Report,
    Room,
)

PASSWORD = "correct horse battery staple"


class FacilityFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Facility

    name = factory.Sequence(lambda n: f"Clinic {n}")
    code = factory.Sequence(lambda n: f"F{n}")
    mrn_issuer = factory.LazyAttribute(lambda o: f"{o.code}_MRN")


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    first_name = "Pat"
    last_name = factory.Sequence(lambda n: f"Person{n}")
    password = factory.PostGenerationMethodCall("set_password", PASSWORD)

    @factory.post_generation
    def save_password(obj, create, extracted, **kwargs):
        if create:
            obj.save()


def member(facility: Facility, role: str, **kwargs) -> User:
    """A user holding `role` at `facility`."""
    user = UserFactory(**kwargs)
    Membership.objects.create(user=user, facility=facility, role=role)
    return user


class PatientFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Patient

    facility = factory.SubFactory(FacilityFactory)
    mrn = factory.Sequence(lambda n: f"{100000 + n}")
    mrn_issuer = factory.LazyAttribute(lambda o: o.facility.mrn_issuer)
    family_name = factory.Sequence(lambda n: f"Family{n}")
    given_name = "Alex"
    birth_date = dt.date(1970, 1, 1)
    sex = Patient.Sex.FEMALE


class PatientIdentifierFactory(factory.django.DjangoModelFactory):
    """Another identifier of a patient; the facility follows the patient's."""

    class Meta:
        model = PatientIdentifier

    patient = factory.SubFactory(PatientFactory)
    facility = factory.LazyAttribute(lambda o: o.patient.facility)
    value = factory.Sequence(lambda n: f"ID{n:06d}")
    issuer = "STATE_HOSPITAL"
    type_code = PatientIdentifier.Type.PI


class PatientContactFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PatientContact

    patient = factory.SubFactory(PatientFactory)
    family_name = "Kin"
    given_name = "Next"
    relationship = PatientContact.Relationship.SPOUSE
    phone = "+1 555 0100"


class ProcedureFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Procedure

    facility = factory.SubFactory(FacilityFactory)
    code = factory.Sequence(lambda n: f"7{n:04d}")
    name = "CT head without contrast"
    modality = "CT"
    duration_minutes = 20


class RoomFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Room

    facility = factory.SubFactory(FacilityFactory)
    name = factory.Sequence(lambda n: f"Room {n}")
    modality = "CT"
    ae_title = factory.Sequence(lambda n: f"CT{n}")


def order_for(patient: Patient, **kwargs) -> Order:
    """An order made the way the front desk makes one (accession number from the service)."""
    procedure = kwargs.pop("procedure", None) or ProcedureFactory(facility=patient.facility)
    return services.order_create(patient=patient, procedure=procedure, **kwargs)


def appointment_for(order: Order, room: Room | None = None) -> Appointment:
    room = room or RoomFactory(facility=order.facility)
    return services.appointment_book(order=order, room=room, starts_at=timezone.now())


class DicomNodeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = DicomNode

    facility = factory.SubFactory(FacilityFactory)
    ae_title = factory.Sequence(lambda n: f"NODE{n}")
    host = "127.0.0.1"
    port = 11113


class PayerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Payer

    facility = factory.SubFactory(FacilityFactory)
    name = factory.Sequence(lambda n: f"Payer {n}")


class PatientInsuranceFactory(factory.django.DjangoModelFactory):
    """Primary coverage with a payer of the patient's facility."""

    class Meta:
        model = PatientInsurance

    patient = factory.SubFactory(PatientFactory)
    payer = factory.LazyAttribute(lambda o: PayerFactory(facility=o.patient.facility))
    member_id = factory.Sequence(lambda n: f"M{n:08d}")
    rank = 1


class FeeFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = FeeScheduleEntry

    facility = factory.SubFactory(FacilityFactory)
    procedure_code = "70450"
    global_price = "420.00"
    professional_price = "95.00"
    technical_price = "325.00"
    effective_from = dt.date(2026, 1, 1)


def exam_completed(order: Order) -> Order:
    """Walk an order through the lifecycle to completed, as the front desk and the
    modality would (arrived, in progress, completed)."""
    for status in (Order.Status.ARRIVED, Order.Status.IN_PROGRESS, Order.Status.COMPLETED):
        services.order_status_set(order=order, status=status)
    return order


def client_for(user: User) -> Client:
    """A browser session logged in as `user`."""
    client = Client()
    client.force_login(user)
    return client


def archived_study(
    facility,
    patient_id: str = "P1",
    *,
    issuer: str = "",
    accession: str = "",
    study_date: str = "20240115",
    description: str = "CT CHEST",
    study_uid: str = "",
    slices: int = 1,
    size: int = 16,
) -> Study:
    """A study received over DICOM like any other: ingested, then refreshed (and matched)."""
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id=patient_id, issuer=issuer),
        accession_number=accession,
        study_date=study_date,
        description=description,
    )
    if study_uid:
        spec.study_uid = study_uid
    for data in synthetic.ct_series(spec, slices=slices, rows=size, columns=size):
        ingest(data, facility=facility, door="dimse")
    study = Study.objects.get(facility=facility, study_instance_uid=spec.study_uid)
    study_refresh(study.pk)
    study.refresh_from_db()
    return study


def signature_of(user: User) -> Signature:
    """The user's password confirmed just now (what the signing pages get from
    `password_confirm`; tests of the services make it directly)."""
    return Signature(user=user, confirmed_at=timezone.now())


def exam_read(order: Order) -> Order:
    """An exam done and its images in: what the reading worklist lists."""
    if order.status not in (Order.Status.COMPLETED, Order.Status.REPORTED):
        exam_completed(order)
    Order.objects.filter(pk=order.pk).update(images_received_at=timezone.now())
    order.refresh_from_db()
    return order


def report_written(order: Order, radiologist: User, text: str = "No acute findings.") -> Report:
    """A draft report of `order` (done, images in) by `radiologist`, as free text."""
    from ris.reporting import services as reporting

    if order.images_received_at is None:
        exam_read(order)
    report = reporting.report_start(order=order, actor=radiologist)
    return reporting.report_draft_save(
        report=report, sections=[{"title": "", "text": text}], actor=radiologist
    )


def report_signed(
    order: Order,
    radiologist: User,
    text: str = "No acute findings.",
    status: str = Report.Status.FINAL,
) -> Report:
    """A report of `order` written and signed by `radiologist`."""
    from ris.reporting import services as reporting

    report = report_written(order, radiologist, text)
    return reporting.report_sign(
        report=report, status=status, actor=radiologist, signature=signature_of(radiologist)
    )


_issued_tokens: dict[int, str] = {}


def api_token(user: User) -> str:
    """The user's API token: issued on first use, the same one after (tokens are stored
    hashed, so the one issued is remembered here)."""
    from rest_framework.authtoken.models import Token

    from accounts.authentication import token_digest
    from accounts.services import api_token_issue

    token = _issued_tokens.get(user.pk)
    if token is None or not Token.objects.filter(user=user, key=token_digest(token)).exists():
        token = _issued_tokens[user.pk] = api_token_issue(user, rotate=True)
    return token
