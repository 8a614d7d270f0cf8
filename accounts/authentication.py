"""API tokens (`Authorization: Token …` or `Bearer …`) for the REST API and DICOMweb.

DRF's header parsing and errors and its Token model, with two differences:
- a token is stored as its digest (`token_digest`), never as itself, so a copy of the
  database (a backup, a read-only login) holds no working credentials;
  `accounts.services.api_token_issue` shows the token once;
- the token, its user and the user's roles at their active facilities are read in one
  statement built once: a viewer asks for hundreds of frames, each request
  authenticated, and the ORM's two queries cost more than the frame's rendering.
"""

from __future__ import annotations

import functools
import hashlib

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from accounts import scoping
from accounts.models import Facility, Membership, User
from config import plain_sql


class TokenAuthentication(authentication.TokenAuthentication):
    """`Authorization: Token <key>` (DRF's keyword)."""

    def authenticate_credentials(self, key: str) -> tuple[User, Token]:
        found = token_with_user(key)
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token


class BearerTokenAuthentication(TokenAuthentication):
    """`Authorization: Bearer <token>`, as DICOMweb clients and viewers send it."""

    keyword = "Bearer"


def token_digest(token: str) -> str:
    """What is stored of a token: its SHA-256, in the 40 characters DRF's key column has
    (160 bits; tokens are random, so no salt or slow hash is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()[:40]


def token_with_user(token: str) -> tuple[User, Token] | None:
    """The stored token of `token` and its user, whose roles and codes of its active
    facilities are filled in (what `accounts.scoping.roles_by_facility` and
    `facility_codes` would read next); None if no such token."""
    key = token_digest(token)
    with plain_sql.cursor() as cursor:
        cursor.execute(_token_statement(), [key])
        rows = cursor.fetchall()  # one row per role held
    if not rows:
        return None
    user = plain_sql.instance_of(User, rows[0])
    roles: dict[int, set[str]] = {}
    codes: dict[int, str] = {}
    for row in rows:
        facility_id, role, code = row[-3], row[-2], row[-1]
        if facility_id is not None:
            roles.setdefault(facility_id, set()).add(role)
            codes[facility_id] = code
    if user.is_active:
        scoping.remember_facilities(user, roles, codes)
    return user, Token(key=key, user=user)


@functools.cache
def _token_statement() -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    user_columns = ", ".join(f"u.{quote(field.column)}" for field in User._meta.concrete_fields)
    return (
        f"SELECT {user_columns}, r.facility_id AS role_facility_id, r.role AS role_name,"  # noqa: S608
        " r.code AS facility_code"
        f" FROM {quote(Token._meta.db_table)} t"
        f" JOIN {quote(User._meta.db_table)} u ON u.id = t.user_id"
        f" LEFT JOIN (SELECT m.user_id, m.facility_id, m.role, f.code"
        f" FROM {quote(Membership._meta.db_table)} m"
        f" JOIN {quote(Facility._meta.db_table)} f ON f.id = m.facility_id"
        f" WHERE f.is_active) r ON r.user_id = u.id"
        f" WHERE t.{quote('key')} = %s"
    )
