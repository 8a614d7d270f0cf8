"""pynetdicom event handlers: thin edges that call the archive's services.

Statuses per PS3.4 (C-STORE B.2.3, C-FIND C.4.1.1.4, C-MOVE C.4.2.1.5, C-GET
C.4.3.1.4) and PS3.7 C (0x0124 refused: not authorized).
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection, connections
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, UncompressedTransferSyntaxes
from pynetdicom import build_context, events, evt
from pynetdicom.sop_class import (
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from accounts import audit
from pacs import services, storage
from pacs.dimse import peers, query
from pacs.models import Instance, Study
from ris import worklist

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCELLED = 0xFE00
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
MOVE_SUBOPS_FAILED = 0xA702

PATIENT_ROOT = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}


def failure(status: int, comment: str) -> Dataset:
    """A status dataset with an Error Comment (LO: 64 characters at most)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


def peer_of(event: events.Event) -> peers.Peer | None:
    """The calling peer, looked up once per association."""
    assoc = event.assoc
    if not hasattr(assoc, "radpacs_peer"):
        assoc.radpacs_peer = peers.peer_for(assoc.requestor.ae_title)
    return assoc.radpacs_peer


def session_of(event: events.Event) -> services.IngestSession:
    """The ingest session of this association (what its push already looked up)."""
    assoc = event.assoc
    if not hasattr(assoc, "radpacs_session"):
        assoc.radpacs_session = services.IngestSession()
    return assoc.radpacs_session


