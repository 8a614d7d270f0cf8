"""The archive's DICOM listener: one pynetdicom AE with our handlers and limits.

Several processes may listen on the same port (SO_REUSEPORT): the kernel spreads
associations over them, which is how C-STORE scales past one core's GIL.
"""

from __future__ import annotations

import socket
import tempfile
import threading
import time
from typing import IO, Any

from django.conf import settings
from django.db import connections
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    dimse_messages,
    evt,
)
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from pacs import storage
from pacs.dimse import handlers, mpps, peers, storage_scp

# pynetdicom picks, for each proposed context, the first of *our* syntaxes the peer
# proposed. A peer proposing a compressed syntax has the data compressed: take it as is.
UNCOMPRESSED_LAST = [
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
]
STORE_TRANSFER_SYNTAXES = [
    *(uid for uid in ALL_TRANSFER_SYNTAXES if uid not in UNCOMPRESSED_LAST),
    *UNCOMPRESSED_LAST,
]


class ArchiveAE(AE):
    """An AE whose calling-AE allow-list is read from the database per association,
    and whose active associations include those `storage_scp` serves."""

    @property
    def active_associations(self) -> list[Any]:  # type: ignore[override]
        return [*super().active_associations, *storage_scp.active_associations()]

    @property
    def require_calling_aet(self) -> list[str]:  # type: ignore[override]
        if settings.DICOM_ALLOW_UNKNOWN_CALLERS:
            return []
        # Never empty when the list is on: an empty list would mean "anyone".
        return peers.known_ae_titles() or ["\\no known peers\\"]

    @require_calling_aet.setter
    def require_calling_aet(self, ae_titles: list[str]) -> None:
        """The allow-list lives in the database (DicomNode, Room); nothing to set."""


STORAGE_CLASSES = frozenset(context.abstract_syntax for context in AllStoragePresentationContexts)


class ReusePortServer(ThreadedAssociationServer):
    def server_bind(self) -> None:
        if settings.DICOM_REUSE_PORT and hasattr(socket, "SO_REUSEPORT"):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        super().server_bind()

    def finish_request(self, request: Any, client_address: Any) -> None:
        """A plain storage association is served by `storage_scp`; any other is
        pynetdicom's, which reads the request from the first byte."""
        if settings.DICOM_FAST_STORE and isinstance(request, socket.socket):
            peeked = storage_scp.peek_request(request, self.ae.acse_timeout)
            answer = peeked and storage_scp.plan(self.ae, peeked, STORAGE_CLASSES)
            if answer:
                storage_scp.serve(request, client_address, self.ae, answer)
                return
            # The calling-AE check may have opened a connection in this thread, which
            # pynetdicom's association thread does not close at its end.
            connections.close_all()
        super().finish_request(request, client_address)


EVENT_HANDLERS = [
    (evt.EVT_CONN_OPEN, handlers.handle_open),
    (evt.EVT_CONN_CLOSE, handlers.handle_close),
    (evt.EVT_RELEASED, handlers.handle_association_end),
    (evt.EVT_ABORTED, handlers.handle_association_end),
    (evt.EVT_REJECTED, handlers.handle_association_end),
    (evt.EVT_C_ECHO, handlers.handle_echo),
    (evt.EVT_C_STORE, handlers.handle_store),
    (evt.EVT_C_FIND, handlers.handle_find),
    (evt.EVT_C_MOVE, handlers.handle_move),
    (evt.EVT_C_GET, handlers.handle_get),
    (evt.EVT_N_CREATE, mpps.handle_n_create),
    (evt.EVT_N_SET, mpps.handle_n_set),
]


def build_ae() -> ArchiveAE:
    # C-STORE data sets go to a temporary file as they arrive, not into memory
    # (handlers.handle_store maps the file); storage_scp's associations stage theirs.
    _config.STORE_RECV_CHUNKED_DATASET = True
    dimse_messages.NamedTemporaryFile = _staged_temporary_file
    ae = ArchiveAE(ae_title=settings.DICOM_AE_TITLE)
    ae.maximum_associations = settings.DICOM_MAX_ASSOCIATIONS
    ae.maximum_pdu_size = settings.DICOM_MAX_PDU_SIZE
    ae.acse_timeout = settings.DICOM_TIMEOUT
    ae.dimse_timeout = settings.DICOM_TIMEOUT
    ae.network_timeout = settings.DICOM_NETWORK_TIMEOUT
    ae.require_called_aet = settings.DICOM_REQUIRE_CALLED_AE_TITLE
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        # SCP for C-STORE; SCU role accepted too, for C-GET sub-operations (PS3.4 C.4.3).
        ae.add_supported_context(
            context.abstract_syntax, STORE_TRANSFER_SYNTAXES, scp_role=True, scu_role=True
        )
    for model in (
        ModalityPerformedProcedureStep,
        ModalityWorklistInformationFind,
        PatientRootQueryRetrieveInformationModelFind,
        PatientRootQueryRetrieveInformationModelMove,
        PatientRootQueryRetrieveInformationModelGet,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        StudyRootQueryRetrieveInformationModelGet,
    ):
        ae.add_supported_context(model)
    return ae


