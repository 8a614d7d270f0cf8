"""Writing the audit trail: who read or changed which patient data, through which door.

Services record changes in the same transaction as the change; doors (views, API,
DICOMweb, DIMSE, HL7) record reads. Rows are inserted, never updated or deleted.
"""

from __future__ import annotations

import contextlib
import contextvars
import ipaddress
from collections.abc import Iterator, Sequence
from typing import Any

from django.conf import settings
from django.db import models
from django.http import HttpRequest

from accounts.models import AuditEvent, AuditEventPatient, Facility, User
from config import plain_sql

Action = AuditEvent.Action
Door = AuditEvent.Door

# Rows recorded inside `deferred()`, inserted together when it ends.
_deferred: contextvars.ContextVar[list[AuditEvent] | None] = contextvars.ContextVar(
    "audit_deferred", default=None
)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Rows recorded inside go in with one statement when the block ends without an
    error (within the caller's transaction, which must be open: they commit or roll back
    with it). For a transaction that records many rows, e.g. an HL7 worker's batch: a
    statement per row cost more than the row. An error inside drops them (the
    transaction is rolled back anyway)."""
    pending: list[AuditEvent] = []
    token = _deferred.set(pending)
    try:
        yield
    finally:
        _deferred.reset(token)
    plain_sql.insert_many(pending)


def client_address(request: HttpRequest) -> str | None:
    """The caller's IP address; X-Forwarded-For only when deployed behind a trusted proxy."""
    address = request.META.get("REMOTE_ADDR", "")
    if settings.USE_X_FORWARDED_FOR:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded:
            address = forwarded.split(",")[-1].strip()
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def _describe(obj: models.Model) -> dict[str, Any]:
    """Object type, id, text and patient of a model instance, for the audit row."""
    patient_id = getattr(obj, "patient_id", None)
    if obj._meta.model_name == "patient":
        patient_id = obj.pk
    return {
        "object_type": obj._meta.model_name or "",
        "object_id": str(obj.pk),
        "object_repr": str(obj)[:200],
        "patient_id": patient_id,
        "facility_id": getattr(obj, "facility_id", None),
    }


def record(
    *,
    action: str,
    door: str,
    user: User | None = None,
    actor: str = "",
    obj: models.Model | None = None,
    object_type: str = "",
    object_id: str = "",
    facility: Facility | None = None,
    remote_addr: str | None = None,
    path: str = "",
    detail: dict[str, Any] | None = None,
    patient_ids: Sequence[int] = (),
) -> AuditEvent:
    fields: dict[str, Any] = {
        "object_type": object_type,
        "object_id": object_id,
        "object_repr": "",
        "patient_id": None,
        "facility_id": facility.pk if facility else None,
    }
    if obj is not None:
        fields.update(_describe(obj))
        if facility is not None:
            fields["facility_id"] = facility.pk
    if not actor:
        actor = user.get_username() if user is not None else "anonymous"
    event = AuditEvent(
        action=action,
        door=door,
        user=user if user is not None and user.is_authenticated else None,
        actor=actor[:150],
        remote_addr=remote_addr,
        path=path[:500],
        detail=detail or {},
        **fields,
    )
    pending = _deferred.get()
    if pending is not None and not patient_ids:
        pending.append(event)  # no id until the block ends
        return event
    plain_sql.insert(event)  # one per audited request or message: built once
    if patient_ids:
        AuditEventPatient.objects.bulk_create(
            AuditEventPatient(event=event, patient_id=pid) for pid in sorted(set(patient_ids))
        )
    return event


def record_request(
    request: HttpRequest,
    *,
    action: str,
    door: str = Door.PAGE,
    obj: models.Model | None = None,
    object_type: str = "",
    detail: dict[str, Any] | None = None,
    patient_ids: Sequence[int] = (),
) -> AuditEvent:
    """Audit one request against one object (or none, e.g. a search)."""
    user = request.user if request.user.is_authenticated else None
    return record(
        action=action,
        door=door,
        user=user,
        obj=obj,
        object_type=object_type,
        remote_addr=client_address(request),
        path=request.get_full_path(),
        detail=detail,
        patient_ids=patient_ids,
    )


def record_list(
    request: HttpRequest,
    *,
    objects: Sequence[models.Model],
    object_type: str,
    door: str = Door.PAGE,
    query: dict[str, Any] | None = None,
) -> AuditEvent:
    """Audit a list or search page: which rows were shown, and for what query."""
    ids = [obj.pk for obj in objects]
    patient_ids = sorted(
        {
            obj.pk if obj._meta.model_name == "patient" else getattr(obj, "patient_id", None)
            for obj in objects
        }
        - {None}
    )
    return record_request(
        request,
        action=Action.LIST,
        door=door,
        object_type=object_type,
        detail={"query": query or {}, "ids": ids},
        patient_ids=patient_ids,
    )
