"""The patient registry's services and selectors: registration, updates, merges, search
and the duplicate warning."""

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from accounts.models import AuditEvent
from pacs.models import Study
from ris import selectors, services
from ris.models import Patient, PatientIdentifier, PatientMerge
from tests.factories import (
    PatientContactFactory,
    PatientFactory,
    PatientIdentifierFactory,
    PatientInsuranceFactory,
    PayerFactory,
    order_for,
)

pytestmark = pytest.mark.django_db

BORN = dt.date(1968, 4, 12)


def register(facility, **kwargs) -> Patient:
    fields = {"mrn": "700001", "family_name": "Garcia", "given_name": "Maria", **kwargs}
    return services.patient_create(facility=facility, **fields)


def merge(surviving: Patient, merged: Patient, **kwargs) -> PatientMerge:
    return services.patient_merge(surviving=surviving, merged=merged, **kwargs)


# ---- registration and updates ---------------------------------------------------------


def test_a_patient_is_registered_with_identifiers_contacts_and_insurance(clerk, facility_a):
    payer = PayerFactory(facility=facility_a, name="Acme Health")
    patient = register(
        facility_a,
        birth_date=BORN,
        address_city="Zürich",
        mobile_phone="+41 79 000 00 00",
        identifiers=[{"value": "X1234567", "issuer": "CH", "type_code": "PPN"}],
        contacts=[{"family_name": "Garcia", "given_name": "Luis", "relationship": "SPO"}],
        insurance=[{"payer": payer, "member_id": "ACME-1", "rank": 1}],
        actor=clerk,
    )
    identifier = patient.identifiers.get()
    assert (identifier.value, identifier.issuer, identifier.type_code) == ("X1234567", "CH", "PPN")
    assert identifier.facility == facility_a
    assert patient.contacts.get().display_name == "Garcia, Luis"
    assert patient.insurance.get().payer == payer
    event = AuditEvent.objects.get(action="create", object_type="patient")
    assert event.user == clerk
    assert event.detail["identifiers"] == {"added": ["PPN X1234567 (CH)"]}
    assert event.detail["insurance"]["added"] == [patient.insurance.get().pk]


def test_the_mrn_is_not_repeated_among_the_other_identifiers(facility_a):
    patient = register(
        facility_a, identifiers=[{"value": "700001", "issuer": facility_a.mrn_issuer}]
    )
    assert not patient.identifiers.exists()


def test_an_identifier_of_another_patient_is_refused(facility_a):
    PatientIdentifierFactory(
        patient=PatientFactory(facility=facility_a), value="SSN-1", issuer="US"
    )
    with pytest.raises(services.RisError, match="already belongs to"):
        register(facility_a, identifiers=[{"value": "SSN-1", "issuer": "US", "type_code": "SS"}])
    assert not Patient.objects.filter(mrn="700001").exists()


def test_another_patients_mrn_is_refused_as_an_identifier(facility_a):
    other = PatientFactory(facility=facility_a, mrn="123")
    with pytest.raises(services.RisError, match="merge the two records instead"):
        register(facility_a, identifiers=[{"value": "123", "issuer": other.mrn_issuer}])


def test_an_mrn_held_as_another_patients_identifier_is_refused(facility_a):
    holder = PatientFactory(facility=facility_a)
    PatientIdentifierFactory(patient=holder, value="700001", issuer=facility_a.mrn_issuer)
    with pytest.raises(services.RisError, match="already an identifier of"):
        register(facility_a)


def test_the_same_identifier_may_be_used_at_another_facility(facility_a, facility_b):
    PatientIdentifierFactory(patient=PatientFactory(facility=facility_b), value="P9", issuer="X")
    patient = register(facility_a, identifiers=[{"value": "P9", "issuer": "X"}])
    assert patient.identifiers.get().value == "P9"


