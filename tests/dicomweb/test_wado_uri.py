"""WADO-URI (PS3.18 9): `/dicom-web/wado?requestType=WADO&…` through requests."""

import io
from pathlib import Path

import pytest
import requests
from PIL import Image
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian, JPEGLSLossless

from accounts.models import AuditEvent
from pacs import services
from tests.dicomweb.conftest import token_for

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def wado(live_server, reader):
    """GET /dicom-web/wado as facility A's radiologist: wado(dataset, **params)."""
    headers = {"Authorization": f"Bearer {token_for(reader)}"}

    def get(dataset=None, **params):
        if dataset is not None:
            params = {
                "requestType": "WADO",
                "studyUID": dataset.StudyInstanceUID,
                "seriesUID": dataset.SeriesInstanceUID,
                "objectUID": dataset.SOPInstanceUID,
                **params,
            }
        return requests.get(
            f"{live_server.url}/dicom-web/wado", params=params, headers=headers, timeout=10
        )

    return get


def picture(response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


def test_it_returns_the_file_in_explicit_vr_little_endian_or_as_stored_on_request(
    wado, archive, facility_a
):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    response = wado(sent, contentType="application/dicom")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/dicom"
    assert response.content == archive.sent["first"][0]  # stored explicit VR LE: as is

    data = Path(get_testdata_file("MR_small_jpeg_ls_lossless.dcm")).read_bytes()
    services.ingest(data, facility=facility_a, door="dimse")
    compressed = dcmread(io.BytesIO(data))
    decoded = dcmread(io.BytesIO(wado(compressed, contentType="application/dicom").content))
    assert decoded.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert decoded.SOPInstanceUID == compressed.SOPInstanceUID
    assert (decoded.pixel_array == compressed.pixel_array).all()
    as_stored = wado(compressed, contentType="application/dicom", transferSyntax=JPEGLSLossless)
    assert as_stored.content == data
    refused = wado(
        compressed, contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50"
    )
    assert refused.status_code == 406


def test_it_renders_jpeg_by_default_and_png_windowed_cropped_and_scaled(
    wado, archive, reader, facility_a
):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))  # 32 x 32 CT
    default = wado(sent)
    assert default.status_code == 200
    assert default.headers["Content-Type"] == "image/jpeg"
    assert picture(default).format == "JPEG"
    assert picture(default).size == (32, 32)

    png = wado(sent, contentType="image/png", windowCenter="40", windowWidth="400", rows="16")
    assert png.headers["Content-Type"] == "image/png"
    assert picture(png).size == (16, 16)
    bigger = wado(sent, contentType="image/gif, image/png", columns="64", region="0,0,0.5,1")
    assert picture(bigger).format == "PNG"
    assert picture(bigger).size == (64, 128)  # half the width, then scaled to 64 columns
    soft = picture(wado(sent, contentType="image/png", windowCenter="40", windowWidth="400"))
    lung = picture(wado(sent, contentType="image/png", windowCenter="-600", windowWidth="1500"))
    assert soft.tobytes() != lung.tobytes()

    data = Path(get_testdata_file("emri_small.dcm")).read_bytes()  # 10 frames
    services.ingest(data, facility=facility_a, door="dimse")
    frames = dcmread(io.BytesIO(data))
    third = wado(frames, contentType="image/png", frameNumber="3")
    assert picture(third).size == (frames.Columns, frames.Rows)
    assert picture(third).tobytes() != picture(wado(frames, contentType="image/png")).tobytes()
    assert wado(frames, frameNumber="11").status_code == 400

    event = AuditEvent.objects.filter(door="dicomweb", action="view").latest("at")
    assert (event.user, event.object_type) == (reader, "study")
    assert event.detail["resource"] == "wado-uri"


def test_bad_parameters_are_a_400_with_the_reason(wado, archive):
    sent = dcmread(io.BytesIO(archive.sent["first"][0]))
    uids = {
        "studyUID": sent.StudyInstanceUID,
        "seriesUID": sent.SeriesInstanceUID,
        "objectUID": sent.SOPInstanceUID,
    }
    cases = [
        ({**uids}, "requestType"),
        ({"requestType": "WADO", **uids, "objectUID": ""}, "objectUID is required"),
        ({"requestType": "WADO", **uids, "studyUID": "1.2.x"}, "not a valid UID"),
        ({"requestType": "WADO", **uids, "windowCenter": "40"}, "go together"),
        ({"requestType": "WADO", **uids, "rows": "0"}, "rows"),
        ({"requestType": "WADO", **uids, "region": "0.5,0,0.2,1"}, "region"),
        ({"requestType": "WADO", **uids, "frameNumber": "2"}, "frameNumber 2 out of 1..1"),
        ({"requestType": "WADO", **uids, "anonymize": "yes"}, "anonymize"),
    ]
    for params, reason in cases:
        response = wado(**params)
        assert response.status_code == 400, params
        assert reason in response.text, (params, response.text)
    assert wado(sent, contentType="text/html").status_code == 406


def test_another_facilitys_instance_and_unknown_uids_are_a_404(wado, archive, live_server):
    other = dcmread(io.BytesIO(archive.sent["other"][0]))
    assert wado(other).status_code == 404
    assert wado(other, objectUID="1.2.3.4").status_code == 404
    anonymous = requests.get(f"{live_server.url}/dicom-web/wado", timeout=10)
    assert anonymous.status_code == 401
