"""STOW-RS (PS3.18 10.5) through dicomweb-client, and edge cases through requests."""

import io
import json
import tracemalloc
from collections.abc import Callable
from pathlib import PurePosixPath

import pytest
import requests
from django.db import connection
from pydicom import Dataset, dcmread, dcmwrite
from pydicom.data import get_testdata_file
from pydicom.uid import JPEGLSLossless

from accounts.models import AuditEvent, Membership
from accounts.roles import Role
from pacs import storage, tasks
from pacs.dicom import synthetic
from pacs.dicomweb import stow
from pacs.models import Instance, Study
from tests.dicomweb.conftest import client_as
from tests.factories import api_token, member
from tests.storage_fixtures import stored_files

pytestmark = pytest.mark.django_db(transaction=True)
# Another connection reads (or writes) while a chunk's transaction is open: SQLite's
# shared-cache test database locks whole tables across connections.
NEEDS_POSTGRESQL = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="concurrent connections need PostgreSQL"
)

BOUNDARY = "stow-test-boundary"
MULTIPART = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture
def technologist(facility_a):
    return member(facility_a, Role.TECHNOLOGIST, username="tech")


def ct(spec: synthetic.StudySpec | None = None, count: int = 1) -> list[bytes]:
    return list(synthetic.ct_series(spec or synthetic.StudySpec(), slices=count, rows=8, columns=8))


def body(*parts: bytes, content_type: str = "application/dicom") -> bytes:
    out = b""
    for part in parts:
        out += f"--{BOUNDARY}\r\nContent-Type: {content_type}\r\n\r\n".encode() + part + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


def post(live_server, user, data, path: str = "studies", **headers: str):
    if user is not None:
        token = api_token(user)
        headers.setdefault("Authorization", f"Bearer {token}")
    headers.setdefault("Content-Type", MULTIPART)
    return requests.post(
        f"{live_server.url}/dicom-web/{path}", data=data, headers=headers, timeout=30
    )


def failing_call(number: int, function: Callable, error: Exception) -> Callable:
    """`function`, but its `number`th call raises `error`."""
    calls = 0

    def wrapper(*args, **kwargs):
        nonlocal calls
        calls += 1
        if calls == number:
            raise error
        return function(*args, **kwargs)

    return wrapper


def failures(document: dict) -> list[tuple[int, str, str]]:
    """(FailureReason, SOP Instance UID or '', reason text) of each Failed SOP item."""
    return [
        (
            item["00081197"]["Value"][0],
            item.get("00081155", {}).get("Value", [""])[0],
            item["00091001"]["Value"][0],
        )
        for item in document.get("00081198", {}).get("Value", [])
    ]


def test_stored_instances_come_back_as_sent_and_a_resend_succeeds(
    live_server, image_store, technologist
):
    plain = dcmread(io.BytesIO(ct()[0]))
    compressed = dcmread(get_testdata_file("MR_small_jpeg_ls_lossless.dcm"))
    client = client_as(live_server, technologist)

    result = client.store_instances([plain, compressed])

    assert "FailedSOPSequence" not in result
    assert [item.ReferencedSOPInstanceUID for item in result.ReferencedSOPSequence] == [
        plain.SOPInstanceUID,
        compressed.SOPInstanceUID,
    ]
    first = result.ReferencedSOPSequence[0]
    assert first.RetrieveURL.endswith(
        f"/dicom-web/studies/{plain.StudyInstanceUID}/series/{plain.SeriesInstanceUID}"
        f"/instances/{plain.SOPInstanceUID}"
    )
    assert result.RetrieveURL == ""  # two studies in one request
    for sent in (plain, compressed):
        encoded = io.BytesIO()
        dcmwrite(encoded, sent)  # what dicomweb-client sent
        stored = Instance.objects.get(sop_instance_uid=sent.SOPInstanceUID)
        assert storage.read(stored.storage_key) == encoded.getvalue()
        got = client.retrieve_instance(
            sent.StudyInstanceUID,
            sent.SeriesInstanceUID,
            sent.SOPInstanceUID,
            media_types=(("application/dicom", "*"),),
        )
        assert got.SOPInstanceUID == sent.SOPInstanceUID
        assert got.file_meta.TransferSyntaxUID == sent.file_meta.TransferSyntaxUID
        assert got.PixelData == sent.PixelData
    assert got.file_meta.TransferSyntaxUID == JPEGLSLossless

    again = client.store_instances([compressed], study_instance_uid=compressed.StudyInstanceUID)
    assert again.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == compressed.SOPInstanceUID
    assert again.ReferencedSOPSequence[0].RetrieveURL.endswith(  # read from the stored row
        f"/studies/{compressed.StudyInstanceUID}/series/{compressed.SeriesInstanceUID}"
        f"/instances/{compressed.SOPInstanceUID}"
    )
    assert again.RetrieveURL.endswith(f"/dicom-web/studies/{compressed.StudyInstanceUID}")
    assert Instance.objects.count() == 2


