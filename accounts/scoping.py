"""Facility scoping: the one place that decides which tenant rows a user may see.

Every model holding patient data uses FacilityScopedQuerySet as its manager and
every read of such data starts from `Model.objects.visible_to(user)`; a row of a
facility the user holds no role at is never returned, so it cannot be listed,
opened or probed (a lookup by id answers 404, the same as a missing row).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from django.db import models

from accounts.roles import capabilities_of

if TYPE_CHECKING:
    from accounts.models import User


def roles_by_facility(user: User | None) -> dict[int, set[str]]:
    """The user's roles per active facility (read once per user object)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return {}
    cache = user.__dict__.get("_facility_roles_cache")
    if cache is None:
        from accounts.models import Membership

        cache, codes = {}, {}
        rows = Membership.objects.filter(user=user, facility__is_active=True).values_list(
            "facility_id", "role", "facility__code"
        )
        for facility_id, role, code in rows:
            cache.setdefault(facility_id, set()).add(role)
            codes[facility_id] = code
        remember_facilities(user, cache, codes)
    return cache


def facility_codes(user: User | None) -> dict[int, str]:
    """The codes of the user's active facilities, read with their roles."""
    roles_by_facility(user)
    return user.__dict__.get("_facility_codes_cache", {}) if user is not None else {}


def remember_facilities(user: User, roles: dict[int, set[str]], codes: dict[int, str]) -> None:
    """Keep what `roles_by_facility` and `facility_codes` answer for this user object
    (token authentication reads both with the token)."""
    user.__dict__["_facility_roles_cache"] = roles
    user.__dict__["_facility_codes_cache"] = codes


def facility_ids_for(user: User | None, capability: str | None = None) -> set[int]:
    """Ids of the active facilities where the user holds a role (granting `capability`)."""
    cache = roles_by_facility(user)
    if capability is None:
        return set(cache)
    return {fid for fid, roles in cache.items() if capability in capabilities_of(roles)}


def capabilities_for(user: User | None, facility_id: int | None = None) -> frozenset[str]:
    """What the user may do at one facility, or at any of their facilities."""
    cache = roles_by_facility(user)
    if facility_id is not None:
        return capabilities_of(cache.get(facility_id, set()))
    roles: set[str] = set().union(*cache.values()) if cache else set()
    return capabilities_of(roles)


class FacilityScopedQuerySet(models.QuerySet):
    facility_field = "facility"

    def visible_to(self, user: User | None, capability: str | None = None) -> Self:
        """Rows of the facilities where `user` holds a role (granting `capability`)."""
        ids = facility_ids_for(user, capability)
        if not ids:
            return self.none()
        return self.filter(**{f"{self.facility_field}__in": ids})
