"""dcmtk's findscu, movescu (into a dcmtk storescp) and getscu against our listener."""

import contextlib
import io
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy
import pytest
from pydicom import Dataset, dcmread
from pydicom.data import get_testdata_file

from pacs import services
from pacs.dicom import synthetic
from pacs.models import DicomNode, Study
from tests.interop.conftest import scu
from tests.network import free_port

pytestmark = pytest.mark.interop


@pytest.fixture
def archive(listener):
    """Two studies of two patients (2 series and 3+2 instances, 1 series of 2)."""
    first = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P1", patient_name="Doe^Jane"),
        accession_number="ACC1",
        study_date="20240115",
    )
    second = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="P2", patient_name="Roe^Richard"),
        accession_number="ACC2",
        study_date="20240302",
    )
    sent: dict[str, list[bytes]] = {"first": [], "second": []}
    for spec, key, series_sizes in ((first, "first", (3, 2)), (second, "second", (2,))):
        for number, size in enumerate(series_sizes, start=1):
            files = list(
                synthetic.ct_series(spec, slices=size, series_number=number, rows=16, columns=16)
            )
            sent[key].extend(files)
            for data in files:
                services.ingest(data, facility=listener.facility, door="dimse")
    for study in Study.objects.all():
        services.study_refresh(study.pk)
    return {"listener": listener, "first": first, "second": second, "sent": sent}


def findscu(listener, tmp_path: Path, model: str, *keys: str) -> list:
    out = tmp_path / f"find-{time.monotonic_ns()}"
    out.mkdir()
    options = [model, "-X", "-od", str(out)]
    for key in keys:
        options += ["-k", key]
    result = scu("findscu", listener, "FINDSCU", *options)
    assert result.returncode == 0, result.stderr
    return [dcmread(path) for path in sorted(out.glob("rsp*.dcm"))]


def test_findscu_finds_studies_by_patient_id_and_returns_counts(archive, tmp_path):
    responses = findscu(
        archive["listener"],
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "PatientID=P1",
        "StudyInstanceUID",
        "AccessionNumber",
        "NumberOfStudyRelatedInstances",
        "ModalitiesInStudy",
    )
    assert len(responses) == 1
    study = responses[0]
    assert study.StudyInstanceUID == archive["first"].study_uid
    assert study.AccessionNumber == "ACC1"
    assert int(study.NumberOfStudyRelatedInstances) == 5
    assert study.ModalitiesInStudy == "CT"


def test_findscu_matches_wildcards_and_date_ranges(archive, tmp_path):
    listener = archive["listener"]
    by_name = findscu(
        listener, tmp_path, "-S", "QueryRetrieveLevel=STUDY", "PatientName=doe*", "StudyInstanceUID"
    )
    assert [r.StudyInstanceUID for r in by_name] == [archive["first"].study_uid]
    by_date = findscu(
        listener,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=20240201-20240331",
        "StudyInstanceUID",
    )
    assert [r.StudyInstanceUID for r in by_date] == [archive["second"].study_uid]
    everything = findscu(
        listener,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=STUDY",
        "StudyDate=-20241231",
        "StudyInstanceUID",
    )
    assert len(everything) == 2


def test_findscu_at_patient_series_and_image_levels(archive, tmp_path):
    listener = archive["listener"]
    patients = findscu(
        listener,
        tmp_path,
        "-P",
        "QueryRetrieveLevel=PATIENT",
        "PatientID",
        "PatientName",
        "NumberOfPatientRelatedStudies",
    )
    assert sorted(str(p.PatientName) for p in patients) == ["Doe^Jane", "Roe^Richard"]
    uid = archive["first"].study_uid
    series = findscu(
        listener,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=SERIES",
        f"StudyInstanceUID={uid}",
        "SeriesInstanceUID",
        "SeriesNumber",
        "NumberOfSeriesRelatedInstances",
    )
    assert sorted((int(s.SeriesNumber), int(s.NumberOfSeriesRelatedInstances)) for s in series) == [
        (1, 3),
        (2, 2),
    ]
    images = findscu(
        listener,
        tmp_path,
        "-S",
        "QueryRetrieveLevel=IMAGE",
        f"StudyInstanceUID={uid}",
        f"SeriesInstanceUID={series[0].SeriesInstanceUID}",
        "SOPInstanceUID",
        "InstanceNumber",
    )
    assert len(images) == int(series[0].NumberOfSeriesRelatedInstances)


