"""WADO-RS metadata and instance retrieval (PS3.18 10.4) through dicomweb-client."""

import io
from pathlib import Path

import pytest
import requests
from django.test import Client
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from accounts.models import AuditEvent
from pacs import services
from tests.dicomweb.conftest import client_as, token_for

pytestmark = pytest.mark.django_db(transaction=True)


def auth(client) -> dict[str, str]:
    return {"Authorization": client._session.headers["Authorization"]}


def test_series_metadata_comes_from_the_index_with_absolute_bulkdata_uris(
    dicomweb, archive, live_server
):
    study_uid = archive.first.study_uid
    series = dicomweb.search_for_series(study_instance_uid=study_uid)
    series_uid = series[0]["0020000E"]["Value"][0]
    metadata = dicomweb.retrieve_series_metadata(study_uid, series_uid)
    assert len(metadata) == series[0]["00201209"]["Value"][0]
    assert {m["0020000E"]["Value"][0] for m in metadata} == {series_uid}
    assert metadata[0]["00280010"]["Value"] == [32]
    # dicomweb-client sends `Host: localhost` without the port; a client sending the
    # port gets it back in the URIs.
    assert "/dicom-web/studies/" in metadata[0]["7FE00010"]["BulkDataURI"]
    url = f"{live_server.url}/dicom-web/studies/{study_uid}/series/{series_uid}/metadata"
    plain = requests.get(url, headers=auth(dicomweb), timeout=10).json()
    pixel = plain[0]["7FE00010"]
    assert pixel["BulkDataURI"].startswith(f"{live_server.url}/dicom-web/studies/{study_uid}/")
    assert pixel["BulkDataURI"].endswith("/bulkdata/7FE00010")


def test_study_and_instance_metadata(dicomweb, archive):
    study = dicomweb.retrieve_study_metadata(archive.first.study_uid)
    assert len(study) == 5
    one = study[0]
    instance = dicomweb.retrieve_instance_metadata(
        archive.first.study_uid, one["0020000E"]["Value"][0], one["00080018"]["Value"][0]
    )
    assert instance["00080018"] == one["00080018"]


def test_metadata_has_an_etag_honours_if_none_match_and_is_gzipped(dicomweb, archive, live_server):
    url = f"{live_server.url}/dicom-web/studies/{archive.first.study_uid}/metadata"
    first = requests.get(url, headers={**auth(dicomweb), "Accept-Encoding": "gzip"}, timeout=10)
    assert first.status_code == 200
    assert first.headers["Content-Encoding"] == "gzip"
    assert first.headers["Content-Type"].startswith("application/dicom+json")
    again = requests.get(
        url, headers={**auth(dicomweb), "If-None-Match": first.headers["ETag"]}, timeout=10
    )
    assert again.status_code == 304
    plain = requests.get(
        url, headers={**auth(dicomweb), "Accept-Encoding": "identity"}, stream=True, timeout=10
    )
    assert plain.raw.read()[:1] == b"["


def test_retrieving_an_instance_as_stored_gives_back_the_same_bytes(dicomweb, archive):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    got = dicomweb.retrieve_instance(
        sent.StudyInstanceUID,
        sent.SeriesInstanceUID,
        sent.SOPInstanceUID,
        media_types=(("application/dicom", "*"),),
    )
    assert got.SOPInstanceUID == sent.SOPInstanceUID
    assert got.PixelData == sent.PixelData


def test_retrieving_a_series_gives_every_instance(dicomweb, archive):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    got = dicomweb.retrieve_series(sent.StudyInstanceUID, sent.SeriesInstanceUID)
    assert len(got) == 3
    assert {d.SeriesInstanceUID for d in got} == {sent.SeriesInstanceUID}


def test_a_series_as_stored_declares_its_length_and_is_not_chunked(dicomweb, archive, live_server):
    """The sizes are in the index: the body goes out with a Content-Length, and each file
    once (a chunked body makes the server copy each file into its chunk)."""
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    series = f"studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}"
    url = f"{live_server.url}/dicom-web/{series}"
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'
    response = requests.get(url, headers={**auth(dicomweb), "Accept": accept}, timeout=10)
    assert response.status_code == 200
    assert "Transfer-Encoding" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.content)
    assert response.content.count(b"\r\nContent-Type: application/dicom; transfer-syntax=") == 3


