"""pacs.services.ingest: durable, idempotent, consistent on bad input."""

import io
import struct
import threading

import pydicom
import pytest
from django.db import connection, connections
from pydicom.data import get_testdata_file

from accounts.models import AuditEvent
from pacs import services, storage
from pacs.dicom import synthetic
from pacs.models import Instance, Series, Study
from pacs.services import IngestError, IngestOutcome, ingest
from ris import services as ris_services
from ris.models import Order
from tests.factories import FacilityFactory, PatientFactory, ProcedureFactory, order_for
from tests.pacs.conftest import small_ct, stored_files

pytestmark = pytest.mark.django_db


def test_an_instance_is_stored_byte_for_byte_and_indexed(facility_a, study_spec, image_store):
    data = small_ct(study_spec)
    result = ingest(data, facility=facility_a, door="dimse", actor="CT1")
    assert result.outcome == IngestOutcome.STORED
    instance = Instance.objects.select_related("series__study").get()
    assert storage.read(instance.storage_key) == data
    assert [p.name for p in stored_files(image_store)] == [f"{instance.sha256}.dcm"]
    study = instance.series.study
    assert (study.dicom_patient_id, study.patient_name, study.accession_number) == (
        "MRN42",
        "Doe^Jane",
        "NORTH0000001",
    )
    assert (instance.series.modality, instance.rows, instance.columns) == ("CT", 32, 32)
    assert AuditEvent.objects.get(action="create").object_type == "study"


def test_the_stored_metadata_is_dicom_json_with_bulk_data_uris(facility_a, study_spec):
    import json

    ingest(small_ct(study_spec), facility=facility_a, door="dimse")
    instance = Instance.objects.get()
    document = json.loads(instance.metadata_json)
    assert document["00100020"] == {"vr": "LO", "Value": ["MRN42"]}
    assert document["00100010"]["Value"] == [{"Alphabetic": "Doe^Jane"}]
    assert document["7FE00010"]["vr"] == "OW"
    assert document["7FE00010"]["BulkDataURI"].endswith(
        f"/instances/{instance.sop_instance_uid}/bulkdata/7FE00010"
    )
    assert "InlineBinary" not in instance.metadata_json


def test_resending_the_same_instance_is_a_quiet_success(facility_a, study_spec, image_store):
    data = small_ct(study_spec)
    first = ingest(data, facility=facility_a, door="dimse")
    again = ingest(data, facility=facility_a, door="dimse")
    assert again.outcome == IngestOutcome.ALREADY_STORED
    assert again.instance_id == first.instance_id
    assert Instance.objects.count() == 1
    assert len(stored_files(image_store)) == 1


def _same_uid_other_bytes(data: bytes) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.SeriesDescription = "changed"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def test_different_bytes_under_a_stored_uid_are_rejected_by_default(
    facility_a, study_spec, image_store
):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    with pytest.raises(IngestError) as refused:
        ingest(_same_uid_other_bytes(data), facility=facility_a, door="dimse")
    assert refused.value.dicom_status == 0x0111
    assert "different content" in refused.value.reason
    assert storage.read(Instance.objects.get().storage_key) == data
    assert len(stored_files(image_store)) == 1


def test_keep_first_policy_keeps_the_first_copy(facility_a, study_spec, image_store, settings):
    settings.DICOM_DUPLICATE_POLICY = "keep_first"
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    result = ingest(_same_uid_other_bytes(data), facility=facility_a, door="dimse")
    assert result.outcome == IngestOutcome.KEPT_FIRST
    assert storage.read(Instance.objects.get().storage_key) == data
    assert len(stored_files(image_store)) == 1


def test_overwrite_policy_replaces_the_file_and_removes_the_old_one_on_commit(
    facility_a, study_spec, image_store, settings, django_capture_on_commit_callbacks
):
    settings.DICOM_DUPLICATE_POLICY = "overwrite"
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    changed = _same_uid_other_bytes(data)
    with django_capture_on_commit_callbacks() as callbacks:
        result = ingest(changed, facility=facility_a, door="dimse")
    assert result.outcome == IngestOutcome.OVERWRITTEN
    instance = Instance.objects.get()
    assert storage.read(instance.storage_key) == changed
    assert '"changed"' in instance.metadata_json
    assert len(stored_files(image_store)) == 2  # the old file stays until the row is committed
    for callback in callbacks:
        callback()
    assert len(stored_files(image_store)) == 1


def test_the_same_instance_may_be_archived_by_two_facilities(facility_a, facility_b, study_spec):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    ingest(data, facility=facility_b, door="dimse")
    assert Study.objects.count() == 2
    assert Instance.objects.values("storage_key").distinct().count() == 1