def test_good_and_bad_parts_give_a_202_with_both_sequences_and_one_audit_event(
    live_server, image_store, technologist
):
    good, truncated = ct(count=2)
    truncated_uid = dcmread(io.BytesIO(truncated), stop_before_pixels=True).SOPInstanceUID
    response = post(live_server, technologist, body(good, b"not DICOM at all", truncated[:-50]))

    assert response.status_code == 202
    assert response.headers["Content-Type"] == "application/dicom+json"
    document = response.json()
    assert len(document["00081199"]["Value"]) == 1
    (reason, uid, text), (truncated_reason, truncated_sop, _) = failures(document)
    assert (reason, uid) == (0xC000, "")
    assert "not a DICOM Part 10 file" in text
    assert (truncated_reason, truncated_sop) == (0xC000, truncated_uid)
    assert document["00081198"]["Value"][0]["00090010"]["Value"] == ["RADPACS"]
    assert Instance.objects.count() == 1
    # ingest records the new study; the request is one event more, with its counts
    event = AuditEvent.objects.get(door="dicomweb", action="create", detail__has_key="stored")
    assert event.user == technologist
    assert (event.detail["stored"], event.detail["failed"]) == (1, 2)
    study = Study.objects.get()
    assert (event.object_type, event.object_id, event.object_repr) == (
        "study",
        str(study.pk),
        str(study),
    )
    assert event.facility_id == study.facility_id


def test_an_instance_of_another_study_is_refused_with_a900_and_none_stored_is_409(
    live_server, image_store, technologist
):
    (data,) = ct()
    sent = dcmread(io.BytesIO(data), stop_before_pixels=True)
    response = post(
        live_server, technologist, body(data), path="studies/1.2.3.4", Accept="application/json"
    )

    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    [(reason, uid, text)] = failures(document)
    assert (reason, uid) == (0xA900, sent.SOPInstanceUID)
    assert sent.StudyInstanceUID in text
    assert document["00081198"]["Value"][0]["00081150"]["Value"] == [sent.SOPClassUID]
    assert "00081199" not in document
    assert not Instance.objects.exists()


def test_a_user_of_several_facilities_names_one(live_server, image_store, technologist, facility_b):
    Membership.objects.create(user=technologist, facility=facility_b, role=Role.TECHNOLOGIST)
    (data,) = ct()
    refused = post(live_server, technologist, body(data))
    assert refused.status_code == 400
    assert "?facility=" in refused.text
    stored = post(live_server, technologist, body(data), path="studies?facility=SOUTH")
    assert stored.status_code == 200
    assert Instance.objects.get().facility == facility_b


def test_requests_refused_before_storing(live_server, technologist, reader):
    (data,) = ct()
    assert post(live_server, None, body(data)).status_code == 401
    forbidden = post(live_server, reader, body(data))  # a radiologist may not upload
    assert forbidden.status_code == 403

    for content_type in (
        "application/dicom",
        f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}',
    ):
        refused = post(live_server, technologist, body(data), **{"Content-Type": content_type})
        assert refused.status_code == 415, content_type
        assert "multipart/related" in refused.text or "not supported" in refused.text
    metadata = json.dumps([Dataset().to_json_dict()]).encode()
    untyped = f"multipart/related; boundary={BOUNDARY}"
    wrong_part = post(
        live_server,
        technologist,
        body(metadata, content_type="application/dicom+json"),
        **{"Content-Type": untyped},
    )
    assert wrong_part.status_code == 415
    assert "application/dicom+json" in wrong_part.text

    assert post(live_server, technologist, body(data), Accept="image/png").status_code == 406
    assert post(live_server, technologist, iter([body(data)])).status_code == 411  # chunked
    assert post(live_server, technologist, b"garbage").status_code == 400
    assert post(live_server, technologist, body()).status_code == 400
    assert not Instance.objects.exists()


class HangsUp(io.BytesIO):
    """A request body whose client goes away after `after` bytes."""

    def __init__(self, data: bytes, after: int) -> None:
        super().__init__(data)
        self.after = after

    def read(self, size: int = -1) -> bytes:
        if self.tell() >= self.after:
            raise OSError("connection reset by peer")
        return super().read(min(size, self.after - self.tell()) if size >= 0 else -1)


