"""Personas: two facilities, A (ours) and B (someone else's), with people of each role."""

import pytest

from accounts.models import Facility, User
from accounts.roles import Role
from tests.factories import FacilityFactory, member
from tests.storage_fixtures import botocore_loader, image_store, moto_endpoint

__all__ = ["botocore_loader", "image_store", "moto_endpoint"]


@pytest.fixture
def facility_a() -> Facility:
    return FacilityFactory(name="North Imaging", code="NORTH")


@pytest.fixture
def facility_b() -> Facility:
    return FacilityFactory(name="South Clinic", code="SOUTH")


@pytest.fixture
def clerk(facility_a: Facility) -> User:
    return member(facility_a, Role.FRONT_DESK, username="clerk")


@pytest.fixture
def radiologist(facility_a: Facility) -> User:
    return member(facility_a, Role.RADIOLOGIST, username="rad")


@pytest.fixture
def facility_admin(facility_a: Facility) -> User:
    return member(facility_a, Role.ADMIN, username="facadmin")


@pytest.fixture
def biller(facility_a: Facility) -> User:
    return member(facility_a, Role.BILLING, username="biller")


@pytest.fixture
def outsider(facility_b: Facility) -> User:
    """A front-desk clerk of facility B: sees B's patients, never A's."""
    return member(facility_b, Role.FRONT_DESK, username="outsider")
