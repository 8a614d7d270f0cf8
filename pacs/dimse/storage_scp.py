"""Storage associations served without pynetdicom's per-PDU machinery.

Profiling the archive's C-STORE showed pynetdicom itself costing as much CPU per
instance as Orthanc's whole store: each P-DATA PDU becomes Python objects, goes
through two threads, an event queue and the state machine, and every response is
encoded through pydicom (docs/benchmarks.md). An association that only stores images
(and echoes) needs none of that, so for those this module runs the data phase itself:
PDUs are read straight off the socket, a C-STORE's dataset fragments are written to a
staged file behind its Part 10 header as they arrive (memory holds one PDU, whatever
the instance's size), and responses are encoded from their few fields.

What stays with pynetdicom: the whole of every other association. The listener's
thread peeks at the A-ASSOCIATE-RQ without consuming it (MSG_PEEK); only a request
that pynetdicom would accept as it is, with nothing but storage and verification
contexts and no negotiation beyond the maximum PDU length, is served here. Anything
else (queries, retrieves, MPPS, role selection, user identity, a caller to reject, a
malformed request) is left in the socket for pynetdicom to read from the first byte.
Negotiation itself reuses pynetdicom's PDU classes and `negotiate_as_acceptor`, so
both paths accept the same contexts with the same transfer syntaxes.

PS3.8 9.3 (PDU structure), PS3.7 E (command encoding), PS3.7 9.3.1 (C-STORE).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db import connections
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import (
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    _config,
)
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    AsynchronousOperationsWindowNegotiation,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor
from pynetdicom.sop_class import Verification

from pacs import services, storage
from pacs.dimse import handlers, peers

logger = logging.getLogger(__name__)

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
# PDU types (PS3.8 9.3.1)
ASSOCIATE_RQ, P_DATA_TF, RELEASE_RQ, RELEASE_RP, ABORT = 0x01, 0x04, 0x05, 0x06, 0x07
# DIMSE command fields (PS3.7 E.1)
C_STORE_RQ, C_ECHO_RQ, C_CANCEL_RQ = 0x0001, 0x0030, 0x0FFF
NO_DATA_SET = 0x0101
# Failure statuses (PS3.7 C): SOP class not supported; unrecognised operation.
SOP_CLASS_NOT_SUPPORTED = 0x0122
UNRECOGNIZED_OPERATION = 0x0211
# PDUs up to this size are read into one buffer per association, reused.
REUSED_BUFFER_BYTES = 1024 * 1024
# Requests larger than this are pynetdicom's to deal with (a normal one is < 4 KiB).
MAX_REQUEST_PEEK = 64 * 1024
# A PDU longer than this is not a peer talking DICOM in good faith.
MAX_PDU_LENGTH = 64 * 1024 * 1024
# User Information items the fast path may see: anything else is pynetdicom's.
PLAIN_USER_ITEMS = (
    MaximumLengthNotification,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    # Not answered: the acceptor then works with the default window of 1 (PS3.7 D.3.3.3).
    AsynchronousOperationsWindowNegotiation,
)


class ProtocolError(Exception):
    """The peer broke the upper layer protocol: the association is aborted."""

    def __init__(self, message: str, reason: int = 0x00) -> None:
        super().__init__(message)
        self.reason = reason  # A-ABORT provider reason (PS3.8 9.3.8)


class PeerGone(Exception):
    """The connection closed or went quiet."""


@dataclass
class Plan:
    """An association request this module will serve, and its negotiated answer."""

    request_length: int
    calling_ae_title: str
    called_ae_title: str
    peer_max_pdu: int
    accepted: dict[int, PresentationContext]
    answer: bytes  # the encoded A-ASSOCIATE-AC


@dataclass(eq=False)  # kept in a set by identity
class FastAssociation:
    """Stands in the AE's list of active associations (for its limit and shutdown)."""

    sock: socket.socket
    is_acceptor: bool = True
    is_requestor: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(_abort_pdu(source=0x02, reason=0x00))
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def bind(self, *args: Any) -> None:
        """Event handlers are pynetdicom's business; nothing to bind here."""


_active: set[FastAssociation] = set()
_active_lock = threading.Lock()


def active_associations() -> list[FastAssociation]:
    with _active_lock:
        return list(_active)


