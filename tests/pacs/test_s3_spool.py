"""Images on S3 behind the local spool: C-STORE never waits for S3, and no file is lost.

Runs against a real moto S3 server on loopback (tests/pacs/conftest.py); the rest of
tests/pacs runs against it too through the parametrized `image_store` fixture.
"""

import os
import socket
import time
from io import StringIO

import pydicom
import pytest
from botocore.config import Config
from botocore.exceptions import EndpointConnectionError
from django.core.management import call_command
from storages.backends.s3 import S3Storage

from pacs import storage, tasks
from pacs.models import Instance
from pacs.services import IngestOutcome, ingest
from tests.pacs.conftest import small_ct
from tests.storage_fixtures import ImageStore, s3_backend

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.parametrize("image_store", ["s3"], indirect=True),
]


def bucket_bytes(store: ImageStore, key: str) -> bytes:
    return store.s3().get_object(Bucket=store.bucket, Key=key)["Body"].read()


def command(name: str, *args: str) -> tuple[str, int]:
    out = StringIO()
    try:
        call_command(name, *args, stdout=out)
    except SystemExit as exit_:
        return out.getvalue(), int(exit_.code)
    return out.getvalue(), 0


@pytest.fixture
def lost_uploads(monkeypatch):
    """The upload tasks are lost (a worker died with them, the broker dropped them)."""
    monkeypatch.setattr(tasks.spool_upload, "delay", lambda key: None)


@pytest.fixture
def s3_down(settings, image_store: ImageStore) -> None:
    """The images storage points at a loopback port nobody listens on; one quick attempt."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    quick = Config(connect_timeout=1, retries={"total_max_attempts": 1})
    settings.STORAGES = {
        **settings.STORAGES,
        "images": s3_backend(f"http://127.0.0.1:{port}", image_store.bucket, client_config=quick),
    }


def s3_back(settings, store: ImageStore) -> None:
    settings.STORAGES = {**settings.STORAGES, "images": s3_backend(store.endpoint, store.bucket)}


def test_a_stored_instance_ends_up_in_the_bucket_and_leaves_the_spool(
    facility_a, study_spec, image_store
):
    data = small_ct(study_spec)
    assert ingest(data, facility=facility_a, door="dimse").outcome == IngestOutcome.STORED
    key = Instance.objects.get().storage_key
    assert image_store.bucket_keys() == [key]
    assert bucket_bytes(image_store, key) == data
    assert image_store.local_keys() == []
    assert storage.spooled_keys() == []


def test_a_read_after_the_upload_comes_from_s3_byte_for_byte(facility_a, study_spec, image_store):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    instance = Instance.objects.get()
    assert image_store.local_keys() == []  # so nothing can be read from the spool
    assert storage.read(instance.storage_key) == data
    assert storage.exists(instance.storage_key)
    with storage.open_file(instance.storage_key) as handle:
        assert pydicom.dcmread(handle).SOPInstanceUID == instance.sop_instance_uid


def test_a_file_whose_upload_was_lost_is_served_from_the_spool_and_swept_up_later(
    facility_a, study_spec, image_store, lost_uploads
):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    key = Instance.objects.get().storage_key
    assert image_store.bucket_keys() == []
    assert storage.spooled_keys() == [key]
    assert storage.read(key) == data

    output, status = command("flush_spool")
    assert status == 0
    assert "uploaded: 1, failed: 0" in output and "still spooled: 0" in output
    assert bucket_bytes(image_store, key) == data
    assert image_store.local_keys() == []
    assert storage.read(key) == data

    output, _ = command("flush_spool")
    assert "uploaded: 0, failed: 0" in output
    tasks.spool_upload(key)  # a late duplicate of the task is harmless


def test_a_worker_that_died_after_uploading_is_not_uploaded_again(
    facility_a, study_spec, image_store, lost_uploads, monkeypatch
):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    key = Instance.objects.get().storage_key
    image_store.s3().put_object(Bucket=image_store.bucket, Key=key, Body=data)

    def no_second_upload(self, name, content):
        raise AssertionError("uploaded twice")

    monkeypatch.setattr(S3Storage, "_save", no_second_upload)
    assert storage.spool_flush().uploaded == 1
    assert image_store.local_keys() == [] and image_store.bucket_keys() == [key]


def test_s3_being_down_does_not_fail_a_c_store_and_nothing_is_lost(
    facility_a, study_spec, image_store, s3_down, settings, caplog
):
    data = small_ct(study_spec)
    started = time.monotonic()
    result = ingest(data, facility=facility_a, door="dimse")
    assert result.outcome == IngestOutcome.STORED
    assert time.monotonic() - started < 5
    key = Instance.objects.get().storage_key
    assert "stays spooled" in caplog.text
    assert storage.spooled_keys() == [key]
    assert storage.read(key) == data
    with pytest.raises(EndpointConnectionError):
        tasks.spool_upload(key)  # a worker would retry later
    assert storage.spool_flush().failed == 1
    assert storage.spooled_keys() == [key]  # never dropped before S3 has it

    s3_back(settings, image_store)
    assert storage.spool_flush().uploaded == 1
    assert bucket_bytes(image_store, key) == data
    assert image_store.local_keys() == []


def test_deleting_removes_the_spooled_and_the_uploaded_copy(
    facility_a, study_spec, image_store, lost_uploads
):
    data = small_ct(study_spec)
    ingest(data, facility=facility_a, door="dimse")
    key = Instance.objects.get().storage_key
    image_store.s3().put_object(Bucket=image_store.bucket, Key=key, Body=data)
    storage.delete(key)
    assert image_store.local_keys() == [] and image_store.bucket_keys() == []
    assert not storage.exists(key)


def test_check_storage_counts_spooled_files_and_finds_orphans_in_the_bucket(
    facility_a, study_spec, image_store, monkeypatch
):
    ingest(small_ct(study_spec, 1), facility=facility_a, door="dimse")
    monkeypatch.setattr(tasks.spool_upload, "delay", lambda key: None)
    ingest(small_ct(study_spec, 2), facility=facility_a, door="dimse")
    assert len(image_store.bucket_keys()) == 1 and len(storage.spooled_keys()) == 1
    output, status = command("check_storage", "--verify")
    assert status == 0
    assert "files referenced: 2, orphans: 0, temporary: 0, missing: 0, corrupt: 0" in output

    image_store.s3().put_object(Bucket=image_store.bucket, Key="aa/bb/orphan.dcm", Body=b"x")
    output, _ = command("check_storage", "--repair")
    assert "orphan file: aa/bb/orphan.dcm" in output and "removed: 0" in output
    output, _ = command("check_storage", "--repair", "--grace-minutes", "0")
    assert "removed: 1" in output
    assert "aa/bb/orphan.dcm" not in image_store.bucket_keys()


def test_the_sweep_removes_old_leftovers_of_interrupted_spool_writes(image_store):
    old, fresh = image_store / "ab/cd/.incoming-old", image_store / "ab/cd/.incoming-new"
    old.parent.mkdir(parents=True)
    for path in (old, fresh):
        path.write_bytes(b"half a file")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    assert storage.spool_flush() == storage.Flushed(uploaded=0, failed=0, leftovers_removed=1)
    assert not old.exists() and fresh.exists()
    assert image_store.bucket_keys() == []
