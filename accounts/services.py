"""Account operations: people, their roles at facilities, confirming a password again."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth import authenticate
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import Facility, Membership, User


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    roles: Iterable[tuple[Facility, str]] = (),
    first_name: str = "",
    last_name: str = "",
    email: str = "",
    title: str = "",
    npi: str = "",
    is_superuser: bool = False,
) -> User:
    """Create a user with roles; the password must pass the configured validators."""
    user = User(
        username=username,
        first_name=first_name,
        last_name=last_name,
        email=email,
        title=title,
        npi=npi,
        is_staff=is_superuser,
        is_superuser=is_superuser,
    )
    validate_password(password, user)
    user.set_password(password)
    user.save()
    Membership.objects.bulk_create(
        Membership(user=user, facility=facility, role=role) for facility, role in roles
    )
    return user


# ---- API tokens -------------------------------------------------------------------------


class TokenExists(Exception):
    """The user has a token already; it cannot be shown again, only replaced."""


@transaction.atomic
def api_token_issue(user: User, *, rotate: bool = False) -> str:
    """A new API token for `user`, returned once: only its digest is stored (a copy of
    the database gives no working credentials). `rotate` revokes the one they have."""
    from rest_framework.authtoken.models import Token

    from accounts.authentication import token_digest

    if Token.objects.filter(user=user).exists():
        if not rotate:
            raise TokenExists(f"{user.get_username()} has an API token already")
        Token.objects.filter(user=user).delete()
    secret = secrets.token_hex(20)
    Token.objects.create(user=user, key=token_digest(secret))
    return secret


# ---- a signature: the password typed again -------------------------------------------

# How long a confirmed password counts as a signature.
SIGNATURE_LIFETIME = dt.timedelta(minutes=2)


class PasswordNotConfirmed(Exception):
    """The password typed to sign was not the user's (or the user is locked out)."""


@dataclass(frozen=True)
class Signature:
    """Proof that `user` typed their password again just now: what signing a report (an
    act with legal weight) asks for, beyond the session. Made only by
    `password_confirm`, so every door that signs goes through it."""

    user: User
    confirmed_at: dt.datetime

    def check(self, actor: User) -> None:
        """Raise unless this signature is `actor`'s and fresh."""
        if self.user.pk != actor.pk:
            raise PasswordNotConfirmed("A report is signed with the signer's own password.")
        if timezone.now() - self.confirmed_at > SIGNATURE_LIFETIME:
            raise PasswordNotConfirmed("The password was confirmed too long ago: type it again.")


def password_confirm(*, request: HttpRequest, user: User, password: str) -> Signature:
    """Check `user`'s password through the authentication backends, so wrong guesses count
    towards the login lockout (django-axes): a session left open cannot be used to try
    passwords."""
    if not password:
        raise PasswordNotConfirmed("Type your password to sign.")
    confirmed = authenticate(request, username=user.get_username(), password=password)
    if getattr(request, "axes_locked_out", False):
        raise PasswordNotConfirmed(
            "Too many wrong passwords: signing is locked for a while. Ask an administrator."
        )
    if confirmed is None or confirmed.pk != user.pk:
        raise PasswordNotConfirmed("That is not your password: nothing was signed.")
    return Signature(user=user, confirmed_at=timezone.now())