def _staged_temporary_file(*args: Any, **kwargs: Any) -> IO[bytes]:
    """Where pynetdicom writes a chunked C-STORE data set (it offers no setting): our
    staging folder under our temporary prefix, instead of the system's temp folder. It
    deletes the file after the handler, but not when the association is aborted or the
    process killed mid-transfer; `check_storage --repair` removes such leftovers."""
    kwargs.update(dir=storage.staging_folder(), prefix=storage.TEMPORARY_PREFIX)
    try:
        return tempfile.NamedTemporaryFile(*args, **kwargs)
    except FileNotFoundError:  # the folder was pruned (check_storage) since it was made
        storage.forget_folder(kwargs["dir"])
        kwargs["dir"] = storage.staging_folder()
        return tempfile.NamedTemporaryFile(*args, **kwargs)


# How long a process that is serving associations lets an idle sibling take a new
# connection first, per association it serves (see SharedSocketServer). Longer than
# Python's GIL switch interval (5 ms): the sibling's accept thread may wait that long
# for its GIL (at 3 ms, 4 associations still went 3+1 over 2 busy processes).
ACCEPT_DEFERRAL = 0.010


class SharedSocketServer(ReusePortServer):
    """Accepts from a listening socket that several forked processes share
    (`dicom_server --processes N`).

    With SO_REUSEPORT the kernel picks each connection's process by a hash of the
    client's port, so 4 associations often land 3+1 or 4+0 and one process (one
    GIL) does most of the work. A shared accept queue can be balanced instead: every
    process wakes when a connection waits, a process already serving associations
    waits a little before trying, and the idle one takes it. `listening` is set on a
    subclass by `start()`.
    """

    listening: socket.socket

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Connections accepted here whose finish_request has not returned: a storage
        # association is served within it, and it counts from the accept on (its thread
        # registers the association a moment later: without this, a burst of
        # connections went to whichever process woke first).
        self._handling = 0
        self._handling_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def server_bind(self) -> None:
        self.socket.close()
        self.socket = self.listening
        self.server_address = self.socket.getsockname()

    def server_activate(self) -> None:
        """Already listening (bound once, before the processes forked)."""

    def server_close(self) -> None:
        """Close this process's descriptor only: a shutdown() of the shared socket
        would stop the siblings accepting too."""
        self.socket.close()

    def get_request(self) -> tuple[socket.socket, Any]:
        serving = max(
            self._handling,
            sum(1 for assoc in self.ae.active_associations if assoc.is_acceptor),
        )
        if serving:
            time.sleep(ACCEPT_DEFERRAL * min(serving, 4))
        # Non-blocking: BlockingIOError (an OSError, which socketserver ignores) when a
        # sibling took the connection meanwhile.
        return self.socket.accept()

    def process_request(self, request: Any, client_address: Any) -> None:
        """Counted here, on the accepting thread, before the next accept."""
        with self._handling_lock:
            self._handling += 1
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            self._handled()
            raise

    def finish_request(self, request: Any, client_address: Any) -> None:
        try:
            super().finish_request(request, client_address)
        finally:
            self._handled()

    def _handled(self) -> None:
        with self._handling_lock:
            self._handling -= 1


def listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking listening socket for `SharedSocketServer`, made before forking."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def start(host: str, port: int, listening: socket.socket | None = None) -> ReusePortServer:
    """Start listening in a background thread; `.shutdown()` stops. With `listening`,
    accept from that shared socket instead of binding one."""
    ae = build_ae()
    server_class: type[ReusePortServer] = ReusePortServer
    if listening is not None:
        server_class = type("SharedSocketServer", (SharedSocketServer,), {"listening": listening})
    server = ae.make_server((host, port), evt_handlers=EVENT_HANDLERS, server_class=server_class)
    ae._servers.append(server)  # shutdown() expects to find itself there
    thread = threading.Thread(target=server.serve_forever, name="dicom-server", daemon=True)
    thread.start()
    return server