@contextlib.contextmanager
def running_storescp(folder: Path, listener, *options: str) -> Iterator[Path]:
    """dcmtk's storescp writing into `folder`, registered as a C-MOVE destination
    (STORESCP) of the listener's facility. Without options it accepts only the
    uncompressed transfer syntaxes."""
    port = free_port()
    folder.mkdir()
    process = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "STORESCP", *options, "-od", str(folder), str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={"TCP_NODELAY": "1"},
    )
    DicomNode.objects.create(
        facility=listener.facility, ae_title="STORESCP", host="127.0.0.1", port=port
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        time.sleep(0.05)
    try:
        yield folder
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture
def storescp(tmp_path, listener):
    """A C-MOVE destination accepting every transfer syntax (+xa)."""
    with running_storescp(tmp_path / "received", listener, "+xa") as folder:
        yield folder


def get_study(listener, study_uid: str, out: Path) -> subprocess.CompletedProcess:
    """getscu (proposing its default, uncompressed syntaxes) writing into `out`."""
    out.mkdir()
    return scu(
        "getscu",
        listener,
        "GETSCU",
        "-S",
        "-od",
        str(out),
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
    )


def move_study(listener, study_uid: str) -> subprocess.CompletedProcess:
    return scu(
        "movescu",
        listener,
        "MOVESCU",
        "-aem",
        "STORESCP",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
    )


def test_movescu_sends_a_study_to_a_registered_storescp(archive, storescp):
    listener = archive["listener"]
    uid = archive["first"].study_uid
    result = move_study(listener, uid)
    assert result.returncode == 0, result.stderr
    received = [dcmread(path) for path in storescp.iterdir()]
    assert len(received) == 5
    assert {r.StudyInstanceUID for r in received} == {uid}
    sent_pixels = sorted(dcmread(io.BytesIO(d)).PixelData for d in archive["sent"]["first"])
    assert sorted(r.PixelData for r in received) == sent_pixels


def test_movescu_to_an_unknown_destination_is_refused(archive, tmp_path):
    listener = archive["listener"]
    result = scu(
        "movescu",
        listener,
        "MOVESCU",
        "-aem",
        "NOWHERE",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={archive['first'].study_uid}",
    )
    assert (
        "a801" in (result.stdout + result.stderr).lower()
        or "destination" in (result.stdout + result.stderr).lower()
    )


def test_getscu_retrieves_a_series_over_the_same_association(archive, tmp_path):
    listener = archive["listener"]
    out = tmp_path / "got"
    uid = archive["second"].study_uid
    result = get_study(listener, uid, out)
    assert result.returncode == 0, result.stderr
    received = [dcmread(path) for path in out.iterdir()]
    assert len(received) == 2
    assert {r.StudyInstanceUID for r in received} == {uid}


def test_a_modality_room_may_store_but_not_query(archive, tmp_path):
    from ris.models import Room

    Room.objects.create(
        facility=archive["listener"].facility, name="CT", modality="CT", ae_title="CT_ROOM"
    )
    listener = archive["listener"]
    result = scu(
        "findscu",
        listener,
        "CT_ROOM",
        "-v",
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        "StudyInstanceUID",
    )
    # 0x0124 Refused: Not authorized (PS3.7 C), and no match was sent.
    assert "Final Find Response (Unknown Status: 0x124)" in result.stderr
    assert "Find Response: 1" not in result.stderr


COMPRESSED_SAMPLES = ["MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm"]


def ingest_sample(listener, name: str) -> Dataset:
    data = Path(get_testdata_file(name)).read_bytes()
    services.ingest(data, facility=listener.facility, door="dimse")
    return dcmread(io.BytesIO(data))


@pytest.mark.parametrize("name", COMPRESSED_SAMPLES)
def test_a_destination_taking_only_uncompressed_data_gets_decoded_images(listener, tmp_path, name):
    original = ingest_sample(listener, name)
    with running_storescp(tmp_path / "received", listener) as folder:
        result = move_study(listener, original.StudyInstanceUID)
        received = [dcmread(path) for path in folder.iterdir()]
    assert result.returncode == 0, result.stderr
    assert len(received) == 1, result.stderr
    (image,) = received
    assert not image.file_meta.TransferSyntaxUID.is_compressed
    assert image.SOPInstanceUID == original.SOPInstanceUID
    assert numpy.array_equal(image.pixel_array, original.pixel_array)


def test_a_destination_taking_compressed_data_gets_it_as_stored(listener, storescp):
    original = ingest_sample(listener, "MR_small_jpeg_ls_lossless.dcm")
    result = move_study(listener, original.StudyInstanceUID)
    assert result.returncode == 0, result.stderr
    (image,) = [dcmread(path) for path in storescp.iterdir()]
    assert image.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert image.PixelData == original.PixelData


def test_getscu_proposing_only_uncompressed_syntaxes_gets_decoded_images(listener, tmp_path):
    original = ingest_sample(listener, "MR_small_RLE.dcm")
    out = tmp_path / "got"
    result = get_study(listener, original.StudyInstanceUID, out)
    assert result.returncode == 0, result.stderr
    (image,) = [dcmread(path) for path in out.iterdir()]
    assert not image.file_meta.TransferSyntaxUID.is_compressed
    assert numpy.array_equal(image.pixel_array, original.pixel_array)
