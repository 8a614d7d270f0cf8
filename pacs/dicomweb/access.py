"""Who is asking, and which studies they may see, for every DICOMweb request.

DICOMweb clients (viewers, scripts, other archives) authenticate with a token
(`Authorization: Bearer …` or `Token …`); the browser viewer uses the session. The
scope is the same rule as the archive pages (`pacs.selectors.studies_visible_to`):
a user sees the studies of their facilities, and a referring physician only those
of the orders they referred.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.db.models import Q
from django.http import HttpRequest
from rest_framework import exceptions
from rest_framework.authentication import SessionAuthentication

from accounts.authentication import BearerTokenAuthentication, TokenAuthentication
from accounts.models import User
from accounts.roles import Capability, Role, capabilities_of
from accounts.scoping import roles_by_facility


class DicomWebError(Exception):
    """A request we refuse; `status` is the HTTP status, the message says why."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


class _Session(SessionAuthentication):
    """The viewer's session; CSRF is checked for writes (STOW-RS) as for any form."""


_AUTHENTICATORS = (BearerTokenAuthentication(), TokenAuthentication())


def authenticate(request: HttpRequest) -> User:
    """The requesting user, from a token or the session; 401 otherwise."""
    from rest_framework.request import Request

    drf_request = Request(request)
    try:
        for authenticator in _AUTHENTICATORS:
            found = authenticator.authenticate(drf_request)
            if found is not None:
                return found[0]
    except exceptions.AuthenticationFailed as error:
        raise DicomWebError(401, str(error.detail), {"WWW-Authenticate": "Bearer"}) from error
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            try:
                _Session().enforce_csrf(drf_request)
            except exceptions.PermissionDenied as error:
                raise DicomWebError(403, str(error.detail)) from error
        return user
    raise DicomWebError(401, "authentication required", {"WWW-Authenticate": "Bearer"})


@dataclass(frozen=True)
class Scope:
    """The studies a user may see, as facility ids plus, for facilities where they are
    only a referring physician, a study condition."""

    user: User
    facility_ids: frozenset[int]
    upload_facility_ids: frozenset[int] = field(default_factory=frozenset)
    referred_facility_ids: frozenset[int] = field(default_factory=frozenset)
    # A share link's visitor: just these studies, and audited under `actor` (the link),
    # not as the user who made the link.
    study_ids: frozenset[int] | None = None
    actor: str = ""

    @property
    def all_facility_ids(self) -> set[int]:
        return set(self.facility_ids | self.referred_facility_ids)

    def study_condition(self, prefix: str = "") -> Q | None:
        """None when the facilities alone decide; else the Q (fields under `prefix`)."""
        if self.study_ids is not None:
            return Q(**{f"{prefix}pk__in": self.study_ids})
        if not self.referred_facility_ids:
            return None
        return Q(**{f"{prefix}facility_id__in": self.facility_ids}) | Q(
            **{
                f"{prefix}facility_id__in": self.referred_facility_ids,
                f"{prefix}order__referring_physician": self.user,
            }
        )

    @property
    def is_empty(self) -> bool:
        return not self.facility_ids and not self.referred_facility_ids


def scope_for(user: User) -> Scope:
    full, referred, upload = set(), set(), set()
    for facility_id, roles in roles_by_facility(user).items():
        capabilities = capabilities_of(roles)
        if Capability.UPLOAD_IMAGES in capabilities:
            upload.add(facility_id)
        if Capability.VIEW_IMAGES not in capabilities:
            continue
        if Capability.VIEW_IMAGES in capabilities_of(roles - {Role.REFERRING_PHYSICIAN}):
            full.add(facility_id)
        else:
            referred.add(facility_id)
    return Scope(user, frozenset(full), frozenset(upload), frozenset(referred))
