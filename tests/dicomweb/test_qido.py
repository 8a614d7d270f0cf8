"""QIDO-RS (PS3.18 10.6) through dicomweb-client."""

import pytest
import requests

from accounts.models import AuditEvent
from tests.dicomweb.conftest import client_as

pytestmark = pytest.mark.django_db(transaction=True)


def uids(results, tag="0020000D"):
    return sorted(result[tag]["Value"][0] for result in results)


def test_search_for_studies_returns_the_default_attributes_of_the_facilitys_studies(
    dicomweb, archive
):
    results = dicomweb.search_for_studies()
    assert uids(results) == sorted([archive.first.study_uid, archive.second.study_uid])
    first = next(r for r in results if r["0020000D"]["Value"][0] == archive.first.study_uid)
    assert first["00100010"]["Value"][0]["Alphabetic"] == "Smith^John"
    assert first["00080050"]["Value"] == ["ACC1"]
    assert first["00201206"]["Value"] == [2]  # NumberOfStudyRelatedSeries
    assert first["00201208"]["Value"] == [5]  # NumberOfStudyRelatedInstances
    assert first["00080061"]["Value"] == ["CT"]
    assert first["00081190"]["Value"][0].endswith(f"/dicom-web/studies/{archive.first.study_uid}")


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"PatientID": "P1"}, ["first"]),
        ({"PatientName": "smi*"}, ["first"]),
        ({"00100020": "P2"}, ["second"]),
        ({"StudyDate": "20240101-20240131"}, ["first"]),
        ({"StudyDate": "20240201-"}, ["second"]),
        ({"AccessionNumber": "ACC?"}, ["first", "second"]),
        ({"ModalitiesInStudy": "CT"}, ["first", "second"]),
        ({"ModalitiesInStudy": "MR"}, []),
    ],
)
def test_search_for_studies_matches_values_wildcards_and_ranges(
    dicomweb, archive, filters, expected
):
    results = dicomweb.search_for_studies(search_filters=filters)
    assert uids(results) == sorted(getattr(archive, name).study_uid for name in expected)


def test_a_list_of_study_uids_matches_any_of_them(dicomweb, archive):
    both = f"{archive.first.study_uid},{archive.second.study_uid}"
    results = dicomweb.search_for_studies(search_filters={"StudyInstanceUID": both})
    assert len(results) == 2


def test_fuzzy_matching_finds_a_name_component_whatever_its_case(dicomweb, archive):
    results = dicomweb.search_for_studies(
        fuzzymatching=True, search_filters={"PatientName": "jürg"}
    )
    assert uids(results) == [archive.second.study_uid]


def test_limit_and_offset_page_through_the_matches_with_a_warning(dicomweb, live_server, reader):
    first_page = dicomweb.search_for_studies(limit=1)
    second_page = dicomweb.search_for_studies(limit=1, offset=1)
    assert len(first_page) == len(second_page) == 1
    assert uids(first_page) != uids(second_page)
    response = requests.get(
        f"{live_server.url}/dicom-web/studies?limit=1",
        headers={"Authorization": dicomweb._session.headers["Authorization"]},
        timeout=10,
    )
    assert "additional results" in response.headers["Warning"]


def test_series_and_instances_of_a_study_and_across_studies(dicomweb, archive):
    series = dicomweb.search_for_series(study_instance_uid=archive.first.study_uid)
    assert sorted(s["00200011"]["Value"][0] for s in series) == [1, 2]
    assert {s["00201209"]["Value"][0] for s in series} == {3, 2}
    everywhere = dicomweb.search_for_series(search_filters={"Modality": "CT"})
    assert len(everywhere) == 3
    assert all("0020000D" in s and "00100020" in s for s in everywhere)  # study attributes too
    instances = dicomweb.search_for_instances(
        study_instance_uid=archive.first.study_uid,
        series_instance_uid=series[0]["0020000E"]["Value"][0],
    )
    assert len(instances) == series[0]["00201209"]["Value"][0]
    assert {i["00280010"]["Value"][0] for i in instances} == {32}  # Rows
    assert len(dicomweb.search_for_instances(study_instance_uid=archive.first.study_uid)) == 5
    assert len(dicomweb.search_for_instances()) == 7


def test_includefield_adds_attributes_and_all_adds_every_indexed_one(dicomweb, archive):
    plain = dicomweb.search_for_series(study_instance_uid=archive.first.study_uid)
    assert "00080021" not in plain[0]
    wider = dicomweb.search_for_series(
        study_instance_uid=archive.first.study_uid, fields=["SeriesDate"]
    )
    assert "00080021" in wider[0]
    everything = dicomweb.search_for_studies(fields=["all"])
    assert "00100021" in everything[0]  # IssuerOfPatientID


def test_another_facilitys_studies_are_never_found(dicomweb, archive):
    assert dicomweb.search_for_studies(search_filters={"PatientID": "P9"}) == []
    assert dicomweb.search_for_series(study_instance_uid=archive.other.study_uid) == []


def test_a_search_is_audited_with_its_query(dicomweb, reader):
    dicomweb.search_for_studies(search_filters={"PatientID": "P1"})
    event = AuditEvent.objects.filter(door="dicomweb", action="list").latest("at")
    assert event.user == reader
    assert event.detail["query"]["PatientID"] == "P1"
    assert event.detail["matches"] == 1


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("NoSuchAttribute=1", "not a DICOM attribute"),
        ("StudyDate=2024-01-01", "StudyDate"),
        ("limit=ten", "whole numbers"),
        ("fuzzymatching=maybe", "true or false"),
    ],
)
def test_a_bad_query_is_a_400_with_the_reason(live_server, reader, archive, query, reason):
    client = client_as(live_server, reader)
    response = requests.get(
        f"{live_server.url}/dicom-web/studies?{query}",
        headers={"Authorization": client._session.headers["Authorization"]},
        timeout=10,
    )
    assert response.status_code == 400
    assert reason in response.text


def test_without_credentials_the_answer_is_401_asking_for_a_bearer_token(live_server, archive):
    response = requests.get(f"{live_server.url}/dicom-web/studies", timeout=10)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"


def test_an_unsupported_accept_header_is_a_406(live_server, reader, archive):
    client = client_as(live_server, reader)
    response = requests.get(
        f"{live_server.url}/dicom-web/studies",
        headers={
            "Authorization": client._session.headers["Authorization"],
            "Accept": "application/dicom+xml",
        },
        timeout=10,
    )
    assert response.status_code == 406