def peek_request(sock: socket.socket, timeout: float | None) -> bytes | None:
    """The whole A-ASSOCIATE-RQ PDU, left unread in the socket; None for anything else."""
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        header = sock.recv(6, socket.MSG_PEEK | socket.MSG_WAITALL)
        if len(header) < 6 or header[0] != ASSOCIATE_RQ:
            return None
        length = struct.unpack(">L", header[2:6])[0]
        if length > MAX_REQUEST_PEEK:
            return None
        pdu = sock.recv(6 + length, socket.MSG_PEEK | socket.MSG_WAITALL)
        return pdu if len(pdu) == 6 + length else None
    except (OSError, ValueError):
        return None
    finally:
        with contextlib.suppress(OSError):
            sock.settimeout(previous)


def plan(ae: Any, request: bytes, storage_classes: frozenset[str]) -> Plan | None:
    """The answer to `request` when it is a plain storage association pynetdicom would
    accept; None to leave it to pynetdicom."""
    try:
        pdu = A_ASSOCIATE_RQ()
        pdu.decode(request)
        primitive = pdu.to_primitive()
    except Exception:  # malformed: pynetdicom answers it properly
        return None
    if str(primitive.application_context_name) != APPLICATION_CONTEXT_NAME:
        return None
    items = primitive.user_information
    if not all(isinstance(item, PLAIN_USER_ITEMS) for item in items):
        return None
    proposed = primitive.presentation_context_definition_list
    supported = {*storage_classes, Verification}
    if not proposed or any(context.abstract_syntax not in supported for context in proposed):
        return None
    calling, called = primitive.calling_ae_title.strip(), primitive.called_ae_title.strip()
    try:
        allowed = [title.strip() for title in ae.require_calling_aet]
    except Exception:  # the database is down: pynetdicom refuses it and logs why
        logger.exception("cannot read the calling AE allow-list")
        return None
    if allowed and calling not in allowed:
        return None  # pynetdicom rejects it, logged and with the right reason
    if ae.require_called_aet and called != ae.ae_title.strip():
        return None
    if _config.UNRESTRICTED_STORAGE_SERVICE:
        return None
    acceptors = [assoc for assoc in ae.active_associations if assoc.is_acceptor]
    if len(acceptors) >= ae.maximum_associations:
        return None  # pynetdicom rejects it: local limit exceeded
    results, _roles = negotiate_as_acceptor(proposed, ae.supported_contexts, None)
    accepted = {context.context_id: context for context in results if context.result == 0x00}
    if not accepted:
        return None
    peer_max = next(
        (
            item.maximum_length_received
            for item in items
            if isinstance(item, MaximumLengthNotification)
        ),
        0,
    )
    answer = A_ASSOCIATE()
    answer.application_context_name = UID(APPLICATION_CONTEXT_NAME)
    answer.calling_ae_title = primitive.calling_ae_title
    answer.called_ae_title = primitive.called_ae_title
    answer.result = 0x00
    answer.result_source = 0x01
    answer.presentation_context_definition_results_list = results
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = ae.maximum_pdu_size
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = ae.implementation_class_uid
    user_information: list[Any] = [max_length, class_uid]
    if ae.implementation_version_name:
        version = ImplementationVersionNameNotification()
        version.implementation_version_name = ae.implementation_version_name
        user_information.append(version)
    answer.user_information = user_information
    encoded = A_ASSOCIATE_AC()
    encoded.from_primitive(answer)
    return Plan(
        request_length=len(request),
        calling_ae_title=calling,
        called_ae_title=called,
        peer_max_pdu=peer_max or 0,
        accepted=accepted,
        answer=encoded.encode(),
    )


# --- encoding ---------------------------------------------------------------


