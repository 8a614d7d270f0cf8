"""ADT in: the HIS registers, updates and merges patients and announces their visits;
each message goes the real way (stored, acknowledged, applied after commit)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from accounts.models import AuditEvent
from billing.models import Payer
from ris import services as ris_services
from ris.hl7 import services
from ris.hl7.inbound import Context, adt
from ris.hl7.models import InboundMessage
from ris.hl7.parse import Hl7Error, parse
from ris.hl7.values import hl7_date, hl7_datetime
from ris.models import Patient, PatientMerge, Visit
from tests.factories import PatientFactory, PayerFactory, archived_study, order_for

pytestmark = pytest.mark.django_db

MESSAGES = Path(__file__).parent / "messages"
Status = InboundMessage.Status
UTC = dt.UTC


def corpus(name: str) -> bytes:
    """A corpus file as the wire carries it: segments ended by CR."""
    return (MESSAGES / name).read_bytes().replace(b"\n", b"\r")


@pytest.fixture
def north(settings, facility_a):
    """Facility A, in New York, the default facility of unregistered senders."""
    settings.HL7_DEFAULT_FACILITY = facility_a.code
    facility_a.timezone = "America/New_York"
    facility_a.save(update_fields=["timezone"])
    return facility_a


@pytest.fixture
def send(north, django_capture_on_commit_callbacks):
    """Receive a corpus file; processing runs on commit, as the listener's does. With
    `again`, the HIS sends the same message anew (a new control id): applied again."""

    def send(name: str, *, again: bool = False) -> InboundMessage:
        raw = corpus(name)
        if again:
            control_id = raw.split(b"\r", 1)[0].split(b"|")[9]
            raw = raw.replace(b"|" + control_id + b"|", b"|" + control_id + b"-2|", 1)
        with django_capture_on_commit_callbacks(execute=True):
            receipt = services.message_receive(raw, peer="test")
        return InboundMessage.objects.get(pk=receipt.message_id)

    return send


@pytest.fixture
def medicare(north):
    return PayerFactory(facility=north, name="Medicare", payer_identifier="00430")


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


# ---- registration and updates ------------------------------------------------------------


def test_an_admission_registers_the_patient_with_identifiers_contacts_insurance_and_visit(
    send, north, medicare
):
    row = send("adt_a01_admit_v251.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Registered MRN 123 (Müller, Jörg Karl); Visit V55 admitted"
    patient = Patient.objects.get(facility=north, mrn="123")
    assert patient.mrn_issuer == "NORTH_MRN"
    name = ("family_name", "given_name", "middle_name", "name_suffix", "name_prefix")
    assert [getattr(patient, part) for part in name] == ["Müller", "Jörg", "Karl", "Jr", "Dr"]
    assert (patient.birth_date, patient.sex) == (dt.date(1975, 4, 12), Patient.Sex.MALE)
    assert patient.address_lines == ["Hauptstraße 5", "Apt 3", "62701 Springfield, IL", "USA"]
    assert (patient.home_phone, patient.mobile_phone) == ("+1 217 5550123", "+1 217 5550199")
    assert patient.email == "joerg.mueller@example.org"
    assert set(patient.identifiers.values_list("issuer", "value", "type_code")) == {
        ("SSA", "987-65-4320", "SS"),
        ("STATE_HOSPITAL", "P0042", "PI"),
    }
    contacts = list(
        patient.contacts.values_list("family_name", "given_name", "relationship", "role", "phone")
    )
    assert contacts == [
        ("Müller", "Anna", "SPO", "N", "+1 217 5550124"),
        ("Schmidt", "Peter", "FND", "C", "(217)555-0100"),
    ]
    assert patient.contacts.first().email == "anna.mueller@example.org"
    primary, secondary = patient.insurance.order_by("rank")
    assert (primary.payer, primary.member_id, primary.group_number) == (
        medicare,
        "1EG4-TE5-MK72",
        "GRP-77",
    )
    assert (primary.valid_from, primary.valid_until) == (dt.date(2023, 1, 1), dt.date(2025, 12, 31))
    assert (primary.relationship_to_subscriber, primary.subscriber_name) == ("SEL", "")
    created = Payer.objects.get(facility=north, payer_identifier="BSH99")
    assert created.name == "Blue Star Health"
    assert (secondary.payer, secondary.member_id, secondary.rank) == (created, "BSH-445566", 2)
    assert (secondary.relationship_to_subscriber, secondary.subscriber_name) == (
        "SPO",
        "Müller, Anna",
    )
    visit = Visit.objects.get(facility=north)
    assert (visit.patient, visit.visit_number, visit.patient_class) == (patient, "V55", "I")
    assert visit.location == "4N/401/A (MAIN, NORTH)"
    assert visit.attending_doctor == "House, Gregory M (1234)"
    assert visit.admitted_at == at(2024, 3, 15, 14, 25)  # 10:25 in New York (EDT)
    registered = AuditEvent.objects.get(action="create", object_type="patient")
    assert (registered.door, registered.actor) == ("hl7", f"HL7 (HL7 message {row.pk})")


def test_an_update_changes_only_what_changed_and_keeps_what_the_message_leaves_out(
    send, north, medicare
):
    send("adt_a01_admit_v251.hl7")

    row = send("adt_a08_update_v251.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Updated MRN 123: birth_date, address_city"
    patient = Patient.objects.get(facility=north, mrn="123")
    assert (patient.birth_date, patient.address_city) == (dt.date(1975, 4, 21), "Shelbyville")
    assert patient.home_phone == "+1 217 5550123"  # PID-13 empty: kept
    assert patient.contacts.count() == 2  # no NK1: kept
    assert patient.insurance.count() == 2  # no IN1: kept
    assert patient.identifiers.count() == 2  # PID-3 adds, never removes
    update = AuditEvent.objects.get(action="update", object_type="patient")
    assert update.detail == {
        "changed": {
            "birth_date": ["1975-04-12", "1975-04-21"],
            "address_city": ["Springfield", "Shelbyville"],
        }
    }
    assert Visit.objects.get().patient_class == "I"


def test_an_update_refused_halfway_leaves_the_patient_as_it_was(
    send, north, django_capture_on_commit_callbacks
):
    """The demographics are written before the identifiers are checked: the handler's
    savepoint takes them back when an identifier belongs to someone else."""
    send("adt_a01_admit_v251.hl7")
    holder = PatientFactory(facility=north)
    ris_services.patient_identifier_add(patient=holder, value="999", issuer="OTHER")
    raw = corpus("adt_a08_update_v251.hl7").replace(
        b"PID|1||123^^^NORTH_MRN^MR|", b"PID|1||123^^^NORTH_MRN^MR~999^^^OTHER^PI|"
    )
    with django_capture_on_commit_callbacks(execute=True):
        receipt = services.message_receive(raw, peer="test")

    row = InboundMessage.objects.get(pk=receipt.message_id)
    assert row.status == Status.FAILED
    assert "already belongs" in row.error
    patient = Patient.objects.get(facility=north, mrn="123")
    assert (patient.birth_date, patient.address_city) == (dt.date(1975, 4, 12), "Springfield")
    assert not AuditEvent.objects.filter(action="update", object_id=str(patient.pk)).exists()


def test_explicit_nulls_clear_values_and_an_nk1_naming_nobody_clears_the_contacts(
    send, north, medicare
):
    send("adt_a01_admit_v251.hl7")

    row = send("adt_a08_nulls.hl7")

    assert row.status == Status.PROCESSED, row.error
    patient = Patient.objects.get(facility=north, mrn="123")
    assert patient.birth_date is None
    assert patient.address_lines == []
    assert (patient.home_phone, patient.mobile_phone, patient.email) == ("", "", "")
    assert patient.contacts.count() == 0
    assert patient.insurance.count() == 2
    assert (patient.family_name, patient.sex) == ("Müller", "M")
    assert row.outcome.startswith("Updated MRN 123: birth_date, address_street, address_other")
    assert row.outcome.endswith("email, contacts")


def test_an_update_of_an_unknown_patient_registers_it(send, north):
    row = send("adt_a08_unknown_patient_v24.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Registered MRN 555001 (Nguyen, Thi Mai); Visit V77 recorded"
    patient = Patient.objects.get(facility=north, mrn="555001")
    assert patient.birth_date == dt.date(1990, 1, 1)  # PID-7 gave the year only
    assert (patient.name_prefix, patient.home_phone) == ("Ms", "(312)555-0142")
    assert Visit.objects.get(visit_number="V77").patient_class == "O"


def test_a_v23_registration_reads_formatted_phones_and_finds_its_payer_by_name(send, north):
    acme = PayerFactory(facility=north, name="Acme Health", payer_identifier="ACME1")

    row = send("adt_a04_register_v23.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Registered MRN 200 (SMITH, JOHN Q); Visit V100 registered"
    patient = Patient.objects.get(facility=north, mrn="200")
    assert (patient.home_phone, patient.address_city) == ("(312)555-0100", "CHICAGO")
    coverage = patient.insurance.get()
    assert (coverage.payer, coverage.member_id) == (acme, "ACM-0001")  # IN1-49
    assert (coverage.relationship_to_subscriber, coverage.subscriber_name) == (
        "SPO",
        "SMITH, MARY",
    )
    assert Payer.objects.filter(facility=north).count() == 1
    visit = Visit.objects.get(visit_number="V100")
    assert visit.admitted_at == at(2024, 3, 15, 12, 15)


def test_escape_sequences_in_names_are_decoded(send, north):
    row = send("adt_a28_escapes_v251.hl7")

    assert row.status == Status.PROCESSED, row.error
    patient = Patient.objects.get(facility=north, mrn="300")
    assert patient.family_name == "O'Brien&Sons|Ltd"
    assert (patient.given_name, patient.middle_name) == ("Renée", "Mary^Ann")
    assert patient.email == ""  # X.400 "not-an-email" is no address
    assert not Visit.objects.exists()  # PV1|1|N: no visit


def test_a_latin1_message_declared_8859_1_keeps_its_accents(send, north):
    row = send("adt_a31_latin1_v231.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Registered MRN 400 (Lefèvre, Françoise)"
    patient = Patient.objects.get(facility=north, mrn="400")
    assert (patient.name_prefix, patient.address_city, patient.address_country) == (
        "Mme",
        "Paris",
        "FRA",
    )


@pytest.mark.parametrize(
    ("name", "location", "code", "reason"),
    [
        ("adt_a01_bad_birth_date.hl7", "PID-7", "102", "'19801345' (PID-7) is not a valid"),
        ("adt_a04_bad_sex.hl7", "PID-8", "103", "'Male' (PID-8) is not one of"),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_ae_and_its_location(
    send, name, location, code, reason
):
    row = send(name)

    assert (row.status, row.ack_code, row.error_location) == (Status.REJECTED, "AE", location)
    assert reason in row.error
    segment, field = location.split("-")
    err = next(s for s in row.ack.split("\r") if s.startswith("ERR|"))
    assert f"|{segment}^1^{field}^1|{code}^" in err
    assert not Patient.objects.exists()


def test_a_message_applied_twice_changes_nothing_the_second_time(send, north, medicare):
    send("adt_a01_admit_v251.hl7")
    counts = [model.objects.count() for model in (Patient, Visit, Payer, AuditEvent, PatientMerge)]
    patient = Patient.objects.get(mrn="123")
    lists = [list(patient.contacts.values()), list(patient.insurance.values())]

    row = send("adt_a01_admit_v251.hl7", again=True)

    assert row.status == Status.IGNORED
    assert row.outcome == "MRN 123 (Müller, Jörg Karl) is up to date."
    assert counts == [
        model.objects.count() for model in (Patient, Visit, Payer, AuditEvent, PatientMerge)
    ]
    assert lists == [list(patient.contacts.values()), list(patient.insurance.values())]


def test_patient_upsert_gives_order_messages_the_live_patient(north):
    survivor = PatientFactory(facility=north, mrn="123", family_name="Müller")
    duplicate = PatientFactory(facility=north, mrn="77", family_name="Mueller")
    ris_services.patient_merge(surviving=survivor, merged=duplicate)
    message = parse(corpus("adt_a08_merged_mrn.hl7"))

    patient = adt.patient_upsert(message, Context(facility=north, partner=None, message_id=1))

    assert patient == survivor
    survivor.refresh_from_db()
    assert (survivor.family_name, survivor.birth_date) == ("Müller", dt.date(1970, 1, 1))


def test_an_update_naming_a_merged_mrn_does_not_overwrite_the_survivor(send, north):
    survivor = PatientFactory(facility=north, mrn="123", family_name="Müller")
    PatientFactory(facility=north, mrn="77", family_name="Mueller")
    send("adt_a40_merge.hl7")

    row = send("adt_a08_merged_mrn.hl7")

    assert row.status == Status.IGNORED
    assert row.outcome.startswith("MRN 77 was merged into MRN 123")
    survivor.refresh_from_db()
    assert survivor.family_name == "Müller"


# ---- visits ------------------------------------------------------------------------------


def test_a_discharge_ends_the_visit_at_pv1_45_and_a_repeat_is_nothing_to_do(send, medicare):
    send("adt_a01_admit_v251.hl7")

    row = send("adt_a03_discharge.hl7")

    assert (row.status, row.outcome) == (Status.PROCESSED, "Visit V55 discharged")
    assert Visit.objects.get().discharged_at == at(2024, 3, 18, 16, 30)  # 11:30 -05:00
    row = send("adt_a03_discharge.hl7", again=True)
    assert (row.status, row.outcome) == (Status.IGNORED, "Visit V55 was already discharged then.")


def test_a_discharge_of_an_unknown_visit_fails_and_is_kept_for_replay(send, medicare):
    send("adt_a01_admit_v251.hl7")

    row = send("adt_a03_unknown_visit.hl7")

    assert (row.status, row.error_location) == (Status.FAILED, "PV1-19")
    assert "Visit V999 (PV1-19) is not known here" in row.error
    assert Visit.objects.get().discharged_at is None


def test_a_cancelled_admission_marks_the_visit_cancelled(send, medicare):
    send("adt_a01_admit_v251.hl7")

    row = send("adt_a11_cancel_admit.hl7")

    assert (row.status, row.outcome) == (Status.PROCESSED, "Visit V55 cancelled")
    visit = Visit.objects.get()
    assert visit.is_cancelled
    assert AuditEvent.objects.filter(object_type="visit", action="update").count() == 1


def test_a_discharge_cancelled_opens_the_visit_again(send, medicare):
    send("adt_a01_admit_v251.hl7")
    send("adt_a03_discharge.hl7")

    row = send("adt_a13_cancel_discharge.hl7")

    assert (row.status, row.outcome) == (Status.PROCESSED, "Visit V55 discharge cancelled")
    assert Visit.objects.get().discharged_at is None


def test_a_visit_without_a_number_is_made_once_and_discharged_as_the_open_one(send, north):
    send("adt_a04_no_visit_number.hl7")
    assert send("adt_a04_no_visit_number.hl7", again=True).status == Status.IGNORED
    visit = Visit.objects.get()
    assert (visit.visit_number, visit.location) == ("", "XR2 (NORTH)")
    assert visit.admitted_at == at(2024, 3, 20, 12, 15)  # EVN-2, New York time

    row = send("adt_a03_no_visit_number.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == f"Visit #{visit.pk} (no number) discharged"
    visit.refresh_from_db()
    assert visit.discharged_at == at(2024, 3, 20, 13, 45)  # EVN-2


# ---- merges ------------------------------------------------------------------------------


def test_a_merge_moves_orders_studies_and_visits_to_the_survivor(send, north):
    survivor = PatientFactory(facility=north, mrn="123", mrn_issuer="NORTH_MRN")
    duplicate = PatientFactory(facility=north, mrn="77", mrn_issuer="NORTH_MRN")
    order = order_for(duplicate)
    study = archived_study(north, "77", issuer="NORTH_MRN")
    assert study.patient == duplicate
    visit = Visit.objects.create(facility=north, patient=duplicate, visit_number="V1")

    row = send("adt_a40_merge.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Merged MRN 77 into MRN 123 (1 order, 1 study, 1 visit)"
    for moved in (order, study, visit):
        moved.refresh_from_db()
        assert moved.patient_id == survivor.pk
    duplicate.refresh_from_db()
    assert duplicate.merged_into == survivor
    history = PatientMerge.objects.get()
    assert (history.door, history.actor) == ("hl7", f"HL7 (HL7 message {row.pk})")
    assert history.reason == "HL7 ADT^A40 ADT0012"


def test_a_merge_already_done_is_nothing_to_do(send, north):
    PatientFactory(facility=north, mrn="123")
    PatientFactory(facility=north, mrn="77")
    send("adt_a40_merge.hl7")

    row = send("adt_a40_merge.hl7", again=True)

    assert (row.status, row.outcome) == (Status.IGNORED, "MRN 77 already merged into MRN 123.")
    assert PatientMerge.objects.count() == 1


def test_a_patient_cannot_be_merged_into_itself(send, north):
    PatientFactory(facility=north, mrn="123")

    row = send("adt_a40_self.hl7")

    assert (row.status, row.error_location) == (Status.FAILED, "MRG-1")
    assert "a patient cannot be merged into itself" in row.error
    assert not PatientMerge.objects.exists()


def test_a_merge_back_into_the_record_merged_away_is_refused_as_a_circle(send, north):
    PatientFactory(facility=north, mrn="123")
    PatientFactory(facility=north, mrn="77")
    send("adt_a40_merge.hl7")

    row = send("adt_a40_reverse.hl7")

    assert row.status == Status.FAILED
    assert row.error == (
        "MRN 77 was itself merged into MRN 123: merging MRN 123 into it would make a circle."
    )
    assert PatientMerge.objects.count() == 1


def test_a_merge_of_an_unknown_prior_record_fails_and_applies_when_replayed_later(send, north):
    PatientFactory(facility=north, mrn="123")

    row = send("adt_a40_merge.hl7")

    assert (row.status, row.error_location) == (Status.FAILED, "MRG-1")
    assert "Prior patient MRN 77 (MRG-1) is not registered here" in row.error
    PatientFactory(facility=north, mrn="77")
    services.message_replay(message=row)
    row.refresh_from_db()
    assert (row.status, row.outcome) == (Status.PROCESSED, "Merged MRN 77 into MRN 123")


def test_each_group_of_a_merge_message_is_merged(send, north):
    for mrn in ("600", "601", "602", "603"):
        PatientFactory(facility=north, mrn=mrn)

    row = send("adt_a40_two_groups_v231.hl7")

    assert row.outcome == "Merged MRN 601 into MRN 600; Merged MRN 603 into MRN 602"
    merged = dict(
        Patient.objects.filter(merged_into__isnull=False).values_list("mrn", "merged_into__mrn")
    )
    assert merged == {"601": "600", "603": "602"}


def test_a_merge_whose_survivor_is_unknown_registers_it_from_pid_first(send, north):
    prior = PatientFactory(facility=north, mrn="701")

    row = send("adt_a40_unknown_survivor.hl7")

    assert row.status == Status.PROCESSED, row.error
    assert row.outcome == "Registered MRN 700 (Kowalski, Anna); Merged MRN 701 into MRN 700"
    prior.refresh_from_db()
    assert prior.merged_into.birth_date == dt.date(1970, 1, 1)


# ---- HL7 values (no database) --------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024", at(2024, 1, 1, 5)),
        ("202403", at(2024, 3, 1, 5)),
        ("20240315", at(2024, 3, 15, 4)),
        ("2024031510", at(2024, 3, 15, 14)),
        ("202403151025", at(2024, 3, 15, 14, 25)),
        ("20240315102530.25", at(2024, 3, 15, 14, 25, 30, 250000)),
        ("20240315102530+0100", at(2024, 3, 15, 9, 25, 30)),
        ("202403151025-0530", at(2024, 3, 15, 15, 55)),
        ("", None),
    ],
)
def test_hl7_times_without_an_offset_are_in_the_facility_time_zone(text, expected):
    assert hl7_datetime(text, "America/New_York") == expected


@pytest.mark.parametrize("text", ["2024031", "20241301", "20240230", "2024-03-15", "202403151061"])
def test_a_malformed_hl7_time_is_a_data_type_error_at_its_field(text):
    with pytest.raises(Hl7Error) as raised:
        hl7_datetime(text, "UTC", location="PV1-44")
    assert (raised.value.error_code, raised.value.location) == (102, "PV1-44")


def test_a_birth_date_is_the_date_as_written():
    assert hl7_date("19750412") == dt.date(1975, 4, 12)
    assert hl7_date("197504122359-0500") == dt.date(1975, 4, 12)
    assert hl7_date("1975") == dt.date(1975, 1, 1)
