"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET from modalities.

Thin: who is calling (a known peer, its facility), then ris.services does the work;
a refusal becomes the DIMSE status with an Error Comment (and Error ID) saying why.
"""

from __future__ import annotations

import logging

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import events

from pacs.dicom.vocabulary import UID_ROOT
from pacs.dimse.handlers import failure, peer_of, usable_connection
from ris import services

logger = logging.getLogger(__name__)

SUCCESS = 0x0000
NOT_AUTHORIZED = 0x0124  # Refused: not authorized
PROCESSING_FAILURE = 0x0110


def _refusal(error: services.MppsError) -> Dataset:
    status = failure(error.status, str(error))
    if error.error_id is not None:
        status.ErrorID = error.error_id
    return status


def handle_n_create(event: events.Event) -> tuple[Dataset | int, Dataset | None]:
    peer = peer_of(event)
    if peer is None:
        return failure(NOT_AUTHORIZED, "calling AE title may not report procedure steps"), None
    usable_connection()
    # The SCU may leave the UID to us (PS3.4 F.7.2.1.1); we then return it.
    uid = event.request.AffectedSOPInstanceUID or generate_uid(prefix=UID_ROOT)
    try:
        attributes = event.attribute_list
        services.mpps_create(
            facility=peer.facility,
            station_ae_title=peer.ae_title,
            sop_instance_uid=str(uid),
            attributes=attributes,
        )
    except services.MppsError as error:
        return _refusal(error), None
    except Exception:
        logger.exception("MPPS N-CREATE from %s failed", peer.ae_title)
        return failure(PROCESSING_FAILURE, "archive error"), None
    status = Dataset()
    status.Status = SUCCESS
    status.AffectedSOPInstanceUID = uid
    return status, attributes


def handle_n_set(event: events.Event) -> tuple[Dataset | int, Dataset | None]:
    peer = peer_of(event)
    if peer is None:
        return failure(NOT_AUTHORIZED, "calling AE title may not report procedure steps"), None
    usable_connection()
    try:
        changes = event.modification_list
        services.mpps_set(
            facility=peer.facility,
            station_ae_title=peer.ae_title,
            sop_instance_uid=str(event.request.RequestedSOPInstanceUID),
            changes=changes,
        )
    except services.MppsError as error:
        return _refusal(error), None
    except Exception:
        logger.exception("MPPS N-SET from %s failed", peer.ae_title)
        return failure(PROCESSING_FAILURE, "archive error"), None
    return SUCCESS, changes