def shipped(name: str) -> bytes:
    """One of the test files pydicom ships."""
    with open(get_testdata_file(name), "rb") as handle:
        return handle.read()


SHIPPED_SYNTAXES = {
    "MR_small_implicit.dcm": "1.2.840.10008.1.2",
    "CT_small.dcm": "1.2.840.10008.1.2.1",
    "MR_small_bigendian.dcm": "1.2.840.10008.1.2.2",
    "image_dfl.dcm": "1.2.840.10008.1.2.1.99",
    "SC_rgb_jpeg_dcmtk.dcm": "1.2.840.10008.1.2.4.50",
    "JPGExtended.dcm": "1.2.840.10008.1.2.4.51",
    "MR_small_jpeg_ls_lossless.dcm": "1.2.840.10008.1.2.4.80",
    "JPEG2000.dcm": "1.2.840.10008.1.2.4.91",
    "MR_small_jp2klossless.dcm": "1.2.840.10008.1.2.4.90",
    "MR_small_RLE.dcm": "1.2.840.10008.1.2.5",
    "SC_rgb_rle_2frame.dcm": "1.2.840.10008.1.2.5",
}


@pytest.mark.parametrize(("name", "syntax"), SHIPPED_SYNTAXES.items())
def test_every_usual_transfer_syntax_is_stored_as_received(facility_a, name, syntax):
    data = shipped(name)
    ingest(data, facility=facility_a, door="import")
    instance = Instance.objects.get()
    assert instance.transfer_syntax_uid == syntax
    assert storage.read(instance.storage_key) == data


def _without_sop_instance_uid() -> bytes:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.SOPInstanceUID
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def _huge_length_claim() -> bytes:
    """CT_small with Patient's Name (a short-VR element) turned into a 2 GB UN element."""
    data = bytearray(shipped("CT_small.dcm"))
    index = data.find(b"\x10\x00\x10\x00PN")
    data[index + 4 : index + 8] = b"UN\x00\x00"
    return bytes(data[: index + 8]) + struct.pack("<I", 0x7FFFFFF0) + bytes(data[index + 8 :])


BAD_INPUT = {
    "truncated pixel data": lambda: shipped("MR_truncated.dcm"),
    "no file meta": lambda: shipped("no_meta.dcm"),
    "no transfer syntax": lambda: shipped("meta_missing_tsyntax.dcm"),
    "not DICOM at all": lambda: b"GET / HTTP/1.1\r\n\r\n" * 20,
    "random bytes after a valid preamble": lambda: b"\0" * 128 + b"DICM" + bytes(range(256)) * 8,
    "no SOP Instance UID": _without_sop_instance_uid,
    "a 2 GB element length": _huge_length_claim,
    "empty": lambda: b"",
}


@pytest.mark.parametrize("make_bad", BAD_INPUT.values(), ids=BAD_INPUT.keys())
def test_bad_input_is_refused_with_a_reason_and_leaves_nothing_behind(
    facility_a, make_bad, image_store
):
    with pytest.raises(IngestError) as refused:
        ingest(make_bad(), facility=facility_a, door="dimse")
    assert refused.value.dicom_status == 0xC000
    assert refused.value.reason
    assert not Instance.objects.exists() and not Study.objects.exists()
    assert stored_files(image_store) == []


def test_a_series_already_stored_under_another_study_is_refused(
    facility_a, study_spec, image_store
):
    """A series belongs to one study: an instance naming the series with another study
    is refused (the series lookup that skips the study's), and leaves no file."""
    import dataclasses

    from pacs.dicom.synthetic import new_uid

    ingest(small_ct(study_spec), facility=facility_a, door="dimse")
    other_study = dataclasses.replace(study_spec, study_uid=new_uid())
    with pytest.raises(IngestError, match="already belongs to another study") as refused:
        ingest(small_ct(other_study, number=2), facility=facility_a, door="dicomweb")
    assert refused.value.dicom_status == 0xC000
    assert Instance.objects.count() == 1 and Study.objects.count() == 1
    assert len(stored_files(image_store)) == 1
    # Another instance of the series, under its own study, still goes in.
    ingest(small_ct(study_spec, number=3), facility=facility_a, door="dicomweb")
    assert Instance.objects.count() == 2 and Series.objects.count() == 1


@pytest.mark.parametrize("failing", ["write", "fsync"])
def test_a_storage_failure_is_out_of_resources_and_records_nothing(
    facility_a, study_spec, image_store, monkeypatch, failing
):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    if failing == "write":
        monkeypatch.setattr(storage, "_write_unsynced", disk_full)
    else:  # in the writer thread
        monkeypatch.setattr(storage.os, "fsync", disk_full)
    with pytest.raises(IngestError) as refused:
        ingest(small_ct(study_spec), facility=facility_a, door="dimse")
    assert refused.value.dicom_status == 0xA700
    assert not Study.objects.exists()
    assert stored_files(image_store) == []