def test_an_update_is_audited_with_old_and_new_values(clerk, facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Smith", birth_date=BORN)
    services.patient_update(
        patient=patient,
        actor=clerk,
        family_name="Smith-Jones",
        birth_date=dt.date(1968, 4, 21),
        home_phone="",
    )
    patient.refresh_from_db()
    assert patient.family_name == "Smith-Jones"
    event = AuditEvent.objects.get(action="update")
    assert event.user == clerk and event.patient_id == patient.pk
    assert event.detail == {
        "changed": {
            "family_name": ["Smith", "Smith-Jones"],
            "birth_date": ["1968-04-12", "1968-04-21"],
        }
    }


def test_an_update_that_changes_nothing_writes_no_audit_row(facility_a):
    patient = PatientFactory(facility=facility_a, family_name="Same")
    services.patient_update(patient=patient, family_name="Same")
    assert not AuditEvent.objects.filter(action="update").exists()


def test_an_update_replaces_the_lists_keeping_the_rows_that_stay(facility_a):
    patient = PatientFactory(facility=facility_a)
    kept = PatientIdentifierFactory(patient=patient, value="KEEP", issuer="X")
    PatientIdentifierFactory(patient=patient, value="DROP", issuer="X")
    contact = PatientContactFactory(patient=patient, phone="1")
    services.patient_update(
        patient=patient,
        identifiers=[
            {"value": "KEEP", "issuer": "X", "type_code": "NI"},
            {"value": "NEW", "issuer": "X"},
        ],
        contacts=[{"id": contact.pk, "phone": "2"}, {"family_name": "Friend"}],
    )
    assert sorted(patient.identifiers.values_list("value", flat=True)) == ["KEEP", "NEW"]
    kept.refresh_from_db()
    assert kept.type_code == "NI"
    contact.refresh_from_db()
    assert contact.phone == "2"
    assert patient.contacts.count() == 2
    detail = AuditEvent.objects.get(action="update").detail
    assert detail["identifiers"] == {"added": ["MR NEW (X)"], "removed": ["PI DROP (X)"]}
    assert detail["contacts"]["changed"] == [contact.pk]


def test_a_payer_of_another_facility_is_refused(facility_a, facility_b):
    patient = PatientFactory(facility=facility_a)
    with pytest.raises(services.RisError, match="not a payer of this facility"):
        services.patient_update(
            patient=patient,
            insurance=[{"payer": PayerFactory(facility=facility_b), "member_id": "1"}],
        )


def test_a_merged_record_cannot_be_edited(facility_a):
    survivor, duplicate = PatientFactory.create_batch(2, facility=facility_a)
    merge(survivor, duplicate)
    with pytest.raises(services.RisError, match="merged into"):
        services.patient_update(patient=duplicate, family_name="Changed")


# ---- merges ---------------------------------------------------------------------------


def test_a_merge_moves_orders_studies_identifiers_contacts_and_insurance(clerk, facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="100")
    duplicate = PatientFactory(facility=facility_a, mrn="200")
    order = order_for(duplicate)
    study = Study.objects.create(facility=facility_a, patient=duplicate, study_instance_uid="1.2")
    identifier = PatientIdentifierFactory(patient=duplicate)
    contact = PatientContactFactory(patient=duplicate)
    coverage = PatientInsuranceFactory(patient=duplicate)
    history = merge(survivor, duplicate, actor=clerk, reason="registered twice")
    for row in (order, study, identifier, contact, coverage):
        row.refresh_from_db()
        assert row.patient_id == survivor.pk, row
    duplicate.refresh_from_db()
    assert duplicate.merged_into == survivor
    assert (history.surviving, history.merged, history.user) == (survivor, duplicate, clerk)
    assert history.reason == "registered twice"
    assert history.summary == {
        "orders": 1,
        "studies": 1,
        "visits": 0,
        "identifiers": 1,
        "contacts": 1,
        "insurance": 1,
        "insurance_already_held": 0,
        "earlier_merges": 0,
        "kept_mrn": f"200 ({facility_a.mrn_issuer})",
    }
    audited = AuditEvent.objects.filter(action="update").values_list("patient_id", flat=True)
    assert set(audited) == {survivor.pk, duplicate.pk}


def test_a_merge_keeps_the_old_mrn_so_it_still_finds_the_survivor(facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="100")
    duplicate = PatientFactory(facility=facility_a, mrn="200")
    merge(survivor, duplicate)
    kept = survivor.identifiers.get()
    assert (kept.value, kept.issuer, kept.type_code) == ("200", facility_a.mrn_issuer, "MR")
    assert selectors.patient_by_identifier(facility=facility_a, value="200") == survivor
    assert selectors.patient_by_identifier(facility=facility_a, value="100") == survivor


def test_a_patient_id_finds_the_mrn_holder_before_an_identifier_holder(facility_a):
    by_mrn = PatientFactory(facility=facility_a, mrn="300")
    by_identifier = PatientFactory(facility=facility_a)
    PatientIdentifierFactory(patient=by_identifier, value="300", issuer=facility_a.mrn_issuer)
    PatientIdentifierFactory(patient=by_identifier, value="301", issuer="OTHER")

    assert selectors.patient_holding(facility=facility_a, value="300") == by_mrn
    assert selectors.patient_holding(facility=facility_a, value="301") is None, "other issuer"
    assert selectors.patient_holding(facility=facility_a, value="301", issuer="OTHER") == (
        by_identifier
    )


@pytest.mark.parametrize("held_as", ["mrn", "identifier"])
def test_a_patient_id_looked_up_for_an_update_is_row_locked(facility_a, held_as):
    patient = PatientFactory(facility=facility_a, mrn="500")
    PatientIdentifierFactory(patient=patient, value="501", issuer=facility_a.mrn_issuer)
    value = "500" if held_as == "mrn" else "501"
    with transaction.atomic(), CaptureQueriesContext(connection) as queries:
        found = selectors.patient_holding(facility=facility_a, value=value, lock=True)
    assert found == patient
    assert found.family_name == patient.family_name  # a whole record, as without the lock
    locking = connection.features.has_select_for_update
    assert queries[0]["sql"].endswith(" FOR UPDATE") == locking
    assert selectors.patient_holding(facility=facility_a, value="502", lock=True) is None


def test_a_patient_id_of_another_facility_finds_no_one(facility_a, facility_b):
    PatientFactory(facility=facility_b, mrn="400", mrn_issuer=facility_a.mrn_issuer)
    PatientIdentifierFactory(
        patient=PatientFactory(facility=facility_b), value="401", issuer=facility_a.mrn_issuer
    )
    assert selectors.patient_holding(facility=facility_a, value="400") is None
    assert selectors.patient_holding(facility=facility_a, value="401") is None


def test_a_merged_records_mrn_is_held_by_it_and_answers_with_its_survivor(facility_a):
    survivor = PatientFactory(facility=facility_a, mrn="100")
    duplicate = PatientFactory(facility=facility_a, mrn="200")
    merge(survivor, duplicate)
    assert selectors.patient_holding(facility=facility_a, value="200") == duplicate
    assert selectors.patient_by_identifier(facility=facility_a, value="200") == survivor


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("self", "cannot be merged into itself"),
        ("already merged", "was already merged into"),
        ("into a merged record", "was itself merged into"),
        ("circular", "was itself merged into"),
        ("other facility", "same facility"),
    ],
)
def test_a_merge_is_refused_with_the_reason(facility_a, facility_b, case, message):
    a, b, c = PatientFactory.create_batch(3, facility=facility_a)
    merge(a, b)  # b lives in a now
    surviving, merged = {
        "self": (c, c),
        "already merged": (c, b),
        "into a merged record": (b, c),
        "circular": (b, a),
        "other facility": (c, PatientFactory(facility=facility_b)),
    }[case]
    with pytest.raises(services.RisError, match=message):
        merge(surviving, merged)
    assert PatientMerge.objects.count() == 1


