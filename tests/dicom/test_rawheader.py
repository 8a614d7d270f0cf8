"""The ingest's element-by-element header read gives what pydicom's full read gives."""

import contextlib
import json
import warnings
from pathlib import Path

import pydicom.data
import pytest
from pydicom.data import get_testdata_file

from pacs.dicom import parse, rawheader, synthetic

INTEGERS = ("InstanceNumber", "Rows", "Columns", "NumberOfFrames")


def _outcome(read) -> tuple:
    """What the ingest takes from a file: identity, index integers and JSON; or the refusal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            header, document = read()
        except parse.DicomParseError as error:
            return ("refused", str(error))
    return (
        header.transfer_syntax_uid,
        header.sop_class_uid,
        header.sop_instance_uid,
        header.study_instance_uid,
        header.series_instance_uid,
        header.pixel_data_vr,
        [header.integer(keyword) for keyword in INTEGERS],
        document,
    )


def _corpus() -> list[str]:
    """pydicom's test files and pydicom-data's (globbed: get_testdata_files tries to
    download what is missing, which takes seconds without a network)."""
    roots = [Path(pydicom.data.__file__).parent / "test_files"]
    with contextlib.suppress(ImportError):
        import data_store

        roots.append(Path(data_store.__file__).parent / "data")
    return sorted(str(path) for root in roots for path in root.rglob("*") if path.is_file())


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def _full_read(data: bytes):
    header = parse.read_header(data)
    return header, parse.instance_json(header)


def test_pydicoms_test_files_read_the_same_either_way():
    read_fast, differ = [], []
    for path in _corpus():
        data = _read(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if rawheader.read(data, parse._bulk_base) is not None:
                read_fast.append(path)
        fast = _outcome(lambda data=data: parse.read_instance(data))
        if fast != _outcome(lambda data=data: _full_read(data)):
            differ.append(path)
    assert differ == []
    # Explicit VR little endian files (and compressed ones) take the fast walk; implicit
    # VR, big endian, deflated and UN-bearing files the full one.
    assert len(read_fast) >= 90
    assert get_testdata_file("CT_small.dcm") in read_fast
    assert get_testdata_file("waveform_ecg.dcm") in read_fast  # sequences with bulk data


def test_a_series_reads_the_same_and_converts_repeated_elements_once():
    spec = synthetic.StudySpec(patient=synthetic.PatientSpec(patient_id="P1"))
    series = list(synthetic.ct_series(spec, slices=6, rows=32, columns=32))
    rawheader._cached_element_json.cache_clear()
    for data in series:
        assert _outcome(lambda data=data: parse.read_instance(data)) == _outcome(
            lambda data=data: _full_read(data)
        )
    info = rawheader._cached_element_json.cache_info()
    assert info.hits > 3 * info.misses  # slices 2-6 mostly hit what slice 1 converted


def test_the_header_of_a_fast_read_still_answers_any_attribute():
    data = _read(get_testdata_file("CT_small.dcm"))
    header, document = parse.read_instance(data)
    # What every instance needs comes without a pydicom parse (CT_small has no frames).
    assert [header.integer(keyword) for keyword in INTEGERS] == [1, 128, 128, None]
    assert "dataset" not in vars(header)
    assert header.text("PatientName") == "CompressedSamples^CT1"  # parsed now, on demand
    assert "dataset" in vars(header)
    assert json.loads(document)["7FE00010"]["BulkDataURI"].endswith("/bulkdata/7FE00010")


@pytest.mark.parametrize("cut", [200, 600, -100])
def test_a_truncated_file_is_refused_the_same_way(cut):
    data = _read(get_testdata_file("CT_small.dcm"))[:cut]
    assert _outcome(lambda: parse.read_instance(data))[0] == "refused"
    assert _outcome(lambda: parse.read_instance(data)) == _outcome(lambda: _full_read(data))