@pytest.mark.parametrize("after", [10, "second part"])
def test_a_client_hanging_up_mid_upload_gets_a_4xx_or_keeps_what_was_stored(technologist, after):
    from django.test import RequestFactory

    from pacs.dicomweb import views

    first, second = ct(count=2)
    data = body(first, second)
    cut = 10 if after == 10 else data.index(second) + 100
    request = RequestFactory().generic(
        "POST",
        "/dicom-web/studies",
        data=data,
        content_type=MULTIPART,
        HTTP_AUTHORIZATION=f"Bearer {api_token(technologist)}",
    )
    request._stream = HangsUp(data, cut)
    response = views.studies(request)
    if after == 10:
        assert response.status_code == 400
        assert b"interrupted" in response.content
        assert not Instance.objects.exists()
    else:
        assert response.status_code == 202
        assert Instance.objects.count() == 1


def test_a_stored_study_gets_its_counts_and_thumbnail(live_server, image_store, technologist):
    response = post(live_server, technologist, body(*ct(count=4)))
    assert response.status_code == 200, response.text
    study = Study.objects.get()
    assert (study.number_of_instances, study.modalities_in_study) == (4, "CT")
    assert study.series.get().thumbnail_key


def test_a_large_part_is_stored_from_disk_without_being_read_into_memory(
    live_server, image_store, technologist, monkeypatch
):
    (instance,) = synthetic.ct_series(synthetic.StudySpec(), slices=1, rows=1500, columns=1500)
    assert len(instance) > 4 * 1024 * 1024
    peaks: list[int] = []
    store_part = stow._store_part

    def measured(*args, **kwargs):
        tracemalloc.start()
        try:
            return store_part(*args, **kwargs)
        finally:
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()

    monkeypatch.setattr(stow, "_store_part", measured)
    # The follow-up tasks (thumbnail, upload) read the file on their own: run them after.
    queued: list = []
    monkeypatch.setattr(
        tasks.spool_upload, "delay", lambda *a: queued.append((tasks.spool_upload, a))
    )
    monkeypatch.setattr(
        tasks.study_refresh, "apply_async", lambda a, **_: queued.append((tasks.study_refresh, a))
    )
    response = post(live_server, technologist, body(instance))
    assert response.status_code == 200, response.text
    for task, arguments in queued:
        task(*arguments)
    assert storage.read(Instance.objects.get().storage_key) == instance
    # Python allocations while the part was checked and stored: far below its size.
    assert len(peaks) == 1
    assert peaks[0] < len(instance) // 3, peaks
    staging = storage._staging_root() / storage.STAGING_FOLDER
    assert not any(staging.iterdir())


@NEEDS_POSTGRESQL
def test_an_instance_is_committed_only_once_its_file_is_durable(
    live_server, image_store, technologist, monkeypatch
):
    """The request's rows wait for their files: seen from another connection while a
    file is named, the instance is not in the index yet."""
    instances = ct(count=3)
    names = {PurePosixPath(storage.content_key(data)[0]).name for data in instances}
    seen_while_naming: list[int] = []
    install = storage._install

    def naming(temporary, target):
        from django.db import connection

        if target.name in names:  # not the thumbnail, stored after the commit
            try:  # this writer thread has its own connection: it sees committed rows only
                seen_while_naming.append(Instance.objects.count())
            finally:
                connection.close()
        install(temporary, target)

    monkeypatch.setattr(storage, "_install", naming)
    response = post(live_server, technologist, body(*instances))

    assert response.status_code == 200, response.text
    assert seen_while_naming == [0, 0, 0]
    assert Instance.objects.count() == 3


def test_a_file_that_cannot_be_made_durable_refuses_its_instance_only(
    live_server, image_store, technologist, monkeypatch
):
    first, broken, last = ct(count=3)
    broken_uid = dcmread(io.BytesIO(broken), stop_before_pixels=True).SOPInstanceUID
    fsync_dir = storage._fsync_dir
    broken_key = storage.content_key(broken)[0]

    def failing(path):
        if path == (image_store.root / broken_key).parent:
            raise OSError(5, "Input/output error")
        fsync_dir(path)

    monkeypatch.setattr(storage, "_fsync_dir", failing)
    response = post(live_server, technologist, body(first, broken, last))

    assert response.status_code == 202, response.text
    assert failures(response.json()) == [(0xA700, broken_uid, "archive storage is unavailable")]
    assert Instance.objects.count() == 2
    assert not Instance.objects.filter(sop_instance_uid=broken_uid).exists()
    assert PurePosixPath(broken_key) not in stored_files(image_store)


