"""Who is calling: DICOM peers known to the archive and the facility they store into.

A calling AE title is known when it is an active DicomNode or a Room's station AE
title; its facility is where its images go and what its queries may see.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from accounts.models import Facility
from pacs.models import DicomNode
from ris.models import Room


@dataclass(frozen=True)
class Peer:
    ae_title: str
    facility: Facility
    may_store: bool = True
    may_query: bool = True
    node: DicomNode | None = None


def known_ae_titles() -> list[str]:
    nodes = DicomNode.objects.filter(is_active=True, facility__is_active=True)
    rooms = Room.objects.filter(is_active=True, facility__is_active=True)
    return [*nodes.values_list("ae_title", flat=True), *rooms.values_list("ae_title", flat=True)]


def peer_for(calling_ae_title: str) -> Peer | None:
    """The known peer behind a calling AE title, or the default facility's anonymous peer
    when unknown callers are allowed; None when the caller is not accepted."""
    title = calling_ae_title.strip()
    node = (
        DicomNode.objects.filter(ae_title=title, is_active=True, facility__is_active=True)
        .select_related("facility")
        .first()
    )
    if node is not None:
        return Peer(title, node.facility, node.may_store, node.may_query, node)
    room = (
        Room.objects.filter(ae_title=title, is_active=True, facility__is_active=True)
        .select_related("facility")
        .first()
    )
    if room is not None:
        # A modality stores images and queries its worklist; it does not browse the archive.
        return Peer(title, room.facility, may_store=True, may_query=False)
    if settings.DICOM_ALLOW_UNKNOWN_CALLERS and settings.DICOM_DEFAULT_FACILITY:
        facility = Facility.objects.filter(
            code=settings.DICOM_DEFAULT_FACILITY, is_active=True
        ).first()
        if facility is not None:
            return Peer(title, facility)
    return None


def move_destination(ae_title: str, facility: Facility) -> DicomNode | None:
    """A C-MOVE destination must be a node registered for the caller's facility."""
    return DicomNode.objects.filter(
        ae_title=ae_title.strip(), facility=facility, is_active=True
    ).first()
