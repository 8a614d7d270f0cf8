"""dcmtk's echoscu and storescu against our listener."""

import struct
import time

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from pacs import storage
from pacs.models import Instance, Study
from tests.interop.conftest import scu, write_series

pytestmark = pytest.mark.interop


def test_echoscu_gets_an_answer(listener):
    result = scu("echoscu", listener, "ECHOSCU")
    assert result.returncode == 0, result.stderr


def test_an_unknown_calling_ae_is_refused(listener):
    result = scu("echoscu", listener, "STRANGER")
    assert result.returncode != 0
    assert "Rejected" in result.stderr or "rejected" in result.stderr.lower()


def dataset_part(data: bytes) -> bytes:
    """The bytes after the file meta group (its length is the group length element)."""
    (group_length,) = struct.unpack_from("<I", data, 132 + 8)
    return data[132 + 12 + group_length :]


def test_storescu_stores_a_generated_series_byte_for_byte(listener, tmp_path):
    sent = write_series(tmp_path / "series", 12)
    result = scu("storescu", listener, "STORESCU", "+sd", "+r", files=(str(tmp_path / "series"),))
    assert result.returncode == 0, result.stderr
    assert Instance.objects.count() == 12
    # storescu sends the dataset as it is in the file and the receiver writes a new file
    # meta group, so compare what follows it.
    stored = {dataset_part(storage.read(i.storage_key)) for i in Instance.objects.all()}
    assert stored == {dataset_part(data) for data in sent}
    assert Study.objects.get().dicom_patient_id == "P1"
    # The association's end refreshes the study once (counts, modalities, thumbnail).
    deadline = time.monotonic() + 10
    while Study.objects.get().number_of_instances != 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    study = Study.objects.get()
    assert (study.number_of_instances, study.modalities_in_study) == (12, "CT")
    assert not study.needs_refresh


@pytest.mark.parametrize(
    "name",
    [
        "CT_small.dcm",
        "MR_small_RLE.dcm",
        "JPEG2000.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "SC_rgb_jpeg_dcmtk.dcm",
        "JPGExtended.dcm",
        "image_dfl.dcm",
    ],
)
def test_dcmsend_stores_files_in_their_own_transfer_syntax(listener, name):
    path = get_testdata_file(name)
    # dcmsend proposes each file's own transfer syntax and sends it unchanged.
    result = scu("dcmsend", listener, "STORESCU", files=(path,))
    assert result.returncode == 0, result.stderr + result.stdout
    instance = Instance.objects.get()
    original = dcmread(path)
    stored = dcmread(storage.open_file(instance.storage_key))
    # Not transcoded: same transfer syntax, same (compressed) pixel data bytes.
    assert instance.transfer_syntax_uid == original.file_meta.TransferSyntaxUID
    assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert stored.PixelData == original.PixelData
    assert stored.SOPInstanceUID == original.SOPInstanceUID


def test_a_bad_file_gets_a_failure_status_and_is_not_kept(listener, tmp_path):
    path = get_testdata_file("MR_truncated.dcm")
    result = scu("storescu", listener, "STORESCU", files=(path,))
    assert "0xc000" in (result.stdout + result.stderr).lower() or result.returncode != 0
    assert not Instance.objects.exists()