def test_a_database_failure_removes_the_file_it_wrote(
    facility_a, study_spec, image_store, monkeypatch
):
    def broken_insert(*args):
        raise RuntimeError("database went away")

    monkeypatch.setattr(services, "_insert_instance", broken_insert)
    with pytest.raises(RuntimeError):
        ingest(small_ct(study_spec), facility=facility_a, door="dimse")
    assert stored_files(image_store) == []
    assert not Study.objects.exists()


def test_a_study_is_linked_to_its_patient_and_order_after_commit(
    facility_a, django_capture_on_commit_callbacks
):
    patient = PatientFactory(facility=facility_a, mrn="MRN42")
    order = order_for(patient)
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="MRN42"),
        accession_number=order.accession_number,
    )
    with django_capture_on_commit_callbacks(execute=True):
        for number in (1, 2, 3):
            ingest(small_ct(spec, number), facility=facility_a, door="dimse")
    study = Study.objects.get()
    assert (study.patient, study.order) == (patient, order)
    assert (study.number_of_series, study.number_of_instances) == (1, 3)
    assert study.modalities_in_study == "CT"
    assert Series.objects.get().number_of_instances == 3
    assert Order.objects.get(pk=order.pk).images_received_at is not None
    assert not study.needs_refresh


def test_a_study_with_the_worklists_study_uid_and_no_accession_links_its_order(
    facility_a, django_capture_on_commit_callbacks
):
    patient = PatientFactory(facility=facility_a, mrn="MRN42")
    order = order_for(patient)
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="MRN42"), study_uid=order.study_instance_uid
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest(small_ct(spec), facility=facility_a, door="dimse")
    assert Study.objects.get().order == order


def test_a_study_under_a_merged_patient_s_old_mrn_goes_to_the_survivor(
    facility_a, django_capture_on_commit_callbacks
):
    survivor = PatientFactory(facility=facility_a, mrn="KEEP1")
    duplicate = PatientFactory(facility=facility_a, mrn="DUP1")
    ris_services.patient_merge(surviving=survivor, merged=duplicate, reason="same person")
    spec = synthetic.StudySpec(patient=synthetic.PatientSpec(patient_id="DUP1"))
    with django_capture_on_commit_callbacks(execute=True):
        ingest(small_ct(spec), facility=facility_a, door="dimse")
    assert Study.objects.get().patient == survivor


