"""API tokens (`Authorization: Token …` or `Bearer …`) for the REST API and DICOMweb.

DRF's header parsing and errors, but the token, its user and the user's roles at
their active facilities are read in one statement built once: a viewer asks for
hundreds of frames, each request authenticated, and the ORM's two queries (token
with user, then memberships for the scope) cost more than the frame's rendering.
"""

from __future__ import annotations

import functools

from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.authtoken.models import Token

from accounts.models import Facility, Membership, User


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


def token_with_user(key: str) -> tuple[User, Token] | None:
    """The token of `key` and its user, whose roles per active facility are filled in
    (what `accounts.scoping.roles_by_facility` would read next); None if no such token."""
    rows = list(User.objects.raw(_token_statement(), [key]))  # one row per role held
    if not rows:
        return None
    user = rows[0]
    roles: dict[int, set[str]] = {}
    for row in rows:
        if row.role_facility_id is not None:
            roles.setdefault(row.role_facility_id, set()).add(row.role_name)
    del user.role_facility_id, user.role_name
    if user.is_active:
        user.__dict__["_facility_roles_cache"] = roles
    return user, Token(key=key, user=user)


@functools.cache
def _token_statement() -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    user_columns = ", ".join(f"u.{quote(field.column)}" for field in User._meta.concrete_fields)
    return (
        f"SELECT {user_columns}, r.facility_id AS role_facility_id, r.role AS role_name"  # noqa: S608
        f" FROM {quote(Token._meta.db_table)} t"
        f" JOIN {quote(User._meta.db_table)} u ON u.id = t.user_id"
        f" LEFT JOIN (SELECT m.user_id, m.facility_id, m.role"
        f" FROM {quote(Membership._meta.db_table)} m"
        f" JOIN {quote(Facility._meta.db_table)} f ON f.id = m.facility_id"
        f" WHERE f.is_active) r ON r.user_id = u.id"
        f" WHERE t.{quote('key')} = %s"
    )