def test_merging_a_survivor_again_points_its_earlier_merges_at_the_new_survivor(facility_a):
    first, second, third = PatientFactory.create_batch(3, facility=facility_a)
    merge(second, first)
    merge(third, second)
    first.refresh_from_db()
    assert first.merged_into == third
    assert selectors.patient_by_identifier(facility=facility_a, value=first.mrn) == third
    assert PatientMerge.objects.get(merged=first).surviving == second, "history keeps the path"


def test_the_duplicates_insurance_goes_after_the_survivors(facility_a):
    survivor, duplicate = PatientFactory.create_batch(2, facility=facility_a)
    primary = PatientInsuranceFactory(patient=survivor, rank=1)
    same_policy = PatientInsuranceFactory(
        patient=duplicate, payer=primary.payer, member_id=primary.member_id, rank=1
    )
    other = PatientInsuranceFactory(patient=duplicate, rank=2)
    history = merge(survivor, duplicate)
    assert list(survivor.insurance.values_list("pk", "rank")) == [(primary.pk, 1), (other.pk, 2)]
    assert not type(same_policy).objects.filter(pk=same_policy.pk).exists()
    assert history.summary["insurance_already_held"] == 1


# ---- search and duplicates ------------------------------------------------------------


def test_search_finds_a_patient_by_another_identifier(clerk, facility_a):
    patient = PatientFactory(facility=facility_a)
    PatientIdentifierFactory(patient=patient, value="AB 12 34")
    PatientFactory(facility=facility_a)
    for query in ("AB 12 34", "ab 12 34"):
        assert list(selectors.patient_search(user=clerk, query=query)) == [patient]


