"""Account operations: people, their roles at facilities."""

from collections.abc import Iterable

from django.contrib.auth.password_validation import validate_password
from django.db import transaction

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
