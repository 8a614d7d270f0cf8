"""pacs.dimse.query: C-FIND matching and C-MOVE/C-GET selection over the index (PS3.4 C)."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from accounts.models import Facility
from pacs.dicom import synthetic
from pacs.dimse.query import QueryError, find, instances_for
from pacs.models import Study
from pacs.services import ingest, study_refresh

pytestmark = [
    pytest.mark.django_db,
    # Queries never read image files: one storage backend is enough.
    pytest.mark.parametrize("image_store", ["disk"], indirect=True),
]

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


@dataclass
class Archive:
    """Facility A: John Doe (a CT+SR study and an older CT), Jane Dee (MR), Jörg Müller
    (CT without date or accession). Facility B: another John Doe, same Patient ID."""

    facility_ids: set[int]
    doe: str  # study uids
    doe_old: str
    dee: str
    muller: str
    other: str
    doe_ct: str  # series uids
    doe_sr: str
    doe_ct_sops: list[str]
    doe_sr_sop: str
    other_sop: str


def _instance(
    spec: synthetic.StudySpec,
    series_uid: str,
    *,
    number: int = 1,
    series_number: int = 1,
    modality: str = "CT",
) -> bytes:
    data = synthetic.ct_instance(
        spec,
        series_uid=series_uid,
        series_number=series_number,
        instance_number=number,
        rows=16,
        columns=16,
    )
    if modality == "CT":
        return data
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.Modality = modality
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _store(facility: Facility, *instances: bytes) -> list[str]:
    results = [ingest(data, facility=facility, door="dimse") for data in instances]
    for study_id in {result.study_id for result in results}:
        study_refresh(study_id)
    return [result.sop_instance_uid for result in results]


@pytest.fixture
def archive(facility_a: Facility, facility_b: Facility) -> Archive:
    john = synthetic.PatientSpec("MRN1", "Doe^John", "19600101", "M")
    jane = synthetic.PatientSpec("MRN2", "Dee^Jane", "19800202", "F")
    jorg = synthetic.PatientSpec("MRN3", "Müller^Jörg", "19900303", "M")
    doe = synthetic.StudySpec(
        john, accession_number="ACC1", study_date="20240115", study_time="093000"
    )
    doe_old = synthetic.StudySpec(
        john,
        accession_number="ACC3",
        study_date="20231231",
        study_time="140000",
        description="CT HEAD",
    )
    dee = synthetic.StudySpec(
        jane,
        accession_number="ACC2",
        study_date="20240220",
        study_time="101500",
        description="MR KNEE",
    )
    muller = synthetic.StudySpec(jorg, study_date="", study_time="", description="CT_ABD")
    other = synthetic.StudySpec(john, accession_number="ACC1", study_date="20240115")
    doe_ct, doe_sr = synthetic.new_uid(), synthetic.new_uid()
    sops = _store(
        facility_a,
        _instance(doe, doe_ct, number=1),
        _instance(doe, doe_ct, number=2),
        _instance(doe, doe_sr, series_number=2, modality="SR"),
    )
    _store(facility_a, _instance(doe_old, synthetic.new_uid()))
    _store(facility_a, _instance(dee, synthetic.new_uid(), modality="MR"))
    _store(facility_a, _instance(muller, synthetic.new_uid()))
    (other_sop,) = _store(facility_b, _instance(other, synthetic.new_uid()))
    return Archive(
        facility_ids={facility_a.pk},
        doe=doe.study_uid,
        doe_old=doe_old.study_uid,
        dee=dee.study_uid,
        muller=muller.study_uid,
        other=other.study_uid,
        doe_ct=doe_ct,
        doe_sr=doe_sr,
        doe_ct_sops=sops[:2],
        doe_sr_sop=sops[2],
        other_sop=other_sop,
    )


def identifier(level: str, **keys: object) -> Dataset:
    dataset = Dataset()
    dataset.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(dataset, keyword, value)
    return dataset


def study_query(archive: Archive, **keys: object) -> list[Dataset]:
    keys.setdefault("StudyInstanceUID", "")
    return list(find(identifier("STUDY", **keys), model="study", facility_ids=archive.facility_ids))


def study_uids(responses: list[Dataset]) -> set[str]:
    return {response.StudyInstanceUID for response in responses}


def over_the_wire(response: Dataset) -> Dataset:
    """The response as the peer reads it (explicit VR little endian)."""
    encoded = encode(response, False, True)
    assert encoded is not None
    return decode(io.BytesIO(encoded), False, True)


def keywords(response: Dataset) -> set[str]:
    return {element.keyword for element in response}


# Levels and models (PS3.4 C.6.1, C.6.2)


def test_a_study_level_query_answers_each_matching_study_newest_first(archive):
    responses = study_query(
        archive,
        PatientName="Doe^John",
        StudyDate="",
        StudyDescription="",
        AccessionNumber="",
        ModalitiesInStudy="",
        NumberOfStudyRelatedSeries="",
        NumberOfStudyRelatedInstances="",
    )
    assert [r.StudyInstanceUID for r in responses] == [archive.doe, archive.doe_old]
    newest = responses[0]
    assert newest.QueryRetrieveLevel == "STUDY"
    assert (newest.PatientName, newest.StudyDate, newest.AccessionNumber) == (
        "Doe^John",
        "20240115",
        "ACC1",
    )
    assert list(newest.ModalitiesInStudy) == ["CT", "SR"]
    assert (newest.NumberOfStudyRelatedSeries, newest.NumberOfStudyRelatedInstances) == (2, 3)
    assert newest.StudyDescription == "CT CHEST"


def test_patient_root_study_level_returns_the_patient_id_above_and_treats_it_as_optional(
    archive,
):
    everyone = list(
        find(
            identifier("STUDY", StudyInstanceUID=""),
            model="patient",
            facility_ids=archive.facility_ids,
        )
    )
    assert len(everyone) == 4
    assert keywords(everyone[0]) == {"QueryRetrieveLevel", "PatientID", "StudyInstanceUID"}
    johns = find(
        identifier("STUDY", PatientID="MRN1", StudyInstanceUID=""),
        model="patient",
        facility_ids=archive.facility_ids,
    )
    assert study_uids(list(johns)) == {archive.doe, archive.doe_old}


def test_patient_level_groups_studies_by_patient_id_with_their_counts(archive):
    responses = list(
        find(
            identifier(
                "PATIENT",
                PatientID="",
                PatientName="",
                PatientBirthDate="",
                PatientSex="",
                NumberOfPatientRelatedStudies="",
                NumberOfPatientRelatedSeries="",
                NumberOfPatientRelatedInstances="",
            ),
            model="patient",
            facility_ids=archive.facility_ids,
        )
    )
    assert [r.PatientID for r in responses] == ["MRN1", "MRN2", "MRN3"]
    john = responses[0]
    assert (john.PatientName, john.PatientBirthDate, john.PatientSex) == (
        "Doe^John",
        "19600101",
        "M",
    )
    assert (
        john.NumberOfPatientRelatedStudies,
        john.NumberOfPatientRelatedSeries,
        john.NumberOfPatientRelatedInstances,
    ) == (2, 3, 4)
    assert "StudyInstanceUID" not in john


def test_a_patient_counts_all_its_studies_even_when_one_matches_the_name(archive):
    Study.objects.filter(study_instance_uid=archive.doe_old).update(patient_name="Doe^J")
    (john,) = find(
        identifier("PATIENT", PatientName="Doe^John", NumberOfPatientRelatedStudies=""),
        model="patient",
        facility_ids=archive.facility_ids,
    )
    assert (john.PatientID, john.NumberOfPatientRelatedStudies) == ("MRN1", 2)


def test_series_level_answers_the_series_of_a_study_in_both_models(archive):
    keys = {
        "StudyInstanceUID": archive.doe,
        "SeriesInstanceUID": "",
        "Modality": "",
        "SeriesNumber": "",
        "BodyPartExamined": "",
        "SeriesDate": "",
        "NumberOfSeriesRelatedInstances": "",
    }
    in_study_root = list(
        find(identifier("SERIES", **keys), model="study", facility_ids=archive.facility_ids)
    )
    assert [(r.SeriesInstanceUID, r.Modality, r.SeriesNumber) for r in in_study_root] == [
        (archive.doe_ct, "CT", 1),
        (archive.doe_sr, "SR", 2),
    ]
    ct = in_study_root[0]
    assert (ct.NumberOfSeriesRelatedInstances, ct.BodyPartExamined, ct.SeriesDate) == (
        2,
        "CHEST",
        "20240115",
    )
    assert ct.StudyInstanceUID == archive.doe
    assert "PatientID" not in ct
    in_patient_root = list(
        find(identifier("SERIES", **keys), model="patient", facility_ids=archive.facility_ids)
    )
    assert [r.PatientID for r in in_patient_root] == ["MRN1", "MRN1"]


def test_series_number_matches_as_a_number(archive):
    (sr,) = find(
        identifier("SERIES", StudyInstanceUID=archive.doe, SeriesInstanceUID="", SeriesNumber=2),
        model="study",
        facility_ids=archive.facility_ids,
    )
    assert sr.SeriesInstanceUID == archive.doe_sr


def test_image_level_answers_the_instances_of_a_series_in_both_models(archive):
    keys = {
        "StudyInstanceUID": archive.doe,
        "SeriesInstanceUID": archive.doe_ct,
        "SOPInstanceUID": "",
        "SOPClassUID": "",
        "InstanceNumber": "",
        "Rows": None,
        "Columns": None,
        "NumberOfFrames": "",
    }
    responses = list(
        find(identifier("IMAGE", **keys), model="study", facility_ids=archive.facility_ids)
    )
    assert [(r.SOPInstanceUID, r.InstanceNumber) for r in responses] == [
        (archive.doe_ct_sops[0], 1),
        (archive.doe_ct_sops[1], 2),
    ]
    first = responses[0]
    assert (first.SOPClassUID, first.Rows, first.Columns, first.NumberOfFrames) == (
        CT_IMAGE_STORAGE,
        16,
        16,
        1,
    )
    assert (first.SeriesInstanceUID, first.StudyInstanceUID) == (archive.doe_ct, archive.doe)
    (in_patient_root,) = find(
        identifier("IMAGE", PatientID="MRN1", SOPInstanceUID=archive.doe_sr_sop),
        model="patient",
        facility_ids=archive.facility_ids,
    )
    assert keywords(in_patient_root) == {
        "QueryRetrieveLevel",
        "PatientID",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
    }
    assert in_patient_root.SeriesInstanceUID == archive.doe_sr


def test_keys_of_the_levels_above_match_relationally(archive):
    responses = list(
        find(
            identifier("IMAGE", PatientName="doe^john", StudyDate="20240115", SOPInstanceUID=""),
            model="study",
            facility_ids=archive.facility_ids,
        )
    )
    assert {r.SOPInstanceUID for r in responses} == {*archive.doe_ct_sops, archive.doe_sr_sop}


def test_study_root_has_no_patient_level(archive):
    with pytest.raises(QueryError, match="no PATIENT level"):
        find(identifier("PATIENT", PatientID=""), model="study", facility_ids=archive.facility_ids)


@pytest.mark.parametrize("level", ["FRAME", "", None])
def test_an_invalid_or_missing_query_level_is_refused(archive, level):
    request = Dataset()
    request.PatientName = "Doe*"
    if level is not None:
        request.QueryRetrieveLevel = level
    with pytest.raises(QueryError, match="QueryRetrieveLevel"):
        find(request, model="patient", facility_ids=archive.facility_ids)


# Matching (PS3.4 C.2.2.2)


def test_person_names_match_regardless_of_case(archive):
    assert study_uids(study_query(archive, PatientName="doe^JOHN")) == {
        archive.doe,
        archive.doe_old,
    }


def test_other_text_matches_case_sensitively(archive):
    assert study_query(archive, AccessionNumber="acc1") == []
    assert study_uids(study_query(archive, AccessionNumber="ACC1")) == {archive.doe}


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("Doe*", {"doe", "doe_old"}),
        ("doe*", {"doe", "doe_old"}),
        ("D?e*", {"doe", "doe_old", "dee"}),
        ("*^J?ne", {"dee"}),
        ("M*ller^*", {"muller"}),
        ("*", {"doe", "doe_old", "dee", "muller"}),
        ("Do", set()),
    ],
)
def test_wildcards_match_any_run_and_any_single_character(archive, pattern, expected):
    found = study_uids(study_query(archive, PatientName=pattern))
    assert found == {getattr(archive, name) for name in expected}


def test_percent_and_underscore_in_a_pattern_are_literal_characters(archive):
    assert study_uids(study_query(archive, StudyDescription="CT_*")) == {archive.muller}
    assert study_query(archive, StudyDescription="CT%") == []
    assert study_query(archive, StudyDescription="ct*") == []


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20240101-20240131", {"doe"}),
        ("-20240115", {"doe", "doe_old"}),
        ("20240116-", {"dee"}),
        ("20231231", {"doe_old"}),
    ],
)
def test_study_dates_match_single_values_and_ranges_of_all_three_forms(archive, dates, expected):
    found = study_uids(study_query(archive, StudyDate=dates))
    assert found == {getattr(archive, name) for name in expected}


def test_a_range_never_matches_a_study_without_a_date(archive):
    assert archive.muller not in study_uids(study_query(archive, StudyDate="-20991231"))


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ("0900-1000", {"doe"}),
        ("-0930", {"doe"}),
        ("1015-1400", {"dee", "doe_old"}),
        ("1400-", {"doe_old"}),
        ("101500", {"dee"}),
    ],
)
def test_study_times_match_up_to_the_end_of_the_last_component_given(archive, times, expected):
    found = study_uids(study_query(archive, StudyTime=times))
    assert found == {getattr(archive, name) for name in expected}


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("StudyDate", "2024-01"),
        ("StudyDate", "2024*"),
        ("StudyDate", "20240131-20240101"),
        ("StudyTime", "25:00"),
    ],
)
def test_a_malformed_date_or_time_is_refused(archive, keyword, value):
    with pytest.raises(QueryError, match=keyword):
        study_query(archive, **{keyword: value})


def test_a_list_of_uids_matches_each_of_them(archive):
    found = study_uids(study_query(archive, StudyInstanceUID=[archive.doe, archive.dee]))
    assert found == {archive.doe, archive.dee}
    series = find(
        identifier("SERIES", SeriesInstanceUID=[archive.doe_ct, archive.doe_sr, "1.2.3"]),
        model="study",
        facility_ids=archive.facility_ids,
    )
    assert {r.SeriesInstanceUID for r in series} == {archive.doe_ct, archive.doe_sr}


@pytest.mark.parametrize(
    ("modalities", "expected"),
    [
        ("SR", {"doe"}),
        ("CT", {"doe", "doe_old", "muller"}),
        (["MR", "SR"], {"doe", "dee"}),
        ("C?", {"doe", "doe_old", "muller"}),
        ("T", set()),
    ],
)
def test_modalities_in_study_matches_when_one_of_the_study_modalities_matches(
    archive, modalities, expected
):
    found = study_uids(study_query(archive, ModalitiesInStudy=modalities))
    assert found == {getattr(archive, name) for name in expected}


def test_universal_matching_returns_the_attribute_of_every_study(archive):
    responses = study_query(archive, AccessionNumber="")
    assert {r.AccessionNumber for r in responses} == {"ACC1", "ACC2", "ACC3", ""}
    assert all("AccessionNumber" in r for r in responses)


def test_empty_value_matching_finds_studies_without_the_attribute(archive):
    assert study_uids(study_query(archive, AccessionNumber='""')) == {archive.muller}


def test_unknown_requested_attributes_are_returned_empty(archive):
    request = identifier(
        "IMAGE",
        SOPInstanceUID=archive.doe_sr_sop,
        InstitutionName="",
        TransferSyntaxUID="",
        ProcedureCodeSequence=[],
        InstanceAvailability="",
        RetrieveAETitle="",
    )
    request.add_new(0x00991010, "LO", "")
    (response,) = find(request, model="study", facility_ids=archive.facility_ids)
    for keyword in ("InstitutionName", "TransferSyntaxUID", "RetrieveAETitle"):
        assert response[keyword].is_empty
    assert list(response.ProcedureCodeSequence) == []
    assert response[0x00991010].is_empty
    assert response.InstanceAvailability == "ONLINE"
    assert over_the_wire(response).SOPInstanceUID == archive.doe_sr_sop


def test_a_response_holds_only_the_requested_keys_and_the_unique_keys(archive):
    request = identifier("STUDY", PatientName="Doe^John")
    request.SpecificCharacterSet = "ISO_IR 100"
    responses = list(find(request, model="study", facility_ids=archive.facility_ids))
    assert {frozenset(keywords(r)) for r in responses} == {
        frozenset({"QueryRetrieveLevel", "PatientName", "StudyInstanceUID"})
    }


def test_a_non_ascii_value_is_answered_in_utf8(archive):
    (jorg,) = study_query(archive, PatientName="Müller*")
    assert jorg.SpecificCharacterSet == "ISO_IR 192"
    assert over_the_wire(jorg).PatientName == "Müller^Jörg"
    (john,) = study_query(archive, PatientName="Doe^John", StudyDate="20240115")
    assert "SpecificCharacterSet" not in john


# Facility scoping and cost


@pytest.mark.parametrize("model", ["patient", "study"])
def test_another_facility_s_studies_are_never_returned(archive, model):
    for level in ("STUDY", "SERIES", "IMAGE") + (("PATIENT",) if model == "patient" else ()):
        responses = list(
            find(
                identifier(level, PatientID="", StudyInstanceUID=""),
                model=model,
                facility_ids=archive.facility_ids,
            )
        )
        assert responses
        assert archive.other not in {r.get("StudyInstanceUID") for r in responses}
    assert study_query(archive, StudyInstanceUID=archive.other) == []
    assert list(find(identifier("STUDY"), model=model, facility_ids=set())) == []


@pytest.mark.parametrize(
    ("model", "level"),
    [("patient", "PATIENT"), ("study", "STUDY"), ("patient", "SERIES"), ("study", "IMAGE")],
)
def test_one_sql_query_answers_a_find_however_many_match(
    archive, django_assert_num_queries, model, level
):
    keys = {"PatientName": "", "StudyDate": "", "PatientID": ""}
    if level != "PATIENT":
        keys |= {"StudyInstanceUID": "", "ModalitiesInStudy": "", "NumberOfStudyRelatedSeries": ""}
    if level in ("SERIES", "IMAGE"):
        keys |= {"SeriesInstanceUID": "", "Modality": "", "SeriesNumber": ""}
    if level == "IMAGE":
        keys |= {"SOPInstanceUID": "", "InstanceNumber": "", "Rows": None}
    with django_assert_num_queries(1):
        many = list(find(identifier(level, **keys), model=model, facility_ids=archive.facility_ids))
    with django_assert_num_queries(1):
        few = list(
            find(
                identifier(level, **{**keys, "PatientID": "MRN2"}),
                model=model,
                facility_ids=archive.facility_ids,
            )
        )
    assert len(many) > len(few) == 1


def test_the_limit_caps_the_number_of_responses(archive):
    request = identifier("STUDY", StudyInstanceUID="")
    assert len(list(find(request, model="study", facility_ids=archive.facility_ids, limit=2))) == 2


# C-MOVE / C-GET selection (PS3.4 C.4.2.2.1)


def _sops(instances) -> set[str]:
    return {instance.sop_instance_uid for instance in instances}


def test_instances_for_a_patient_are_all_its_instances_here(archive):
    selected = instances_for(
        identifier("PATIENT", PatientID="MRN1"), model="patient", facility_ids=archive.facility_ids
    )
    assert len(_sops(selected)) == 4
    assert archive.other_sop not in _sops(selected)


def test_instances_for_studies_series_and_images_follow_their_uid_lists(archive):
    facility_ids = archive.facility_ids
    studies = instances_for(
        identifier("STUDY", StudyInstanceUID=[archive.doe, archive.other]),
        model="study",
        facility_ids=facility_ids,
    )
    assert _sops(studies) == {*archive.doe_ct_sops, archive.doe_sr_sop}
    series = instances_for(
        identifier("SERIES", StudyInstanceUID=archive.doe, SeriesInstanceUID=[archive.doe_sr]),
        model="study",
        facility_ids=facility_ids,
    )
    assert _sops(series) == {archive.doe_sr_sop}
    images = instances_for(
        identifier(
            "IMAGE",
            PatientID="MRN1",
            SeriesInstanceUID=archive.doe_ct,
            SOPInstanceUID=[*archive.doe_ct_sops, archive.doe_sr_sop],
        ),
        model="patient",
        facility_ids=facility_ids,
    )
    assert _sops(images) == set(archive.doe_ct_sops)


def test_instances_for_narrows_by_the_unique_keys_above_when_given(archive):
    wrong_study = instances_for(
        identifier("SERIES", StudyInstanceUID=archive.dee, SeriesInstanceUID=archive.doe_ct),
        model="study",
        facility_ids=archive.facility_ids,
    )
    assert list(wrong_study) == []


def test_instances_for_loads_series_and_study_in_the_same_query(archive, django_assert_num_queries):
    selected = instances_for(
        identifier("STUDY", StudyInstanceUID=archive.doe),
        model="study",
        facility_ids=archive.facility_ids,
    )
    with django_assert_num_queries(1):
        studies = {instance.series.study.study_instance_uid for instance in selected}
    assert studies == {archive.doe}


@pytest.mark.parametrize(
    ("model", "request_keys", "message"),
    [
        ("patient", {"QueryRetrieveLevel": "PATIENT"}, "PatientID is required"),
        ("study", {"QueryRetrieveLevel": "SERIES", "StudyInstanceUID": "1.2"}, "SeriesInstance"),
        ("study", {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "1.2*"}, "wildcards"),
        ("study", {"QueryRetrieveLevel": "PATIENT", "PatientID": "MRN1"}, "no PATIENT level"),
    ],
)
def test_instances_for_refuses_an_identifier_without_a_usable_unique_key(
    archive, model, request_keys, message
):
    request = Dataset()
    for keyword, value in request_keys.items():
        setattr(request, keyword, value)
    with pytest.raises(QueryError, match=message):
        instances_for(request, model=model, facility_ids=archive.facility_ids)
