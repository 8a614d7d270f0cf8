"""WADO-RS frames, bulk data, rendered images and thumbnails (PS3.18 10.4) through
dicomweb-client, and through requests where the headers matter."""

import io
from pathlib import Path
from unittest import mock

import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.encaps import get_frame
from pydicom.pixels.decoders.base import DecodeRunner
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from accounts.models import AuditEvent
from pacs import services, storage
from pacs.dicom import synthetic
from pacs.models import Series

pytestmark = pytest.mark.django_db(transaction=True)

CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def auth(client) -> dict[str, str]:
    return {"Authorization": client._session.headers["Authorization"]}


def parts(response: requests.Response) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related response, as sent: (headers, body)."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    found = []
    for chunk in response.content.split(b"--" + boundary)[1:-1]:
        head, _, body = chunk[2:].partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        found.append((headers, body[:-2]))  # the CRLF before the next boundary
    return found


def first_instance(archive):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    return sent, (sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID)


def ingest_shipped(name: str, facility):
    data = Path(get_testdata_file(name)).read_bytes()
    services.ingest(data, facility=facility, door="dimse")
    original = dcmread(io.BytesIO(data))
    uids = (original.StudyInstanceUID, original.SeriesInstanceUID, original.SOPInstanceUID)
    return original, uids


def url(live_server, uids, resource: str) -> str:
    study, series, sop = uids
    return f"{live_server.url}/dicom-web/studies/{study}/series/{series}/instances/{sop}/{resource}"


def test_frames_of_an_uncompressed_ct_are_its_native_pixels(dicomweb, archive):
    sent, uids = first_instance(archive)
    as_stored = dicomweb.retrieve_instance_frames(*uids, frame_numbers=[1])
    decoded = dicomweb.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=("application/octet-stream",)
    )
    assert as_stored == decoded == [sent.pixel_array.astype("<u2").tobytes()]
    assert len(decoded[0]) == 32 * 32 * 2


def test_a_compressed_instance_gives_its_stored_bitstream_or_decoded_pixels(
    dicomweb, archive, facility_a
):
    original, uids = ingest_shipped("MR_small_jpeg_ls_lossless.dcm", facility_a)
    bitstream = get_frame(original.PixelData, 0, number_of_frames=1)
    assert dicomweb.retrieve_instance_frames(*uids, frame_numbers=[1]) == [bitstream]
    jls = dicomweb.retrieve_instance_frames(
        *uids, frame_numbers=[1], media_types=(("image/jls", JPEGLSLossless),)
    )
    assert jls == [bitstream]
    decoded = dicomweb.retrieve_instance_frames(
        *uids,
        frame_numbers=[1],
        media_types=(("application/octet-stream", ExplicitVRLittleEndian),),
    )
    assert decoded == [original.pixel_array.astype("<i2").tobytes()]


