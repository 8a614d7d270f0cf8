"""API tokens: the token, its user and the user's facility roles read in one statement."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework import exceptions
from rest_framework.test import APIRequestFactory

from accounts.authentication import (
    BearerTokenAuthentication,
    TokenAuthentication,
    token_digest,
)
from accounts.models import Membership
from accounts.roles import Role
from accounts.scoping import facility_codes, roles_by_facility
from tests.factories import FacilityFactory, UserFactory, api_token, member

pytestmark = pytest.mark.django_db


def _authenticate(header: str):
    from rest_framework.request import Request

    request = Request(APIRequestFactory().get("/", HTTP_AUTHORIZATION=header))
    for authenticator in (BearerTokenAuthentication(), TokenAuthentication()):
        found = authenticator.authenticate(request)
        if found is not None:
            return found
    return None


def test_a_token_gives_its_user_and_the_roles_at_active_facilities_in_one_query(
    facility_a, facility_b
):
    user = member(facility_a, Role.RADIOLOGIST, username="reader")
    Membership.objects.create(user=user, facility=facility_a, role=Role.TECHNOLOGIST)
    Membership.objects.create(user=user, facility=facility_b, role=Role.FRONT_DESK)
    closed = FacilityFactory(name="Closed", code="GONE", is_active=False)
    Membership.objects.create(user=user, facility=closed, role=Role.RADIOLOGIST)
    key = api_token(user)
    for scheme in ("Bearer", "Token"):
        with CaptureQueriesContext(connection) as queries:
            found, token = _authenticate(f"{scheme} {key}")
            roles = roles_by_facility(found)
            codes = facility_codes(found)
        assert len(queries) == 1
        assert codes == {facility_a.pk: facility_a.code, facility_b.pk: facility_b.code}
        assert found == user and found.username == "reader" and token.key == token_digest(key)
        assert found.is_active and found.last_login == user.last_login
        assert roles == {
            facility_a.pk: {Role.RADIOLOGIST, Role.TECHNOLOGIST},
            facility_b.pk: {Role.FRONT_DESK},
        }


def test_a_session_user_gets_the_codes_of_its_active_facilities_with_its_roles(
    facility_a, facility_b
):
    user = member(facility_a, Role.RADIOLOGIST, username="reader")
    closed = FacilityFactory(name="Closed", code="GONE", is_active=False)
    Membership.objects.create(user=user, facility=closed, role=Role.RADIOLOGIST)
    with CaptureQueriesContext(connection) as queries:
        codes = facility_codes(user)
        roles = roles_by_facility(user)
    assert len(queries) == 1
    assert (codes, roles) == ({facility_a.pk: facility_a.code}, {facility_a.pk: {Role.RADIOLOGIST}})


def test_a_user_without_roles_authenticates_with_none():
    user = UserFactory(username="nobody")
    found, _ = _authenticate(f"Bearer {api_token(user)}")
    assert found == user and roles_by_facility(found) == {}


def test_unknown_tokens_inactive_users_and_bad_headers_are_refused(facility_a):
    user = member(facility_a, Role.RADIOLOGIST, is_active=False)
    key = api_token(user)
    refusals = {
        f"Bearer {key}": "User inactive or deleted.",
        "Bearer 0123456789abcdef": "Invalid token.",
        "Bearer": "No credentials provided.",
        "Token a b": "should not contain spaces",
    }
    for header, reason in refusals.items():
        with pytest.raises(exceptions.AuthenticationFailed, match=reason):
            _authenticate(header)
    assert _authenticate("Basic dXNlcjpwdw==") is None


def test_tokens_issued_before_hashing_keep_working_after_the_migration():
    """0005 stores the digest of each token issued when tokens were kept as themselves."""
    import importlib

    from django.apps import apps
    from rest_framework.authtoken.models import Token

    migration = importlib.import_module("accounts.migrations.0005_hash_api_tokens")
    user = UserFactory(username="integration")
    plain = Token.objects.create(user=user).key  # DRF's own: the token as the key
    migration.hash_tokens(apps, None)
    assert Token.objects.get(user=user).key == token_digest(plain)
    found, _ = _authenticate(f"Token {plain}")
    assert found == user


def test_the_admin_lists_and_revokes_tokens_but_cannot_make_one_nobody_knows():
    from django.urls import reverse
    from rest_framework.authtoken.models import Token

    from tests.factories import client_for

    operator = UserFactory(username="operator", is_staff=True, is_superuser=True)
    holder = UserFactory(username="integration")
    api_token(holder)
    client = client_for(operator)
    listed = client.get(reverse("admin:authtoken_tokenproxy_changelist"))
    assert listed.status_code == 200 and "integration" in listed.content.decode()
    assert Token.objects.get(user=holder).key not in listed.content.decode()
    assert client.get(reverse("admin:authtoken_tokenproxy_add")).status_code == 403
    revoke = reverse("admin:authtoken_tokenproxy_delete", args=[holder.pk])
    assert client.post(revoke, {"post": "yes"}).status_code == 302
    assert not Token.objects.filter(user=holder).exists()