def _element(group: int, element: int, value: bytes) -> bytes:
    """One implicit VR little endian element (PS3.5 7.1.3)."""
    return struct.pack("<HHL", group, element, len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def encode_response(
    command_field: int,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str | None,
    status: int,
    error_comment: str = "",
) -> bytes:
    """A DIMSE response command set (PS3.7 9.3.1.2, 9.3.5.2), implicit VR little endian."""
    elements = [
        _element(0x0000, 0x0002, _uid(sop_class_uid)),
        _element(0x0000, 0x0100, struct.pack("<H", command_field | 0x8000)),
        _element(0x0000, 0x0120, struct.pack("<H", message_id)),
        _element(0x0000, 0x0800, struct.pack("<H", NO_DATA_SET)),
        _element(0x0000, 0x0900, struct.pack("<H", status)),
    ]
    if error_comment:
        comment = error_comment[:64].encode("ascii", "replace")
        elements.append(_element(0x0000, 0x0902, comment + b" " * (len(comment) % 2)))
    if sop_instance_uid:
        elements.append(_element(0x0000, 0x1000, _uid(sop_instance_uid)))
    body = b"".join(elements)
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


def _meta_element(element: int, vr: bytes, value: bytes) -> bytes:
    """An explicit VR little endian element of the file meta group (PS3.10 7.1)."""
    if vr in (b"OB",):
        return (
            struct.pack("<HH", 0x0002, element)
            + vr
            + b"\x00\x00"
            + struct.pack("<L", len(value))
            + value
        )
    return struct.pack("<HH", 0x0002, element) + vr + struct.pack("<H", len(value)) + value


def part10_prefix(sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str) -> bytes:
    """Preamble, "DICM" and File Meta Information for a received dataset: the bytes
    pynetdicom's `Event.encoded_dataset()` writes (its `create_file_meta`), so an
    instance re-sent by either path is recognised as the same file."""
    version = PYNETDICOM_IMPLEMENTATION_VERSION.encode("ascii")
    elements = [
        _meta_element(0x0001, b"OB", b"\x00\x01"),
        _meta_element(0x0002, b"UI", _uid(sop_class_uid)),
        _meta_element(0x0003, b"UI", _uid(sop_instance_uid)),
        _meta_element(0x0010, b"UI", _uid(transfer_syntax_uid)),
        _meta_element(0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
        _meta_element(0x0013, b"SH", version + b" " * (len(version) % 2)),
    ]
    body = b"".join(elements)
    group_length = _meta_element(0x0000, b"UL", struct.pack("<L", len(body)))
    return b"\x00" * 128 + b"DICM" + group_length + body


def parse_command(data: bytes) -> dict[int, bytes]:
    """A command set's elements by element number (group 0000, implicit VR LE)."""
    elements: dict[int, bytes] = {}
    offset, end = 0, len(data)
    while offset + 8 <= end:
        group, element, length = struct.unpack_from("<HHL", data, offset)
        offset += 8
        if group != 0x0000 or offset + length > end:
            raise ProtocolError("malformed DIMSE command set", reason=0x06)
        elements[element] = bytes(data[offset : offset + length])
        offset += length
    return elements


def _text(value: bytes | None) -> str:
    return value.rstrip(b"\x00 ").decode("ascii", "replace") if value else ""


def _us(value: bytes | None) -> int | None:
    return struct.unpack("<H", value[:2])[0] if value and len(value) >= 2 else None


def _abort_pdu(source: int, reason: int) -> bytes:
    return bytes([ABORT, 0, 0, 0, 0, 4, 0, 0, source, reason])


# --- the association --------------------------------------------------------


class Connection:
    """Reads PDUs off the socket and writes P-DATA-TF PDUs within the peer's limit."""

    def __init__(self, sock: socket.socket, peer_max_pdu: int) -> None:
        self.sock = sock
        # PS3.8 9.3.5: the limit covers the PDV items, each with a 6-byte header.
        self.max_value = peer_max_pdu - 6 if peer_max_pdu > 6 else 1 << 30
        self._reused = bytearray()

    def read(self, length: int) -> bytearray:
        buffer = bytearray(length)
        self._read_into(memoryview(buffer), length)
        return buffer

    def read_pdu_body(self, length: int) -> memoryview:
        """A PDU's body in a buffer the next PDU overwrites: a fresh 256 KiB buffer per
        PDU cost page faults on every one. PDUs above REUSED_BUFFER_BYTES get their own."""
        if length > REUSED_BUFFER_BYTES:
            return memoryview(self.read(length))
        if len(self._reused) < length:
            self._reused = bytearray(max(length, 64 * 1024))  # views of the old one stay valid
        view = memoryview(self._reused)[:length]
        self._read_into(view, length)
        return view

    def _read_into(self, view: memoryview, length: int) -> None:
        received = 0
        while received < length:
            try:
                count = self.sock.recv_into(view[received:], length - received)
            except (TimeoutError, BlockingIOError) as error:  # SO_RCVTIMEO ran out
                raise PeerGone("network timeout") from error
            except OSError as error:
                raise PeerGone(str(error)) from error
            if count == 0:
                raise PeerGone("connection closed by the peer")
            received += count

    def pdus(self) -> Iterator[tuple[int, memoryview]]:
        """(type, body) of each PDU; a body is valid until the next one is read."""
        while True:
            header = self.read(6)
            length = struct.unpack_from(">L", header, 2)[0]
            if length > MAX_PDU_LENGTH:
                raise ProtocolError(f"PDU of {length} bytes", reason=0x06)
            yield header[0], self.read_pdu_body(length)

    def send_command(self, context_id: int, command: bytes) -> None:
        """A command set in as many PDVs as the peer's maximum PDU length asks for."""
        chunks = [command[i : i + self.max_value] for i in range(0, len(command), self.max_value)]
        pdus = []
        for number, chunk in enumerate(chunks):
            control = 0x03 if number == len(chunks) - 1 else 0x01  # command, last fragment
            item = struct.pack(">LBB", len(chunk) + 2, context_id, control) + chunk
            pdus.append(struct.pack(">BBL", P_DATA_TF, 0, len(item)) + item)
        try:
            self.sock.sendall(b"".join(pdus))
        except OSError as error:  # SO_SNDTIMEO ran out, or the peer went away
            raise PeerGone(f"cannot send: {error}") from error


def _idle_timeout(sock: socket.socket, seconds: float | None) -> None:
    """A blocking socket whose reads give up after `seconds` of silence. The kernel
    keeps the timer (SO_RCVTIMEO): Python's own socket timeout polls before every
    read, a dozen extra system calls per 0.5 MB instance."""
    sock.settimeout(None)
    if seconds:
        whole = int(seconds)
        timeval = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)


@dataclass
class Message:
    """A DIMSE message being received on one presentation context. A C-STORE's data
    set goes to `staged` as it arrives; any other data set is read and dropped (the
    operation is refused anyway); `refusal` is the status once it is known."""

    context_id: int
    command: list[bytes] = field(default_factory=list)
    fields: dict[int, bytes] | None = None
    staged: storage.StagedFile | None = None
    refusal: tuple[int, str] | None = None

    def start_data_set(self, plan: Plan) -> None:
        """The command is complete and a data set follows: decide where it goes."""
        fields = self.fields or {}
        sop_class_uid = _text(fields.get(0x0002))
        context = plan.accepted[self.context_id]
        command_field = _us(fields.get(0x0100))
        if command_field != C_STORE_RQ:
            self.refusal = (UNRECOGNIZED_OPERATION, "only C-STORE and C-ECHO on this association")
            return
        if sop_class_uid != context.abstract_syntax:
            self.refusal = (SOP_CLASS_NOT_SUPPORTED, "SOP class differs from the context's")
            return
        prefix = part10_prefix(
            sop_class_uid, _text(fields.get(0x1000)), str(context.transfer_syntax[0])
        )
        try:
            self.staged = storage.StagedFile()
            self.staged.write(prefix)
        except OSError as error:
            self._storage_failed(error)

    def add_fragment(self, value: memoryview) -> None:
        if self.staged is None:
            return  # refused: read and dropped
        try:
            self.staged.write(value)
        except OSError as error:
            self._storage_failed(error)

    def _storage_failed(self, error: OSError) -> None:
        logger.error("cannot stage a received instance: %s", error)
        self.discard()
        self.refusal = (handlers.OUT_OF_RESOURCES, "archive storage is unavailable")

    def discard(self) -> None:
        if self.staged is not None:
            self.staged.discard()
            self.staged = None


def serve(sock: socket.socket, address: tuple[str, int], ae: Any, plan: Plan) -> None:
    """Run one storage association to its end, on the listener's connection thread."""
    association = FastAssociation(sock)
    with _active_lock:
        _active.add(association)
    session = services.IngestSession()
    connection = Connection(sock, plan.peer_max_pdu)
    try:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        _idle_timeout(sock, ae.network_timeout)
        connection.read(plan.request_length)  # the request peeked at: consume it now
        sock.sendall(plan.answer)
        logger.info(
            "storage association from %s (%s) accepted by process %d",
            plan.calling_ae_title,
            address[0],
            os.getpid(),
        )
        _data_phase(connection, plan, address, session)
    except ProtocolError as error:
        logger.warning("aborting the association from %s: %s", plan.calling_ae_title, error)
        with contextlib.suppress(OSError):
            sock.sendall(_abort_pdu(source=0x02, reason=error.reason))
    except PeerGone as error:
        logger.info("association from %s ended: %s", plan.calling_ae_title, error)
    except Exception:  # e.g. the database gone while looking up the peer
        logger.exception("aborting the association from %s", plan.calling_ae_title)
        with contextlib.suppress(OSError):
            sock.sendall(_abort_pdu(source=0x02, reason=0x00))
    finally:
        with _active_lock:
            _active.discard(association)
        with contextlib.suppress(OSError):
            sock.close()
        # What handle_close and handle_association_end do for pynetdicom's associations.
        try:
            services.refresh_later(session.study_ids)
        finally:
            connections.close_all()


def _data_phase(
    connection: Connection,
    plan: Plan,
    address: tuple[str, int],
    session: services.IngestSession,
) -> None:
    receiving: list[Message] = []  # the message in progress, for the cleanup below
    try:
        _messages(connection, plan, address, session, receiving)
    finally:
        for message in receiving:  # the association ended in the middle of a data set
            message.discard()


def _messages(
    connection: Connection,
    plan: Plan,
    address: tuple[str, int],
    session: services.IngestSession,
    receiving: list[Message],
) -> None:
    peer: peers.Peer | None = None
    looked_up = False
    message: Message | None = None
    for pdu_type, body in connection.pdus():
        if pdu_type == RELEASE_RQ:
            with contextlib.suppress(OSError):  # gone already: released all the same
                connection.sock.sendall(bytes([RELEASE_RP, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            return
        if pdu_type == ABORT:
            raise PeerGone("aborted by the peer")
        if pdu_type != P_DATA_TF:
            raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02x}", reason=0x02)
        view = body
        offset, end = 0, len(body)
        while offset < end:
            if offset + 6 > end:
                raise ProtocolError("truncated PDV item", reason=0x06)
            length, context_id, control = struct.unpack_from(">LBB", body, offset)
            value = view[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if length < 2 or offset > end:
                raise ProtocolError("PDV item length out of bounds", reason=0x06)
            if context_id not in plan.accepted:
                raise ProtocolError(f"PDV on presentation context {context_id}", reason=0x06)
            if message is None:
                message = Message(context_id)
                receiving[:] = [message]
            elif message.context_id != context_id:
                raise ProtocolError("PDVs of two messages interleaved", reason=0x02)
            is_command, is_last = bool(control & 0x01), bool(control & 0x02)
            if is_command:
                if message.fields is not None:
                    raise ProtocolError("command fragment after the command", reason=0x02)
                message.command.append(bytes(value))
                if not is_last:
                    continue
                message.fields = parse_command(b"".join(message.command))
                if _us(message.fields.get(0x0800)) != NO_DATA_SET:
                    message.start_data_set(plan)
                    continue  # the data set follows
            else:
                if message.fields is None:
                    raise ProtocolError("data set fragment before its command", reason=0x02)
                message.add_fragment(value)
                if not is_last:
                    continue
            if not looked_up:
                peer, looked_up = _peer(plan.calling_ae_title), True
            try:
                _answer(connection, plan, address, session, peer, message)
            finally:
                message.discard()
                receiving.clear()
            message = None


def _peer(calling_ae_title: str) -> peers.Peer | None:
    handlers.usable_connection()
    return peers.peer_for(calling_ae_title)


def _answer(
    connection: Connection,
    plan: Plan,
    address: tuple[str, int],
    session: services.IngestSession,
    peer: peers.Peer | None,
    message: Message,
) -> None:
    fields = message.fields or {}
    command_field = _us(fields.get(0x0100))
    message_id = _us(fields.get(0x0110)) or 0
    sop_class_uid = _text(fields.get(0x0002))
    sop_instance_uid = _text(fields.get(0x1000))
    if command_field == C_CANCEL_RQ:
        return  # nothing to cancel: each store is answered before the next starts
    if message.refusal is not None:
        status, comment = message.refusal
    elif command_field == C_ECHO_RQ:
        status, comment = (handlers.SUCCESS, "")
    elif command_field != C_STORE_RQ:
        status, comment = (UNRECOGNIZED_OPERATION, "only C-STORE and C-ECHO on this association")
    elif message.staged is None:  # a C-STORE-RQ that said no data set follows
        status, comment = (handlers.UNABLE_TO_PROCESS, "C-STORE without a data set")
    else:
        staged = message.staged
        result = handlers.store(
            peer, staged.contents(), sop_instance_uid, address[0], session, staged=staged
        )
        status, comment = _status(result)
    connection.send_command(
        message.context_id,
        encode_response(
            command_field or 0, message_id, sop_class_uid, sop_instance_uid or None, status, comment
        ),
    )


def _status(result: int | Dataset) -> tuple[int, str]:
    if isinstance(result, Dataset):
        return int(result.Status), str(result.get("ErrorComment", ""))
    return result, ""