def test_cornerstone_unquoted_accept_gets_stored_frames_labelled_with_their_syntax(
    dicomweb, archive, facility_a, live_server
):
    original, uids = ingest_shipped("MR_small_RLE.dcm", facility_a)
    response = requests.get(
        url(live_server, uids, "frames/1"),
        headers={**auth(dicomweb), "Accept": CORNERSTONE_ACCEPT},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith(
        'multipart/related; type="application/octet-stream"; boundary='
    )
    [(headers, body)] = parts(response)
    assert headers["Content-Type"] == (
        f"application/octet-stream; transfer-syntax={original.file_meta.TransferSyntaxUID}"
    )
    assert body == get_frame(original.PixelData, 0, number_of_frames=1)


def test_frames_of_a_multiframe_instance_are_decoded_alone(dicomweb, archive, facility_a):
    original, uids = ingest_shipped("emri_small_jpeg_2k_lossless.dcm", facility_a)
    with mock.patch.object(
        DecodeRunner, "decode", autospec=True, side_effect=DecodeRunner.decode
    ) as decode:
        frames = dicomweb.retrieve_instance_frames(
            *uids, frame_numbers=[7, 3], media_types=("application/octet-stream",)
        )
    assert decode.call_count == 2  # of 10 frames
    pixels = original.pixel_array.astype("<u2")
    assert frames == [pixels[6].tobytes(), pixels[2].tobytes()]


def test_pixel_data_and_other_bulk_data_by_their_uris(dicomweb, archive, facility_a, live_server):
    sent, uids = first_instance(archive)
    metadata = dicomweb.retrieve_instance_metadata(*uids)
    assert metadata["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")
    pixel_data = dicomweb.retrieve_bulkdata(url(live_server, uids, "bulkdata/7FE00010"))
    assert pixel_data == [sent.PixelData]

    document = dcmread(io.BytesIO(archive.sent["second"][0]))
    document.SOPInstanceUID = document.file_meta.MediaStorageSOPInstanceUID = synthetic.new_uid()
    document.EncapsulatedDocument = bytes(range(256)) * 8  # a large value: not in metadata
    out = io.BytesIO()
    document.save_as(out)
    services.ingest(out.getvalue(), facility=facility_a, door="dimse")
    other = (document.StudyInstanceUID, document.SeriesInstanceUID, document.SOPInstanceUID)
    bulk_uri = dicomweb.retrieve_instance_metadata(*other)["00420011"]["BulkDataURI"]
    assert bulk_uri.endswith("/bulkdata/00420011")
    assert dicomweb.retrieve_bulkdata(url(live_server, other, "bulkdata/00420011")) == [
        document.EncapsulatedDocument
    ]
    missing = requests.get(
        url(live_server, other, "bulkdata/00091001"), headers=auth(dicomweb), timeout=10
    )
    assert missing.status_code == 404


def test_rendered_instance_and_frame_fit_the_viewport_and_take_a_window(dicomweb, archive):
    _, uids = first_instance(archive)
    png = dicomweb.retrieve_instance_rendered(
        *uids, media_types=("image/png",), params={"viewport": "64,48"}
    )
    picture = Image.open(io.BytesIO(png))
    assert (picture.format, picture.mode, picture.size) == ("PNG", "L", (48, 48))
    jpeg = dicomweb.retrieve_instance_frames_rendered(*uids, frame_numbers=[1])
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"
    lung = dicomweb.retrieve_instance_frames_rendered(
        *uids, frame_numbers=[1], params={"window": "-600,1500,linear-exact", "quality": "95"}
    )
    assert lung != jpeg


def test_series_rendered_and_thumbnail_show_the_middle_image(dicomweb, archive, live_server):
    sent, (study, series, _) = first_instance(archive)
    middle = dcmread(io.BytesIO(archive.sent["first"][1]))  # of 3
    assert dicomweb.retrieve_series_rendered(study, series) == dicomweb.retrieve_instance_rendered(
        study, series, middle.SOPInstanceUID
    )
    root = f"{live_server.url}/dicom-web/studies/{study}"
    stored = storage.read(Series.objects.get(series_instance_uid=series).thumbnail_key)
    thumbnail = requests.get(
        f"{root}/series/{series}/thumbnail", headers=auth(dicomweb), timeout=10
    )
    assert thumbnail.headers["Content-Type"] == "image/png"
    assert thumbnail.content == stored
    small = requests.get(
        f"{root}/thumbnail?viewport=16,16",
        headers={**auth(dicomweb), "Accept": "image/jpeg"},
        timeout=10,
    )
    assert small.headers["Content-Type"] == "image/jpeg"
    assert Image.open(io.BytesIO(small.content)).size == (16, 16)
    one = requests.get(
        url(live_server, (study, series, sent.SOPInstanceUID), "thumbnail"),
        headers=auth(dicomweb),
        timeout=10,
    )
    assert Image.open(io.BytesIO(one.content)).size == (32, 32)


BAD_REQUESTS = [
    ("frames/0", "", 400, "positive integers"),
    ("frames/1,x", "", 400, "positive integers"),
    ("frames/2", "", 400, "frame 2 does not exist"),
    ("frames/1", 'multipart/related; type="image/jpeg"', 406, "application/octet-stream"),
    ("bulkdata/7FE0", "", 400, "8 hex digits"),
    ("rendered?window=40", "", 400, "center,width"),
    ("rendered?window=40,400,cubic", "", 400, "window function"),
    ("rendered?viewport=0,10", "", 400, "viewport"),
    ("rendered?viewport=1,2,3,4,5,6", "", 400, "source regions"),
    ("rendered?quality=101", "", 400, "quality"),
    ("frames/1,1/rendered", "", 400, "one frame at a time"),
    ("frames/1/rendered", "application/pdf", 406, "image/jpeg, image/png"),
]


def test_bad_requests_are_400_and_unacceptable_media_types_406_with_the_reason(
    dicomweb, archive, live_server
):
    _, uids = first_instance(archive)
    for resource, accept, status, reason in BAD_REQUESTS:
        headers = {**auth(dicomweb), **({"Accept": accept} if accept else {})}
        response = requests.get(url(live_server, uids, resource), headers=headers, timeout=10)
        assert (response.status_code, reason in response.text) == (status, True), resource


def test_another_facilitys_or_an_unknown_instance_is_a_404(dicomweb, archive, live_server):
    other = dcmread(io.BytesIO(archive.sent["other"][0]))
    uids = (other.StudyInstanceUID, other.SeriesInstanceUID, other.SOPInstanceUID)
    unknown = (other.StudyInstanceUID, other.SeriesInstanceUID, "1.2.3.4")
    for target in (uids, unknown):
        for resource in ("frames/1", "bulkdata/7FE00010", "rendered", "thumbnail"):
            response = requests.get(
                url(live_server, target, resource), headers=auth(dicomweb), timeout=10
            )
            assert response.status_code == 404, resource
    for level in ("rendered", "thumbnail"):
        response = requests.get(
            f"{live_server.url}/dicom-web/studies/{other.StudyInstanceUID}/{level}",
            headers=auth(dicomweb),
            timeout=10,
        )
        assert response.status_code == 404


def test_pixel_reads_are_audited_against_the_study(dicomweb, archive, reader):
    _, uids = first_instance(archive)
    dicomweb.retrieve_instance_frames(*uids, frame_numbers=[1])
    dicomweb.retrieve_instance_rendered(*uids)
    # A viewer scrolling the series: one event per resource kind and window, not per frame.
    dicomweb.retrieve_instance_frames(*uids, frame_numbers=[1])
    dicomweb.retrieve_instance_rendered(*uids)
    events = AuditEvent.objects.filter(door="dicomweb", action="view").order_by("at")
    assert [(e.user, e.object_type, e.detail["resource"]) for e in events] == [
        (reader, "study", "frames"),
        (reader, "study", "rendered"),
    ]
    assert events[0].detail["covers_seconds"] == 300