def test_a_study_of_an_unknown_patient_is_kept_unmatched(
    facility_a, study_spec, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        ingest(small_ct(study_spec), facility=facility_a, door="dimse")
    study = Study.objects.get()
    assert study.patient is None and study.order is None
    assert study.number_of_instances == 1


def test_an_accession_of_another_patient_does_not_link_the_order(
    facility_a, django_capture_on_commit_callbacks
):
    PatientFactory(facility=facility_a, mrn="MRN42")
    order = order_for(PatientFactory(facility=facility_a, mrn="OTHER"))
    spec = synthetic.StudySpec(
        patient=synthetic.PatientSpec(patient_id="MRN42"), accession_number=order.accession_number
    )
    with django_capture_on_commit_callbacks(execute=True):
        ingest(small_ct(spec), facility=facility_a, door="dimse")
    study = Study.objects.get()
    assert study.patient.mrn == "MRN42" and study.order is None


def test_a_push_of_many_instances_schedules_few_refreshes(
    facility_a, study_spec, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        for number in range(1, 21):
            ingest(small_ct(study_spec, number), facility=facility_a, door="dimse")
    assert len(callbacks) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="concurrency needs PostgreSQL")
def test_concurrent_associations_storing_one_study_make_one_study_and_series(image_store):
    facility = FacilityFactory(code="CONC")
    ProcedureFactory(facility=facility)
    spec = synthetic.StudySpec()
    series_uid = synthetic.new_uid()
    files = [small_ct(spec, n, series_uid) for n in range(1, 41)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def association(chunk: list[bytes]) -> None:
        try:
            barrier.wait()
            for data in chunk:
                ingest(data, facility=facility, door="dimse")
        except BaseException as error:
            errors.append(error)
        finally:
            connections.close_all()

    # Four writers, each sending every instance (so every instance races 4 ways).
    threads = [threading.Thread(target=association, args=(files,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Study.objects.count() == 1
    assert Series.objects.count() == 1
    assert Instance.objects.count() == 40
    assert len(stored_files(image_store)) == 40


def test_each_series_gets_a_thumbnail_of_its_middle_image(
    facility_a, study_spec, django_capture_on_commit_callbacks
):
    from PIL import Image

    with django_capture_on_commit_callbacks(execute=True):
        for number in (1, 2, 3):
            ingest(small_ct(study_spec, number), facility=facility_a, door="dimse")
    series = Series.objects.get()
    assert series.thumbnail_key.endswith(".png")
    picture = Image.open(io.BytesIO(storage.read(series.thumbnail_key)))
    assert picture.size == (32, 32) and picture.mode == "L"


def test_a_study_whose_refresh_never_ran_is_caught_by_the_sweep(facility_a, study_spec):
    ingest(small_ct(study_spec), facility=facility_a, door="dimse", schedule_refresh=False)
    assert Study.objects.get().needs_refresh
    assert services.refresh_pending_studies() == 1
    study = Study.objects.get()
    assert (study.needs_refresh, study.number_of_instances) == (False, 1)


def test_a_push_session_indexes_each_further_instance_with_few_queries(
    facility_a, study_spec, django_assert_max_num_queries
):
    session = services.IngestSession()
    ingest(small_ct(study_spec, 1), facility=facility_a, door="dimse", session=session)
    # duplicate check, savepoint, INSERT instance, flag UPDATE, release savepoint
    with django_assert_max_num_queries(5):
        ingest(small_ct(study_spec, 2), facility=facility_a, door="dimse", session=session)
    assert Instance.objects.count() == 2


def _ingest_staged(data: bytes, **kwargs) -> services.IngestResult:
    """As the DIMSE door does: the data set written to a staged file as it arrived."""
    staged = storage.StagedFile()
    try:
        staged.write(data)
        return ingest(staged.contents(), staged=staged, **kwargs)
    finally:
        staged.discard()


def _ingest_received(data: bytes, received: str, **kwargs) -> services.IngestResult:
    """As a door hands an instance over: staged on disk (C-STORE) or in memory (STOW-RS)."""
    if received == "staged":
        return _ingest_staged(data, **kwargs)
    return ingest(data, **kwargs)


@pytest.mark.parametrize("received", ["staged", "in memory"])
def test_in_a_push_each_further_file_is_named_while_its_row_is_written(
    facility_a, study_spec, image_store, monkeypatch, received
):
    overlapped = []
    installing = storage.PendingPut.installing

    def spy(self):
        overlapped.append(True)
        return installing(self)

    monkeypatch.setattr(storage.PendingPut, "installing", spy)
    session = services.IngestSession()
    instances = [small_ct(study_spec, number) for number in (1, 2, 3)]
    for data in instances:
        _ingest_received(data, received, facility=facility_a, door="dimse", session=session)
    assert len(overlapped) == 2, "the first instance of a series creates rows: not overlapped"
    stored = Instance.objects.order_by("instance_number")
    assert [storage.read(i.storage_key) for i in stored] == instances
    assert len(stored_files(image_store)) == 3


@pytest.mark.parametrize("received", ["staged", "in memory"])
def test_a_file_that_cannot_be_made_durable_takes_its_committed_row_back(
    facility_a, study_spec, image_store, monkeypatch, received
):
    session = services.IngestSession()
    first, second = small_ct(study_spec, 1), small_ct(study_spec, 2)
    _ingest_received(first, received, facility=facility_a, door="dimse", session=session)

    def disk_failed(temporary, target):
        temporary.rename(target)  # named, then the folder's fsync fails
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage, "_install", disk_failed)
    with pytest.raises(IngestError) as refused:
        _ingest_received(second, received, facility=facility_a, door="dimse", session=session)
    assert refused.value.dicom_status == services.STATUS_OUT_OF_RESOURCES
    assert list(Instance.objects.values_list("instance_number", flat=True)) == [1]
    assert len(stored_files(image_store)) == 1
    staging = storage._staging_root() / storage.STAGING_FOLDER
    assert not staging.exists() or not any(staging.iterdir()), "no staged file is left behind"


@pytest.mark.parametrize("received", ["staged", "in memory"])
def test_a_row_whose_file_a_crash_lost_before_the_answer_gets_it_back_when_resent(
    facility_a, study_spec, image_store, received
):
    session = services.IngestSession()
    first, second = small_ct(study_spec, 1), small_ct(study_spec, 2)
    _ingest_received(first, received, facility=facility_a, door="dimse", session=session)
    _ingest_received(second, received, facility=facility_a, door="dimse", session=session)
    lost = Instance.objects.get(instance_number=2)
    storage.delete(lost.storage_key)  # committed, then the process died before the rename

    again = _ingest_received(second, received, facility=facility_a, door="dimse")  # resent

    assert again.instance_id == lost.pk
    assert storage.read(lost.storage_key) == second
    assert Instance.objects.count() == 2