def handle_open(event: events.Event) -> None:
    """Turn Nagle off: without it every DIMSE exchange waits ~40 ms for a delayed ACK."""
    sock = getattr(getattr(event.assoc.dul, "socket", None), "socket", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def handle_association_end(event: events.Event) -> None:
    """Released, aborted or rejected, in the association's own thread (where the
    handlers and the calling-AE check ran):
    close its database connection now. Left to the garbage collector, a connection of
    a finished association would stay open in PostgreSQL for an unbounded time."""
    connections.close_all()


def handle_close(event: events.Event) -> None:
    """Connection closed (in pynetdicom's DUL thread): refresh the studies the
    association stored into (counts, links, thumbnails) once, then close the DUL
    thread's own database connection, if the refresh opened one."""
    session = getattr(event.assoc, "radpacs_session", None)
    if session is not None:
        services.refresh_later(session.study_ids)
    connections.close_all()


def usable_connection() -> None:
    """Keep one database connection per association (a new PostgreSQL connection costs
    a backend fork, more than a whole C-STORE); drop it only when an error broke it."""
    if connection.connection is not None and connection.errors_occurred:
        connection.close_if_unusable_or_obsolete()


def handle_echo(event: events.Event) -> int:
    return SUCCESS


def handle_store(event: events.Event) -> int | Dataset:
    # pynetdicom wrote the data set to a temporary Part 10 file as it arrived
    # (STORE_RECV_CHUNKED_DATASET, set by server.build_ae): mapped, not read into memory.
    with storage.mapped(Path(event.dataset_path)) as data:
        return store(
            peer_of(event),
            data,
            str(event.request.AffectedSOPInstanceUID or ""),
            event.assoc.requestor.address,
            session_of(event),
        )


def store(
    peer: peers.Peer | None,
    data: bytes | mmap.mmap,
    affected_sop_instance_uid: str,
    remote_addr: str,
    session: services.IngestSession,
    staged: storage.StagedFile | None = None,
) -> int | Dataset:
    """One C-STORE, whichever path received it (pynetdicom's in memory, or `storage_scp`
    staged on disk: `data` is then the staged file's mapping)."""
    if peer is None or not peer.may_store:
        return failure(NOT_AUTHORIZED, "calling AE title may not store here")
    usable_connection()
    try:
        services.ingest(
            data,
            facility=peer.facility,
            door=audit.Door.DIMSE,
            actor=peer.ae_title,
            remote_addr=remote_addr,
            expected_sop_instance_uid=affected_sop_instance_uid,
            schedule_refresh=False,
            session=session,
            staged=staged,
        )
    except services.IngestError as error:
        logger.warning("C-STORE from %s refused: %s", peer.ae_title, error.reason)
        return failure(error.dicom_status, error.reason)
    except DatabaseError:
        logger.exception("C-STORE from %s failed: database", peer.ae_title)
        connection.close()  # the next request reconnects
        return failure(OUT_OF_RESOURCES, "archive database unavailable; try again later")
    except Exception:
        logger.exception("C-STORE from %s failed", peer.ae_title)
        return failure(OUT_OF_RESOURCES, "archive error; try again later")
    return SUCCESS


def _model(event: events.Event) -> str:
    return "patient" if event.request.AffectedSOPClassUID in PATIENT_ROOT else "study"


def handle_find(event: events.Event) -> Iterator[tuple[int, Dataset | None]]:
    if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
        yield from _worklist(event)
        return
    peer = peer_of(event)
    if peer is None or not peer.may_query:
        yield failure(NOT_AUTHORIZED, "calling AE title may not query here"), None
        return
    usable_connection()
    shown = 0
    try:
        for match in query.find(
            event.identifier,
            model=_model(event),
            facility_ids={peer.facility.pk},
            limit=settings.DICOM_FIND_LIMIT,
        ):
            if event.is_cancelled:
                yield CANCELLED, None
                return
            shown += 1
            if "RetrieveAETitle" in match:
                match.RetrieveAETitle = settings.DICOM_AE_TITLE
            yield PENDING, match
    except query.QueryError as error:
        yield failure(IDENTIFIER_DOES_NOT_MATCH, str(error)), None
        return
    except Exception:
        logger.exception("C-FIND from %s failed", peer.ae_title)
        yield failure(UNABLE_TO_PROCESS, "archive error"), None
        return
    finally:
        if shown:
            _audit_read(event, peer, action=audit.Action.LIST, detail={"matches": shown})
    yield SUCCESS, None


def _worklist(event: events.Event) -> Iterator[tuple[int, Dataset | None]]:
    """Modality Worklist: any known peer (a room's modality above all) gets the scheduled
    steps of its own facility."""
    peer = peer_of(event)
    if peer is None:
        yield failure(NOT_AUTHORIZED, "calling AE title may not query the worklist"), None
        return
    usable_connection()
    shown = 0
    try:
        for match in worklist.find(
            event.identifier, facility_id=peer.facility.pk, limit=settings.DICOM_FIND_LIMIT
        ):
            if event.is_cancelled:
                yield CANCELLED, None
                return
            shown += 1
            yield PENDING, match
    except query.QueryError as error:
        yield failure(IDENTIFIER_DOES_NOT_MATCH, str(error)), None
        return
    except Exception:
        logger.exception("worklist C-FIND from %s failed", peer.ae_title)
        yield failure(UNABLE_TO_PROCESS, "worklist error"), None
        return
    finally:
        if shown:
            audit.record(
                action=audit.Action.LIST,
                door=audit.Door.DIMSE,
                actor=peer.ae_title,
                facility=peer.facility,
                remote_addr=event.assoc.requestor.address,
                object_type="appointment",
                detail={"worklist": True, "matches": shown},
            )
    yield SUCCESS, None


def _audit_read(
    event: events.Event,
    peer: peers.Peer,
    *,
    action: str,
    detail: dict[str, Any],
    studies: list[Study] | None = None,
) -> None:
    level = str(event.identifier.get("QueryRetrieveLevel", "")) if event.identifier else ""
    base = {
        "action": action,
        "door": audit.Door.DIMSE,
        "actor": peer.ae_title,
        "facility": peer.facility,
        "remote_addr": event.assoc.requestor.address,
        "object_type": "study",
    }
    if not studies:
        audit.record(detail={"level": level, **detail}, **base)
        return
    for study in studies:
        audit.record(obj=study, detail={"level": level, **detail}, **base)


UNCOMPRESSED = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]


def _retrieve_contexts(instances: list[Instance]) -> list:
    """Presentation contexts for the C-MOVE sub-association: for each SOP class, its
    stored transfer syntaxes as they are, and a separate uncompressed context, so a
    destination that cannot take a compressed syntax still gets the images (decoded).
    At most 128 contexts (PS3.8 9.3.2.2: odd context ids 1-255)."""
    stored: dict[str, set[str]] = {}
    for instance in instances:
        stored.setdefault(instance.sop_class_uid, set()).add(instance.transfer_syntax_uid)
    contexts = []
    for sop_class, syntaxes in stored.items():
        for syntax in sorted(syntaxes - set(UncompressedTransferSyntaxes)):
            contexts.append(build_context(sop_class, [syntax]))
        contexts.append(build_context(sop_class, UNCOMPRESSED))
    return contexts[:128]


