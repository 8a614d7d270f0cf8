"""Storage associations served by `storage_scp` instead of pynetdicom's data phase."""

import socket
import struct
import time
from io import BytesIO, StringIO

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless
from pynetdicom import AE
from pynetdicom.dsutils import create_file_meta, decode, encode, encode_file_meta
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import build_context
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from pacs import storage
from pacs.dimse import storage_scp
from pacs.models import Instance
from tests.interop.conftest import scu, write_series

pytestmark = pytest.mark.interop


@pytest.fixture
def served(monkeypatch) -> list[str]:
    """The calling AE titles of the associations `storage_scp` served."""
    calls: list[str] = []
    serve = storage_scp.serve

    def spy(sock, address, ae, plan):
        calls.append(plan.calling_ae_title)
        return serve(sock, address, ae, plan)

    monkeypatch.setattr(storage_scp, "serve", spy)
    return calls


def test_storescu_is_served_without_pynetdicoms_data_phase(listener, tmp_path, served):
    write_series(tmp_path / "series", 5)
    result = scu("storescu", listener, "STORESCU", "+sd", files=(str(tmp_path / "series"),))
    assert result.returncode == 0, result.stderr
    assert served == ["STORESCU"]
    assert Instance.objects.count() == 5


@pytest.mark.parametrize("sop_instance_uid", ["1.2.3.4", "1.2.3.45"])
@pytest.mark.parametrize("transfer_syntax", [ExplicitVRLittleEndian, JPEG2000Lossless])
def test_the_file_meta_is_byte_for_byte_what_pynetdicom_writes(sop_instance_uid, transfer_syntax):
    meta = create_file_meta(
        sop_class_uid=CTImageStorage,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax=transfer_syntax,
    )
    theirs = b"\x00" * 128 + b"DICM" + encode_file_meta(meta)
    ours = storage_scp.part10_prefix(CTImageStorage, sop_instance_uid, transfer_syntax)
    assert ours == theirs


def _store(listener, path: str, *contexts) -> int:
    ae = AE(ae_title="STORESCU")
    for context in contexts or [(CTImageStorage,)]:
        ae.add_requested_context(*context)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    try:
        return assoc.send_c_store(dcmread(path)).Status
    finally:
        assoc.release()


def test_a_resend_through_the_other_path_is_the_same_file(listener, settings, served):
    path = get_testdata_file("CT_small.dcm")
    settings.DICOM_FAST_STORE = False
    assert _store(listener, path) == 0x0000
    assert served == []
    first = Instance.objects.get()
    settings.DICOM_FAST_STORE = True
    # Different bytes would be refused as a duplicate (0x0111); the same are a success.
    assert _store(listener, path) == 0x0000
    assert served == ["STORESCU"]
    again = Instance.objects.get()
    assert (again.pk, again.sha256) == (first.pk, first.sha256)
    assert storage.read(again.storage_key)[128:132] == b"DICM"


def test_an_association_that_also_queries_is_left_to_pynetdicom(listener, served):
    path = get_testdata_file("CT_small.dcm")
    find = StudyRootQueryRetrieveInformationModelFind
    assert _store(listener, path, (CTImageStorage,), (find,)) == 0x0000
    assert served == []
    assert Instance.objects.count() == 1


