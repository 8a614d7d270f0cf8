"""Read queries of accounts: audit search, facilities of a user."""

from __future__ import annotations

import datetime as dt

from django.db.models import Q, QuerySet

from accounts.models import AuditEvent, AuditEventPatient, Facility, Membership, User
from accounts.roles import Capability
from accounts.scoping import facility_ids_for


def facilities_for(user: User, capability: str | None = None) -> QuerySet[Facility]:
    return Facility.objects.filter(pk__in=facility_ids_for(user, capability))


def audit_event_search(
    *,
    user: User,
    actor: str = "",
    action: str = "",
    door: str = "",
    object_type: str = "",
    object_id: str = "",
    patient_id: int | None = None,
    remote_addr: str = "",
    since: dt.date | None = None,
    until: dt.date | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events a facility administrator may see: their facilities' events, and the
    logins of their facilities' users."""
    facility_ids = facility_ids_for(user, Capability.VIEW_AUDIT)
    if not facility_ids:
        return AuditEvent.objects.none()
    member_ids = Membership.objects.filter(facility_id__in=facility_ids).values("user_id")
    events = AuditEvent.objects.filter(
        Q(facility_id__in=facility_ids) | Q(facility__isnull=True, user_id__in=member_ids)
    )
    if actor:
        events = events.filter(actor__iexact=actor)
    if action:
        events = events.filter(action=action)
    if door:
        events = events.filter(door=door)
    if object_type:
        events = events.filter(object_type=object_type)
    if object_id:
        events = events.filter(object_id=object_id)
    if patient_id is not None:
        events = events.filter(
            Q(patient_id=patient_id)
            | Q(pk__in=AuditEventPatient.objects.filter(patient_id=patient_id).values("event_id"))
        )
    if remote_addr:
        events = events.filter(remote_addr=remote_addr)
    if since:
        events = events.filter(at__date__gte=since)
    if until:
        events = events.filter(at__date__lte=until)
    return events.select_related("facility")