def test_an_index_failure_refuses_its_chunk_and_keeps_the_others(
    live_server, image_store, technologist, monkeypatch
):
    """A deadlock or a lost database costs the instances of one transaction, reported
    as failed (the sender may send them again), never a 500; their files are dropped."""
    from django.db import OperationalError

    from pacs import services

    monkeypatch.setattr(stow, "CHUNK_INSTANCES", 2)
    instances = ct(count=5)
    uids = [dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID for data in instances]
    deadlocks_on_the_fourth = failing_call(
        4, services._insert_instance, OperationalError("deadlock detected")
    )
    monkeypatch.setattr(services, "_insert_instance", deadlocks_on_the_fourth)
    response = post(live_server, technologist, body(*instances))

    assert response.status_code == 202, response.text
    document = response.json()
    assert failures(document) == [(0xA700, uid, stow.NOT_INDEXED) for uid in uids[2:4]]
    stored = [item["00081155"]["Value"][0] for item in document["00081199"]["Value"]]
    assert stored == [uids[0], uids[1], uids[4]]
    assert set(Instance.objects.values_list("sop_instance_uid", flat=True)) == set(stored)
    assert sorted(stored_files(image_store)) == sorted(
        PurePosixPath(key) for key in Instance.objects.values_list("storage_key", flat=True)
    )


def test_a_token_upload_takes_its_facility_from_the_token_statement(
    image_store, technologist, monkeypatch
):
    """The facility's id and code come with the user's roles: no facility row is read."""
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from pacs import services

    monkeypatch.setattr(services, "_refresh_soon", lambda study_id: None)  # a worker's task
    client = Client(HTTP_AUTHORIZATION=f"Bearer {api_token(technologist)}")
    with CaptureQueriesContext(connection) as queries:
        response = client.post("/dicom-web/studies", data=body(*ct()), content_type=MULTIPART)

    assert response.status_code == 200, response.content
    assert Instance.objects.get().facility == technologist.memberships.get().facility
    assert not [query for query in queries if 'FROM "accounts_facility"' in query["sql"]]


def test_each_chunk_commits_with_its_audit_event(
    live_server, image_store, technologist, monkeypatch
):
    """A stored instance is never committed unaudited: a request of several chunks is
    one event per chunk, each with that chunk's counts."""
    monkeypatch.setattr(stow, "CHUNK_INSTANCES", 2)
    response = post(live_server, technologist, body(*ct(count=5)))

    assert response.status_code == 200, response.text
    events = AuditEvent.objects.filter(door="dicomweb", detail__has_key="stored").order_by("pk")
    assert [(e.detail["chunk"], e.detail["stored"], e.detail["failed"]) for e in events] == [
        (1, 2, 0),
        (2, 2, 0),
        (3, 1, 0),
    ]
    study = Study.objects.get()
    assert {(e.object_type, e.object_id) for e in events} == {("study", str(study.pk))}


def test_a_chunk_whose_audit_event_fails_is_refused_and_leaves_no_files(
    live_server, image_store, technologist, monkeypatch
):
    """The event is written after the files are named: when it fails, the transaction's
    rows are rolled back and the files named for them are removed too."""
    from django.db import OperationalError

    from pacs.dicomweb import views

    instances = ct(count=3)
    uids = [dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID for data in instances]
    fails_once = failing_call(1, views._audit, OperationalError("the audit table is locked"))
    monkeypatch.setattr(views, "_audit", fails_once)
    response = post(live_server, technologist, body(*instances))

    assert response.status_code == 409, response.text
    assert failures(response.json()) == [(0xA700, uid, stow.NOT_INDEXED) for uid in uids]
    assert not Instance.objects.exists()
    assert stored_files(image_store) == []
    event = AuditEvent.objects.get(door="dicomweb", detail__has_key="stored")  # the refusal
    assert (event.detail["stored"], event.detail["failed"]) == (0, 3)


@NEEDS_POSTGRESQL
def test_two_uploads_of_one_new_series_at_once_both_succeed(
    live_server, image_store, technologist, monkeypatch
):
    """The first upload's chunk holds the new study and series uncommitted; the other
    waits for it on their unique keys and then stores into them."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from pacs import services

    settle = services.IngestSession.settle

    def slow_settle(session):  # each chunk's transaction stays open a while
        time.sleep(0.3)
        return settle(session)

    monkeypatch.setattr(services.IngestSession, "settle", slow_settle)
    instances = ct(count=8)
    halves = [instances[0::2], instances[1::2]]
    token = f"Bearer {api_token(technologist)}"  # made here: the threads only send
    with ThreadPoolExecutor(2) as pool:
        responses = list(
            pool.map(lambda half: post(live_server, None, body(*half), Authorization=token), halves)
        )

    assert [response.status_code for response in responses] == [200, 200], [
        response.text for response in responses
    ]
    assert Study.objects.count() == 1
    assert Instance.objects.count() == 8
    assert {instance.series_id for instance in Instance.objects.all()} == {
        Study.objects.get().series.get().pk
    }