def test_a_stored_file_of_another_size_breaks_the_transfer_off(dicomweb, archive, monkeypatch):
    """The length is promised before the files are read: a damaged file must not go out
    as if it were the instance."""
    from pacs import storage
    from pacs.dicomweb import wado
    from pacs.models import Instance

    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    damaged = Instance.objects.get(sop_instance_uid=sent.SOPInstanceUID).storage_key
    read = storage.read
    monkeypatch.setattr(
        storage, "read", lambda key: read(key)[:-10] if key == damaged else read(key)
    )
    client = Client(HTTP_AUTHORIZATION=auth(dicomweb)["Authorization"])
    response = client.get(
        f"/dicom-web/studies/{sent.StudyInstanceUID}/series/{sent.SeriesInstanceUID}",
        HTTP_ACCEPT='multipart/related; type="application/dicom"',
    )
    assert response.status_code == 200
    with pytest.raises(wado.StoredFileChanged, match="where the index says"):
        b"".join(response.streaming_content)


def test_a_compressed_instance_is_decoded_for_explicit_vr_little_endian(
    dicomweb, archive, facility_a
):
    data = Path(get_testdata_file("MR_small_RLE.dcm")).read_bytes()
    services.ingest(data, facility=facility_a, door="dimse")
    original = dcmread(io.BytesIO(data))
    study, series, sop = (
        original.StudyInstanceUID,
        original.SeriesInstanceUID,
        original.SOPInstanceUID,
    )
    as_stored = dicomweb.retrieve_instance(
        study, series, sop, media_types=(("application/dicom", RLELossless),)
    )
    assert as_stored.file_meta.TransferSyntaxUID == RLELossless
    decoded = dicomweb.retrieve_instance(
        study, series, sop, media_types=(("application/dicom", ExplicitVRLittleEndian),)
    )
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert decoded.SOPInstanceUID == sop
    assert (decoded.pixel_array == original.pixel_array).all()


def test_an_unavailable_transfer_syntax_is_a_406(dicomweb, archive, live_server):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    response = requests.get(
        f"{live_server.url}/dicom-web/studies/{sent.StudyInstanceUID}",
        headers={
            **auth(dicomweb),
            "Accept": (
                'multipart/related; type="application/dicom"; '
                "transfer-syntax=1.2.840.10008.1.2.4.50"
            ),
        },
        timeout=10,
    )
    assert response.status_code == 406
    assert "transfer syntax" in response.text


def test_another_facilitys_study_is_a_404_and_unknown_uids_too(dicomweb, archive, live_server):
    for uid in (archive.other.study_uid, "1.2.3.4"):
        response = requests.get(
            f"{live_server.url}/dicom-web/studies/{uid}/metadata",
            headers=auth(dicomweb),
            timeout=10,
        )
        assert response.status_code == 404


def test_reading_metadata_is_audited_against_the_study(dicomweb, archive, reader):
    dicomweb.retrieve_study_metadata(archive.first.study_uid)
    event = AuditEvent.objects.filter(door="dicomweb", action="view").latest("at")
    assert event.user == reader
    assert event.object_type == "study"


def test_a_user_without_image_access_sees_nothing(live_server, archive, biller):
    client = client_as(live_server, biller)
    assert client.search_for_studies() == []
    response = requests.get(
        f"{live_server.url}/dicom-web/studies/{archive.first.study_uid}/metadata",
        headers=auth(client),
        timeout=10,
    )
    assert response.status_code == 404


def test_behind_a_proxy_path_prefix_the_bulkdata_uris_keep_the_prefix(archive, reader, settings):
    # A proxy serving RadPACS under /radpacs passes SCRIPT_NAME (gunicorn, uWSGI do).
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "pacs.example.org"]
    client = Client(HTTP_AUTHORIZATION=f"Bearer {token_for(reader)}")
    response = client.get(
        f"/dicom-web/studies/{archive.first.study_uid}/metadata",
        SCRIPT_NAME="/radpacs",
        HTTP_HOST="pacs.example.org",
        secure=True,
    )
    assert response.status_code == 200
    uri = response.json()[0]["7FE00010"]["BulkDataURI"]
    assert uri.startswith("https://pacs.example.org/radpacs/dicom-web/studies/")