def test_a_small_peer_pdu_gets_its_response_in_fragments(listener, served):
    ae = AE(ae_title="STORESCU")
    ae.maximum_pdu_size = 64  # a C-STORE response is about 200 bytes
    ae.add_requested_context(CTImageStorage, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", listener.port, ae_title=listener.ae_title)
    assert assoc.is_established
    try:
        assert assoc.send_c_echo().Status == 0x0000
        dataset = dcmread(get_testdata_file("CT_small.dcm"))
        assert assoc.send_c_store(dataset).Status == 0x0000
    finally:
        assoc.release()
    assert served == ["STORESCU"]
    assert Instance.objects.get().transfer_syntax_uid == ImplicitVRLittleEndian


def _associate_raw(listener, context_id: int = 1) -> socket.socket:
    """An association opened by hand, for bytes no well-behaved client sends."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = "STORESCU"
    primitive.called_ae_title = listener.ae_title
    context = build_context(CTImageStorage, [ImplicitVRLittleEndian])
    context.context_id = context_id
    primitive.presentation_context_definition_list = [context]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    request = A_ASSOCIATE_RQ()
    request.from_primitive(primitive)
    sock = socket.create_connection(("127.0.0.1", listener.port), timeout=10)
    sock.sendall(request.encode())
    header = _recv_exact(sock, 6)
    assert header[0] == 0x02, header  # A-ASSOCIATE-AC
    _recv_exact(sock, struct.unpack(">L", header[2:6])[0])
    return sock


def _recv_exact(sock: socket.socket, length: int) -> bytes:
    data = b""
    while len(data) < length:
        chunk = sock.recv(length - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.parametrize(
    "pdv",
    [
        struct.pack(">LBB", 6, 99, 0x03) + b"\x00" * 4,  # an unknown presentation context
        struct.pack(">LBB", 6, 1, 0x00) + b"\x00" * 4,  # a data set before any command
        struct.pack(">LBB", 10, 1, 0x03) + struct.pack("<HHL", 0x0008, 0x0016, 99),  # bad command
        struct.pack(">LBB", 900, 1, 0x03) + b"\x00" * 4,  # longer than its PDU
    ],
    ids=["unknown-context", "data-before-command", "bad-command", "overlong-item"],
)
def test_broken_pdus_are_aborted_and_the_listener_carries_on(listener, served, pdv):
    sock = _associate_raw(listener)
    try:
        sock.sendall(struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv)
        answer = _recv_exact(sock, 10)
        assert answer[:1] == b"\x07", answer  # A-ABORT, source: service provider
        assert answer[8] == 0x02
        assert _recv_exact(sock, 1) == b""  # and the connection is closed
    finally:
        sock.close()
    assert served == ["STORESCU"]
    assert scu("echoscu", listener, "ECHOSCU").returncode == 0
    assert not Instance.objects.exists()


def test_a_release_is_answered(listener, served):
    sock = _associate_raw(listener)
    try:
        sock.sendall(bytes([0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
        assert _recv_exact(sock, 10)[:1] == b"\x06"  # A-RELEASE-RP
    finally:
        sock.close()


@pytest.fixture
def one_association(settings):
    settings.DICOM_MAX_ASSOCIATIONS = 1


def test_fast_associations_count_towards_the_limit(one_association, listener, served):
    sock = _associate_raw(listener)
    try:
        ae = AE(ae_title="STORESCU")
        ae.add_requested_context(CTImageStorage)
        second = ae.associate("127.0.0.1", listener.port, ae_title=listener.ae_title)
        assert second.is_rejected
    finally:
        sock.close()
    assert served == ["STORESCU"]


def _command(**elements) -> bytes:
    command = Dataset()
    for keyword, value in elements.items():
        setattr(command, keyword, value)
    command.CommandGroupLength = 0
    command.CommandGroupLength = len(encode(command, True, True)) - 12
    return encode(command, True, True)


def _pdu(context_id: int, control: int, value: bytes) -> bytes:
    item = struct.pack(">LBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBL", 0x04, 0, len(item)) + item


def test_a_store_on_a_context_of_another_sop_class_is_refused(listener, served):
    sock = _associate_raw(listener)  # context 1: CT Image Storage
    try:
        command = _command(
            AffectedSOPClassUID=MRImageStorage,
            CommandField=0x0001,
            MessageID=7,
            Priority=0,
            CommandDataSetType=0x0000,
            AffectedSOPInstanceUID="1.2.3.4",
        )
        sock.sendall(_pdu(1, 0x03, command) + _pdu(1, 0x02, b"\x08\x00\x16\x00\x00\x00\x00\x00"))
        response = _response(sock)
        assert (response.CommandField, response.MessageIDBeingRespondedTo) == (0x8001, 7)
        assert response.Status == 0x0122
        assert response.AffectedSOPInstanceUID == "1.2.3.4"
    finally:
        sock.close()
    assert served == ["STORESCU"]
    assert not Instance.objects.exists()


@pytest.fixture
def quick_timeout(settings):
    settings.DICOM_NETWORK_TIMEOUT = 1


def test_a_silent_peer_is_let_go_after_the_network_timeout(quick_timeout, listener, served):
    sock = _associate_raw(listener)
    try:
        started = time.monotonic()
        assert _recv_exact(sock, 1) == b""  # closed by the listener, without a word from us
        assert 0.5 < time.monotonic() - started < 10
    finally:
        sock.close()
    assert served == ["STORESCU"]


def _ct_data_set(sop_instance_uid: str, pixel_bytes: int) -> bytes:
    """A CT data set as a C-STORE carries it (implicit VR little endian, no file meta)."""
    ds = dcmread(get_testdata_file("CT_small.dcm"))
    del ds.file_meta
    side = int((pixel_bytes // 2) ** 0.5)
    ds.Rows = ds.Columns = side
    ds.PixelData = b"\x01\x02" * side * side
    ds.SOPInstanceUID = sop_instance_uid
    return encode(ds, True, True)


def _store_command(sop_instance_uid: str, message_id: int = 1) -> bytes:
    return _command(
        AffectedSOPClassUID=CTImageStorage,
        CommandField=0x0001,
        MessageID=message_id,
        Priority=0,
        CommandDataSetType=0x0000,
        AffectedSOPInstanceUID=sop_instance_uid,
    )


def _response(sock: socket.socket) -> Dataset:
    header = _recv_exact(sock, 6)
    assert header[0] == 0x04, header
    body = _recv_exact(sock, struct.unpack(">L", header[2:6])[0])
    return decode(BytesIO(body[6:]), True, True)


def _staged_files() -> list:
    folder = storage._staging_root() / storage.STAGING_FOLDER
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _wait_for(condition, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_data_set_goes_to_disk_as_it_arrives_not_into_memory(listener, served):
    uid = "1.2.826.0.1.3680043.10.1482.1.1"
    data_set = _ct_data_set(uid, 2 * 1024 * 1024)
    fragment = 16000  # within the 16 KiB PDU the raw association announced
    pieces = [data_set[i : i + fragment] for i in range(0, len(data_set), fragment)]
    sock = _associate_raw(listener)
    try:
        sock.sendall(_pdu(1, 0x03, _store_command(uid)))
        half = len(pieces) // 2
        sock.sendall(b"".join(_pdu(1, 0x00, piece) for piece in pieces[:half]))
        # Half the data set sent: it is in a staged file already, nowhere under a key.
        sent = sum(map(len, pieces[:half]))
        _wait_for(lambda: any(p.stat().st_size >= sent for p in _staged_files()))
        assert not Instance.objects.exists()
        rest = [_pdu(1, 0x00, piece) for piece in pieces[half:-1]]
        sock.sendall(b"".join(rest) + _pdu(1, 0x02, pieces[-1]))
        assert _response(sock).Status == 0x0000
    finally:
        sock.close()
    instance = Instance.objects.get(sop_instance_uid=uid)
    stored = storage.read(instance.storage_key)
    assert stored == storage_scp.part10_prefix(CTImageStorage, uid, ImplicitVRLittleEndian) + (
        data_set
    )
    assert _staged_files() == []


def test_an_association_cut_mid_data_set_leaves_nothing_behind(listener, served):
    uid = "1.2.826.0.1.3680043.10.1482.1.2"
    data_set = _ct_data_set(uid, 256 * 1024)
    sock = _associate_raw(listener)
    try:
        sock.sendall(_pdu(1, 0x03, _store_command(uid)) + _pdu(1, 0x00, data_set[:16000]))
        _wait_for(lambda: bool(_staged_files()))
    finally:
        sock.close()
    _wait_for(lambda: not _staged_files())
    assert not Instance.objects.exists()
    assert scu("echoscu", listener, "ECHOSCU").returncode == 0


def test_a_full_disk_while_receiving_is_answered_out_of_resources(listener, served, monkeypatch):
    uid = "1.2.826.0.1.3680043.10.1482.1.3"
    data_set = _ct_data_set(uid, 64 * 1024)
    write = storage.StagedFile.write
    calls = []

    def disk_full_on_the_second_write(self, chunk):
        calls.append(len(chunk))
        if len(calls) == 2:  # the first is the Part 10 header
            raise OSError(28, "No space left on device")
        return write(self, chunk)

    monkeypatch.setattr(storage.StagedFile, "write", disk_full_on_the_second_write)
    sock = _associate_raw(listener)
    try:
        pieces = [data_set[i : i + 16000] for i in range(0, len(data_set), 16000)]
        sock.sendall(
            _pdu(1, 0x03, _store_command(uid, message_id=5))
            + b"".join(_pdu(1, 0x00, piece) for piece in pieces[:-1])
            + _pdu(1, 0x02, pieces[-1])
        )
        response = _response(sock)
        assert (response.MessageIDBeingRespondedTo, response.Status) == (5, 0xA700)
        assert "storage" in response.ErrorComment
        # The association carries on: the next store (disk back) succeeds.
        monkeypatch.setattr(storage.StagedFile, "write", write)
        second = "1.2.826.0.1.3680043.10.1482.1.4"
        sock.sendall(
            _pdu(1, 0x03, _store_command(second, message_id=6))
            + _pdu(1, 0x02, _ct_data_set(second, 1024))
        )
        assert _response(sock).Status == 0x0000
    finally:
        sock.close()
    assert list(Instance.objects.values_list("sop_instance_uid", flat=True)) == [second]
    assert _staged_files() == []


def test_a_store_without_a_data_set_is_refused(listener, served):
    command = _command(
        AffectedSOPClassUID=CTImageStorage,
        CommandField=0x0001,
        MessageID=3,
        Priority=0,
        CommandDataSetType=0x0101,
        AffectedSOPInstanceUID="1.2.3.4",
    )
    sock = _associate_raw(listener)
    try:
        sock.sendall(_pdu(1, 0x03, command))
        response = _response(sock)
        assert (response.MessageIDBeingRespondedTo, response.Status) == (3, 0xC000)
    finally:
        sock.close()
    assert not Instance.objects.exists()


def test_pynetdicoms_temporary_files_are_staged_and_an_aborted_ones_is_swept(
    listener, settings, served
):
    """Associations left to pynetdicom write their data set to a temporary file as it
    arrives; it deletes the file after storing, but not when the association is cut.
    Ours go to the staging folder, where `check_storage --repair` finds the leftover."""
    from django.core.management import call_command

    settings.DICOM_FAST_STORE = False
    assert _store(listener, get_testdata_file("CT_small.dcm")) == 0x0000
    assert served == [] and Instance.objects.count() == 1
    assert _staged_files() == []

    uid = "1.2.826.0.1.3680043.10.1482.1.9"
    sock = _associate_raw(listener)
    try:
        sock.sendall(_pdu(1, 0x03, _store_command(uid)) + _pdu(1, 0x00, _ct_data_set(uid, 64)))
        _wait_for(lambda: bool(_staged_files()))
    finally:
        sock.close()
    time.sleep(0.5)  # the association is aborted; the file stays
    (leftover,) = _staged_files()
    assert leftover.name.startswith(storage.TEMPORARY_PREFIX)
    out = StringIO()
    call_command("check_storage", "--repair", "--grace-minutes", "0", stdout=out)
    assert "orphans: 0, temporary: 1" in out.getvalue()
    assert _staged_files() == []


def test_pdus_of_any_size_are_stored_byte_for_byte(listener, served):
    """PDU bodies share one read buffer that grows (a PDU above 1 MiB gets its own): each
    is written out before the next is read, whatever their sizes."""
    uid = "1.2.826.0.1.3680043.10.1482.1.7"
    data_set = _ct_data_set(uid, 3 * 1024 * 1024)
    sizes = [16000, 300_000, 1_600_000, 16000, 70_000]
    pieces, start = [], 0
    for size in sizes:
        pieces.append(data_set[start : start + size])
        start += size
    pieces.append(data_set[start:])
    sock = _associate_raw(listener)
    try:
        sock.sendall(_pdu(1, 0x03, _store_command(uid)))
        for piece in pieces[:-1]:
            sock.sendall(_pdu(1, 0x00, piece))
        sock.sendall(_pdu(1, 0x02, pieces[-1]))
        assert _response(sock).Status == 0x0000
    finally:
        sock.close()
    stored = storage.read(Instance.objects.get(sop_instance_uid=uid).storage_key)
    prefix = storage_scp.part10_prefix(CTImageStorage, uid, ImplicitVRLittleEndian)
    assert stored == prefix + data_set
    assert served == ["STORESCU"]