def _as_accepted(dataset: Dataset, assoc: Any) -> Dataset:
    """The dataset in a transfer syntax the receiving side accepted for its SOP class:
    as stored when it can be, else decoded to Explicit VR Little Endian (pynetdicom
    converts between the uncompressed syntaxes itself)."""
    stored = dataset.file_meta.get("TransferSyntaxUID")
    if stored is None or not stored.is_compressed or assoc is None:
        return dataset
    accepted = {
        context.transfer_syntax[0]
        for context in assoc.accepted_contexts
        if context.abstract_syntax == dataset.SOPClassUID and context.as_scu
    }
    if stored in accepted or not accepted & set(UncompressedTransferSyntaxes):
        return dataset  # as stored; with no usable context pynetdicom counts a failure
    # Lossless decoding keeps the instance's identity (PS3.5 8.2; PS3.4 C.6.1.1.4).
    dataset.decompress(generate_instance_uid=False)
    return dataset


def _selected(event: events.Event, peer: peers.Peer) -> list[Instance] | Dataset:
    try:
        return list(
            query.instances_for(
                event.identifier, model=_model(event), facility_ids={peer.facility.pk}
            )
        )
    except query.QueryError as error:
        return failure(IDENTIFIER_DOES_NOT_MATCH, str(error))


def _datasets(
    event: events.Event, instances: list[Instance], receiver: Callable[[], Any]
) -> Iterator[tuple[int, Dataset | None]]:
    """The instances' datasets for the storage sub-operations; `receiver()` is the
    association they go over (known only once pynetdicom has opened it)."""
    for instance in instances:
        if event.is_cancelled:
            yield CANCELLED, None
            return
        try:
            with storage.open_file(instance.storage_key) as handle:
                dataset = _as_accepted(dcmread(handle), receiver())
        except Exception:
            logger.exception("cannot read %s for retrieve", instance.sop_instance_uid)
            continue  # counted as a failed sub-operation by pynetdicom
        yield PENDING, dataset


def _send(
    event: events.Event,
    peer: peers.Peer,
    instances: list[Instance],
    destination: str,
    receiver: Callable[[], Any],
) -> Iterator[tuple[int, Dataset | None]]:
    """The C-MOVE / C-GET sub-operations, audited as an export of each study."""
    if instances:
        _audit_read(
            event,
            peer,
            action=audit.Action.EXPORT,
            detail={"destination": destination, "instances": len(instances)},
            studies=_studies_of(instances),
        )
    yield from _datasets(event, instances, receiver)


def _studies_of(instances: list[Instance]) -> list[Study]:
    seen: dict[int, Study] = {}
    for instance in instances:
        seen.setdefault(instance.series.study_id, instance.series.study)
    return list(seen.values())


def handle_move(event: events.Event) -> Iterator[Any]:
    peer = peer_of(event)
    if peer is None or not peer.may_query:
        yield None, None
        return
    usable_connection()
    destination_title = event.move_destination
    if isinstance(destination_title, bytes):
        destination_title = destination_title.decode("ascii", "replace")
    destination = peers.move_destination(destination_title, peer.facility)
    if destination is None:
        logger.warning("C-MOVE from %s to unknown AE %s", peer.ae_title, destination_title)
        yield None, None  # pynetdicom answers 0xA801 Move Destination unknown
        return
    instances = _selected(event, peer)
    if isinstance(instances, Dataset):
        yield destination.host, destination.port
        yield 0
        yield instances, None
        return
    opened: dict[str, Any] = {}

    def remember(accepted: events.Event) -> None:
        opened["assoc"] = accepted.assoc

    sub_association = {
        "contexts": _retrieve_contexts(instances),
        "evt_handlers": [
            (evt.EVT_CONN_OPEN, handle_open),  # Nagle off on our side too
            (evt.EVT_ACCEPTED, remember),
        ],
    }
    yield destination.host, destination.port, sub_association
    yield len(instances)
    yield from _send(event, peer, instances, destination.ae_title, lambda: opened.get("assoc"))


def handle_get(event: events.Event) -> Iterator[Any]:
    peer = peer_of(event)
    if peer is None or not peer.may_query:
        yield 0
        yield failure(NOT_AUTHORIZED, "calling AE title may not retrieve here"), None
        return
    usable_connection()
    instances = _selected(event, peer)
    if isinstance(instances, Dataset):
        yield 0
        yield instances, None
        return
    yield len(instances)
    yield from _send(event, peer, instances, peer.ae_title, lambda: event.assoc)
