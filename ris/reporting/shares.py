"""Share links for a second opinion: one final report and its images, readable without an
account until the link expires or is revoked.

The token is shown once and kept only as its SHA-256. Opening the link puts a grant for
the report's studies into the visitor's session; the viewer then reads the images
through DICOMweb like any client, with a scope of just those studies
(`dicomweb_scope`). Each grant is checked against the share row on every request, so a
revoked link stops working at once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from django.db import transaction
from django.db.models import F
from django.http import HttpRequest
from django.utils import timezone

from accounts import audit
from accounts.models import User
from pacs.dicomweb.access import Scope
from pacs.models import Study
from ris.models import Report, ReportShare
from ris.reporting.selectors import reports_visible_to
from ris.services import RisError

MAX_DAYS = 30
SESSION_KEY = "report_shares"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@transaction.atomic
def share_create(
    *, report: Report, actor: User, recipient: str, days: int
) -> tuple[ReportShare, str]:
    """A new link to a final report the actor may read. Returns the share and the token,
    which is not stored and cannot be shown again."""
    if not reports_visible_to(actor).filter(pk=report.pk).exists():
        raise RisError("You may not share a report you cannot read.")
    if not report.is_closed:
        raise RisError("Only a final report is shared.")
    recipient = " ".join(recipient.split())[:200]
    if not recipient:
        raise RisError("Say who the link is for.")
    if not 1 <= days <= MAX_DAYS:
        raise RisError(f"A link lasts 1 to {MAX_DAYS} days.")
    token = secrets.token_urlsafe(32)
    share = ReportShare.objects.create(
        facility_id=report.facility_id,
        report=report,
        token_hash=_digest(token),
        recipient=recipient,
        created_by=actor,
        expires_at=timezone.now() + dt.timedelta(days=days),
    )
    audit.record(
        action=audit.Action.CREATE,
        obj=report,
        user=actor,
        door=audit.Door.PAGE,
        detail={"share": share.pk, "recipient": recipient, "days": days},
    )
    return share, token


@transaction.atomic
def share_revoke(*, share: ReportShare, actor: User) -> ReportShare:
    locked = ReportShare.objects.select_for_update().get(pk=share.pk)
    if locked.revoked_at is not None:
        return locked
    locked.revoked_at = timezone.now()
    locked.revoked_by = actor
    locked.save(update_fields=["revoked_at", "revoked_by"])
    audit.record(
        action=audit.Action.UPDATE,
        obj=locked.report,
        user=actor,
        door=audit.Door.PAGE,
        detail={"share": locked.pk, "revoked": True},
    )
    return locked


def _active(token: str) -> ReportShare:
    share = (
        ReportShare.objects.select_related("report__order__patient", "report__order__procedure")
        .filter(token_hash=_digest(token))
        .first()
    )
    if share is None:
        raise RisError("This link is not valid.")
    if share.revoked_at is not None:
        raise RisError("This link was revoked by the person who shared it.")
    if share.expires_at <= timezone.now():
        raise RisError("This link has expired: ask for a new one.")
    return share


def share_open(request: HttpRequest, token: str) -> ReportShare:
    """The share the link names, if active: counted, audited, and granted to this
    browser's session so its viewer may read the report's images."""
    share = _active(token)
    ReportShare.objects.filter(pk=share.pk).update(uses=F("uses") + 1, last_used_at=timezone.now())
    audit.record(
        action=audit.Action.VIEW,
        obj=share.report,
        actor=actor_name(share),
        door=audit.Door.PAGE,
        remote_addr=audit.client_address(request),
        path=request.path,
        detail={"share": share.pk},
    )
    grants = set(request.session.get(SESSION_KEY, []))
    grants.add(share.pk)
    request.session[SESSION_KEY] = sorted(grants)
    return share


def share_for_viewer(request: HttpRequest, token: str) -> ReportShare:
    """The share, for its viewer page: active, and opened in this session before."""
    share = _active(token)
    if share.pk not in request.session.get(SESSION_KEY, []):
        raise RisError("Open the link itself first.")
    return share


def actor_name(share: ReportShare) -> str:
    return f"share link {share.pk} ({share.recipient})"[:150]


def dicomweb_scope(request: HttpRequest) -> Scope | None:
    """DICOMweb for a visitor who opened share links: the studies of those shares'
    orders, while each share is active. None when the session holds no active share."""
    ids = request.session.get(SESSION_KEY, []) if hasattr(request, "session") else []
    if not ids:
        return None
    now = timezone.now()
    shares = list(
        ReportShare.objects.filter(
            pk__in=ids, revoked_at__isnull=True, expires_at__gt=now
        ).values_list("id", "facility_id", "report__order_id", "recipient", "created_by")
    )
    if not shares:
        return None
    studies = frozenset(
        Study.objects.filter(order_id__in=[row[2] for row in shares]).values_list("pk", flat=True)
    )
    first = shares[0]
    return Scope(
        user=User.objects.get(pk=first[4]),
        facility_ids=frozenset(row[1] for row in shares),
        study_ids=studies,
        actor=f"share link {first[0]} ({first[3]})"[:150],
    )
