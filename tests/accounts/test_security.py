"""Login, sessions, throttling, CSRF, headers, tokens and the settings that guard them."""

import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse
from rest_framework.authtoken.models import Token

from accounts.authentication import token_digest
from accounts.roles import Role
from tests.factories import PASSWORD, PatientFactory, client_for, member

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


def test_the_front_door_is_the_login_page():
    response = Client().get("/")
    assert response.status_code == 200
    assert b'name="password"' in response.content
    assert Client().get("/healthz").content == b"ok"


def test_the_admin_site_is_for_the_platform_operator_only(facility_a):
    staff = member(facility_a, Role.ADMIN, is_staff=True)
    response = client_for(staff).get(reverse("admin:ris_patient_changelist"))
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


def test_anonymous_pages_redirect_to_login_and_the_api_answers_401():
    client = Client()
    response = client.get(reverse("ris:patient_list"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("accounts:login"))
    assert client.get("/api/v1/patients/").status_code == 401
    assert client.get("/api/schema/").status_code in (401, 403)
    assert client.get(reverse("accounts:login")).status_code == 200


def test_the_login_page_logs_a_user_in_and_logout_needs_a_post(clerk):
    client = Client()
    response = client.post(reverse("accounts:login"), {"username": "clerk", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("ris:patient_list")).status_code == 200
    assert client.get(reverse("accounts:logout")).status_code == 405
    client.post(reverse("accounts:logout"))
    assert client.get(reverse("ris:patient_list")).status_code == 302


def test_repeated_failed_logins_lock_the_account_even_with_the_right_password(clerk):
    client = Client()
    for _ in range(django_settings.AXES_FAILURE_LIMIT):
        client.post(reverse("accounts:login"), {"username": "clerk", "password": "nope"})
    response = client.post(reverse("accounts:login"), {"username": "clerk", "password": PASSWORD})
    assert response.status_code == 429
    assert b"Too many failed logins" in response.content
    assert client.get(reverse("ris:patient_list")).status_code == 302


def test_the_login_form_requires_a_csrf_token(clerk):
    client = Client(enforce_csrf_checks=True)
    response = client.post(reverse("accounts:login"), {"username": "clerk", "password": PASSWORD})
    assert response.status_code == 403


def test_responses_carry_security_headers(clerk):
    response = client_for(clerk).get(reverse("home"))
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "default-src 'self'" in response["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in response["Content-Security-Policy"]
    assert "no-store" in response["Cache-Control"]


def test_sessions_are_short_lived_and_http_only():
    assert django_settings.SESSION_COOKIE_HTTPONLY
    assert django_settings.SESSION_COOKIE_AGE <= 60 * 60
    assert django_settings.SESSION_SAVE_EVERY_REQUEST


def test_a_user_changes_their_password(clerk):
    client = client_for(clerk)
    response = client.post(
        reverse("accounts:password_change"),
        {
            "old_password": PASSWORD,
            "new_password1": "a much better passphrase 42",
            "new_password2": "a much better passphrase 42",
        },
    )
    assert response.status_code == 302
    clerk.refresh_from_db()
    assert clerk.check_password("a much better passphrase 42")


def test_issue_api_token_prints_only_the_token_and_it_authenticates(clerk, facility_a):
    PatientFactory(facility=facility_a, family_name="Tokenpatient")
    out = StringIO()
    call_command("issue_api_token", "clerk", stdout=out)
    token = out.getvalue().strip()
    assert len(token.split()) == 1 and len(token) == 40
    stored = Token.objects.get(user=clerk).key
    assert stored == token_digest(token) != token, "only the digest is stored"
    with pytest.raises(CommandError, match="cannot be shown again"):
        call_command("issue_api_token", "clerk", stdout=StringIO())
    for scheme in ("Token", "Bearer"):
        response = Client().get("/api/v1/patients/", headers={"Authorization": f"{scheme} {token}"})
        assert response.status_code == 200
        assert response.json()["results"][0]["family_name"] == "Tokenpatient"
    out2 = StringIO()
    call_command("issue_api_token", "clerk", "--rotate", stdout=out2)
    assert out2.getvalue().strip() != token
    bad = Client().get("/api/v1/patients/", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 401


def test_api_docs_and_schema_are_served_without_internet(clerk):
    client = client_for(clerk)
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/patients/" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    html = docs.content.decode()
    assert "swagger-ui" in html
    assert "cdn.jsdelivr" not in html and "unpkg" not in html
    # The sidecar files are served by the app itself.
    assert "/static/drf_spectacular_sidecar/" in html


def _settings_import(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")}
    return subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_refuses_to_start_with_the_development_secret_key():
    refused = _settings_import({})
    assert refused.returncode != 0
    assert "SECRET_KEY" in refused.stderr
    assert _settings_import({"SECRET_KEY": "x" * 50}).returncode == 0
    assert _settings_import({"DEBUG": "1"}).returncode == 0


def test_secret_key_can_come_from_a_file(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file-" + "y" * 40 + "\n")
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import config.settings as s; print(s.SECRET_KEY, s.DEBUG)",
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DEBUG")},
            "SECRET_KEY_FILE": str(secret),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["from-a-file-" + "y" * 40, "False"]