def test_search_combines_a_name_and_a_birth_date(clerk, facility_a):
    maria = PatientFactory(facility=facility_a, family_name="Garcia", birth_date=BORN)
    PatientFactory(facility=facility_a, family_name="Garcia", birth_date=dt.date(1990, 1, 1))
    found = selectors.patient_search(user=clerk, query="garcia 1968-04-12")
    assert list(found) == [maria]


def test_merged_records_are_left_out_of_search_unless_asked_for(clerk, facility_a):
    survivor = PatientFactory(facility=facility_a, family_name="Twice")
    duplicate = PatientFactory(facility=facility_a, family_name="Twice")
    merge(survivor, duplicate)
    assert list(selectors.patient_search(user=clerk, query="twice")) == [survivor]
    everyone = selectors.patient_search(user=clerk, query="twice", include_merged=True)
    assert set(everyone) == {survivor, duplicate}
    # The old MRN finds the survivor (now its identifier), not the closed record.
    assert list(selectors.patient_search(user=clerk, query=duplicate.mrn)) == [survivor]


@pytest.mark.parametrize(
    ("registered", "new", "alike"),
    [
        (("Müller", "Jürgen", BORN), ("MULLER", "Jurgen", BORN), True),
        (("O'Brien", "Siobhan", BORN), ("OBrien", "", BORN), True),
        (("Garcia", "Maria", BORN), ("Garcia Lopez", "Maria", BORN), True),
        (("Garcia", "Maria", BORN), ("Maria", "Garcia", BORN), True),
        (("Garcia", "Maria", None), ("garcia", "maria", BORN), True),
        (("Garcia", "Maria", None), ("Garcia", "Maria", None), True),
        (("Garcia", "Maria", BORN), ("Lopez", "Maria", BORN), False),
        (("Garcia", "Maria", BORN), ("Garcia", "Maria", dt.date(1970, 1, 1)), False),
        (("Garcia", "Maria", None), ("Garcia", "Ana", None), False),
    ],
)
def test_possible_duplicates(facility_a, registered, new, alike):
    family, given, born = registered
    existing = PatientFactory(
        facility=facility_a, family_name=family, given_name=given, birth_date=born
    )
    family, given, born = new
    found = selectors.possible_duplicates(
        facility=facility_a, family_name=family, given_name=given, birth_date=born
    )
    assert found == ([existing] if alike else [])


def test_possible_duplicates_leave_out_merged_records_other_facilities_and_the_patient_itself(
    facility_a, facility_b
):
    def twin(facility):
        return PatientFactory(
            facility=facility, family_name="Garcia", given_name="Maria", birth_date=BORN
        )

    survivor, duplicate = twin(facility_a), twin(facility_a)
    twin(facility_b)
    merge(survivor, duplicate)
    found = selectors.possible_duplicates(
        facility=facility_a, family_name="Garcia", given_name="Maria", birth_date=BORN
    )
    assert found == [survivor]
    assert not selectors.possible_duplicates(
        facility=facility_a, family_name="Garcia", birth_date=BORN, exclude_pk=survivor.pk
    )


def test_an_identifier_is_unique_per_facility_in_the_database(facility_a):
    PatientIdentifierFactory(patient=PatientFactory(facility=facility_a), value="V", issuer="I")
    with pytest.raises(IntegrityError):
        PatientIdentifier.objects.create(
            facility=facility_a,
            patient=PatientFactory(facility=facility_a),
            value="V",
            issuer="I",
        )
